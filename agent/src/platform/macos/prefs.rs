//! Browsers and managed preferences through CFPreferences and identity preferences.
//!
//! Chrome and Edge get our `AutoSelectCertificateForUrls` entries (one per origin) in the
//! user's own preference domains, each added only when no entry for its origin exists, and
//! removed only when the agent recorded adding it; no other entry is touched. Whether the
//! effective value is managed comes from `CFPreferencesAppValueIsForced`. Safari gets identity
//! preferences for each origin pointing at the current identity, under the wildcard names its
//! lookup finds ([`super::safari`] decides which; here they are read as stored, written and
//! deleted). The agent's own managed preferences are read here too, forced values only.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::autoselect::OurEntry;
use crate::platform::{
    BrowserIntegration, BrowserStatus, BrowserTarget, Identity, PlatformError, Scope, WrittenEntries,
};

use super::browsers::{self, AUTO_SELECT_POLICY, CHROMIUM_BROWSERS, SAFARI_LIST};
use super::config;
use super::keychain::KeychainStore;
use super::safari::{self, Existing, PointsAt, SafariOrigin};
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
        safari::safari_origins(target.cert_auth_domain, self.org_domain.as_deref(), entries)
            .map_err(|e| backend("the browser target", e))
    }

    fn our_certificate(&self) -> Option<Vec<u8>> {
        let identity = crate::platform::IdentityStore::current(self.store.as_ref()).ok().flatten()?;
        ca_client::cert::CertificateInfo::from_pem(&identity.certificate_pem).ok().map(|c| c.der().to_vec())
    }

    /// Every identity preference as stored, with what it points at: the certificate `ours`
    /// (DER), another of the CA whose issuer CN is `issuer_cn`, or something else.
    fn existing_preferences(
        ours: Option<&[u8]>,
        issuer_cn: &str,
    ) -> Result<(Vec<Existing>, Vec<sys::PreferenceItem>), PlatformError> {
        let items =
            sys::identity_preferences().map_err(|e| backend("could not read the identity preferences", e))?;
        let existing = items
            .iter()
            .map(|item| {
                let points_at = match item.certificate.as_deref() {
                    Some(der) if Some(der) == ours => PointsAt::Current,
                    Some(der) if issued_by(der, issuer_cn) => PointsAt::OurCa,
                    _ => PointsAt::Other,
                };
                Existing { name: item.name.clone(), points_at }
            })
            .collect();
        Ok((existing, items))
    }

    /// Deletes the stored preferences named in `names`; returns a line per deletion.
    fn delete_preferences(
        items: &[sys::PreferenceItem],
        names: &[String],
    ) -> Result<Vec<String>, PlatformError> {
        let mut done = Vec::new();
        for item in items.iter().filter(|i| names.contains(&i.name)) {
            match item.delete() {
                Ok(()) => done.push(format!("the identity preference {:?} (Safari)", item.name)),
                Err(e) if sys::is_not_found(&e) => {}
                Err(e) => return Err(backend("could not remove an identity preference", e)),
            }
        }
        Ok(done)
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
        let ours = ca_client::cert::CertificateInfo::from_pem(&identity.certificate_pem)
            .map(|c| c.der().to_vec())
            .map_err(|e| backend("the identity's certificate", e))?;
        let (existing, items) = Self::existing_preferences(Some(&ours), issuer_cn)?;
        let recorded = written.get(SAFARI_LIST).cloned().unwrap_or_default();
        let plan = safari::plan_apply(origins, &recorded, &existing);
        let mut changes: Vec<String> = Self::delete_preferences(&items, &plan.delete)?
            .into_iter()
            .map(|d| format!("removed {d}"))
            .collect();
        for name in &plan.left_alone {
            changes.push(format!(
                "left the identity preference for {name} alone: it names another identity (Safari)"
            ));
        }
        for name in &plan.set {
            sys::set_preferred_identity(&sec_identity, name)
                .map_err(|e| backend("could not set the identity preference", e))?;
            changes.push(format!("set the identity preference for {name} (Safari)"));
        }
        // The cert-auth domain's names are ours by definition; record the protected origins.
        written.insert(SAFARI_LIST.to_owned(), origins.iter().skip(1).map(|o| o.origin.clone()).collect());
        Ok(changes)
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
                let mut status = browsers::chromium_status(browser, effective.as_ref(), forced, &entries);
                status.installed = std::env::home_dir()
                    .map(|home| browsers::app_bundles(browser, &home).iter().any(|app| app.exists()));
                status
            })
            .collect();
        // What Safari's own lookup would pick, name by name in its order.
        let ours = self.our_certificate();
        let (existing, _) = Self::existing_preferences(ours.as_deref(), target.issuer_common_name)?;
        let found: Vec<(SafariOrigin, Option<(String, safari::Found)>)> = self
            .safari_origins(target, &entries)?
            .into_iter()
            .map(|origin| {
                let names = safari::lookup_names(&origin.url, Some(safari::SAFARI_APP_ID));
                let pick = safari::safari_pick(&names, |name| safari::found_in(&existing, name));
                (origin, pick)
            })
            .collect();
        out.push(safari::safari_status(&found));
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
        // Removed only while they point at an identity of ours, save the legacy names of our
        // CA's own site. A preference whose certificate is already gone cannot be told from
        // someone else's, so this runs before the keychain is deleted.
        let our_cert = self.our_certificate();
        let origins = self.safari_origins(target, &entries)?;
        let recorded = written.get(SAFARI_LIST).cloned().unwrap_or_default();
        let (existing, items) = Self::existing_preferences(our_cert.as_deref(), target.issuer_common_name)?;
        let names = safari::plan_remove(&origins, &recorded, &existing);
        removed.extend(Self::delete_preferences(&items, &names)?);
        Ok(removed)
    }
}

/// Whether the certificate `der` was issued by the CA whose issuer CN is `issuer_cn` (what the
/// browsers' filters match too).
fn issued_by(der: &[u8], issuer_cn: &str) -> bool {
    ca_client::cert::CertificateInfo::from_der(der).is_ok_and(|info| info.issuer_cn() == Some(issuer_cn))
}
