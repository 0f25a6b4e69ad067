//! The per-user LaunchAgent `~/Library/LaunchAgents/com.devicetrust.agent.plist`, generated.
//!
//! It runs `devicetrust-agent run` at every login (`RunAtLoad`) and once a day at a time of
//! its own (`StartCalendarInterval`). A calendar interval, unlike the `StartInterval` of the
//! task we replace, is run on wake when the Mac slept through it, and a per-device minute
//! keeps a fleet from calling the CA in the same minute. The time is the minute of the
//! device's slot (09:00–16:59 local, from the decision core's `schedule`), when Macs are
//! usually awake and online: the run that fires there is the one that renews a due
//! certificate, while a run at login or on wake before the slot's minute waits for it.
//!
//! The plist is a small serde struct written with the `plist` crate. The `launchd` crate
//! (0.3.0) is not used: it writes the key `StartCalendarIntervals`, which launchd ignores.
//! `launchd/com.devicetrust.agent.plist` is an example produced by [`render`]; a test keeps
//! it identical.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::BUNDLE_ID;
use crate::decision::Slot;

/// The job's label, also the plist's file stem.
pub(crate) const LABEL: &str = BUNDLE_ID;

/// Why the plist could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LaunchAgentError {
    /// launchd does not expand `~` or search `PATH`: every path must be absolute.
    #[error("the launch agent needs an absolute path, got {path}")]
    RelativePath {
        /// The offending path.
        path: PathBuf,
    },
    /// launchd plists hold strings; a path that is not UTF-8 cannot be written.
    #[error("the path {path} is not valid UTF-8")]
    NotUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// The serializer failed.
    #[error("could not write the launch agent plist: {reason}")]
    Serialize {
        /// The serializer's message.
        reason: String,
    },
}

/// A local time of day, to the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DailyTime {
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
}

impl DailyTime {
    /// The time of day of the device's slot, when the decision core renews.
    pub(crate) fn from_slot(slot: Slot) -> Self {
        let (hour, minute) = slot.hour_minute();
        Self { hour, minute }
    }
}

/// What the LaunchAgent runs and where it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaunchAgentSpec<'a> {
    /// The agent binary, absolute.
    pub program: &'a Path,
    /// A configuration file passed with `--config`, if one was given explicitly.
    pub config: Option<&'a Path>,
    /// The user's home directory, absolute.
    pub home: &'a Path,
    /// When the daily run happens.
    pub time: DailyTime,
}

/// `~/Library/LaunchAgents/com.devicetrust.agent.plist`.
pub(crate) fn plist_path(home: &Path) -> PathBuf {
    home.join("Library/LaunchAgents").join(format!("{LABEL}.plist"))
}

/// `~/Library/Logs/DeviceTrust`, where launchd writes the job's output.
pub(crate) fn log_dir(home: &Path) -> PathBuf {
    home.join("Library/Logs/DeviceTrust")
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Plist {
    label: &'static str,
    program_arguments: Vec<String>,
    run_at_load: bool,
    start_calendar_interval: CalendarInterval,
    process_type: &'static str,
    standard_out_path: String,
    standard_error_path: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CalendarInterval {
    hour: u8,
    minute: u8,
}

fn absolute_utf8(path: &Path) -> Result<String, LaunchAgentError> {
    if !path.is_absolute() {
        return Err(LaunchAgentError::RelativePath { path: path.to_path_buf() });
    }
    path.to_str().map(str::to_owned).ok_or_else(|| LaunchAgentError::NotUtf8 { path: path.to_path_buf() })
}

/// The plist's XML bytes.
pub(crate) fn render(spec: &LaunchAgentSpec<'_>) -> Result<Vec<u8>, LaunchAgentError> {
    let mut program_arguments = vec![absolute_utf8(spec.program)?, "run".to_owned()];
    if let Some(config) = spec.config {
        program_arguments.push("--config".to_owned());
        program_arguments.push(absolute_utf8(config)?);
    }
    let logs = log_dir(spec.home);
    absolute_utf8(spec.home)?;
    let plist = Plist {
        label: LABEL,
        program_arguments,
        run_at_load: true,
        start_calendar_interval: CalendarInterval { hour: spec.time.hour, minute: spec.time.minute },
        // Background: launchd applies resource limits and keeps the job from slowing the user.
        process_type: "Background",
        standard_out_path: absolute_utf8(&logs.join("agent.out.log"))?,
        standard_error_path: absolute_utf8(&logs.join("agent.err.log"))?,
    };
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, &plist)
        .map_err(|e| LaunchAgentError::Serialize { reason: e.to_string() })?;
    out.push(b'\n');
    Ok(out)
}

/// What an installed plist runs: its program and the `--config` it passes, as [`render`]
/// writes them; `None` for a plist that is not of that shape (edited by someone else).
pub(crate) fn installed_command(bytes: &[u8]) -> Option<(PathBuf, Option<PathBuf>)> {
    let value = plist::Value::from_reader_xml(bytes).ok()?;
    let args = value.as_dictionary()?.get("ProgramArguments")?.as_array()?;
    let args: Vec<&str> = args.iter().map(plist::Value::as_string).collect::<Option<_>>()?;
    match args.as_slice() {
        [program, "run"] => Some((PathBuf::from(program), None)),
        [program, "run", "--config", config] => Some((PathBuf::from(program), Some(PathBuf::from(config)))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::AGENT_BINARY;
    use plist::Value;

    const EXAMPLE_DEVICE: &str = "564D7F2A-0C3B-4E1A-9D7E-5A1B2C3D4E5F";

    /// The time `install` gives a device: from the decision core's per-device offset.
    fn for_device(udid: &str) -> DailyTime {
        DailyTime::from_slot(Slot::for_device(udid))
    }

    fn example_spec() -> LaunchAgentSpec<'static> {
        LaunchAgentSpec {
            program: Path::new(AGENT_BINARY),
            config: None,
            home: Path::new("/Users/alice"),
            time: for_device(EXAMPLE_DEVICE),
        }
    }

    #[test]
    fn every_key_has_its_type_and_value() {
        let spec =
            LaunchAgentSpec { config: Some(Path::new("/etc/devicetrust/agent.toml")), ..example_spec() };
        let bytes = render(&spec).unwrap();
        let value = Value::from_reader_xml(bytes.as_slice()).unwrap();
        let dict = value.as_dictionary().expect("a dictionary at the top");

        let mut keys: Vec<&str> = dict.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "Label",
                "ProcessType",
                "ProgramArguments",
                "RunAtLoad",
                "StandardErrorPath",
                "StandardOutPath",
                "StartCalendarInterval"
            ]
        );
        assert_eq!(dict["Label"].as_string(), Some("com.devicetrust.agent"));
        let args: Vec<&str> =
            dict["ProgramArguments"].as_array().unwrap().iter().map(|v| v.as_string().unwrap()).collect();
        assert_eq!(args, [AGENT_BINARY, "run", "--config", "/etc/devicetrust/agent.toml"]);
        assert_eq!(dict["RunAtLoad"].as_boolean(), Some(true));
        assert_eq!(dict["ProcessType"].as_string(), Some("Background"));
        assert_eq!(
            dict["StandardOutPath"].as_string(),
            Some("/Users/alice/Library/Logs/DeviceTrust/agent.out.log")
        );
        assert_eq!(
            dict["StandardErrorPath"].as_string(),
            Some("/Users/alice/Library/Logs/DeviceTrust/agent.err.log")
        );
        // The singular key launchd reads, with integer Hour and Minute and nothing else.
        assert!(!dict.contains_key("StartCalendarIntervals"));
        assert!(!dict.contains_key("StartInterval"));
        let interval = dict["StartCalendarInterval"].as_dictionary().expect("a dictionary");
        assert_eq!(interval.len(), 2);
        assert!(matches!(interval["Hour"], Value::Integer(_)));
        assert!(matches!(interval["Minute"], Value::Integer(_)));
        assert_eq!(interval["Hour"].as_unsigned_integer(), Some(u64::from(spec.time.hour)));
        assert_eq!(interval["Minute"].as_unsigned_integer(), Some(u64::from(spec.time.minute)));
    }

    #[test]
    fn example_in_launchd_dir_is_generated() {
        let path = format!("{}/../launchd/com.devicetrust.agent.plist", env!("CARGO_MANIFEST_DIR"));
        let want = render(&example_spec()).unwrap();
        if std::env::var_os("DEVICETRUST_UPDATE_EXAMPLES").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            got == want,
            "{path} differs from the generator's output; regenerate it with \
             DEVICETRUST_UPDATE_EXAMPLES=1 cargo test -p agent launch_agent"
        );
    }

    #[test]
    fn render_table() {
        let cases: &[(&str, &str, &str, Result<(), LaunchAgentError>)] = &[
            ("ok/absolute", AGENT_BINARY, "/Users/alice", Ok(())),
            (
                "fail/relative-program",
                "devicetrust-agent",
                "/Users/alice",
                Err(LaunchAgentError::RelativePath { path: "devicetrust-agent".into() }),
            ),
            (
                "fail/relative-home",
                AGENT_BINARY,
                "~",
                Err(LaunchAgentError::RelativePath { path: "~".into() }),
            ),
        ];
        for (name, program, home, want) in cases {
            let spec =
                LaunchAgentSpec { program: Path::new(program), home: Path::new(home), ..example_spec() };
            assert_eq!(render(&spec).map(|_| ()), *want, "{name}");
        }
    }

    #[test]
    fn daily_time_is_stable_and_in_the_window() {
        assert_eq!(for_device(EXAMPLE_DEVICE), for_device(EXAMPLE_DEVICE));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2000u32 {
            let t = for_device(&format!("device-{i}"));
            assert!((9..=16).contains(&t.hour) && t.minute < 60, "{t:?}");
            seen.insert((t.hour, t.minute));
        }
        // 2000 devices spread over most of the 480 minutes, not a handful.
        assert!(seen.len() > 400, "{}", seen.len());

        for (slot, want) in [((0, 0), (9, 0)), ((3, 61), (10, 1)), ((4, 479), (16, 59))] {
            let slot = Slot::new(slot.0, slot.1).unwrap();
            assert_eq!(DailyTime::from_slot(slot), DailyTime { hour: want.0, minute: want.1 });
        }
    }

    #[test]
    fn installed_command_reads_what_render_wrote() {
        let config = Path::new("/etc/devicetrust/agent.toml");
        for (name, spec, want) in [
            ("ok/plain", example_spec(), Some((PathBuf::from(AGENT_BINARY), None))),
            (
                "ok/with-config",
                LaunchAgentSpec { config: Some(config), ..example_spec() },
                Some((PathBuf::from(AGENT_BINARY), Some(config.to_path_buf()))),
            ),
        ] {
            assert_eq!(installed_command(&render(&spec).unwrap()), want, "{name}");
        }
        let other = String::from_utf8(render(&example_spec()).unwrap())
            .unwrap()
            .replace("<string>run</string>", "<string>status</string>");
        assert_eq!(installed_command(other.as_bytes()), None, "fail/another-command");
        assert_eq!(installed_command(b"not a plist"), None, "fail/not-a-plist");
    }

    #[test]
    fn paths() {
        let home = Path::new("/Users/alice");
        assert_eq!(
            plist_path(home),
            Path::new("/Users/alice/Library/LaunchAgents/com.devicetrust.agent.plist")
        );
        assert_eq!(log_dir(home), Path::new("/Users/alice/Library/Logs/DeviceTrust"));
    }
}
