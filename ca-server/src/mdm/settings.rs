//! The CA configuration's `[mdm]` table and how it becomes a [`ManagedDeviceCheck`].
//!
//! ```toml
//! [mdm]
//! kind = "jamf"                       # or "allow_all", or "static_list" with `path`
//! url = "https://example.jamfcloud.com"
//! client_id = "6cabf059-21c9-44d6-bbde-02898f7430dd"
//! client_secret_file = "/etc/devicetrust/jamf-client-secret"
//! ```
//!
//! The Jamf client secret is read from `client_secret_file` or the environment variable
//! [`CLIENT_SECRET_ENV`], never from the TOML file itself or the command line: a
//! `client_secret` key is refused.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;

use super::{
    AllowAll, ManagedDeviceCheck, PositiveCache, StaticList, StaticListError,
    jamf::{ClientSecret, DEFAULT_API_VERSION, JamfClient, JamfConfig},
};

/// The environment variable that holds the Jamf client secret when no
/// `client_secret_file` is configured.
pub const CLIENT_SECRET_ENV: &str = "DEVICETRUST_JAMF_CLIENT_SECRET";

const DEFAULT_TIMEOUT_SECS: u64 = 10;
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
const DEFAULT_CACHE_TTL_SECS: u64 = 300;
/// A client secret is tens of bytes; a larger file is the wrong file.
const MAX_SECRET_FILE: u64 = 4096;

/// The `[mdm]` table: which MDM the CA asks before it issues. Chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MdmSettings {
    /// `kind = "allow_all"`: every device counts as managed. Development only.
    AllowAll,
    /// `kind = "static_list"`: the devices listed in a JSON file are managed.
    StaticList {
        /// `path`: the JSON file, an array of `{"udid": "...", "serialNumber": "..."}`.
        path: PathBuf,
    },
    /// `kind = "jamf"`: ask Jamf Pro (see [`JamfSettings`] for the keys).
    Jamf(JamfSettings),
}

/// The keys of `[mdm]` with `kind = "jamf"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawJamfSettings")]
pub struct JamfSettings {
    /// `url` (required): the Jamf Pro base URL, e.g. `https://example.jamfcloud.com` or
    /// `https://jamf.example.com:8443`. Must be https; plain http is accepted only for a
    /// loopback address (a local simulator).
    pub url: String,
    /// `client_id` (required): the API client's ID from Settings > API Roles and Clients.
    /// The client's role needs Read Computers only.
    pub client_id: String,
    /// `client_secret_file`: a file holding the API client secret (surrounding whitespace
    /// is ignored). On unix it must not be readable by group or others (`chmod 600`).
    /// Without it the secret comes from the environment variable
    /// `DEVICETRUST_JAMF_CLIENT_SECRET`.
    pub client_secret_file: Option<PathBuf>,
    /// `api_version` (default `"v3"`): the version in `/api/{version}/computers-inventory`.
    /// `v1` is deprecated; newer Jamf Pro versions add `v4`.
    pub api_version: String,
    /// `timeout_secs` (default 10): limit for each Jamf request, from connecting to the end
    /// of the answer. Past it the CA answers `mdm_unavailable`.
    pub timeout_secs: u64,
    /// `connect_timeout_secs` (default 5): limit for establishing the connection.
    pub connect_timeout_secs: u64,
    /// `cache_ttl_secs` (default 300): how long a "managed" answer is reused for the same
    /// serial number and UDID. Negative answers and errors are never cached. 0 disables
    /// the cache.
    pub cache_ttl_secs: u64,
    /// `ca_bundle`: a PEM file of the CAs to trust for Jamf's TLS certificate (an
    /// on-premises Jamf Pro with a private CA). Without it the platform's roots are used.
    pub ca_bundle: Option<PathBuf>,
}

impl JamfSettings {
    /// Settings with every optional key at its default.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_id: client_id.into(),
            client_secret_file: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            cache_ttl_secs: DEFAULT_CACHE_TTL_SECS,
            ca_bundle: None,
        }
    }

    /// The client secret: from `client_secret_file` when set, else from `env`'s
    /// `DEVICETRUST_JAMF_CLIENT_SECRET`. `env` is `std::env::var` in production and a
    /// closure in tests.
    pub fn client_secret(&self, env: impl Fn(&str) -> Option<String>) -> Result<ClientSecret, MdmSetupError> {
        if let Some(path) = &self.client_secret_file {
            return read_secret_file(path);
        }
        match env(CLIENT_SECRET_ENV) {
            Some(secret) if !secret.trim().is_empty() => Ok(ClientSecret::new(secret.trim())),
            _ => Err(MdmSetupError::MissingClientSecret),
        }
    }

    /// The client configuration these settings describe, with `client_secret`.
    pub fn client_config(&self, client_secret: ClientSecret) -> JamfConfig {
        JamfConfig {
            url: self.url.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            api_version: self.api_version.clone(),
            timeout: Duration::from_secs(self.timeout_secs),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            ca_bundle: self.ca_bundle.clone(),
        }
    }
}

/// The table as written, so that a `client_secret` key gets its own message instead of a
/// generic "unknown field". Its value is never stored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJamfSettings {
    url: String,
    client_id: String,
    #[serde(default)]
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    client_secret: Option<serde::de::IgnoredAny>,
    #[serde(default = "default_api_version")]
    api_version: String,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_connect_timeout_secs")]
    connect_timeout_secs: u64,
    #[serde(default = "default_cache_ttl_secs")]
    cache_ttl_secs: u64,
    #[serde(default)]
    ca_bundle: Option<PathBuf>,
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.to_owned()
}
const fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}
const fn default_connect_timeout_secs() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECS
}
const fn default_cache_ttl_secs() -> u64 {
    DEFAULT_CACHE_TTL_SECS
}

impl TryFrom<RawJamfSettings> for JamfSettings {
    type Error = String;

    fn try_from(raw: RawJamfSettings) -> Result<Self, Self::Error> {
        if raw.client_secret.is_some() {
            return Err(format!(
                "`client_secret` must not be written in the configuration file; put the secret in \
                 `client_secret_file` (mode 0600) or the environment variable {CLIENT_SECRET_ENV}"
            ));
        }
        Ok(Self {
            url: raw.url,
            client_id: raw.client_id,
            client_secret_file: raw.client_secret_file,
            api_version: raw.api_version,
            timeout_secs: raw.timeout_secs,
            connect_timeout_secs: raw.connect_timeout_secs,
            cache_ttl_secs: raw.cache_ttl_secs,
            ca_bundle: raw.ca_bundle,
        })
    }
}

/// The `[mdm]` settings could not be turned into a working check. The CA refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MdmSetupError {
    /// The static device list is missing or malformed.
    #[error(transparent)]
    StaticList(#[from] StaticListError),
    /// A Jamf setting has an unusable value.
    #[error("invalid jamf setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The setting's key.
        setting: &'static str,
        /// What is wrong with it (never the value itself).
        reason: String,
    },
    /// Neither `client_secret_file` nor the environment variable gives a secret.
    #[error(
        "no jamf client secret: set `client_secret_file` or the environment variable \
         DEVICETRUST_JAMF_CLIENT_SECRET"
    )]
    MissingClientSecret,
    /// The secret file cannot be read, or is empty.
    #[error("cannot use the jamf client secret file {}: {reason}", path.display())]
    SecretFile {
        /// The configured path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The secret file can be read by group or others.
    #[error(
        "the jamf client secret file {} is readable by group or others (mode {mode:03o}); \
         run chmod 600 on it",
        path.display()
    )]
    SecretFileTooOpen {
        /// The configured path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The `ca_bundle` file cannot be used.
    #[error("cannot use the jamf ca bundle {}: {reason}", path.display())]
    CaBundle {
        /// The configured path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// https without `ca_bundle`, and the platform has no root certificates.
    #[error("no trusted root certificates for jamf's tls ({0}); set `ca_bundle`")]
    NoTrustRoots(String),
    /// The HTTP client could not be built.
    #[error("cannot build the jamf http client: {0}")]
    HttpClient(String),
}

/// The check the settings describe; Jamf comes wrapped in the positive-answer cache. The
/// secret comes from the process environment when no file is configured.
pub fn from_settings(settings: &MdmSettings) -> Result<Arc<dyn ManagedDeviceCheck>, MdmSetupError> {
    from_settings_with_env(settings, |name| std::env::var(name).ok())
}

/// [`from_settings`] with the environment given as a lookup function.
pub fn from_settings_with_env(
    settings: &MdmSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ManagedDeviceCheck>, MdmSetupError> {
    match settings {
        MdmSettings::AllowAll => Ok(Arc::new(AllowAll)),
        MdmSettings::StaticList { path } => Ok(Arc::new(StaticList::from_file(path)?)),
        MdmSettings::Jamf(jamf) => {
            let client = JamfClient::new(jamf.client_config(jamf.client_secret(env)?))?;
            let ttl = Duration::from_secs(jamf.cache_ttl_secs);
            Ok(Arc::new(PositiveCache::new(Arc::new(client), ttl)))
        }
    }
}

fn read_secret_file(path: &Path) -> Result<ClientSecret, MdmSetupError> {
    let failed = |reason: String| MdmSetupError::SecretFile { path: path.to_path_buf(), reason };
    // Permissions are checked on the opened file, so a swap between check and read cannot
    // slip an open file in.
    let file = std::fs::File::open(path).map_err(|e| failed(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| failed(e.to_string()))?;
    if !metadata.is_file() {
        return Err(failed("not a regular file".to_owned()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(MdmSetupError::SecretFileTooOpen { path: path.to_path_buf(), mode });
        }
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE + 1).read_to_string(&mut text).map_err(|e| failed(e.to_string()))?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(failed(format!("larger than {MAX_SECRET_FILE} bytes")));
    }
    let secret = text.trim();
    if secret.is_empty() {
        return Err(failed("empty".to_owned()));
    }
    Ok(ClientSecret::new(secret))
}
