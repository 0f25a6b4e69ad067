//! The relying-party kit: what lets an organisation's proxies and apps act on a device's
//! certificate.
//!
//! - [`RelyingParties`]: who may ask the forward-auth check, each with its bearer secret,
//!   its proxy (and so its certificate header), and optionally the addresses it calls from.
//! - [`header`]: reading the certificate out of that proxy's header.
//! - [`assertion`]: the signed device assertion handed to the app.
//! - [`DecisionCache`]: positive answers kept for a few seconds, dropped at once by a
//!   revocation on this process.
//! - [`ManagementMemory`]: the devices the MDM said are no longer managed, as far as this
//!   CA process has learnt at its last lookups.
//!
//! The check itself, in the contract's order, is [`crate::service::Ca::check_relying_party`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;

use crate::config::{ConfigError, ProxyKind, RelyingPartySettings};
use crate::secret::{SecretError, Token};

pub mod assertion;
pub mod header;

/// One configured relying party.
#[derive(Debug)]
pub struct RelyingParty {
    name: String,
    secret: Token,
    proxy: ProxyKind,
    sources: Vec<IpNet>,
}

impl RelyingParty {
    /// Its name, the assertion's `aud`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The proxy it is, which says where the certificate is.
    pub fn proxy(&self) -> ProxyKind {
        self.proxy
    }
}

/// Why a caller is not a relying party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRelyingParty {
    /// No bearer secret, or one no relying party has.
    Secret,
    /// The secret is a relying party's, but the address is not among its sources.
    Source,
}

/// Every configured relying party.
#[derive(Debug, Default)]
pub struct RelyingParties {
    parties: Vec<RelyingParty>,
}

/// Why the relying parties could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelyingPartyError {
    /// A secret could not be loaded.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Shortest relying-party secret: a proxy's secret guards every protected app.
pub const MIN_SECRET_LEN: usize = 32;

impl RelyingParties {
    /// Loads every `[[relying_party.clients]]` secret and parses its sources.
    pub fn load(settings: &RelyingPartySettings) -> Result<Self, RelyingPartyError> {
        let mut parties = Vec::with_capacity(settings.clients.len());
        for client in &settings.clients {
            let secret = client.secret.load_at_least("relying-party secret", MIN_SECRET_LEN)?;
            let sources = client
                .allowed_sources
                .iter()
                .map(|s| parse_source(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| ConfigError::Invalid {
                    setting: "relying_party.clients.allowed_sources",
                    reason,
                })?;
            parties.push(RelyingParty { name: client.name.clone(), secret, proxy: client.proxy, sources });
        }
        for (i, a) in parties.iter().enumerate() {
            if parties[..i].iter().any(|b| b.secret.same_as(&a.secret)) {
                return Err(ConfigError::Invalid {
                    setting: "relying_party.clients.secret",
                    reason: format!("{:?} shares its secret with another relying party", a.name),
                }
                .into());
            }
        }
        Ok(Self { parties })
    }

    /// Whether any relying party is configured.
    pub fn is_empty(&self) -> bool {
        self.parties.is_empty()
    }

    /// The relying party whose secret was presented, if `client` is among its sources.
    /// Every secret is compared (in constant time), so the answer's timing does not say
    /// which party's secret came close.
    pub fn identify(
        &self,
        presented: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(usize, &RelyingParty), NotRelyingParty> {
        let presented = presented.ok_or(NotRelyingParty::Secret)?;
        let mut found = None;
        for (i, party) in self.parties.iter().enumerate() {
            if party.secret.matches(presented) && found.is_none() {
                found = Some(i);
            }
        }
        let index = found.ok_or(NotRelyingParty::Secret)?;
        let party = &self.parties[index];
        let allowed = party.sources.is_empty()
            || client.is_some_and(|ip| party.sources.iter().any(|net| net.contains(&canonical(ip))));
        if allowed { Ok((index, party)) } else { Err(NotRelyingParty::Source) }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, so `127.0.0.1/32` matches a
/// dual-stack listener's `::ffff:127.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address.
pub fn parse_source(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.contains('/') {
        text.parse::<IpNet>().map(|n| n.trunc()).map_err(|e| format!("{text:?}: {e}"))
    } else {
        text.parse::<IpAddr>().map(IpNet::from).map_err(|e| format!("{text:?}: {e}"))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each map operation is one call: a panic elsewhere cannot leave it half-changed.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bounds the memory of each map below, whatever the number of certificates or devices.
const MAX_ENTRIES: usize = 100_000;

/// A trusted device as the check found it, which is what is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedDevice {
    /// The device UDID.
    pub udid: String,
    /// The device's serial number.
    pub device_serial: String,
    /// The certificate's serial, lowercase hex.
    pub certificate_serial: String,
    /// The bound user, if any.
    pub user: Option<String>,
    /// SHA-256 of the certificate's DER.
    pub certificate_sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    party: usize,
    certificate_sha256: [u8; 32],
    user: Option<String>,
}

#[derive(Debug)]
struct CacheEntry {
    until: DateTime<Utc>,
    generation: u64,
    device: TrustedDevice,
    assertion: String,
}

/// Positive check answers for `ttl`, per relying party, certificate and user. Only "trusted"
/// is kept: a refusal is looked up again each time, so a device let back in is not kept out.
/// Each entry carries the revocation generation it was made in, and a newer generation (a
/// revocation on this process) makes every older entry stale at once.
#[derive(Debug)]
pub struct DecisionCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl DecisionCache {
    /// A cache keeping answers for `ttl_secs` (0: nothing is kept).
    pub fn new(ttl_secs: u32) -> Self {
        Self { ttl: Duration::seconds(i64::from(ttl_secs)), entries: Mutex::new(HashMap::new()) }
    }

    /// The cached answer and the assertion signed with it, if fresh.
    pub fn get(
        &self,
        party: usize,
        certificate_sha256: [u8; 32],
        user: Option<&str>,
        generation: u64,
        now: DateTime<Utc>,
    ) -> Option<(TrustedDevice, String)> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = CacheKey { party, certificate_sha256, user: user.map(str::to_owned) };
        let mut entries = lock(&self.entries);
        match entries.get(&key) {
            Some(entry)
                if entry.generation == generation && now < entry.until && now >= entry.until - self.ttl =>
            {
                Some((entry.device.clone(), entry.assertion.clone()))
            }
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `device` and its `assertion` as the answer for this party, certificate and user.
    pub fn put(
        &self,
        party: usize,
        user: Option<&str>,
        device: &TrustedDevice,
        assertion: &str,
        generation: u64,
        now: DateTime<Utc>,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.generation == generation && now < e.until);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        let key =
            CacheKey { party, certificate_sha256: device.certificate_sha256, user: user.map(str::to_owned) };
        let entry = CacheEntry {
            until: now + self.ttl,
            generation,
            device: device.clone(),
            assertion: assertion.to_owned(),
        };
        entries.insert(key, entry);
    }
}

/// Devices the MDM last said are not managed, as this process learnt at its lookups
/// (enroll and renew ask the MDM; a device wiped or removed from Jamf fails its next
/// renewal, and from then on its certificate is refused by the relying-party check too). A
/// later "managed" answer forgets the device. Per process: another replica learns at its own
/// lookups.
#[derive(Debug, Default)]
pub struct ManagementMemory {
    unmanaged: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl ManagementMemory {
    /// Records the MDM's answer about `udid`.
    pub fn record(&self, udid: &str, managed: bool, now: DateTime<Utc>) {
        let mut unmanaged = lock(&self.unmanaged);
        if managed {
            unmanaged.remove(udid);
            return;
        }
        if unmanaged.len() >= MAX_ENTRIES && !unmanaged.contains_key(udid) {
            // The oldest answer goes first: the map stays bounded and recent news wins.
            if let Some(oldest) = unmanaged.iter().min_by_key(|(_, at)| **at).map(|(u, _)| u.clone()) {
                unmanaged.remove(&oldest);
            }
        }
        unmanaged.insert(udid.to_owned(), now);
    }

    /// Whether the MDM last said `udid` is not managed.
    pub fn is_unmanaged(&self, udid: &str) -> bool {
        lock(&self.unmanaged).contains_key(udid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RelyingPartyClient;
    use crate::secret::SecretSource;

    fn settings(dir: &std::path::Path, clients: &[(&str, &str, &[&str])]) -> RelyingPartySettings {
        let mut settings = RelyingPartySettings::default();
        for (name, secret, sources) in clients {
            let path = dir.join(name);
            crate::fsutil::write_atomic(&path, secret.as_bytes(), crate::fsutil::Visibility::Private)
                .expect("secret");
            settings.clients.push(RelyingPartyClient {
                name: (*name).to_owned(),
                secret: SecretSource::file(path),
                proxy: ProxyKind::Nginx,
                allowed_sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
        settings
    }

    #[test]
    fn identify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let parties = RelyingParties::load(&settings(
            dir.path(),
            &[("wiki", &a, &[]), ("git", &b, &["10.0.0.0/8", "::1"])],
        ))
        .expect("load");
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        type Case<'a> = (&'a str, Option<&'a str>, Option<IpAddr>, Result<&'a str, NotRelyingParty>);
        let cases: Vec<Case<'_>> = vec![
            ("ok/any-source", Some(&a), ip("192.0.2.1"), Ok("wiki")),
            ("ok/listed-network", Some(&b), ip("10.1.2.3"), Ok("git")),
            ("ok/listed-v6", Some(&b), ip("::1"), Ok("git")),
            ("fail/no-secret", None, ip("10.1.2.3"), Err(NotRelyingParty::Secret)),
            ("fail/wrong-secret", Some("c"), ip("10.1.2.3"), Err(NotRelyingParty::Secret)),
            ("fail/unlisted-source", Some(&b), ip("192.0.2.1"), Err(NotRelyingParty::Source)),
            ("fail/unknown-source", Some(&b), None, Err(NotRelyingParty::Source)),
        ];
        for (name, secret, client, expected) in cases {
            assert_eq!(parties.identify(secret, client).map(|(_, p)| p.name()), expected, "{name}");
        }
        // An IPv4-mapped address matches the IPv4 block.
        assert_eq!(parties.identify(Some(&b), ip("::ffff:10.0.0.1")).map(|(_, p)| p.name()), Ok("git"));
    }

    #[test]
    fn load_refuses_short_and_shared_secrets_and_bad_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = "s".repeat(40);
        type Clients<'a> = Vec<(&'a str, &'a str, &'a [&'a str])>;
        // What is refused: `Some(setting)` for an invalid setting, `None` for the secret itself.
        let cases: Vec<(&str, Clients<'_>, Option<&str>)> = vec![
            ("fail/short-secret", vec![("wiki", "short-but-16-chars", &[])], None),
            (
                "fail/shared-secret",
                vec![("wiki", &long, &[]), ("git", &long, &[])],
                Some("relying_party.clients.secret"),
            ),
            (
                "fail/bad-source",
                vec![("wiki", &long, &["10.0.0.0/99"])],
                Some("relying_party.clients.allowed_sources"),
            ),
        ];
        for (name, clients, want) in cases {
            let dir = dir.path().join(name.replace('/', "-"));
            std::fs::create_dir_all(&dir).expect("dir");
            let got = RelyingParties::load(&settings(&dir, &clients));
            let refused = match (&got, want) {
                (Err(RelyingPartyError::Secret(SecretError::TooShort { .. })), None) => true,
                (Err(RelyingPartyError::Config(ConfigError::Invalid { setting, .. })), Some(want)) => {
                    *setting == want
                }
                _ => false,
            };
            assert!(refused, "{name}: {got:?}");
        }
    }

    #[test]
    fn cache_keeps_answers_for_the_ttl_and_drops_them_at_a_revocation() {
        let cache = DecisionCache::new(5);
        let device = TrustedDevice {
            udid: "U".into(),
            device_serial: "S".into(),
            certificate_serial: "0a".into(),
            user: None,
            certificate_sha256: [1; 32],
        };
        let t0 = DateTime::<Utc>::from_timestamp(1_000_000, 0).expect("time");
        cache.put(0, None, &device, "jwt", 7, t0);
        assert_eq!(
            cache.get(0, [1; 32], None, 7, t0 + Duration::seconds(4)),
            Some((device.clone(), "jwt".to_owned()))
        );
        assert_eq!(cache.get(1, [1; 32], None, 7, t0), None, "another relying party");
        assert_eq!(cache.get(0, [1; 32], Some("alice"), 7, t0), None, "another user");
        assert_eq!(cache.get(0, [1; 32], None, 7, t0 + Duration::seconds(5)), None, "expired");
        cache.put(0, None, &device, "jwt", 7, t0);
        assert_eq!(cache.get(0, [1; 32], None, 8, t0), None, "a revocation since");
        assert_eq!(cache.get(0, [1; 32], None, 7, t0 - Duration::seconds(1)), None, "the clock went back");
        let off = DecisionCache::new(0);
        off.put(0, None, &device, "jwt", 7, t0);
        assert_eq!(off.get(0, [1; 32], None, 7, t0), None);
    }

    #[test]
    fn management_memory_forgets_a_device_managed_again() {
        let memory = ManagementMemory::default();
        let now = Utc::now();
        assert!(!memory.is_unmanaged("U"));
        memory.record("U", false, now);
        assert!(memory.is_unmanaged("U"));
        memory.record("U", true, now);
        assert!(!memory.is_unmanaged("U"));
    }
}
