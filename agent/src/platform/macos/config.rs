//! Configuration layering on macOS: forced managed preferences of the domain
//! `com.devicetrust.agent` (a configuration profile from the MDM) over the TOML file.
//!
//! Only *forced* values count. A plain user default (`defaults write com.devicetrust.agent
//! ca_url ...`) is ignored on purpose: any local user could write one, and pointing the agent
//! at another CA must take an administrator. The keys are the TOML file's own names, so that
//! a profile and a file read the same (`policies/devicetrust-agent.mobileconfig` is built by
//! `crate::mobileconfig` with these names).
//!
//! Three keys are the macOS backend's and never enter [`Config`]:
//! `enrollment_token` (read only by the Jamf entry point and piped to `enroll`), `allowlist`
//! and `org_domain` (see [`MacSettings`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Config;
use crate::token::Secret;

/// Keys taken from managed preferences into the configuration.
pub(crate) const CONFIG_KEYS: [&str; 4] = ["ca_url", "ca_bundle", "renew_before_days", "ca_timeout_seconds"];

/// The managed keys the macOS backend reads for itself.
pub(crate) const MAC_KEYS: [&str; 3] = ["allowlist", "org_domain", "enrollment_token"];

/// Every key read from the managed preferences domain.
pub(crate) fn managed_keys() -> impl Iterator<Item = &'static str> {
    CONFIG_KEYS.iter().chain(MAC_KEYS.iter()).copied()
}

/// Why a managed value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigLayerError {
    /// The value's type has no TOML equivalent, or is not the type the key needs.
    #[error("managed preference {key} has the wrong type: expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// Settings only the macOS backend reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct MacSettings {
    /// `allowlist`: the app allowlist, replacing the file and the defaults.
    pub allowlist: Option<Vec<String>>,
    /// `org_domain`: Safari also gets an identity preference for `*.<org_domain>`.
    pub org_domain: Option<String>,
    /// `enrollment_token`: the token the Jamf entry point pipes to `enroll`.
    pub enrollment_token: Option<Secret>,
}

/// Lays the forced managed values of [`CONFIG_KEYS`] over `config` (what the TOML file
/// said, or the defaults); returns the keys a managed value set, for `status` and the log.
/// Ranges are checked afterwards by [`crate::config::Loaded::validate`], as for the file's.
pub(crate) fn overlay(
    config: &mut Config,
    managed: &BTreeMap<String, plist::Value>,
) -> Result<Vec<&'static str>, ConfigLayerError> {
    let mut applied = Vec::new();
    for key in CONFIG_KEYS {
        let Some(value) = managed.get(key) else { continue };
        let wrong = |expected| ConfigLayerError::WrongType { key: key.to_owned(), expected };
        match key {
            "ca_url" => config.ca_url = Some(value.as_string().ok_or(wrong("a string"))?.to_owned()),
            "ca_bundle" => {
                let path = PathBuf::from(value.as_string().ok_or(wrong("a string"))?);
                // A profile has no directory its paths could be relative to.
                if !path.is_absolute() {
                    return Err(wrong("an absolute path"));
                }
                config.ca_bundle = Some(path);
            }
            "renew_before_days" => {
                let days = value.as_unsigned_integer().and_then(|d| u32::try_from(d).ok());
                config.renew_before_days = Some(days.ok_or(wrong("a non-negative integer"))?);
            }
            "ca_timeout_seconds" => {
                config.ca_timeout_seconds =
                    Some(value.as_unsigned_integer().ok_or(wrong("a non-negative integer"))?);
            }
            _ => continue,
        }
        applied.push(key);
    }
    Ok(applied)
}

/// Reads [`MAC_KEYS`] from the forced managed values.
pub(crate) fn mac_settings(
    managed: &BTreeMap<String, plist::Value>,
) -> Result<MacSettings, ConfigLayerError> {
    let string = |key: &str| -> Result<Option<String>, ConfigLayerError> {
        managed
            .get(key)
            .map(|v| {
                v.as_string()
                    .map(str::to_owned)
                    .ok_or(ConfigLayerError::WrongType { key: key.to_owned(), expected: "a string" })
            })
            .transpose()
    };
    let allowlist = managed
        .get("allowlist")
        .map(|v| {
            super::browsers::string_list(v).ok_or(ConfigLayerError::WrongType {
                key: "allowlist".into(),
                expected: "an array of strings",
            })
        })
        .transpose()?;
    Ok(MacSettings {
        allowlist,
        org_domain: string("org_domain")?,
        enrollment_token: string("enrollment_token")?
            .filter(|t| !t.trim().is_empty())
            .map(|t| Secret::new(t.trim().to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::macos::fixture;
    use plist::Value;

    fn managed_from_fixture() -> BTreeMap<String, Value> {
        let text = fixture("managed-preferences.com.devicetrust.agent.plist");
        let value = Value::from_reader_xml(text.as_bytes()).unwrap();
        value.into_dictionary().unwrap().into_iter().collect()
    }

    #[test]
    fn managed_values_win_over_the_file() {
        let mut config: Config = toml::from_str(
            "ca_url = \"https://file.example.com\"\nrenew_before_days = 10\ndevice_udid = \"FROM-FILE\"\n",
        )
        .unwrap();
        let applied = overlay(&mut config, &managed_from_fixture()).unwrap();
        assert_eq!(applied, ["ca_url", "ca_bundle", "renew_before_days"]);
        assert_eq!(config.ca_url.as_deref(), Some("https://ca.example.com:8443"));
        assert_eq!(
            config.ca_bundle.as_deref(),
            Some(std::path::Path::new("/Library/Application Support/DeviceTrust/ca-bundle.pem"))
        );
        assert_eq!(config.renew_before_days, Some(21));
        // Keys the profile does not set stay as the file has them.
        assert_eq!(config.device_udid.as_deref(), Some("FROM-FILE"));
        assert_eq!(config.ca_timeout_seconds, None);
    }

    #[test]
    fn mac_settings_from_fixture() {
        let settings = mac_settings(&managed_from_fixture()).unwrap();
        assert_eq!(
            settings.allowlist.as_deref(),
            Some(&["apple-tool:".to_owned(), "apple:".to_owned(), "teamid:EQHXZ8M8AV".to_owned()][..])
        );
        assert_eq!(settings.org_domain.as_deref(), Some("example.com"));
        assert_eq!(settings.enrollment_token.as_ref().map(Secret::expose), Some("example-enrollment-token"));
        assert!(!format!("{settings:?}").contains("example-enrollment-token"));
    }

    #[test]
    fn overlay_table() {
        let entry = |k: &str, v: Value| BTreeMap::from([(k.to_owned(), v)]);
        let cases: Vec<(&str, BTreeMap<String, Value>, Result<Config, &str>)> = vec![
            ("ok/nothing-managed", BTreeMap::new(), Ok(Config::default())),
            (
                "ok/days",
                entry("renew_before_days", Value::Integer(7.into())),
                Ok(Config { renew_before_days: Some(7), ..Config::default() }),
            ),
            (
                "ok/timeout",
                entry("ca_timeout_seconds", Value::Integer(5.into())),
                Ok(Config { ca_timeout_seconds: Some(5), ..Config::default() }),
            ),
            (
                "ok/unknown-key-ignored",
                entry("PayloadUUID", Value::String("x".into())),
                Ok(Config::default()),
            ),
            ("ok/backend-key-not-config", entry("allowlist", Value::Array(vec![])), Ok(Config::default())),
            (
                "fail/days-as-string",
                entry("renew_before_days", Value::String("7".into())),
                Err("renew_before_days"),
            ),
            (
                "fail/negative-days",
                entry("renew_before_days", Value::Integer((-1).into())),
                Err("renew_before_days"),
            ),
            (
                "fail/days-overflow",
                entry("renew_before_days", Value::Integer(u64::MAX.into())),
                Err("renew_before_days"),
            ),
            ("fail/url-not-string", entry("ca_url", Value::Boolean(true)), Err("ca_url")),
            (
                "fail/relative-bundle",
                entry("ca_bundle", Value::String("bundle.pem".into())),
                Err("ca_bundle"),
            ),
        ];
        for (name, managed, want) in cases {
            let mut config = Config::default();
            // The key the refusal names.
            let got = overlay(&mut config, &managed)
                .map(|_| config)
                .map_err(|ConfigLayerError::WrongType { key, .. }| key);
            assert_eq!(got.as_ref().map_err(String::as_str), want.as_ref().map_err(|k| *k), "{name}");
        }
    }

    #[test]
    fn mac_settings_table() {
        let entry = |k: &str, v: Value| BTreeMap::from([(k.to_owned(), v)]);
        assert_eq!(mac_settings(&BTreeMap::new()).unwrap(), MacSettings::default());
        let wrong = |key: &str, expected| Err(ConfigLayerError::WrongType { key: key.to_owned(), expected });
        assert_eq!(
            mac_settings(&entry("allowlist", Value::String("apple:".into()))),
            wrong("allowlist", "an array of strings")
        );
        assert_eq!(mac_settings(&entry("org_domain", Value::Boolean(true))), wrong("org_domain", "a string"));
        assert_eq!(
            mac_settings(&entry("enrollment_token", Value::String("  ".into()))).unwrap().enrollment_token,
            None
        );
    }
}
