//! Browsers and managed preferences through CFPreferences and identity preferences.
//!
//! Chrome and Edge get our `AutoSelectCertificateForUrls` entries (one per origin) in the
//! user's own preference domains, each added only when no entry for its origin exists, and
//! removed only when the agent recorded adding it; no other entry is touched. Whether the
//! effective value is managed comes from `CFPreferencesAppValueIsForced`. Safari gets identity
//! preferences for each origin pointing at the current identity. The agent's own managed preferences are read here too, forced values only.

use std::collections::BTreeMap;
use std::sync::Arc;

use security_framework::certificate::SecCertificate;
use security_framework::identity::SecIdentity;

use crate::autoselect::OurEntry;
use crate::platform::{
    BrowserIntegration, BrowserStatus, BrowserTarget, Identity, PlatformError, Scope, WrittenEntries,
};

use super::browsers::{self, AUTO_SELECT_POLICY, CHROMIUM_BROWSERS, SAFARI_LIST, SafariOrigin};
use super::config;
use super::keychain::KeychainStore;
use super::{BUNDLE_ID, sys};

/// The forced values of the agent's managed preferences domain, for the keys the agent knows.
pub(super) fn managed_preferences() -> BTreeMap<String, plist::Value> {
    config::managed_keys()
        .filter(|key| sys::app_value_is_forced(key, BUNDLE_ID))
        .filter_map(|key| sys::app_value(key, BUNDLE_ID).map(|v| (key.to_owned(), v)))
        .collect()
}

fn backend(what: &'static str, e: impl Into<crate::platform::BoxError>) -> PlatformError {
    PlatformError::backend(what, e)
}

/// Safari identity preferences and Chrome/Edge user preferences.
#[derive(Debug)]
pub(super) struct MacBrowsers {
    pub store: Arc<KeychainStore>,
    pub org_domain: Option<String>,
}

impl MacBrowsers {
    fn wanted(target: &BrowserTarget<'_>) -> Result<Vec<OurEntry>, PlatformError> {
        target.wanted().map(|w| w.entries).map_err(|e| backend("the browser target", e))
    }

    fn safari_origins(
        &self,
        target: &BrowserTarget<'_>,
        entries: &[OurEntry],
    ) -> Result<Vec<SafariOrigin>, PlatformError> {
        browsers::safari_origins(target.cert_auth_domain, self.org_domain.as_deref(), entries)
            .map_err(|e| backend("the browser target", e))
    }

    fn our_certificate(&self) -> Option<SecCertificate> {
        let identity = crate::platform::IdentityStore::current(self.store.as_ref()).ok().flatten()?;
        let sec_identity = self.store.sec_identity(&identity.certificate_pem).ok().flatten()?;
        sec_identity.certificate().ok()
    }

    fn apply_safari(
        &self,
        origins: &[SafariOrigin],
        identity: &Identity,
        issuer_cn: &str,
        written: &mut WrittenEntries,
    ) -> Result<Vec<String>, PlatformError> {
        let sec_identity = self
            .store
            .sec_identity(&identity.certificate_pem)?
            .ok_or(PlatformError::Missing("the identity in the device keychain"))?;
        let cert = sec_identity.certificate().map_err(|e| backend("the identity's certificate", e))?;
        let mut changes = Vec::new();
        // Names of protected origins the CA dropped, while they still point at us.
        let recorded = written.get(SAFARI_LIST).cloned().unwrap_or_default();
        // "Ours" is an identity of this CA: the current one, or one a renewal replaced
        // (a name dropped in the apply of a renewal still points at the old identity).
        let ours = |preferred: &SecIdentity| {
            sys::identity_has_certificate(preferred, &cert) || issued_by(preferred, issuer_cn)
        };
        for name in browsers::safari_retired_names(&recorded, origins) {
            let Some(preferred) = sys::preferred_identity(&name) else { continue };
            if !ours(&preferred) {
                continue;
            }
            match sys::set_preferred_identity(None, &name) {
                Ok(()) => changes.push(format!("removed the identity preference for {name} (Safari)")),
                Err(e) if sys::is_not_found(&e) => {}
                Err(e) => return Err(backend("could not remove the identity preference", e)),
            }
        }
        for (i, origin) in origins.iter().enumerate() {
            for name in &origin.names {
                match sys::preferred_identity(name) {
                    Some(p) if sys::identity_has_certificate(&p, &cert) => continue,
                    // A protected origin's name that someone pointed at another identity (a
                    // smart card, say) is theirs: left alone, as Chrome's foreign entries are.
                    // The cert-auth domain's names are ours by definition.
                    Some(p) if i > 0 && !ours(&p) => {
                        changes.push(format!(
                            "left the identity preference for {name} alone: it names another identity (Safari)"
                        ));
                        continue;
                    }
                    _ => {}
                }
                Self::set_safari_name(&sec_identity, name, &mut changes)?;
            }
        }
        // The cert-auth domain's names are ours by definition; record the protected origins.
        written.insert(SAFARI_LIST.to_owned(), origins.iter().skip(1).map(|o| o.origin.clone()).collect());
        Ok(changes)
    }

    fn set_safari_name(
        sec_identity: &SecIdentity,
        name: &str,
        changes: &mut Vec<String>,
    ) -> Result<(), PlatformError> {
        sys::set_preferred_identity(Some(sec_identity), name)
            .map_err(|e| backend("could not set the identity preference", e))?;
        changes.push(format!("set the identity preference for {name} (Safari)"));
        Ok(())
    }

    fn apply_chromium(
        &self,
        entries: &[OurEntry],
        written: &mut WrittenEntries,
    ) -> Result<Vec<String>, PlatformError> {
        let mut changes = Vec::new();
        for (browser, domain) in CHROMIUM_BROWSERS {
            let user = sys::user_value(AUTO_SELECT_POLICY, domain);
            let before = written.get(domain).cloned().unwrap_or_default();
            match browsers::chromium_user_update(user.as_ref(), entries, &before) {
                Ok(update) => {
                    if let Some(list) = &update.write {
                        let value = (!list.is_empty()).then(|| {
                            plist::Value::Array(list.iter().cloned().map(plist::Value::String).collect())
                        });
                        sys::set_user_value(AUTO_SELECT_POLICY, domain, value.as_ref())
                            .map_err(|e| backend("could not write the browser preference", e))?;
                    }
                    for pattern in &update.added {
                        changes.push(format!(
                            "added our {AUTO_SELECT_POLICY} entry for {pattern} to {domain} ({browser})"
                        ));
                    }
                    for pattern in &update.retired {
                        changes.push(format!(
                            "removed our {AUTO_SELECT_POLICY} entry for {pattern} from {domain} ({browser})"
                        ));
                    }
                    written.insert(domain.to_owned(), update.written);
                }
                // Someone else's value of another shape: report, do not overwrite.
                Err(reason) => tracing::warn!(%domain, "{reason}"),
            }
            if sys::app_value_is_forced(AUTO_SELECT_POLICY, domain) {
                tracing::info!(%domain, "a managed {AUTO_SELECT_POLICY} is in force; the user-level entry is a fallback");
            }
        }
        Ok(changes)
    }
}

impl BrowserIntegration for MacBrowsers {
    fn apply(
        &self,
        scope: Scope,
        target: &BrowserTarget<'_>,
        identity: Option<&Identity>,
        written: &mut WrittenEntries,
    ) -> Result<Vec<String>, PlatformError> {
        match scope {
            Scope::System => Err(PlatformError::Unavailable {
                what: "a system-wide browser policy written by the agent",
                hint: "on macOS deploy the profile from `devicetrust-agent profile browsers` with the MDM",
            }),
            Scope::User => {
                // Both checks before anything is written: Chrome's entries and Safari's names
                // come from the same origin validator.
                let entries = Self::wanted(target)?;
                let origins = self.safari_origins(target, &entries)?;
                let mut changes = self.apply_chromium(&entries, written)?;
                if let Some(identity) = identity {
                    changes.extend(self.apply_safari(
                        &origins,
                        identity,
                        target.issuer_common_name,
                        written,
                    )?);
                }
                Ok(changes)
            }
        }
    }

    fn status(&self, target: &BrowserTarget<'_>) -> Result<Vec<BrowserStatus>, PlatformError> {
        let entries = Self::wanted(target)?;
        let mut out: Vec<BrowserStatus> = CHROMIUM_BROWSERS
            .iter()
            .map(|(browser, domain)| {
                let effective = sys::app_value(AUTO_SELECT_POLICY, domain);
                let forced = sys::app_value_is_forced(AUTO_SELECT_POLICY, domain);
                browsers::chromium_status(browser, effective.as_ref(), forced, &entries)
            })
            .collect();
        let ours = self.our_certificate();
        let found: Vec<(String, Vec<(String, bool)>)> = self
            .safari_origins(target, &entries)?
            .into_iter()
            .map(|origin| {
                let names = origin
                    .names
                    .into_iter()
                    .map(|name| {
                        let matches = match (&ours, sys::preferred_identity(&name)) {
                            (Some(cert), Some(preferred)) => sys::identity_has_certificate(&preferred, cert),
                            _ => false,
                        };
                        (name, matches)
                    })
                    .collect();
                (origin.origin, names)
            })
            .collect();
        out.push(browsers::safari_status(&found));
        Ok(out)
    }

    fn remove(
        &self,
        scope: Scope,
        target: Option<&BrowserTarget<'_>>,
        written: &WrittenEntries,
    ) -> Result<Vec<String>, PlatformError> {
        if scope == Scope::System {
            return Ok(Vec::new());
        }
        // The cert-auth domain's entry names our CA's own site and is always ours; other
        // entries only when recorded as added by the agent.
        let entries = match target {
            Some(target) => Self::wanted(target)?,
            None => Vec::new(),
        };
        let always: Vec<OurEntry> = entries.first().cloned().into_iter().collect();
        let mut removed = Vec::new();
        for (browser, domain) in CHROMIUM_BROWSERS {
            let user = sys::user_value(AUTO_SELECT_POLICY, domain);
            let recorded = written.get(domain).cloned().unwrap_or_default();
            if let Some(list) = browsers::chromium_user_removal(user.as_ref(), &always, &recorded) {
                let value = (!list.is_empty())
                    .then(|| plist::Value::Array(list.into_iter().map(plist::Value::String).collect()));
                sys::set_user_value(AUTO_SELECT_POLICY, domain, value.as_ref())
                    .map_err(|e| backend("could not write the browser preference", e))?;
                removed.push(format!("our {AUTO_SELECT_POLICY} entries from {domain} ({browser})"));
            }
        }
        let Some(target) = target else { return Ok(removed) };
        // The preferences for the cert-auth origin and host name name our CA's own site, so any
        // identity preference there is ours. The organisation wildcard and the protected
        // origins' names may be shared with other tools: removed only while they point at our
        // identity. A preference whose identity is already gone cannot be seen, so this runs
        // before the keychain is deleted.
        let our_cert = self.our_certificate();
        let origins = self.safari_origins(target, &entries)?;
        let recorded = written.get(SAFARI_LIST).cloned().unwrap_or_default();
        let mut names: Vec<(String, bool)> = Vec::new();
        for (index, origin) in origins.iter().enumerate() {
            for (position, name) in origin.names.iter().enumerate() {
                names.push((name.clone(), index == 0 && position < 2));
            }
        }
        names.extend(browsers::safari_retired_names(&recorded, &origins).into_iter().map(|n| (n, false)));
        for (name, always_ours) in names {
            let Some(preferred) = sys::preferred_identity(&name) else { continue };
            let points_at_us =
                our_cert.as_ref().is_some_and(|cert| sys::identity_has_certificate(&preferred, cert));
            if !always_ours && !points_at_us {
                continue;
            }
            match sys::set_preferred_identity(None, &name) {
                Ok(()) => removed.push(format!("the identity preference for {name} (Safari)")),
                Err(e) if sys::is_not_found(&e) => {}
                Err(e) => return Err(backend("could not remove the identity preference", e)),
            }
        }
        Ok(removed)
    }
}

/// Whether `identity`'s certificate was issued by the CA whose issuer CN is `issuer_cn`
/// (what the browsers' filters match too).
fn issued_by(identity: &SecIdentity, issuer_cn: &str) -> bool {
    identity
        .certificate()
        .ok()
        .and_then(|c| ca_client::cert::CertificateInfo::from_der(&c.to_der()).ok())
        .is_some_and(|info| info.issuer_cn() == Some(issuer_cn))
}
