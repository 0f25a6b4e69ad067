//! Small tools every part of the agent uses: crash-safe private files ([`files`]), the bounded
//! runner of helper programs ([`exec`]) and the one PEM codec ([`pem`]).

pub(crate) mod exec;
pub(crate) mod files;
// The Linux backend's (the file store and NSS); the keychain takes DER.
#[cfg(any(not(target_os = "macos"), test))]
pub(crate) mod pem;

/// An error and its causes on one line, `a: b: c` (a cause its parent already ends with is
/// not repeated): for status details and log fields, where `main`'s `caused by:` lines are
/// not printed.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cur = e.source();
    }
    text
}
