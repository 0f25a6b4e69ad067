//! The agent's configuration file: where it is looked for, what it may say, and checks.
//!
//! `--config PATH` names the file (it must exist). Otherwise the first file that exists of
//! `/etc/devicetrust/agent.toml` (the administrator's) and
//! `$XDG_CONFIG_HOME/devicetrust/agent.toml` (default `~/.config/devicetrust/agent.toml`) is
//! used, and without either the defaults apply. Unknown keys are errors, so that a typo does
//! not silently fall back to a default. Relative paths in the file are relative to the file's
//! directory.
//!
//! As root ([`Trust::RootOnly`]) only `/etc/devicetrust/agent.toml` is looked for: `sudo -E`
//! or `su` without `-` keep a user's `HOME` and XDG variables, and a file there is the user's
//! to write. The file read as root, whether that one or one named by `--config`, and the
//! `ca_bundle` it names must pass [`Trust::resolve`] (owned by root, not writable by group or
//! others, in directories only root can change), or the agent refuses to go on.

use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use serde::Deserialize;
use url::Url;

use crate::trust::{Refused, Trust};

/// The administrator's configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/devicetrust/agent.toml";

/// Largest accepted `renew_before_days`.
pub(crate) const MAX_RENEW_BEFORE_DAYS: u32 = 3650;

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The CA's base URL (`https://`).
    pub ca_url: Option<String>,
    /// PEM file of the roots trusted for the CA's TLS certificate (pinned: nothing else is
    /// trusted); without it the system's roots are used.
    pub ca_bundle: Option<PathBuf>,
    /// Renew when fewer days than this remain (capped at a third of the lifetime); default 30.
    pub renew_before_days: Option<u32>,
    /// Replaces the device's hardware UUID.
    pub device_udid: Option<String>,
    /// Replaces the device's serial number.
    pub device_serial: Option<String>,
    /// Replaces the data directory (default `$XDG_DATA_HOME/devicetrust`).
    pub data_dir: Option<PathBuf>,
    /// Time allowed for each request to the CA, in seconds; default 30.
    pub ca_timeout_seconds: Option<u64>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigError {
    /// The file named by `--config` does not exist or cannot be read.
    #[error("could not read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("the configuration file {path} is invalid at {location}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// `line L, column C` (1-based), or `an unknown place` when the parser gave none.
        location: String,
        /// The parser's message (it names the key).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{key} in {source_name} is invalid: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The file, or "the defaults".
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A value the command needs is not configured.
    #[error("{key} is not set; add it to {where_}")]
    Missing {
        /// The key.
        key: &'static str,
        /// Where it could be set.
        where_: String,
    },
    /// The CA bundle cannot be read.
    #[error("could not read the CA bundle {path}")]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Running as root, a file to read could be changed by someone other than root.
    #[error(transparent)]
    Untrusted(#[from] Refused),
}

/// The configuration in effect, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The values, with relative paths resolved.
    pub config: Config,
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// Whether the file was named by `--config` (the scheduler then passes it on).
    pub explicit: bool,
    /// Whose files may be read: as root, only root's (the CA bundle is checked when read).
    pub trust: Trust,
}

impl Loaded {
    fn source_name(&self) -> String {
        self.path.as_ref().map_or_else(|| "the defaults".to_owned(), |p| p.display().to_string())
    }

    /// The CA URL, checked; `Ok(None)` when not configured.
    pub(crate) fn ca_url(&self) -> Result<Option<Url>, ConfigError> {
        let Some(raw) = &self.config.ca_url else { return Ok(None) };
        let invalid =
            |reason: String| ConfigError::Invalid { key: "ca_url", source_name: self.source_name(), reason };
        let url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
        if url.scheme() != "https" {
            return Err(invalid(format!("the scheme must be https, not {}", url.scheme())));
        }
        if url.host().is_none() {
            return Err(invalid("no host".to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials do not belong in the url".to_owned()));
        }
        Ok(Some(url))
    }

    /// The CA URL, required.
    pub(crate) fn require_ca_url(&self) -> Result<Url, ConfigError> {
        self.ca_url()?.ok_or_else(|| ConfigError::Missing { key: "ca_url", where_: self.where_to_set() })
    }

    fn where_to_set(&self) -> String {
        match (&self.path, self.trust) {
            (Some(path), _) => format!("{}, or pass --ca-url URL", path.display()),
            (None, Trust::RootOnly) => {
                let mut text =
                    format!("{SYSTEM_CONFIG} (or a file passed with --config), or pass --ca-url URL");
                // A user's own file is not read as root (anyone could have written it): say so
                // when there is one, rather than let it look ignored for no reason.
                let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
                let home = std::env::var_os("HOME").map(PathBuf::from);
                if let Some(user) = user_config_path(xdg.as_deref(), home.as_deref())
                    && user.exists()
                {
                    text.push_str(&format!(" (as root the agent does not read {})", user.display()));
                }
                text
            }
            (None, Trust::User) => format!(
                "{SYSTEM_CONFIG} or ~/.config/devicetrust/agent.toml (or a file passed with --config), or pass --ca-url URL"
            ),
        }
    }

    /// The renewal window.
    pub(crate) fn renew_before(&self) -> Result<TimeDelta, ConfigError> {
        match self.config.renew_before_days {
            None => Ok(crate::decision::schedule::DEFAULT_RENEW_BEFORE),
            Some(days @ 1..=MAX_RENEW_BEFORE_DAYS) => Ok(TimeDelta::days(i64::from(days))),
            Some(days) => Err(ConfigError::Invalid {
                key: "renew_before_days",
                source_name: self.source_name(),
                reason: format!("{days} is not between 1 and {MAX_RENEW_BEFORE_DAYS}"),
            }),
        }
    }

    /// The request timeout.
    pub(crate) fn ca_timeout(&self) -> Result<std::time::Duration, ConfigError> {
        match self.config.ca_timeout_seconds {
            None => Ok(ca_client::client::DEFAULT_TIMEOUT),
            Some(secs @ 1..=600) => Ok(std::time::Duration::from_secs(secs)),
            Some(secs) => Err(ConfigError::Invalid {
                key: "ca_timeout_seconds",
                source_name: self.source_name(),
                reason: format!("{secs} is not between 1 and 600"),
            }),
        }
    }

    /// The pinned CA bundle's bytes, if configured; as root, only from a file only root can
    /// change (whoever can replace the roots can show the agent another CA's metadata).
    pub(crate) fn ca_bundle(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.config.ca_bundle else { return Ok(None) };
        self.read_bundle(path).map(Some)
    }

    /// Reads the PEM roots at `path` (the configured bundle or a `--ca-bundle` flag), checked
    /// as [`Loaded::ca_bundle`] checks the configured one.
    pub(crate) fn read_bundle(&self, path: &Path) -> Result<Vec<u8>, ConfigError> {
        let bundle_error = |source| ConfigError::Bundle { path: path.to_owned(), source };
        std::fs::metadata(path).map_err(bundle_error)?;
        let checked = self.trust.resolve("the CA bundle", path)?;
        std::fs::read(checked).map_err(bundle_error)
    }

    /// Checks every value that can be checked without the network.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.ca_url()?;
        self.renew_before()?;
        self.ca_timeout()?;
        for (key, value) in
            [("device_udid", &self.config.device_udid), ("device_serial", &self.config.device_serial)]
        {
            if let Some(value) = value
                && (value.trim().is_empty() || value.chars().any(char::is_control))
            {
                return Err(ConfigError::Invalid {
                    key,
                    source_name: self.source_name(),
                    reason: "empty or has control characters".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The user's configuration file: `$XDG_CONFIG_HOME/devicetrust/agent.toml`, else
/// `$HOME/.config/devicetrust/agent.toml`.
pub(crate) fn user_config_path(xdg_config_home: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let base = match xdg_config_home.filter(|p| p.is_absolute()) {
        Some(xdg) => xdg.to_owned(),
        None => home.filter(|h| h.is_absolute())?.join(".config"),
    };
    Some(base.join("devicetrust").join("agent.toml"))
}

/// Loads the configuration: `explicit` if given, else the first existing of `candidates`,
/// else the defaults. Under [`Trust::RootOnly`] the file read must pass [`Trust::resolve`].
pub(crate) fn load(
    explicit: Option<&Path>,
    candidates: &[PathBuf],
    trust: Trust,
) -> Result<Loaded, ConfigError> {
    let (path, is_explicit) = match explicit {
        Some(path) => (Some(path.to_owned()), true),
        None => (candidates.iter().find(|p| p.is_file()).cloned(), false),
    };
    let Some(path) = path else {
        return Ok(Loaded { config: Config::default(), path: None, explicit: false, trust });
    };
    let read_error = |source| ConfigError::Read { path: path.clone(), source };
    // A missing file is reported as such, before the check (which would say it cannot inspect it).
    std::fs::metadata(&path).map_err(read_error)?;
    let checked = trust.resolve("the configuration file", &path)?;
    let text = std::fs::read_to_string(&checked).map_err(read_error)?;
    let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.clone(),
        location: e
            .span()
            .map_or_else(|| "an unknown place".to_owned(), |span| line_and_column(&text, span.start)),
        message: e.message().trim().to_owned(),
    })?;
    // An absolute path names the same file whatever the working directory of a timer run.
    let path = std::path::absolute(&path).unwrap_or(path);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for slot in [&mut config.ca_bundle, &mut config.data_dir] {
        if let Some(p) = slot.as_mut()
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
    }
    let loaded = Loaded { config, path: Some(path), explicit: is_explicit, trust };
    loaded.validate()?;
    Ok(loaded)
}

/// The search list: the system file, then (for a user, never for root) the user's.
pub(crate) fn candidates(trust: Trust, xdg_config_home: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(SYSTEM_CONFIG)];
    if trust == Trust::User {
        out.extend(user_config_path(xdg_config_home, home));
    }
    out
}

/// The search list for this environment ([`candidates`] with `XDG_CONFIG_HOME` and `HOME`).
pub(crate) fn default_candidates(trust: Trust) -> Vec<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    candidates(trust, xdg.as_deref(), home.as_deref())
}

/// `line L, column C` (1-based, columns in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> String {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn ok_cases() {
        let temp = tempfile::tempdir().expect("tempdir");
        let full = write(
            temp.path(),
            "full.toml",
            r#"
            ca_url = "https://ca.example.com:8443"
            ca_bundle = "bundle.pem"
            renew_before_days = 20
            device_udid = "UDID"
            device_serial = "SERIAL"
            data_dir = "/var/tmp/dt"
            ca_timeout_seconds = 5
            "#,
        );
        let loaded = load(Some(&full), &[], Trust::User).expect("ok/full");
        assert!(loaded.explicit);
        assert_eq!(loaded.config.ca_bundle, Some(temp.path().join("bundle.pem")), "relative to the file");
        assert_eq!(loaded.config.data_dir, Some(PathBuf::from("/var/tmp/dt")));
        assert_eq!(loaded.renew_before().expect("window"), TimeDelta::days(20));
        assert_eq!(loaded.require_ca_url().expect("url").as_str(), "https://ca.example.com:8443/");

        let none = load(None, &[temp.path().join("missing.toml")], Trust::User).expect("ok/defaults");
        assert_eq!(none.path, None);
        assert_eq!(none.renew_before().expect("default"), TimeDelta::days(30));
        assert!(
            matches!(none.require_ca_url(), Err(ConfigError::Missing { key: "ca_url", .. })),
            "ca_url is required by commands that talk to the CA"
        );

        let second = write(temp.path(), "user.toml", "renew_before_days = 10\n");
        let picked = load(None, &[temp.path().join("missing.toml"), second.clone(), full], Trust::User)
            .expect("ok/first-existing");
        assert_eq!(picked.path, Some(second));
        assert!(!picked.explicit);
    }

    /// A parse error points at the file, the line and column, and names the key.
    #[test]
    fn fail_parse_errors_point_at_the_line() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path =
            write(temp.path(), "c.toml", "# comment\nrenew_before_days = 10\nca_ulr = \"https://x\"\n");
        let error = load(Some(&path), &[], Trust::User).expect_err("unknown key");
        let text = error.to_string();
        assert!(text.contains(&path.display().to_string()), "the file: {text}");
        assert!(text.contains("line 3, column 1"), "the place: {text}");
        assert!(text.contains("ca_ulr"), "the key: {text}");
        assert_eq!(line_and_column("a\nbé c", 6), "line 2, column 4", "columns count characters");

        let none = Loaded { config: Config::default(), path: None, explicit: false, trust: Trust::User };
        let missing = none.require_ca_url().expect_err("no ca_url").to_string();
        assert!(missing.contains("--ca-url"), "names the flag: {missing}");
    }

    #[test]
    fn fail_cases() {
        let temp = tempfile::tempdir().expect("tempdir");
        // The key an invalid value is reported under; `None`: the file does not parse.
        let cases: [(&str, &str, Option<&str>); 9] = [
            ("fail/unknown-key", "ca_ulr = \"https://x\"\n", None),
            ("fail/not-toml", "ca_url = \n", None),
            ("fail/http", "ca_url = \"http://ca.example.com\"\n", Some("ca_url")),
            ("fail/credentials", "ca_url = \"https://u:p@ca.example.com\"\n", Some("ca_url")),
            ("fail/window-zero", "renew_before_days = 0\n", Some("renew_before_days")),
            ("fail/window-negative", "renew_before_days = -1\n", None),
            ("fail/window-huge", "renew_before_days = 99999\n", Some("renew_before_days")),
            ("fail/timeout-zero", "ca_timeout_seconds = 0\n", Some("ca_timeout_seconds")),
            ("fail/blank-udid", "device_udid = \" \"\n", Some("device_udid")),
        ];
        for (name, text, key) in cases {
            let path = write(temp.path(), "c.toml", text);
            let result = load(Some(&path), &[], Trust::User);
            let ok = match (&result, key) {
                (Err(ConfigError::Parse { .. }), None) => true,
                (Err(ConfigError::Invalid { key: got, .. }), Some(want)) => *got == want,
                _ => false,
            };
            assert!(ok, "{name}: {result:?}");
        }
        assert!(
            matches!(
                load(Some(&temp.path().join("nope.toml")), &[], Trust::RootOnly),
                Err(ConfigError::Read { .. })
            ),
            "fail/missing-explicit"
        );
    }

    #[test]
    fn example_file_documents_every_key() {
        let text = include_str!("../agent.example.toml");
        let config: Config = toml::from_str(text).expect("the example parses");
        assert!(config.ca_url.is_some());
        // Commented-out keys must be real keys too.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let all: Config = toml::from_str(&uncommented).expect("every documented key parses");
        assert!(all.device_udid.is_some() && all.device_serial.is_some() && all.data_dir.is_some());
        assert!(
            all.ca_timeout_seconds.is_some() && all.renew_before_days.is_some() && all.ca_bundle.is_some()
        );
    }

    #[test]
    fn user_config_path_table() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(user_config_path(p("/x").as_deref(), p("/h").as_deref()), p("/x/devicetrust/agent.toml"));
        assert_eq!(
            user_config_path(p("x").as_deref(), p("/h").as_deref()),
            p("/h/.config/devicetrust/agent.toml")
        );
        assert_eq!(user_config_path(None, None), None);
    }

    #[test]
    fn candidates_table() {
        let p = |s: &str| Some(PathBuf::from(s));
        let system = PathBuf::from(SYSTEM_CONFIG);
        let cases = [
            (
                "ok/user-system-then-xdg",
                Trust::User,
                vec![system.clone(), "/x/devicetrust/agent.toml".into()],
            ),
            // sudo -E keeps the user's HOME and XDG_CONFIG_HOME: root never looks there.
            ("ok/root-system-only", Trust::RootOnly, vec![system.clone()]),
        ];
        for (name, trust, want) in cases {
            assert_eq!(candidates(trust, p("/x").as_deref(), p("/home/alice").as_deref()), want, "{name}");
        }
    }

    /// As root, a file another user owns is refused, named, and never parsed; as a user it is
    /// read. (Run as root, the test hands the file to `nobody`; run as a user, the file is
    /// already not root's.)
    #[test]
    fn root_refuses_a_file_it_does_not_own() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = write(temp.path(), "agent.toml", "ca_url = \"https://ca.example.com\"\n");
        let bundle = write(temp.path(), "bundle.pem", "roots");
        if nix::unistd::geteuid().is_root() {
            let nobody = Some(nix::unistd::Uid::from_raw(65534));
            nix::unistd::chown(&path, nobody, None).expect("chown");
            nix::unistd::chown(&bundle, nobody, None).expect("chown");
        }
        let err = load(Some(&path), &[], Trust::RootOnly).expect_err("fail/not-root-owned");
        assert!(matches!(err, ConfigError::Untrusted(_)), "{err:?}");
        assert!(err.to_string().contains("is not owned by root"), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");

        let mut loaded = load(Some(&path), &[], Trust::User).expect("ok/a-user-reads-their-file");
        loaded.config.ca_bundle = Some(bundle.clone());
        assert_eq!(loaded.ca_bundle().expect("ok/user-bundle"), Some(b"roots".to_vec()));
        loaded.trust = Trust::RootOnly;
        assert!(matches!(loaded.ca_bundle(), Err(ConfigError::Untrusted(_))), "fail/bundle-not-root-owned");
    }
}
