//! Who is logged in at the console: the owner of `/dev/console` (what `stat -f%Su
//! /dev/console` prints), interpreted.
//!
//! At the login window the console belongs to `root` (and Apple's own APIs report
//! `loginwindow`); during a fast user switch or right after boot the name can be empty. None
//! of these is a person whose keychain the agent could work in, so all of them mean nobody,
//! and the Jamf entry point defers instead of failing.

/// Names that mean "nobody is logged in".
const NOBODY: [&str; 3] = ["root", "loginwindow", "_mbsetupuser"];

/// The console user, from the owner name of `/dev/console`; `None` when nobody is logged in.
pub(crate) fn from_owner_name(owner: &str) -> Option<String> {
    let name = owner.trim();
    (!name.is_empty() && !NOBODY.contains(&name)).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("ok/person", "alice\n", Some("alice")),
            ("ok/name-with-dot", "alice.smith", Some("alice.smith")),
            ("ok/root-is-nobody", "root\n", None),
            ("ok/loginwindow-is-nobody", "loginwindow", None),
            // Setup Assistant's account during an automated enrollment.
            ("ok/setup-assistant-is-nobody", "_mbsetupuser", None),
            ("ok/empty-is-nobody", "", None),
            ("ok/blank-is-nobody", "  \n", None),
        ];
        for (name, owner, want) in cases {
            assert_eq!(from_owner_name(owner).as_deref(), *want, "{name}");
        }
    }
}
