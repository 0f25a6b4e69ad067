//! The MDM check: is this device managed? Asked before every issuance (enroll and renew).
//!
//! The CA talks to the MDM only through [`ManagedDeviceCheck`]. Implementations: Jamf Pro
//! ([`jamf`]), a static list for development ([`static_list`]), and [`AllowAll`] for
//! `devicetrust-ca dev` without a list. Every implementation fails closed: when the MDM
//! cannot be asked, the answer is an error, never "managed".
//!
//! [`PositiveCache`] wraps any of them to remember "managed" for a few minutes, and
//! [`from_settings`] turns the configuration's `[mdm]` table ([`MdmSettings`]) into the
//! check the CA uses.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub mod cache;
pub mod jamf;
pub mod settings;
pub mod static_list;

pub use cache::PositiveCache;
pub use jamf::{ClientSecret, JamfClient, JamfConfig};
pub use settings::{
    CLIENT_SECRET_ENV, JamfSettings, MdmSettings, MdmSetupError, from_settings, from_settings_with_env,
};
pub use static_list::{StaticList, StaticListError};

/// Why the MDM says a device is not managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotManagedReason {
    /// No inventory record has this serial number.
    UnknownDevice,
    /// The record exists but the MDM does not manage the device.
    Unmanaged,
    /// The record for this serial carries another UDID.
    UdidMismatch,
}

impl NotManagedReason {
    /// A short lowercase description for logs and events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownDevice => "unknown to the mdm",
            Self::Unmanaged => "not managed",
            Self::UdidMismatch => "udid does not match the mdm record",
        }
    }
}

/// The MDM's answer about one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdmVerdict {
    /// Managed, and the UDID matches.
    Managed,
    /// Not managed, for this reason.
    NotManaged(NotManagedReason),
}

/// The MDM could not be asked. The CA answers `mdm_unavailable` and issues nothing.
///
/// The causes are kept (shared, so that a scripted MDM in tests can hand the same answer out
/// twice) for the log; none of them carries a URL or a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MdmError {
    /// The MDM could not be reached, timed out, or answered with a server error.
    #[error("the mdm is unavailable: {reason}")]
    Unavailable {
        /// What failed and how, e.g. "the inventory lookup timed out".
        reason: String,
        /// The transport's error, without the request's URL.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The MDM refused our credentials.
    #[error("the mdm refused our credentials: {0}")]
    Unauthorized(String),
    /// The MDM answered something we cannot read.
    #[error("the mdm answered something unreadable: {reason}")]
    Malformed {
        /// Which answer, and what is wrong with it.
        reason: String,
        /// The parser's error, when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

/// Two answers are the same when they say the same thing; the causes are only for the log.
impl PartialEq for MdmError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Unavailable { reason: a, .. }, Self::Unavailable { reason: b, .. })
            | (Self::Unauthorized(a), Self::Unauthorized(b))
            | (Self::Malformed { reason: a, .. }, Self::Malformed { reason: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for MdmError {}

impl MdmError {
    /// An [`MdmError::Unavailable`] without a further cause.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable { reason: reason.into(), source: None }
    }

    /// An [`MdmError::Malformed`] without a further cause.
    pub fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed { reason: reason.into(), source: None }
    }
}

/// Asks the MDM whether a device is managed.
#[async_trait]
pub trait ManagedDeviceCheck: Send + Sync + fmt::Debug {
    /// Looks the device up by `serial_number` and checks that its record carries `udid`.
    async fn check(&self, serial_number: &str, udid: &str) -> Result<MdmVerdict, MdmError>;
}

/// Every device is managed. Only for `devicetrust-ca dev` without a device list; the CLI
/// warns on stderr when it uses it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl ManagedDeviceCheck for AllowAll {
    async fn check(&self, _serial_number: &str, _udid: &str) -> Result<MdmVerdict, MdmError> {
        Ok(MdmVerdict::Managed)
    }
}

/// Monotonic time for Jamf token lifetimes and cache entries, so that tests can move time
/// forward without sleeping. Unlike the CA's wall clock ([`crate::clock::Clock`]) it never
/// jumps when the system time is set.
pub trait MonotonicClock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> std::time::Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemMonotonicClock;

impl MonotonicClock for SystemMonotonicClock {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}
