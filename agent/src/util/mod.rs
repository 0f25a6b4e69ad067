//! Small tools every part of the agent uses: crash-safe private files ([`files`]), the bounded
//! runner of helper programs ([`exec`]) and the one PEM codec ([`pem`]).

pub(crate) mod exec;
pub(crate) mod files;
// The Linux backend's (the file store and NSS); the keychain takes DER.
#[cfg(any(not(target_os = "macos"), test))]
pub(crate) mod pem;
