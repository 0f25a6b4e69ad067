//! Browsers and managed preferences through CFPreferences and identity preferences.
//!
//! Chrome and Edge get our `AutoSelectCertificateForUrls` entry in the user's own preference
//! domains, added only when no entry for the cert-auth origin exists and never touching any
//! other entry; whether the effective value is managed comes from
//! `CFPreferencesAppValueIsForced`. Safari gets identity preferences pointing at the current
//! identity. The agent's own managed preferences are read here too, forced values only.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::autoselect::OurEntry;
use crate::platform::{BrowserIntegration, BrowserStatus, BrowserTarget, Identity, PlatformError, Scope};

use super::browsers::{self, AUTO_SELECT_POLICY, CHROMIUM_BROWSERS};
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

fn backend(what: &str, e: impl std::fmt::Display) -> PlatformError {
    PlatformError::Backend(format!("{what}: {e}"))
}

/// Safari identity preferences and Chrome/Edge user preferences.
#[derive(Debug)]
pub(super) struct MacBrowsers {
    pub store: Arc<KeychainStore>,
    pub org_domain: Option<String>,
}

impl MacBrowsers {
    fn entry(target: &BrowserTarget<'_>) -> Result<OurEntry, PlatformError> {
        OurEntry::new(target.cert_auth_domain, target.issuer_common_name)
            .map_err(|e| backend("the browser target", e))
    }

    fn safari_names(&self, target: &BrowserTarget<'_>) -> Result<Vec<String>, PlatformError> {
        browsers::safari_identity_names(target.cert_auth_domain, self.org_domain.as_deref())
            .map_err(|e| backend("the browser target", e))
    }

    fn apply_safari(
        &self,
        target: &BrowserTarget<'_>,
        identity: &Identity,
    ) -> Result<Vec<String>, PlatformError> {
        let sec_identity = self
            .store
            .sec_identity(&identity.certificate_pem)?
            .ok_or(PlatformError::Missing("the identity in the device keychain"))?;
        let cert = sec_identity.certificate().map_err(|e| backend("the identity's certificate", e))?;
        let mut changes = Vec::new();
        for name in self.safari_names(target)? {
            if sys::preferred_identity(&name).is_some_and(|p| sys::identity_has_certificate(&p, &cert)) {
                continue;
            }
            sys::set_preferred_identity(Some(&sec_identity), &name)
                .map_err(|e| backend("could not set the identity preference", e))?;
            changes.push(format!("set the identity preference for {name} (Safari)"));
        }
        Ok(changes)
    }

    fn apply_chromium(&self, entry: &OurEntry) -> Result<Vec<String>, PlatformError> {
        let mut changes = Vec::new();
        for (browser, domain) in CHROMIUM_BROWSERS {
            let user = sys::user_value(AUTO_SELECT_POLICY, domain);
            match browsers::chromium_user_update(user.as_ref(), entry) {
                Ok(Some(list)) => {
                    let value = plist::Value::Array(list.into_iter().map(plist::Value::String).collect());
                    sys::set_user_value(AUTO_SELECT_POLICY, domain, Some(&value))
                        .map_err(|e| backend("could not write the browser preference", e))?;
                    changes.push(format!("added our {AUTO_SELECT_POLICY} entry to {domain} ({browser})"));
                }
                Ok(None) => {}
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
    ) -> Result<Vec<String>, PlatformError> {
        match scope {
            Scope::System => Err(PlatformError::Unavailable {
                what: "a system-wide browser policy written by the agent",
                hint: "on macOS deploy the profile from `devicetrust-agent profile browsers` with the MDM",
            }),
            Scope::User => {
                // Both checks before anything is written: Chrome's entry and Safari's names
                // come from the same origin validator.
                let entry = Self::entry(target)?;
                self.safari_names(target)?;
                let mut changes = self.apply_chromium(&entry)?;
                if let Some(identity) = identity {
                    changes.extend(self.apply_safari(target, identity)?);
                }
                Ok(changes)
            }
        }
    }

    fn status(&self, target: &BrowserTarget<'_>) -> Result<Vec<BrowserStatus>, PlatformError> {
        let entry = Self::entry(target)?;
        let mut out: Vec<BrowserStatus> = CHROMIUM_BROWSERS
            .iter()
            .map(|(browser, domain)| {
                let effective = sys::app_value(AUTO_SELECT_POLICY, domain);
                let forced = sys::app_value_is_forced(AUTO_SELECT_POLICY, domain);
                browsers::chromium_status(browser, effective.as_ref(), forced, &entry)
            })
            .collect();
        let current = crate::platform::IdentityStore::current(self.store.as_ref())?;
        let ours = match &current {
            Some(identity) => self.store.sec_identity(&identity.certificate_pem)?,
            None => None,
        };
        let names = self.safari_names(target)?;
        let found: Vec<(String, bool)> = names
            .into_iter()
            .map(|name| {
                let matches = match (&ours, sys::preferred_identity(&name)) {
                    (Some(ours), Some(preferred)) => {
                        ours.certificate().is_ok_and(|c| sys::identity_has_certificate(&preferred, &c))
                    }
                    _ => false,
                };
                (name, matches)
            })
            .collect();
        out.push(browsers::safari_status(&found));
        Ok(out)
    }

    fn remove(&self, scope: Scope, target: Option<&BrowserTarget<'_>>) -> Result<Vec<String>, PlatformError> {
        if scope == Scope::System {
            return Ok(Vec::new());
        }
        let Some(target) = target else { return Ok(Vec::new()) };
        let entry = Self::entry(target)?;
        let mut removed = Vec::new();
        for (browser, domain) in CHROMIUM_BROWSERS {
            let user = sys::user_value(AUTO_SELECT_POLICY, domain);
            if let Some(list) = browsers::chromium_user_removal(user.as_ref(), &entry) {
                let value = (!list.is_empty())
                    .then(|| plist::Value::Array(list.into_iter().map(plist::Value::String).collect()));
                sys::set_user_value(AUTO_SELECT_POLICY, domain, value.as_ref())
                    .map_err(|e| backend("could not write the browser preference", e))?;
                removed.push(format!("our {AUTO_SELECT_POLICY} entry from {domain} ({browser})"));
            }
        }
        // The preferences for the cert-auth origin and host name name our CA's own site, so any
        // identity preference there is ours. The organisation wildcard may be shared with
        // other tools: removed only while it points at our identity. A preference whose
        // identity is already gone cannot be seen, so this runs before the keychain is deleted.
        let ours = match crate::platform::IdentityStore::current(self.store.as_ref()) {
            Ok(Some(identity)) => self.store.sec_identity(&identity.certificate_pem).ok().flatten(),
            _ => None,
        };
        let our_cert = ours.as_ref().and_then(|i| i.certificate().ok());
        for (position, name) in self.safari_names(target)?.into_iter().enumerate() {
            let Some(preferred) = sys::preferred_identity(&name) else { continue };
            let points_at_us =
                our_cert.as_ref().is_some_and(|cert| sys::identity_has_certificate(&preferred, cert));
            if position >= 2 && !points_at_us {
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
