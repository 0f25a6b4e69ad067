//! Reads `profiles status -type enrollment`: is this Mac enrolled in an MDM?
//!
//! The CA asks Jamf Pro whether the device is managed and refuses when it is not; asking the
//! Mac first lets the agent stop (exit 3) before it spends a request and a CA log line on a
//! device that cannot succeed. The tool prints two or three `Key: Value` lines:
//!
//! ```text
//! Enrolled via DEP: Yes
//! MDM enrollment: Yes (User Approved)
//! MDM server: https://example.jamfcloud.com/mdm/ServerURL
//! ```

use crate::decision::MdmEnrollment;

/// Why the output could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProfilesError {
    /// The `MDM enrollment:` line is missing: not the output of this command (an error
    /// message, or a future format we should not guess about).
    #[error("profiles output has no \"MDM enrollment:\" line: {output:?}")]
    NoEnrollmentLine {
        /// The start of what the tool printed.
        output: String,
    },
    /// A `Yes`/`No` line carried something else.
    #[error("profiles output line {line:?} has an unexpected value")]
    UnexpectedValue {
        /// The line as printed.
        line: String,
    },
}

/// What `profiles status -type enrollment` said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct EnrollmentStatus {
    /// Enrolled through Automated Device Enrollment (DEP / Apple Business Manager).
    pub via_dep: bool,
    /// Enrolled in an MDM at all.
    pub mdm_enrolled: bool,
    /// The enrollment is user approved (or, since DEP implies it, came through DEP).
    pub user_approved: bool,
    /// The MDM server URL, when the tool printed one.
    pub mdm_server: Option<String>,
}

impl EnrollmentStatus {
    /// The platform-neutral answer the decision core uses.
    pub(crate) fn enrollment(&self) -> MdmEnrollment {
        if self.mdm_enrolled { MdmEnrollment::Enrolled } else { MdmEnrollment::NotEnrolled }
    }
}

/// Parses the tool's standard output.
pub(crate) fn parse(output: &str) -> Result<EnrollmentStatus, ProfilesError> {
    let mut status = EnrollmentStatus::default();
    let mut saw_enrollment = false;
    for raw in output.lines() {
        let line = raw.trim();
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key.trim() {
            "Enrolled via DEP" => status.via_dep = yes_no(value, line)?,
            "MDM enrollment" => {
                saw_enrollment = true;
                // "Yes", "Yes (User Approved)" or "No".
                let (answer, note) = match value.split_once('(') {
                    Some((answer, note)) => (answer.trim(), Some(note.trim_end_matches(')').trim())),
                    None => (value, None),
                };
                status.mdm_enrolled = yes_no(answer, line)?;
                status.user_approved = note.is_some_and(|n| n.eq_ignore_ascii_case("user approved"));
            }
            "MDM server" if !value.is_empty() => status.mdm_server = Some(value.to_owned()),
            _ => {}
        }
    }
    if !saw_enrollment {
        return Err(ProfilesError::NoEnrollmentLine { output: output.chars().take(200).collect() });
    }
    // An ADE enrollment is user approved by definition, whether or not the tool says so.
    status.user_approved |= status.via_dep && status.mdm_enrolled;
    Ok(status)
}

fn yes_no(value: &str, line: &str) -> Result<bool, ProfilesError> {
    match value {
        "Yes" => Ok(true),
        "No" => Ok(false),
        _ => Err(ProfilesError::UnexpectedValue { line: line.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::macos::fixture;

    const SERVER: &str = "https://example.jamfcloud.com/mdm/ServerURL";

    #[test]
    fn fixtures_table() {
        let cases: &[(&str, &str, EnrollmentStatus, MdmEnrollment)] = &[
            (
                "ok/dep-user-approved",
                "profiles-enrollment.dep-user-approved.txt",
                EnrollmentStatus {
                    via_dep: true,
                    mdm_enrolled: true,
                    user_approved: true,
                    mdm_server: Some(SERVER.into()),
                },
                MdmEnrollment::Enrolled,
            ),
            (
                "ok/user-approved-without-dep",
                "profiles-enrollment.user-approved.txt",
                EnrollmentStatus {
                    via_dep: false,
                    mdm_enrolled: true,
                    user_approved: true,
                    mdm_server: Some(SERVER.into()),
                },
                MdmEnrollment::Enrolled,
            ),
            (
                "ok/not-enrolled",
                "profiles-enrollment.not-enrolled.txt",
                EnrollmentStatus::default(),
                MdmEnrollment::NotEnrolled,
            ),
        ];
        for (name, file, want, enrollment) in cases {
            let got = parse(&fixture(file)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got, want, "{name}");
            assert_eq!(got.enrollment(), *enrollment, "{name}");
        }
    }

    #[test]
    fn inline_table() {
        const NO_LINE: &str = "no enrollment line";
        const ODD: &str = "unexpected value";
        let cases: &[(&str, &str, Result<(bool, bool, bool), &str>)] = &[
            // Enrolled, but the user never approved the MDM profile (pre-Big Sur manual enrollment).
            (
                "ok/enrolled-not-approved",
                "Enrolled via DEP: No\nMDM enrollment: Yes\n",
                Ok((false, true, false)),
            ),
            (
                "ok/dep-implies-approval",
                "Enrolled via DEP: Yes\nMDM enrollment: Yes\n",
                Ok((true, true, true)),
            ),
            (
                "ok/crlf-and-indent",
                "  Enrolled via DEP: No\r\n  MDM enrollment: No\r\n",
                Ok((false, false, false)),
            ),
            ("fail/empty", "", Err(NO_LINE)),
            ("fail/error-text", "profiles: Unable to get enrollment status (-1)\n", Err(NO_LINE)),
            ("fail/odd-value", "Enrolled via DEP: Maybe\nMDM enrollment: Yes\n", Err(ODD)),
            ("fail/odd-enrollment", "MDM enrollment: Unknown\n", Err(ODD)),
        ];
        for (name, text, want) in cases {
            let got =
                parse(text).map(|s| (s.via_dep, s.mdm_enrolled, s.user_approved)).map_err(|e| match e {
                    ProfilesError::NoEnrollmentLine { .. } => NO_LINE,
                    ProfilesError::UnexpectedValue { .. } => ODD,
                });
            assert_eq!(&got, want, "{name}");
        }
    }
}
