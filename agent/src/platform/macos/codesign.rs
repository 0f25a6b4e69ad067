//! Reads `codesign -dv --verbose=4 <path>`: who signed an app.
//!
//! `devicetrust-agent allowlist add /Applications/X.app` turns the app's signer into a
//! keychain partition ID (`teamid:XXXXXXXXXX`, or `apple:` for Apple's own apps), and the
//! agent finds its own partition ID the same way. `codesign` writes this report to standard
//! error, one `Key=Value` per line; an unsigned app gives a single line
//! `<path>: code object is not signed at all` and exit status 1.

/// Why the report could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CodesignError {
    /// Neither a signature report nor the "not signed" message (a missing path, a non-code
    /// file, a codesign we do not know).
    #[error("codesign output is not a signature report: {output:?}")]
    NotAReport {
        /// The start of what the tool printed.
        output: String,
    },
}

/// What `codesign` said about one piece of code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signature {
    /// "code object is not signed at all".
    Unsigned,
    /// A signature report.
    Signed(CodeSignature),
}

/// The fields of a signature report the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CodeSignature {
    /// `Executable=`: the main executable's path.
    pub executable: Option<String>,
    /// `Identifier=`: the signing identifier (usually the bundle id).
    pub identifier: Option<String>,
    /// `TeamIdentifier=`; `None` when the tool says `not set`.
    pub team_id: Option<String>,
    /// The `Authority=` chain, leaf first; empty for ad-hoc signatures.
    pub authorities: Vec<String>,
    /// Ad-hoc signed (`Signature=adhoc`, or `adhoc` among the CodeDirectory flags).
    pub adhoc: bool,
    /// `Platform identifier=`: present only on Apple's platform binaries.
    pub platform_identifier: Option<u32>,
    /// `CDHash=`: the code directory hash, lower-case hex.
    pub cdhash: Option<String>,
}

/// Who stands behind a signature, as far as keychain partitions are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signer {
    /// Apple signed it (Safari and other system apps): partition `apple:`.
    Apple,
    /// A developer team (Developer ID or App Store): partition `teamid:<id>`.
    Team(String),
    /// Ad-hoc signed: no identity at all, only a hash of this exact build.
    AdHoc,
    /// Signed by a certificate that names no team (a self-made signing identity).
    NoTeam,
    /// Not signed.
    Unsigned,
}

/// The Apple leaf authority on Apple's own software.
const APPLE_SOFTWARE_SIGNING: &str = "Software Signing";

impl Signature {
    /// Who signed it.
    pub(crate) fn signer(&self) -> Signer {
        match self {
            Self::Unsigned => Signer::Unsigned,
            Self::Signed(sig) => sig.signer(),
        }
    }
}

impl CodeSignature {
    /// Who signed it.
    pub(crate) fn signer(&self) -> Signer {
        if self.adhoc {
            Signer::AdHoc
        } else if let Some(team) = &self.team_id {
            Signer::Team(team.clone())
        } else if self.platform_identifier.is_some()
            || self.authorities.first().is_some_and(|leaf| leaf == APPLE_SOFTWARE_SIGNING)
        {
            Signer::Apple
        } else {
            Signer::NoTeam
        }
    }
}

/// Parses what `codesign -dv --verbose=4` wrote to standard error.
pub(crate) fn parse(stderr: &str) -> Result<Signature, CodesignError> {
    if stderr.contains("code object is not signed at all") {
        return Ok(Signature::Unsigned);
    }
    let mut sig = CodeSignature::default();
    let mut recognised = false;
    for raw in stderr.lines() {
        let line = raw.trim_end();
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            "Executable" => {
                recognised = true;
                sig.executable = Some(value.to_owned());
            }
            "Identifier" => {
                recognised = true;
                sig.identifier = Some(value.to_owned());
            }
            "TeamIdentifier" => {
                recognised = true;
                sig.team_id = (value != "not set" && !value.is_empty()).then(|| value.to_owned());
            }
            "Authority" => sig.authorities.push(value.to_owned()),
            "Signature" if value == "adhoc" => sig.adhoc = true,
            "Platform identifier" => sig.platform_identifier = value.trim().parse().ok(),
            "CDHash" => sig.cdhash = Some(value.trim().to_ascii_lowercase()),
            // "CodeDirectory v=20400 size=1053 flags=0x20002(adhoc,linker-signed) hashes=..."
            "CodeDirectory v" => sig.adhoc |= code_directory_flags(value).any(|flag| flag == "adhoc"),
            _ => {}
        }
    }
    if recognised {
        Ok(Signature::Signed(sig))
    } else {
        Err(CodesignError::NotAReport { output: stderr.chars().take(200).collect() })
    }
}

fn code_directory_flags(rest: &str) -> impl Iterator<Item = &str> {
    let flags = rest
        .split_whitespace()
        .find_map(|field| field.strip_prefix("flags="))
        .and_then(|f| f.split_once('(').map(|(_, names)| names.trim_end_matches(')')))
        .unwrap_or("");
    flags.split(',').filter(|f| !f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::macos::fixture;

    #[test]
    fn fixtures_table() {
        let cases: &[(&str, &str, Signer)] = &[
            ("ok/developer-id", "codesign.developer-id.chrome.txt", Signer::Team("EQHXZ8M8AV".into())),
            ("ok/apple-platform", "codesign.apple-platform.safari.txt", Signer::Apple),
            ("ok/adhoc", "codesign.adhoc.txt", Signer::AdHoc),
            ("ok/unsigned", "codesign.unsigned.txt", Signer::Unsigned),
        ];
        for (name, file, want) in cases {
            let got = parse(&fixture(file)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.signer(), *want, "{name}");
        }
    }

    #[test]
    fn developer_id_fields() {
        let Signature::Signed(sig) = parse(&fixture("codesign.developer-id.chrome.txt")).unwrap() else {
            panic!("expected a signature");
        };
        assert_eq!(sig.identifier.as_deref(), Some("com.google.Chrome"));
        assert_eq!(
            sig.executable.as_deref(),
            Some("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
        );
        assert_eq!(sig.team_id.as_deref(), Some("EQHXZ8M8AV"));
        assert_eq!(sig.authorities[0], "Developer ID Application: Google LLC (EQHXZ8M8AV)");
        assert_eq!(sig.authorities.len(), 3);
        assert!(!sig.adhoc);
        assert_eq!(sig.platform_identifier, None);
        assert_eq!(sig.cdhash.as_deref(), Some("4b0f3c1bfa5d1e2a7c9e66a4b2d8f0e1c3a5b7d9"));
    }

    #[test]
    fn adhoc_fields() {
        let Signature::Signed(sig) = parse(&fixture("codesign.adhoc.txt")).unwrap() else {
            panic!("expected a signature");
        };
        assert_eq!(sig.team_id, None);
        assert!(sig.authorities.is_empty());
        assert!(sig.adhoc);
        assert_eq!(sig.cdhash.as_deref(), Some("b1e8c4a0d5a93a4f8e5c1e2f7b3d9a60c2e4f6a8"));
    }

    #[test]
    fn inline_table() {
        let cases: &[(&str, &str, Result<Signer, ()>)] = &[
            // Only the CodeDirectory flags say ad-hoc (older codesign printed no Signature= line).
            (
                "ok/adhoc-from-flags",
                "Executable=/x\nIdentifier=x\nCodeDirectory v=20400 size=1 flags=0x2(adhoc) hashes=1+0 location=embedded\nTeamIdentifier=not set\n",
                Ok(Signer::AdHoc),
            ),
            (
                "ok/self-made-identity",
                "Executable=/x\nIdentifier=x\nAuthority=Alice Code Signing\nTeamIdentifier=not set\n",
                Ok(Signer::NoTeam),
            ),
            (
                "ok/app-store",
                "Executable=/x\nIdentifier=com.tinyspeck.slackmacgap\nAuthority=Apple Mac OS Application Signing\nTeamIdentifier=BQR82RBBHL\n",
                Ok(Signer::Team("BQR82RBBHL".into())),
            ),
            ("fail/missing-path", "/Applications/Nope.app: No such file or directory\n", Err(())),
            ("fail/empty", "", Err(())),
        ];
        for (name, text, want) in cases {
            let got = parse(text)
                .map(|s| s.signer())
                .map_err(|e| assert!(matches!(e, CodesignError::NotAReport { .. }), "{name}: {e}"));
            assert_eq!(&got, want, "{name}");
        }
    }
}
