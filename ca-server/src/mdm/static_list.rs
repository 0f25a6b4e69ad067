//! A fixed list of managed devices read from a JSON file, for development and for CAs
//! without an MDM API.
//!
//! The file is an array of `{"udid": "...", "serialNumber": "..."}` (the field names of the
//! enrollment request). It is read once at start; a change needs a restart.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use serde::Deserialize;

use super::{ManagedDeviceCheck, MdmError, MdmVerdict, NotManagedReason};

/// One managed device in the list file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedDevice {
    /// The hardware UDID (compared case-insensitively).
    pub udid: String,
    /// The serial number (compared exactly).
    #[serde(rename = "serialNumber")]
    pub serial_number: String,
}

/// The list file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StaticListError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read the managed device list {}: {reason}", path.display())]
    Read {
        /// The configured path.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
    /// The file is not a JSON array of `{"udid", "serialNumber"}` objects.
    #[error(
        "the managed device list {} is not a json array of {{\"udid\", \"serialNumber\"}}: {reason}",
        path.display()
    )]
    Parse {
        /// The configured path.
        path: PathBuf,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// An entry has an empty field.
    #[error("the managed device list {} has an empty {field} in entry {index}", path.display())]
    EmptyField {
        /// The configured path.
        path: PathBuf,
        /// Zero-based index of the entry.
        index: usize,
        /// `udid` or `serialNumber`.
        field: &'static str,
    },
}

/// Managed when the serial number is listed with this UDID.
#[derive(Debug, Clone, Default)]
pub struct StaticList {
    /// Serial number → lowercase UDIDs listed with it.
    by_serial: HashMap<String, Vec<String>>,
}

impl StaticList {
    /// Reads and validates the list file.
    pub fn from_file(path: &Path) -> Result<Self, StaticListError> {
        let text = std::fs::read(path)
            .map_err(|e| StaticListError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
        let devices: Vec<ListedDevice> = serde_json::from_slice(&text)
            .map_err(|e| StaticListError::Parse { path: path.to_path_buf(), reason: e.to_string() })?;
        for (index, device) in devices.iter().enumerate() {
            let empty = |field| StaticListError::EmptyField { path: path.to_path_buf(), index, field };
            if device.udid.trim().is_empty() {
                return Err(empty("udid"));
            }
            if device.serial_number.trim().is_empty() {
                return Err(empty("serialNumber"));
            }
        }
        Ok(Self::from_devices(devices))
    }

    /// A list from devices already in memory.
    pub fn from_devices(devices: impl IntoIterator<Item = ListedDevice>) -> Self {
        let mut by_serial: HashMap<String, Vec<String>> = HashMap::new();
        for device in devices {
            by_serial
                .entry(device.serial_number.trim().to_owned())
                .or_default()
                .push(device.udid.trim().to_ascii_lowercase());
        }
        Self { by_serial }
    }

    /// How many serial numbers are listed.
    pub fn len(&self) -> usize {
        self.by_serial.len()
    }

    /// Whether no device is listed (then none is managed).
    pub fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }
}

#[async_trait]
impl ManagedDeviceCheck for StaticList {
    async fn check(&self, serial_number: &str, udid: &str) -> Result<MdmVerdict, MdmError> {
        let verdict = match self.by_serial.get(serial_number) {
            None => MdmVerdict::NotManaged(NotManagedReason::UnknownDevice),
            Some(udids) if !udid.is_empty() && udids.iter().any(|u| u.eq_ignore_ascii_case(udid)) => {
                MdmVerdict::Managed
            }
            Some(_) => MdmVerdict::NotManaged(NotManagedReason::UdidMismatch),
        };
        Ok(verdict)
    }
}
