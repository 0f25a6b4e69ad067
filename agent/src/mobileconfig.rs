//! Configuration profiles (`.mobileconfig`) that an MDM such as Jamf Pro installs on Macs: the
//! agent's managed settings, Chrome's and Edge's mandatory `AutoSelectCertificateForUrls` (one
//! entry per origin: the cert-auth domain, then each protected origin of the CA's metadata
//! that passes the origin check), Managed Login Items for the agent's LaunchAgent (macOS 13+),
//! and iCloud Keychain sync off.
//!
//! Only property lists are built here, so this module runs and is tested on every platform, and
//! the example profiles in `policies/` are generated and checked by its tests.
//!
//! # Payload form
//!
//! Preferences for an app domain (`com.devicetrust.agent`, `com.google.Chrome`,
//! `com.microsoft.Edge`) are written as custom-settings payloads whose `PayloadType` is the
//! domain and whose keys sit at the top of the payload, rather than as the older
//! `com.apple.ManagedClient.preferences` payload (`Forced` / `mcx_preference_settings`). Both
//! install the same forced managed preferences under `/Library/Managed Preferences`, where
//! `CFPreferencesAppValueIsForced` reports them as managed, which is what Chrome, Edge and the
//! agent check. The domain form is the one Google and Microsoft document for their browsers and
//! that profile editors and Jamf Pro's "Application & Custom Settings" read back; its keys are
//! flat, so an admin can read and diff the profile. The MCX form's only extra is Workgroup
//! Manager's "Set-Once" and "Often" states, which leave a value the user can change; every value
//! here must be forced.
//!
//! # Scope
//!
//! Every profile is a device profile (`PayloadScope` `System`; "Computer Level" in Jamf Pro): the
//! settings hold for every user of the Mac, and users cannot change them. The agent profile may
//! carry the enrollment token; see `ProfileInputs::enrollment_token` for where that ends up.
//!
//! # Identifiers
//!
//! `PayloadIdentifier`s are `com.devicetrust.profile.<kind>` and
//! `com.devicetrust.profile.<kind>.<payload>`. `PayloadUUID`s are derived from the CA and the
//! identifier (SHA-256, formatted as an RFC 9562 version 8 UUID) instead of drawn at random, so
//! that generating the same profile again gives the same bytes: an MDM sees an update of the same
//! profile, and the committed examples can be checked for drift.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use ca_client::protocol::Metadata;
use plist::{Dictionary, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::autoselect::{self, AutoSelectError, OurEntry};

/// The agent's managed preferences domain.
pub(crate) const AGENT_DOMAIN: &str = "com.devicetrust.agent";
/// Google Chrome's managed preferences domain on macOS.
pub(crate) const CHROME_DOMAIN: &str = "com.google.Chrome";
/// Microsoft Edge's managed preferences domain on macOS.
pub(crate) const EDGE_DOMAIN: &str = "com.microsoft.Edge";
/// The payload type of Apple's Managed Login Items payload (apple/device-management,
/// `mdm/profiles/com.apple.servicemanagement.yaml`; macOS 13+, device channel, MDM only).
pub(crate) const LOGIN_ITEMS_PAYLOAD_TYPE: &str = "com.apple.servicemanagement";
/// The agent's LaunchAgent label, which the Managed Login Items rule matches: the agent's
/// bundle identifier, like its preferences domain (`platform::macos::launch_agent::LABEL`).
const LAUNCH_AGENT_LABEL: &str = AGENT_DOMAIN;
/// The payload type of Apple's Restrictions payload.
pub(crate) const RESTRICTIONS_PAYLOAD_TYPE: &str = "com.apple.applicationaccess";
/// The Chrome and Edge policy that picks a client certificate without asking the user.
pub(crate) const AUTO_SELECT_POLICY: &str = "AutoSelectCertificateForUrls";
/// Prefix of every `PayloadIdentifier` this module writes.
pub(crate) const IDENTIFIER_PREFIX: &str = "com.devicetrust.profile";

/// Mixed into every derived UUID so that our UUIDs cannot collide with anyone else's
/// SHA-256-derived ones for the same strings.
const UUID_NAMESPACE: &[u8] = b"devicetrust mobileconfig v1";

/// Which profile to build. The CLI spells them `agent`, `chrome`, `edge`, `browsers`,
/// `login-items`, `icloud-keychain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub(crate) enum ProfileKind {
    /// The agent's settings in the managed preferences domain `com.devicetrust.agent`.
    #[value(name = "agent")]
    AgentSettings,
    /// Chrome's mandatory `AutoSelectCertificateForUrls` for the cert-auth domain.
    #[value(name = "chrome")]
    ChromeAutoSelect,
    /// Edge's mandatory `AutoSelectCertificateForUrls` for the cert-auth domain.
    #[value(name = "edge")]
    EdgeAutoSelect,
    /// Chrome's and Edge's, in one profile.
    #[value(name = "browsers")]
    BrowsersAutoSelect,
    /// Managed Login Items: the agent's LaunchAgent is on and the user cannot switch it off
    /// in Login Items (macOS 13+).
    #[value(name = "login-items")]
    LoginItems,
    /// iCloud Keychain sync off (for organisations that want it; the agent's own items are in
    /// file keychains, which never sync).
    #[value(name = "icloud-keychain")]
    KeychainSyncOff,
}

impl ProfileKind {
    /// Every kind, in the order the CLI lists them.
    pub(crate) const ALL: [Self; 6] = [
        Self::AgentSettings,
        Self::ChromeAutoSelect,
        Self::EdgeAutoSelect,
        Self::BrowsersAutoSelect,
        Self::LoginItems,
        Self::KeychainSyncOff,
    ];

    /// The CLI spelling, also the last part of the profile's `PayloadIdentifier`.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::AgentSettings => "agent",
            Self::ChromeAutoSelect => "chrome",
            Self::EdgeAutoSelect => "edge",
            Self::BrowsersAutoSelect => "browsers",
            Self::LoginItems => "login-items",
            Self::KeychainSyncOff => "icloud-keychain",
        }
    }

    /// The file name of this kind's example in `policies/`.
    #[cfg(test)]
    pub(crate) const fn example_file_name(self) -> &'static str {
        match self {
            Self::AgentSettings => "devicetrust-agent.mobileconfig",
            Self::ChromeAutoSelect => "chrome-autoselect.mobileconfig",
            Self::EdgeAutoSelect => "edge-autoselect.mobileconfig",
            Self::BrowsersAutoSelect => "browsers-autoselect.mobileconfig",
            Self::LoginItems => "login-items.mobileconfig",
            Self::KeychainSyncOff => "icloud-keychain-sync-off.mobileconfig",
        }
    }

    /// The profile's `PayloadIdentifier`.
    pub(crate) fn identifier(self) -> String {
        format!("{IDENTIFIER_PREFIX}.{}", self.name())
    }

    const fn display_name(self) -> &'static str {
        match self {
            Self::AgentSettings => "DeviceTrust: agent settings",
            Self::ChromeAutoSelect => "DeviceTrust: Chrome certificate selection",
            Self::EdgeAutoSelect => "DeviceTrust: Edge certificate selection",
            Self::BrowsersAutoSelect => "DeviceTrust: Chrome and Edge certificate selection",
            Self::LoginItems => "DeviceTrust: agent login item",
            Self::KeychainSyncOff => "DeviceTrust: iCloud Keychain sync off",
        }
    }
}

impl fmt::Display for ProfileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProfileKind {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| ProfileError::UnknownKind { given: s.to_owned() })
    }
}

/// Why a profile cannot be built or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProfileError {
    /// The profile kind is not one of ours.
    #[error(
        "unknown profile kind {given:?}; expected one of agent, chrome, edge, browsers, login-items, icloud-keychain"
    )]
    UnknownKind {
        /// The name as given.
        given: String,
    },
    /// The CA URL is not https; the agent sends its enrollment token there.
    #[error("the CA url {url} must use https")]
    CaUrlNotHttps {
        /// The URL as given.
        url: String,
    },
    /// The cert-auth domain or the issuer CN from the CA's metadata cannot form a browser entry.
    #[error("the CA metadata cannot configure browsers: {0}")]
    AutoSelect(#[from] AutoSelectError),
    /// The CA bundle must be a path on the Mac, and relative paths depend on the working
    /// directory of whoever runs the agent.
    #[error("the CA bundle path {path:?} must be absolute")]
    CaBundleNotAbsolute {
        /// The path as given.
        path: String,
    },
    /// The organisation domain is not a plain DNS name.
    #[error("the organisation domain {value:?} is not a dns name such as example.com")]
    InvalidOrgDomain {
        /// The value as given.
        value: String,
    },
    /// An allowlist entry is empty or holds whitespace or control characters.
    #[error("the allowlist entry {entry:?} is empty or contains whitespace or control characters")]
    InvalidAllowlistEntry {
        /// The entry as given.
        entry: String,
    },
    /// Not a TeamIdentifier (ten upper-case letters and digits).
    #[error("the team id {value:?} is not a TeamIdentifier (ten upper-case letters and digits)")]
    InvalidTeamId {
        /// The value as given.
        value: String,
    },
    /// Zero days would never renew.
    #[error("renew_before_days must be at least 1")]
    ZeroRenewBeforeDays,
    /// The token is empty or holds whitespace or control characters (a stray newline from a
    /// file, most likely).
    #[error("the enrollment token is empty or contains whitespace or control characters")]
    InvalidEnrollmentToken,
    /// The property list could not be encoded.
    #[error("cannot encode the profile: {message}")]
    Encode {
        /// The encoder's message.
        message: String,
    },
    /// The profile could not be written out.
    #[error("cannot write the profile: {message}")]
    Write {
        /// The I/O error's message.
        message: String,
    },
}

/// What a profile is built from: the CA's metadata, its URL and the admin's options.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProfileInputs {
    /// The CA's base URL, written as the agent's `ca_url`.
    pub ca_url: Url,
    /// The origin where browsers present the certificate (metadata `certAuthDomain`).
    pub cert_auth_domain: String,
    /// The issuer CN that the browser filter matches (metadata `issuerCommonName`).
    pub issuer_common_name: String,
    /// The origins of the apps the CA protects (metadata `protectedOrigins`); each gets an
    /// entry after the cert-auth domain's, and one that fails the origin check is left out.
    pub protected_origins: Vec<String>,
    /// The agent's `renew_before_days`; `None` leaves the key out.
    pub renew_before_days: Option<u32>,
    /// The agent's `ca_bundle`: an absolute path on the Mac to the PEM roots that the agent
    /// trusts for the CA's TLS. Deploying that file is up to the admin. `None` leaves it out.
    pub ca_bundle: Option<String>,
    /// The agent's `enrollment_token`; `None` leaves it out.
    ///
    /// Put it only in a profile scoped to the Macs that enroll, never to users or Self
    /// Service. macOS writes managed preferences to `/Library/Managed Preferences`, which local
    /// users of those Macs can read, so the token is a fleet secret whose worth is limited by
    /// the CA's MDM check, not a per-user one. It still never reaches a command line or a log.
    pub enrollment_token: Option<String>,
    /// The agent's `org_domain` (macOS): Safari also gets an identity preference for
    /// `*.<org_domain>`. A DNS name such as `example.com`; `None` leaves it out.
    pub org_domain: Option<String>,
    /// The agent's `allowlist` (macOS): the apps that may use the key without a prompt
    /// (`apple:`, `teamid:<TeamIdentifier>`; `apple-tool:`, `/usr/bin/security`, only on purpose), replacing the built-in list;
    /// `None` leaves it out.
    pub allowlist: Option<Vec<String>>,
    /// `PayloadOrganization`, shown to users in System Settings; `None` leaves it out.
    pub organization: Option<String>,
    /// The TeamIdentifier the agent is signed with: the Managed Login Items rule then also
    /// requires it, so that no other program can take the agent's label. `None` matches the
    /// label alone.
    pub team_id: Option<String>,
}

impl ProfileInputs {
    /// Inputs for the CA at `ca_url` as its metadata describes it, with the CA's own
    /// `renewBeforeDays` and no bundle, token or organization.
    pub(crate) fn from_metadata(metadata: &Metadata, ca_url: &Url) -> Self {
        Self {
            ca_url: ca_url.clone(),
            cert_auth_domain: metadata.cert_auth_domain.clone(),
            issuer_common_name: metadata.issuer_common_name.clone(),
            protected_origins: metadata.protected_origins.clone(),
            renew_before_days: Some(metadata.renew_before_days),
            ca_bundle: None,
            enrollment_token: None,
            org_domain: None,
            allowlist: None,
            organization: None,
            team_id: None,
        }
    }
}

// Hand-written so that the token never reaches a log line through `{:?}`.
impl fmt::Debug for ProfileInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileInputs")
            .field("ca_url", &self.ca_url.as_str())
            .field("cert_auth_domain", &self.cert_auth_domain)
            .field("issuer_common_name", &self.issuer_common_name)
            .field("protected_origins", &self.protected_origins)
            .field("renew_before_days", &self.renew_before_days)
            .field("ca_bundle", &self.ca_bundle)
            .field("enrollment_token", &self.enrollment_token.as_ref().map(|_| "<redacted>"))
            .field("org_domain", &self.org_domain)
            .field("allowlist", &self.allowlist)
            .field("organization", &self.organization)
            .field("team_id", &self.team_id)
            .finish()
    }
}

/// Builds the profile `kind` for `inputs` as an XML property list.
pub(crate) fn render(kind: ProfileKind, inputs: &ProfileInputs) -> Result<Vec<u8>, ProfileError> {
    let checked = Checked::new(inputs)?;
    let payloads = match kind {
        ProfileKind::AgentSettings => vec![agent_payload(kind, &checked)],
        ProfileKind::ChromeAutoSelect => vec![auto_select_payload(kind, &checked, Browser::Chrome)],
        ProfileKind::EdgeAutoSelect => vec![auto_select_payload(kind, &checked, Browser::Edge)],
        ProfileKind::BrowsersAutoSelect => vec![
            auto_select_payload(kind, &checked, Browser::Chrome),
            auto_select_payload(kind, &checked, Browser::Edge),
        ],
        ProfileKind::LoginItems => vec![login_items_payload(kind, &checked)],
        ProfileKind::KeychainSyncOff => vec![keychain_sync_off_payload(kind, &checked)],
    };
    let profile = profile_dict(kind, &checked, payloads);
    encode(&Value::Dictionary(profile))
}

/// Chrome's managed policy file for Linux (`/etc/opt/chrome/policies/managed/*.json`, and
/// Chromium's `/etc/chromium/policies/managed/`): the same `AutoSelectCertificateForUrls` entry
/// as the macOS profile, as pretty JSON with a trailing newline. Only the example in
/// `policies/` is made with it; the agent writes the policy through `platform::linux`.
#[cfg(test)]
pub(crate) fn render_chrome_managed_policy(inputs: &ProfileInputs) -> Result<Vec<u8>, ProfileError> {
    let checked = Checked::new(inputs)?;
    let entries: Vec<String> = checked.entries.iter().map(OurEntry::to_json).collect();
    let policy = serde_json::json!({ AUTO_SELECT_POLICY: entries });
    let mut out =
        serde_json::to_vec_pretty(&policy).map_err(|e| ProfileError::Encode { message: e.to_string() })?;
    out.push(b'\n');
    Ok(out)
}

/// Writes profile `kind` from every input the admin can set (the CA's metadata, bundle path,
/// token, organization) to `out`.
pub(crate) fn write_profile(
    kind: ProfileKind,
    inputs: &ProfileInputs,
    out: &mut dyn Write,
) -> Result<(), ProfileError> {
    let bytes = render(kind, inputs)?;
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| ProfileError::Write { message: e.to_string() })
}

/// Writes a rendered profile to `path`, readable by its owner only (mode 0600 on Unix, also
/// when the file already existed), because an agent profile may hold the enrollment token.
pub(crate) fn write_file(path: &Path, profile: &[u8]) -> Result<(), ProfileError> {
    let write_error = |e: std::io::Error| ProfileError::Write { message: format!("{}: {e}", path.display()) };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path).map_err(write_error)?;
        // `mode` applies only when the file is created; an existing file keeps its mode.
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write_error)?;
        file.write_all(profile).and_then(|()| file.sync_all()).map_err(write_error)
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path).map_err(write_error)?;
        file.write_all(profile).and_then(|()| file.sync_all()).map_err(write_error)
    }
}

/// Inputs after validation, with the browser entries already built.
struct Checked<'a> {
    inputs: &'a ProfileInputs,
    ca_url: String,
    /// The cert-auth domain's entry: it names the CA in the payload UUIDs.
    entry: OurEntry,
    /// Every entry, the cert-auth domain's first.
    entries: Vec<OurEntry>,
}

impl<'a> Checked<'a> {
    fn new(inputs: &'a ProfileInputs) -> Result<Self, ProfileError> {
        if inputs.ca_url.scheme() != "https" {
            return Err(ProfileError::CaUrlNotHttps { url: inputs.ca_url.to_string() });
        }
        let entry = OurEntry::new(&inputs.cert_auth_domain, &inputs.issuer_common_name)?;
        let entries = autoselect::wanted(
            &inputs.cert_auth_domain,
            &inputs.protected_origins,
            &inputs.issuer_common_name,
        )?
        .entries;
        if let Some(path) = &inputs.ca_bundle
            && !path.starts_with('/')
        {
            return Err(ProfileError::CaBundleNotAbsolute { path: path.clone() });
        }
        if let Some(domain) = &inputs.org_domain
            && !crate::origin::is_dns_name(domain)
        {
            return Err(ProfileError::InvalidOrgDomain { value: domain.clone() });
        }
        if let Some(entry) = inputs
            .allowlist
            .iter()
            .flatten()
            .find(|entry| entry.is_empty() || entry.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ProfileError::InvalidAllowlistEntry { entry: entry.clone() });
        }
        if let Some(team) = &inputs.team_id
            && !(team.len() == 10 && team.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
        {
            return Err(ProfileError::InvalidTeamId { value: team.clone() });
        }
        if inputs.renew_before_days == Some(0) {
            return Err(ProfileError::ZeroRenewBeforeDays);
        }
        if let Some(token) = &inputs.enrollment_token
            && (token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ProfileError::InvalidEnrollmentToken);
        }
        // `Url` writes a root path as a trailing slash; admins write the origin without it.
        let ca_url = match inputs.ca_url.as_str().strip_suffix('/') {
            Some(origin) if inputs.ca_url.path() == "/" && inputs.ca_url.query().is_none() => {
                origin.to_owned()
            }
            _ => inputs.ca_url.to_string(),
        };
        Ok(Self { inputs, ca_url, entry, entries })
    }

    /// A UUID derived from the CA and `identifier`. Length-prefixing each part keeps
    /// ("ab", "c") and ("a", "bc") apart.
    fn uuid(&self, identifier: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(UUID_NAMESPACE);
        for part in [self.ca_url.as_str(), self.entry.pattern(), identifier] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        // RFC 9562: version 8 ("custom", the version for hashes other than MD5 and SHA-1) and
        // the RFC variant, so that tools that parse UUIDs accept it.
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex = hex::encode_upper(bytes);
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }
}

#[derive(Debug, Clone, Copy)]
enum Browser {
    Chrome,
    Edge,
}

fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// The keys every payload carries, for a payload named `name` inside profile `kind`.
fn payload_dict(
    kind: ProfileKind,
    checked: &Checked<'_>,
    name: &str,
    payload_type: &str,
    display_name: &str,
) -> Dictionary {
    let identifier = format!("{}.{name}", kind.identifier());
    let mut dict = Dictionary::new();
    dict.insert("PayloadType".into(), string(payload_type));
    dict.insert("PayloadUUID".into(), string(checked.uuid(&identifier)));
    dict.insert("PayloadIdentifier".into(), string(identifier));
    dict.insert("PayloadVersion".into(), Value::Integer(1.into()));
    dict.insert("PayloadDisplayName".into(), string(display_name));
    if let Some(organization) = &checked.inputs.organization {
        dict.insert("PayloadOrganization".into(), string(organization.clone()));
    }
    dict
}

fn agent_payload(kind: ProfileKind, checked: &Checked<'_>) -> Value {
    let mut dict = payload_dict(kind, checked, "settings", AGENT_DOMAIN, "DeviceTrust agent");
    dict.insert("ca_url".into(), string(checked.ca_url.clone()));
    if let Some(path) = &checked.inputs.ca_bundle {
        dict.insert("ca_bundle".into(), string(path.clone()));
    }
    if let Some(days) = checked.inputs.renew_before_days {
        dict.insert("renew_before_days".into(), Value::Integer(u64::from(days).into()));
    }
    if let Some(token) = &checked.inputs.enrollment_token {
        dict.insert("enrollment_token".into(), string(token.clone()));
    }
    if let Some(domain) = &checked.inputs.org_domain {
        dict.insert("org_domain".into(), string(domain.clone()));
    }
    if let Some(allowlist) = &checked.inputs.allowlist {
        dict.insert("allowlist".into(), Value::Array(allowlist.iter().cloned().map(Value::String).collect()));
    }
    Value::Dictionary(dict)
}

fn auto_select_payload(kind: ProfileKind, checked: &Checked<'_>, browser: Browser) -> Value {
    let (name, domain, display_name) = match browser {
        Browser::Chrome => {
            ("chrome-autoselect", CHROME_DOMAIN, "Google Chrome: select the device certificate")
        }
        Browser::Edge => ("edge-autoselect", EDGE_DOMAIN, "Microsoft Edge: select the device certificate"),
    };
    let mut dict = payload_dict(kind, checked, name, domain, display_name);
    dict.insert(
        AUTO_SELECT_POLICY.into(),
        Value::Array(checked.entries.iter().map(|e| string(e.to_json())).collect()),
    );
    Value::Dictionary(dict)
}

fn login_items_payload(kind: ProfileKind, checked: &Checked<'_>) -> Value {
    let mut dict = payload_dict(
        kind,
        checked,
        "login-items",
        LOGIN_ITEMS_PAYLOAD_TYPE,
        "Managed Login Items: DeviceTrust agent",
    );
    let mut rule = Dictionary::new();
    rule.insert("RuleType".into(), string("Label"));
    rule.insert("RuleValue".into(), string(LAUNCH_AGENT_LABEL));
    rule.insert(
        "Comment".into(),
        string("The DeviceTrust agent's LaunchAgent: renews the device certificate at login and daily"),
    );
    if let Some(team) = &checked.inputs.team_id {
        rule.insert("TeamIdentifier".into(), string(team.clone()));
    }
    dict.insert("Rules".into(), Value::Array(vec![Value::Dictionary(rule)]));
    Value::Dictionary(dict)
}

fn keychain_sync_off_payload(kind: ProfileKind, checked: &Checked<'_>) -> Value {
    let mut dict = payload_dict(
        kind,
        checked,
        "restrictions",
        RESTRICTIONS_PAYLOAD_TYPE,
        "Restrictions: iCloud Keychain",
    );
    dict.insert("allowCloudKeychainSync".into(), Value::Boolean(false));
    Value::Dictionary(dict)
}

fn profile_dict(kind: ProfileKind, checked: &Checked<'_>, payloads: Vec<Value>) -> Dictionary {
    let identifier = kind.identifier();
    let description = match kind {
        ProfileKind::AgentSettings => {
            format!("Settings of the DeviceTrust agent for the CA at {}.", checked.ca_url)
        }
        ProfileKind::ChromeAutoSelect | ProfileKind::EdgeAutoSelect | ProfileKind::BrowsersAutoSelect => {
            let patterns: Vec<&str> = checked.entries.iter().map(OurEntry::pattern).collect();
            format!(
                "Presents the device certificate issued by \"{}\" to {} without asking the user.",
                checked.entry.issuer_cn(),
                patterns.join(", ")
            )
        }
        ProfileKind::LoginItems => format!(
            "Keeps the DeviceTrust agent's LaunchAgent ({LAUNCH_AGENT_LABEL}) switched on in Login Items, so that the device certificate renews. macOS 13 or later; install it through the MDM (it cannot be installed by hand)."
        ),
        ProfileKind::KeychainSyncOff => {
            "Turns off iCloud Keychain sync on this Mac. The DeviceTrust device key and its keychain password are in file keychains, which never sync; this profile is for organisations that want no keychain item to leave the Mac.".to_owned()
        }
    };
    let mut dict = Dictionary::new();
    dict.insert("PayloadContent".into(), Value::Array(payloads));
    dict.insert("PayloadDescription".into(), string(description));
    dict.insert("PayloadDisplayName".into(), string(kind.display_name()));
    dict.insert("PayloadUUID".into(), string(checked.uuid(&identifier)));
    dict.insert("PayloadIdentifier".into(), string(identifier));
    if let Some(organization) = &checked.inputs.organization {
        dict.insert("PayloadOrganization".into(), string(organization.clone()));
    }
    dict.insert("PayloadScope".into(), string("System"));
    dict.insert("PayloadType".into(), string("Configuration"));
    dict.insert("PayloadVersion".into(), Value::Integer(1.into()));
    dict
}

/// XML with sorted keys and tab indentation, as Apple's own tools write profiles, and a final
/// newline.
fn encode(value: &Value) -> Result<Vec<u8>, ProfileError> {
    let mut value = value.clone();
    sort_keys(&mut value);
    let mut out = Vec::new();
    value
        .to_writer_xml_with_options(&mut out, &plist::XmlWriteOptions::default().indent(b'\t', 1))
        .map_err(|e| ProfileError::Encode { message: e.to_string() })?;
    out.push(b'\n');
    Ok(out)
}

fn sort_keys(value: &mut Value) {
    match value {
        Value::Dictionary(dict) => {
            dict.sort_keys();
            dict.values_mut().for_each(sort_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use super::*;
    use crate::origin::{OriginError, OriginProblem};

    const EXAMPLE_CA: &str = "https://devicetrust.example.com";
    const EXAMPLE_ISSUER: &str = "MTLS Certificate Authority";
    const EXAMPLE_ENTRY: &str = r#"{"pattern":"https://devicetrust.example.com","filter":{"ISSUER":{"CN":"MTLS Certificate Authority"}}}"#;
    /// The example CA's protected origins, as the spec's examples write them.
    const EXAMPLE_ORIGINS: [&str; 2] = ["https://[*.]apps.example.com", "https://wiki.example.com:8443"];
    /// Every entry of the example profiles: the cert-auth domain's, then one per protected origin.
    const EXAMPLE_ENTRIES: [&str; 3] = [
        EXAMPLE_ENTRY,
        r#"{"pattern":"https://[*.]apps.example.com","filter":{"ISSUER":{"CN":"MTLS Certificate Authority"}}}"#,
        r#"{"pattern":"https://wiki.example.com:8443","filter":{"ISSUER":{"CN":"MTLS Certificate Authority"}}}"#,
    ];

    /// The metadata of the example CA the files in `policies/` are made for.
    fn example_metadata() -> Metadata {
        Metadata {
            cert_auth_domain: EXAMPLE_CA.to_owned(),
            issuer_common_name: EXAMPLE_ISSUER.to_owned(),
            ca_certificates: Vec::new(),
            certificate_lifetime_days: 365,
            renew_before_days: 30,
            max_unbound_certificates: 5,
            read_only: false,
            protected_origins: EXAMPLE_ORIGINS.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    fn example_url() -> Url {
        Url::parse(EXAMPLE_CA).unwrap()
    }

    fn example_inputs() -> ProfileInputs {
        ProfileInputs::from_metadata(&example_metadata(), &example_url())
    }

    fn parse(bytes: &[u8]) -> Dictionary {
        plist::Value::from_reader_xml(bytes).unwrap().into_dictionary().unwrap()
    }

    fn get_str<'a>(dict: &'a Dictionary, key: &str) -> &'a str {
        dict.get(key).and_then(Value::as_string).unwrap_or_else(|| panic!("{key} is not a string"))
    }

    fn payloads(profile: &Dictionary) -> Vec<Dictionary> {
        profile
            .get("PayloadContent")
            .and_then(Value::as_array)
            .expect("PayloadContent is an array")
            .iter()
            .map(|p| p.as_dictionary().expect("payload is a dictionary").clone())
            .collect()
    }

    fn is_uuid(s: &str) -> bool {
        let groups: Vec<&str> = s.split('-').collect();
        groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
    }

    /// The keys every profile and payload must carry, with the right types.
    fn check_common(kind: ProfileKind, profile: &Dictionary) {
        assert_eq!(get_str(profile, "PayloadType"), "Configuration", "{kind}");
        assert_eq!(get_str(profile, "PayloadIdentifier"), format!("com.devicetrust.profile.{kind}"));
        assert_eq!(get_str(profile, "PayloadScope"), "System", "{kind}");
        assert!(!get_str(profile, "PayloadDisplayName").is_empty(), "{kind}");
        assert!(!get_str(profile, "PayloadDescription").is_empty(), "{kind}");
        assert!(is_uuid(get_str(profile, "PayloadUUID")), "{kind}");
        assert_eq!(profile.get("PayloadVersion").and_then(Value::as_signed_integer), Some(1), "{kind}");
        let payloads = payloads(profile);
        assert!(!payloads.is_empty(), "{kind}");
        for payload in &payloads {
            let identifier = get_str(payload, "PayloadIdentifier");
            assert!(identifier.starts_with(&format!("com.devicetrust.profile.{kind}.")), "{identifier}");
            assert!(is_uuid(get_str(payload, "PayloadUUID")), "{kind}");
            assert!(!get_str(payload, "PayloadType").is_empty(), "{kind}");
            assert!(!get_str(payload, "PayloadDisplayName").is_empty(), "{kind}");
            assert_eq!(payload.get("PayloadVersion").and_then(Value::as_signed_integer), Some(1), "{kind}");
        }
    }

    fn payload_of<'a>(payloads: &'a [Dictionary], payload_type: &str) -> &'a Dictionary {
        payloads
            .iter()
            .find(|p| get_str(p, "PayloadType") == payload_type)
            .unwrap_or_else(|| panic!("no {payload_type} payload"))
    }

    fn check_auto_select(payload: &Dictionary, want_entries: &[&str]) {
        let list = payload.get(AUTO_SELECT_POLICY).and_then(Value::as_array).expect("an array");
        let list: Vec<&str> = list.iter().map(|v| v.as_string().expect("entries are strings")).collect();
        assert_eq!(list, want_entries);
        for raw in list {
            let entry: serde_json::Value = serde_json::from_str(raw).unwrap();
            assert_eq!(entry["filter"]["ISSUER"]["CN"], EXAMPLE_ISSUER);
        }
    }

    #[test]
    fn protected_origins_table() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("ok/none", &[], &[EXAMPLE_ENTRY]),
            ("ok/example", &EXAMPLE_ORIGINS, &EXAMPLE_ENTRIES),
            (
                "ok/duplicates-once",
                &["https://[*.]apps.example.com", "https://[*.]Apps.example.com/", EXAMPLE_CA],
                &EXAMPLE_ENTRIES[..2],
            ),
            (
                "fail/invalid-left-out",
                &["http://wiki.example.com", "https://[*.]apps.example.com", "https://*", "*"],
                &EXAMPLE_ENTRIES[..2],
            ),
        ];
        for (name, origins, want) in cases {
            let inputs = ProfileInputs {
                protected_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
                ..example_inputs()
            };
            let profile = parse(&render(ProfileKind::BrowsersAutoSelect, &inputs).unwrap());
            let payloads = payloads(&profile);
            check_auto_select(payload_of(&payloads, CHROME_DOMAIN), want);
            check_auto_select(payload_of(&payloads, EDGE_DOMAIN), want);
            let json: serde_json::Value =
                serde_json::from_slice(&render_chrome_managed_policy(&inputs).unwrap()).unwrap();
            assert_eq!(json[AUTO_SELECT_POLICY], serde_json::json!(want), "{name}");
        }
    }

    #[test]
    fn every_kind_parses_with_its_keys() {
        for kind in ProfileKind::ALL {
            let profile = parse(&render(kind, &example_inputs()).unwrap());
            check_common(kind, &profile);
            let payloads = payloads(&profile);
            match kind {
                ProfileKind::AgentSettings => {
                    assert_eq!(payloads.len(), 1);
                    let agent = payload_of(&payloads, AGENT_DOMAIN);
                    assert_eq!(get_str(agent, "ca_url"), EXAMPLE_CA);
                    assert_eq!(agent.get("renew_before_days").and_then(Value::as_unsigned_integer), Some(30));
                    assert!(agent.get("ca_bundle").is_none());
                    assert!(agent.get("enrollment_token").is_none());
                }
                ProfileKind::ChromeAutoSelect => {
                    assert_eq!(payloads.len(), 1);
                    check_auto_select(payload_of(&payloads, CHROME_DOMAIN), &EXAMPLE_ENTRIES);
                }
                ProfileKind::EdgeAutoSelect => {
                    assert_eq!(payloads.len(), 1);
                    check_auto_select(payload_of(&payloads, EDGE_DOMAIN), &EXAMPLE_ENTRIES);
                }
                ProfileKind::BrowsersAutoSelect => {
                    assert_eq!(payloads.len(), 2);
                    check_auto_select(payload_of(&payloads, CHROME_DOMAIN), &EXAMPLE_ENTRIES);
                    check_auto_select(payload_of(&payloads, EDGE_DOMAIN), &EXAMPLE_ENTRIES);
                }
                ProfileKind::LoginItems => {
                    assert_eq!(payloads.len(), 1);
                    let rules = payload_of(&payloads, LOGIN_ITEMS_PAYLOAD_TYPE)
                        .get("Rules")
                        .and_then(Value::as_array);
                    assert_eq!(rules.map(Vec::len), Some(1));
                }
                ProfileKind::KeychainSyncOff => {
                    assert_eq!(payloads.len(), 1);
                    let restrictions = payload_of(&payloads, RESTRICTIONS_PAYLOAD_TYPE);
                    assert_eq!(
                        restrictions.get("allowCloudKeychainSync").and_then(Value::as_boolean),
                        Some(false)
                    );
                }
            }
        }
    }

    #[test]
    fn agent_profile_carries_every_option() {
        let inputs = ProfileInputs {
            ca_bundle: Some("/Library/Application Support/DeviceTrust/ca.pem".into()),
            enrollment_token: Some("dt_enroll_0123456789abcdef".into()),
            organization: Some("Example Corp".into()),
            renew_before_days: Some(20),
            org_domain: Some("example.com".into()),
            allowlist: Some(vec!["apple-tool:".into(), "apple:".into(), "teamid:EQHXZ8M8AV".into()]),
            ..example_inputs()
        };
        let profile = parse(&render(ProfileKind::AgentSettings, &inputs).unwrap());
        check_common(ProfileKind::AgentSettings, &profile);
        assert_eq!(get_str(&profile, "PayloadOrganization"), "Example Corp");
        let payloads = payloads(&profile);
        let agent = payload_of(&payloads, AGENT_DOMAIN);
        assert_eq!(get_str(agent, "ca_bundle"), "/Library/Application Support/DeviceTrust/ca.pem");
        assert_eq!(get_str(agent, "enrollment_token"), "dt_enroll_0123456789abcdef");
        assert_eq!(agent.get("renew_before_days").and_then(Value::as_unsigned_integer), Some(20));
        assert_eq!(get_str(agent, "PayloadOrganization"), "Example Corp");
        assert_eq!(get_str(agent, "org_domain"), "example.com");
        let allowlist: Vec<&str> = agent
            .get("allowlist")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .filter_map(Value::as_string)
            .collect();
        assert_eq!(allowlist, ["apple-tool:", "apple:", "teamid:EQHXZ8M8AV"]);
    }

    /// The macOS backend reads the agent payload's keys with the names and types written here.
    /// The Managed Login Items rule matches the agent's label, and its team when given (keys
    /// from apple/device-management `com.apple.servicemanagement.yaml`).
    #[test]
    fn login_items_rule_table() {
        let cases: &[(&str, Option<&str>, Result<Option<&str>, ()>)] = &[
            ("ok/label-only", None, Ok(None)),
            ("ok/label-and-team", Some("ABCDE12345"), Ok(Some("ABCDE12345"))),
            ("fail/lowercase-team", Some("abcde12345"), Err(())),
            ("fail/short-team", Some("ABC"), Err(())),
        ];
        for (name, team, want) in cases {
            let inputs = ProfileInputs { team_id: team.map(str::to_owned), ..example_inputs() };
            let rendered = render(ProfileKind::LoginItems, &inputs);
            let Ok(want) = want else {
                assert!(matches!(rendered, Err(ProfileError::InvalidTeamId { .. })), "{name}");
                continue;
            };
            let profile = parse(&rendered.unwrap());
            check_common(ProfileKind::LoginItems, &profile);
            let payloads = payloads(&profile);
            let rules = payload_of(&payloads, LOGIN_ITEMS_PAYLOAD_TYPE)
                .get("Rules")
                .and_then(Value::as_array)
                .expect("Rules is an array");
            assert_eq!(rules.len(), 1, "{name}");
            let rule = rules[0].as_dictionary().expect("a rule is a dictionary");
            assert_eq!(get_str(rule, "RuleType"), "Label", "{name}");
            assert_eq!(get_str(rule, "RuleValue"), crate::platform::macos::launch_agent::LABEL, "{name}");
            assert_eq!(rule.get("TeamIdentifier").and_then(Value::as_string), *want, "{name}");
        }
    }

    #[test]
    fn agent_payload_reads_back_as_macos_configuration() {
        let inputs = ProfileInputs {
            ca_bundle: Some("/Library/Application Support/DeviceTrust/ca.pem".into()),
            enrollment_token: Some("dt_enroll_0123456789abcdef".into()),
            org_domain: Some("example.com".into()),
            allowlist: Some(vec!["apple:".into(), "teamid:UBF8T346G9".into()]),
            ..example_inputs()
        };
        let profile = parse(&render(ProfileKind::AgentSettings, &inputs).unwrap());
        let payload = payload_of(&payloads(&profile), AGENT_DOMAIN).clone();
        let managed: std::collections::BTreeMap<String, Value> =
            payload.into_iter().filter(|(key, _)| !key.starts_with("Payload")).collect();

        let mut config = crate::config::Config::default();
        let applied = crate::platform::macos::config::overlay(&mut config, &managed).unwrap();
        assert_eq!(applied, ["ca_url", "ca_bundle", "renew_before_days"]);
        assert_eq!(config.ca_url.as_deref(), Some(EXAMPLE_CA));
        assert_eq!(config.ca_bundle, Some(PathBuf::from("/Library/Application Support/DeviceTrust/ca.pem")));
        assert_eq!(config.renew_before_days, Some(30));

        let settings = crate::platform::macos::config::mac_settings(&managed).unwrap();
        assert_eq!(settings.org_domain.as_deref(), Some("example.com"));
        assert_eq!(settings.allowlist, Some(vec!["apple:".to_owned(), "teamid:UBF8T346G9".to_owned()]));
        assert_eq!(
            settings.enrollment_token.as_ref().map(|t| t.expose()),
            Some("dt_enroll_0123456789abcdef")
        );
        let known: Vec<&str> = crate::platform::macos::config::managed_keys().collect();
        assert!(managed.keys().all(|key| known.contains(&key.as_str())), "{:?}", managed.keys());
    }

    #[test]
    fn ca_url_table() {
        let cases: &[(&str, &str, Result<&str, ProfileError>)] = &[
            ("ok/origin", "https://ca.example.com", Ok("https://ca.example.com")),
            ("ok/origin-with-port", "https://ca.example.com:8443/", Ok("https://ca.example.com:8443")),
            ("ok/path-prefix-kept", "https://ca.example.com/dt/", Ok("https://ca.example.com/dt/")),
            (
                "fail/http",
                "http://ca.example.com",
                Err(ProfileError::CaUrlNotHttps { url: "http://ca.example.com/".into() }),
            ),
        ];
        for (name, url, want) in cases {
            let inputs = ProfileInputs { ca_url: Url::parse(url).unwrap(), ..example_inputs() };
            let got = render(ProfileKind::AgentSettings, &inputs).map(|bytes| {
                let profile = parse(&bytes);
                get_str(payload_of(&payloads(&profile), AGENT_DOMAIN), "ca_url").to_owned()
            });
            assert_eq!(got.as_deref().map_err(Clone::clone), want.clone(), "{name}");
        }
    }

    fn unsafe_origin(value: &str, problem: OriginProblem) -> ProfileError {
        ProfileError::AutoSelect(AutoSelectError::Origin(OriginError { value: value.to_owned(), problem }))
    }

    #[test]
    fn inputs_table() {
        type Edit = fn(&mut ProfileInputs);
        let cases: &[(&str, ProfileKind, Edit, Option<ProfileError>)] = &[
            ("ok/defaults", ProfileKind::AgentSettings, |_| {}, None),
            ("ok/no-renew-before", ProfileKind::AgentSettings, |i| i.renew_before_days = None, None),
            ("ok/token", ProfileKind::AgentSettings, |i| i.enrollment_token = Some("t0k-EN_".into()), None),
            (
                "ok/trailing-slash-domain",
                ProfileKind::ChromeAutoSelect,
                |i| i.cert_auth_domain.push('/'),
                None,
            ),
            (
                "fail/empty-domain",
                ProfileKind::ChromeAutoSelect,
                |i| i.cert_auth_domain.clear(),
                Some(unsafe_origin("", OriginProblem::Empty)),
            ),
            (
                "fail/star-domain",
                ProfileKind::BrowsersAutoSelect,
                |i| i.cert_auth_domain = "*".into(),
                Some(unsafe_origin("*", OriginProblem::Wildcard)),
            ),
            (
                "fail/https-star-domain",
                ProfileKind::EdgeAutoSelect,
                |i| i.cert_auth_domain = "https://*".into(),
                Some(unsafe_origin("https://*", OriginProblem::Wildcard)),
            ),
            (
                "fail/domain-with-path",
                ProfileKind::ChromeAutoSelect,
                |i| i.cert_auth_domain = "https://evil.example/path".into(),
                Some(unsafe_origin("https://evil.example/path", OriginProblem::Path)),
            ),
            (
                "fail/unsafe-domain-agent-profile-too",
                ProfileKind::AgentSettings,
                |i| i.cert_auth_domain = "https://*.example.com".into(),
                Some(unsafe_origin("https://*.example.com", OriginProblem::Wildcard)),
            ),
            (
                "ok/subdomain-wildcard-domain",
                ProfileKind::BrowsersAutoSelect,
                |i| i.cert_auth_domain = "https://[*.]example.com".into(),
                None,
            ),
            (
                "fail/empty-issuer",
                ProfileKind::EdgeAutoSelect,
                |i| i.issuer_common_name.clear(),
                Some(ProfileError::AutoSelect(AutoSelectError::EmptyIssuer)),
            ),
            (
                "fail/empty-issuer-agent-too",
                ProfileKind::AgentSettings,
                |i| i.issuer_common_name.clear(),
                Some(ProfileError::AutoSelect(AutoSelectError::EmptyIssuer)),
            ),
            (
                "fail/relative-bundle",
                ProfileKind::AgentSettings,
                |i| i.ca_bundle = Some("ca.pem".into()),
                Some(ProfileError::CaBundleNotAbsolute { path: "ca.pem".into() }),
            ),
            (
                "ok/org-domain",
                ProfileKind::AgentSettings,
                |i| i.org_domain = Some("corp.example.com".into()),
                None,
            ),
            (
                "fail/org-domain-with-scheme",
                ProfileKind::AgentSettings,
                |i| i.org_domain = Some("https://example.com".into()),
                Some(ProfileError::InvalidOrgDomain { value: "https://example.com".into() }),
            ),
            (
                "fail/org-domain-wildcard",
                ProfileKind::AgentSettings,
                |i| i.org_domain = Some("*.example.com".into()),
                Some(ProfileError::InvalidOrgDomain { value: "*.example.com".into() }),
            ),
            (
                "fail/allowlist-blank-entry",
                ProfileKind::AgentSettings,
                |i| i.allowlist = Some(vec!["apple:".into(), " ".into()]),
                Some(ProfileError::InvalidAllowlistEntry { entry: " ".into() }),
            ),
            (
                "fail/zero-renew-before",
                ProfileKind::AgentSettings,
                |i| i.renew_before_days = Some(0),
                Some(ProfileError::ZeroRenewBeforeDays),
            ),
            (
                "fail/empty-token",
                ProfileKind::AgentSettings,
                |i| i.enrollment_token = Some(String::new()),
                Some(ProfileError::InvalidEnrollmentToken),
            ),
            (
                "fail/token-with-newline",
                ProfileKind::AgentSettings,
                |i| i.enrollment_token = Some("abc\n".into()),
                Some(ProfileError::InvalidEnrollmentToken),
            ),
        ];
        for (name, kind, edit, want) in cases {
            let mut inputs = example_inputs();
            edit(&mut inputs);
            assert_eq!(render(*kind, &inputs).err(), *want, "{name}");
        }
    }

    fn all_uuids(inputs: &ProfileInputs) -> Vec<String> {
        let mut uuids = Vec::new();
        for kind in ProfileKind::ALL {
            let profile = parse(&render(kind, inputs).unwrap());
            uuids.push(get_str(&profile, "PayloadUUID").to_owned());
            uuids.extend(payloads(&profile).iter().map(|p| get_str(p, "PayloadUUID").to_owned()));
        }
        uuids
    }

    #[test]
    fn uuids_are_unique_stable_and_per_ca() {
        let first = all_uuids(&example_inputs());
        assert_eq!(first.len(), 13, "6 profiles, 7 payloads");
        assert_eq!(first.iter().collect::<HashSet<_>>().len(), first.len(), "unique: {first:?}");
        assert_eq!(all_uuids(&example_inputs()), first, "stable for the same input");
        for uuid in &first {
            assert_eq!(&uuid[14..15], "8", "version 8: {uuid}");
            assert!(matches!(&uuid[19..20], "8" | "9" | "A" | "B"), "RFC variant: {uuid}");
        }
        let other_ca = ProfileInputs {
            cert_auth_domain: "https://other.example.com".into(),
            ca_url: Url::parse("https://other.example.com").unwrap(),
            ..example_inputs()
        };
        let second = all_uuids(&other_ca);
        assert!(first.iter().all(|uuid| !second.contains(uuid)), "another CA gets other UUIDs");
    }

    #[test]
    fn rendering_is_deterministic() {
        for kind in ProfileKind::ALL {
            assert_eq!(render(kind, &example_inputs()).unwrap(), render(kind, &example_inputs()).unwrap());
        }
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in ProfileKind::ALL {
            assert_eq!(kind.name().parse::<ProfileKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
            let clap_name = clap::ValueEnum::to_possible_value(&kind).map(|v| v.get_name().to_owned());
            assert_eq!(clap_name.as_deref(), Some(kind.name()), "the CLI spells it the same");
        }
        assert_eq!(
            "keychain".parse::<ProfileKind>(),
            Err(ProfileError::UnknownKind { given: "keychain".into() })
        );
    }

    #[test]
    fn debug_redacts_the_token() {
        let inputs = ProfileInputs { enrollment_token: Some("s3cret-token".into()), ..example_inputs() };
        let shown = format!("{inputs:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn chrome_managed_policy_json() {
        let bytes = render_chrome_managed_policy(&example_inputs()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value, serde_json::json!({ "AutoSelectCertificateForUrls": EXAMPLE_ENTRIES }));
        assert!(bytes.ends_with(b"}\n"));
    }

    #[cfg(unix)]
    #[test]
    fn write_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.mobileconfig");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let missing = dir.path().join("no/such/dir/x.mobileconfig");
        assert!(matches!(write_file(&missing, b"x"), Err(ProfileError::Write { .. })));
    }

    // ---- the examples in policies/ ----

    fn policies_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    const CHROME_JSON_FILE: &str = "chrome-managed-policy.json";

    /// Every example file with the bytes `render` makes for it today.
    fn examples() -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = ProfileKind::ALL
            .into_iter()
            .map(|kind| (kind.example_file_name().to_owned(), render(kind, &example_inputs()).unwrap()))
            .collect();
        files.push((CHROME_JSON_FILE.to_owned(), render_chrome_managed_policy(&example_inputs()).unwrap()));
        files
    }

    /// Regenerates the examples: `cargo test -p agent mobileconfig::tests::regenerate_policies --
    /// --ignored`.
    #[test]
    #[ignore = "writes policies/; run by hand after changing a profile"]
    fn regenerate_policies() {
        for (name, bytes) in examples() {
            std::fs::write(policies_dir().join(name), bytes).unwrap();
        }
    }

    #[test]
    fn committed_policies_match_render() {
        for (name, want) in examples() {
            let path = policies_dir().join(&name);
            let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                got == want,
                "policies/{name} differs from what render makes today; run \
                 `cargo test -p agent mobileconfig::tests::regenerate_policies -- --ignored`"
            );
        }
    }

    #[test]
    fn committed_profiles_parse_with_their_keys() {
        for kind in ProfileKind::ALL {
            let path = policies_dir().join(kind.example_file_name());
            let profile = plist::Value::from_file(&path).unwrap().into_dictionary().unwrap();
            check_common(kind, &profile);
        }
        let json = std::fs::read(policies_dir().join(CHROME_JSON_FILE)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value[AUTO_SELECT_POLICY], serde_json::json!(EXAMPLE_ENTRIES));
    }
}
