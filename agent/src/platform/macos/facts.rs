//! Device facts on macOS: the hardware UUID and serial number (`ioreg`), the computer name
//! (`scutil`), the OS version (`sw_vers`), the users, and the local MDM check (`profiles`).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::OnceLock;

use nix::unistd::{Uid, User};

use super::{console, ioreg, profiles};
use crate::decision::MdmEnrollment;
use crate::platform::{DeviceFacts, PlatformError};
use crate::util::exec;

const IOREG: &str = "/usr/sbin/ioreg";
const SCUTIL: &str = "/usr/sbin/scutil";
const SW_VERS: &str = "/usr/bin/sw_vers";
const PROFILES: &str = "/usr/bin/profiles";

/// Runs a tool and returns its standard output, or the failure as a platform error.
pub(super) fn tool_stdout(program: &str, args: &[&str]) -> Result<String, PlatformError> {
    let out = exec::run(Path::new(program), args, None, exec::DEFAULT_TIMEOUT)
        .map_err(|e| PlatformError::backend(format!("could not run {program}"), e))?;
    if !out.success() {
        return Err(PlatformError::command(program, &out));
    }
    Ok(out.stdout)
}

/// The user logged in at the console and their uid: the owner of `/dev/console`, as
/// `stat -f%Su /dev/console` reports it; `None` at the login window.
pub(crate) fn console_user_and_uid() -> Result<Option<(String, u32)>, PlatformError> {
    let meta = std::fs::metadata("/dev/console")
        .map_err(|e| PlatformError::io("could not inspect", "/dev/console", e))?;
    let uid = meta.uid();
    let name = User::from_uid(Uid::from_raw(uid))
        .map_err(|e| PlatformError::backend(format!("could not look up uid {uid}"), e))?
        .map(|u| u.name)
        .unwrap_or_default();
    Ok(console::from_owner_name(&name).map(|name| (name, uid)))
}

/// The uid and home directory of a user.
pub(crate) fn user_record(name: &str) -> Result<(u32, std::path::PathBuf), PlatformError> {
    let user = User::from_name(name)
        .map_err(|e| PlatformError::backend(format!("could not look up user {name}"), e))?
        .ok_or_else(|| PlatformError::backend(format!("could not look up user {name}"), "no such user"))?;
    Ok((user.uid.as_raw(), user.dir))
}

/// The user running this process.
pub(super) fn this_user() -> Result<User, PlatformError> {
    let uid = Uid::current();
    User::from_uid(uid)
        .map_err(|e| PlatformError::backend(format!("could not look up uid {uid}"), e))?
        .ok_or_else(|| PlatformError::backend(format!("could not look up uid {uid}"), "no user record"))
}

/// Device facts read from the system tools, each at most once per process.
#[derive(Debug, Default)]
pub(super) struct MacDevice {
    ids: OnceLock<ioreg::PlatformIds>,
}

impl MacDevice {
    fn ids(&self) -> Result<&ioreg::PlatformIds, PlatformError> {
        if let Some(ids) = self.ids.get() {
            return Ok(ids);
        }
        let out = tool_stdout(IOREG, &["-rd1", "-c", "IOPlatformExpertDevice"])?;
        let ids = ioreg::parse(&out)
            .map_err(|e| PlatformError::backend("could not read the hardware ids from ioreg", e))?;
        Ok(self.ids.get_or_init(|| ids))
    }
}

impl DeviceFacts for MacDevice {
    fn udid(&self) -> Result<String, PlatformError> {
        Ok(self.ids()?.uuid.clone())
    }

    fn serial_number(&self) -> Result<String, PlatformError> {
        Ok(self.ids()?.serial_number.clone())
    }

    fn display_name(&self) -> Result<String, PlatformError> {
        let name = tool_stdout(SCUTIL, &["--get", "ComputerName"])?;
        Ok(name.trim().to_owned())
    }

    fn os_version(&self) -> Result<String, PlatformError> {
        Ok(tool_stdout(SW_VERS, &["-productVersion"])?.trim().to_owned())
    }

    fn current_user(&self) -> Result<String, PlatformError> {
        Ok(this_user()?.name)
    }

    fn mdm_enrollment(&self) -> Result<MdmEnrollment, PlatformError> {
        let out = tool_stdout(PROFILES, &["status", "-type", "enrollment"])?;
        let status = profiles::parse(&out)
            .map_err(|e| PlatformError::backend("could not read the MDM enrollment from profiles", e))?;
        tracing::debug!(via_dep = status.via_dep, enrolled = status.mdm_enrolled, "MDM enrollment");
        Ok(status.enrollment())
    }
}
