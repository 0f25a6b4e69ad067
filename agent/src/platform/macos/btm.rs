//! Background Task Management (macOS 13+): whether the user switched the agent's LaunchAgent
//! off in System Settings > General > Login Items, read from `sfltool dumpbtm`.
//!
//! macOS shows "Background Items Added" for a new LaunchAgent and lets the user switch it off;
//! launchd then keeps the job from running at login and at its daily time, and nothing tells
//! the agent. `sfltool dumpbtm` prints BTM's records per user (`Records for UID <uid>`), one
//! ` #N:` item each, with a `Disposition: [enabled|disabled, allowed|disallowed, visible|hidden,
//! notified|not notified] (<bits>)` line whose bit 0x1 is "enabled" (objective-see's DumpBTM,
//! `dumpBTM.m`). The agent's item is the one whose `Identifier` is its label (macOS 14+ prefixes
//! the item type, `8.` for a legacy agent) or whose `URL` is its plist. A Managed Login Items
//! profile (`devicetrust-agent profile login-items`) keeps the item on.

/// The login item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginItem {
    /// Switched on: launchd runs the job.
    Enabled,
    /// Switched off by the user.
    Disabled,
}

/// The state of the item for `label` (or `plist_url`, `file:///…/<label>.plist`) in the records
/// of user `uid`; `None` when BTM has no such item.
pub(crate) fn login_item(output: &str, uid: u32, label: &str, plist_url: &str) -> Option<LoginItem> {
    let mut in_user = false;
    let mut item: Vec<(&str, &str)> = Vec::new();
    let mut found = None;
    let mut finish = |item: &mut Vec<(&str, &str)>, in_user: bool| {
        if in_user && found.is_none() && is_ours(item, label, plist_url) {
            found = disposition(item);
        }
        item.clear();
    };
    for line in output.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("Records for UID ") {
            finish(&mut item, in_user);
            in_user = rest.split_whitespace().next().and_then(|u| u.parse::<u32>().ok()) == Some(uid);
        } else if trimmed.starts_with('#') && trimmed.ends_with(':') {
            finish(&mut item, in_user);
        } else if let Some((key, value)) = trimmed.split_once(": ") {
            item.push((key.trim(), value.trim()));
        }
    }
    finish(&mut item, in_user);
    found
}

fn is_ours(item: &[(&str, &str)], label: &str, plist_url: &str) -> bool {
    item.iter().any(|(key, value)| match *key {
        // `8.com.devicetrust.agent` on macOS 14+, the bare label before.
        "Identifier" => {
            *value == label
                || value
                    .split_once('.')
                    .is_some_and(|(kind, rest)| kind.chars().all(|c| c.is_ascii_digit()) && rest == label)
        }
        "URL" => *value == plist_url,
        _ => false,
    })
}

fn disposition(item: &[(&str, &str)]) -> Option<LoginItem> {
    let value = item.iter().find(|(key, _)| *key == "Disposition").map(|(_, v)| *v)?;
    // The bits in parentheses, hex (`0xb`) or decimal (`11`), are the record itself ...
    let bits = value.rsplit_once('(').and_then(|(_, rest)| rest.strip_suffix(')')).and_then(|n| {
        let n = n.trim();
        match n.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => n.parse().ok(),
        }
    });
    if let Some(bits) = bits {
        return Some(if bits & 1 == 1 { LoginItem::Enabled } else { LoginItem::Disabled });
    }
    // ... else the words, whole: "disabled" contains "enabled".
    let words = value.split_once('[')?.1.split_once(']')?.0;
    words.split(',').map(str::trim).find_map(|w| match w {
        "enabled" => Some(LoginItem::Enabled),
        "disabled" => Some(LoginItem::Disabled),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::macos::fixture;

    const LABEL: &str = "com.devicetrust.agent";

    fn url(user: &str) -> String {
        format!("file:///Users/{user}/Library/LaunchAgents/{LABEL}.plist")
    }

    /// Each case: the name, the fixture, the uid, the label, the plist's user, the state.
    #[test]
    fn login_item_table() {
        let cases: &[(&str, &str, u32, &str, &str, Option<LoginItem>)] = &[
            (
                "ok/disabled-by-the-user",
                "sfltool-dumpbtm.disabled.txt",
                501,
                LABEL,
                "alice",
                Some(LoginItem::Disabled),
            ),
            (
                "ok/other-user-enabled",
                "sfltool-dumpbtm.disabled.txt",
                502,
                LABEL,
                "bob",
                Some(LoginItem::Enabled),
            ),
            (
                "ok/ventura-decimal-bits",
                "sfltool-dumpbtm.enabled.ventura.txt",
                501,
                LABEL,
                "alice",
                Some(LoginItem::Enabled),
            ),
            (
                "ok/found-by-url-alone",
                "sfltool-dumpbtm.disabled.txt",
                501,
                "com.example.renamed",
                "alice",
                Some(LoginItem::Disabled),
            ),
            ("fail/no-records-for-user", "sfltool-dumpbtm.disabled.txt", 503, LABEL, "carol", None),
            (
                "fail/someone-elses-label",
                "sfltool-dumpbtm.disabled.txt",
                501,
                "com.google.GoogleUpdater",
                "nobody",
                None,
            ),
        ];
        for (name, file, uid, label, user, want) in cases {
            assert_eq!(login_item(&fixture(file), *uid, label, &url(user)), *want, "{name}");
        }
        assert_eq!(login_item("", 501, LABEL, &url("alice")), None, "fail/empty-output");
    }

    #[test]
    fn disposition_words_when_no_bits() {
        let item = [("Disposition", "[disabled, allowed, visible, notified]")];
        assert_eq!(disposition(&item), Some(LoginItem::Disabled), "ok/words-whole-not-substring");
        let item = [("Disposition", "[enabled, allowed, notified]")];
        assert_eq!(disposition(&item), Some(LoginItem::Enabled));
        assert_eq!(disposition(&[("Disposition", "garbage")]), None, "fail/garbage");
    }
}
