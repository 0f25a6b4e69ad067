//! Reads `ioreg -rd1 -c IOPlatformExpertDevice`: the Mac's hardware UUID and serial number.
//!
//! The UUID is the device id the CA binds the certificate to (Jamf Pro's `udid`) and the
//! serial number is what the CA looks the device up by. Parsing the tool's output rather than
//! calling IOKit keeps the backend free of another FFI surface; the two properties are plain
//! quoted strings in the tool's output, unlike the `<...>` data properties around them:
//!
//! ```text
//! +-o J314sAP  <class IOPlatformExpertDevice, id 0x100000110, registered, ...>
//!     {
//!       "IOPlatformSerialNumber" = "C02XK0AAJGH6"
//!       "IOPlatformUUID" = "564D7F2A-0C3B-4E1A-9D7E-5A1B2C3D4E5F"
//!     }
//! ```

/// Why the output could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum IoregError {
    /// A property is missing or not a quoted string.
    #[error("ioreg output has no {property} string property")]
    Missing {
        /// The property name.
        property: &'static str,
    },
    /// The UUID is not in the 8-4-4-4-12 hex form.
    #[error("ioreg IOPlatformUUID {value:?} is not a UUID")]
    BadUuid {
        /// The value as printed.
        value: String,
    },
}

/// The two identifiers of this Mac.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlatformIds {
    /// `IOPlatformUUID`, upper-case as the tool prints it.
    pub uuid: String,
    /// `IOPlatformSerialNumber`.
    pub serial_number: String,
}

/// Parses the tool's standard output.
pub(crate) fn parse(output: &str) -> Result<PlatformIds, IoregError> {
    let uuid = string_property(output, "IOPlatformUUID")
        .ok_or(IoregError::Missing { property: "IOPlatformUUID" })?;
    if !is_uuid(&uuid) {
        return Err(IoregError::BadUuid { value: uuid });
    }
    let serial_number = string_property(output, "IOPlatformSerialNumber")
        .filter(|s| !s.is_empty())
        .ok_or(IoregError::Missing { property: "IOPlatformSerialNumber" })?;
    Ok(PlatformIds { uuid: uuid.to_ascii_uppercase(), serial_number })
}

/// The value of `"name" = "value"`, if the property is a quoted string.
fn string_property(output: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\"");
    output.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(&key)?.trim_start().strip_prefix('=')?.trim();
        let value = rest.strip_prefix('"')?.strip_suffix('"')?;
        Some(value.to_owned())
    })
}

fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::macos::fixture;

    #[test]
    fn fixtures_table() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "ok/apple-silicon",
                "ioreg-platform-expert.apple-silicon.txt",
                "564D7F2A-0C3B-4E1A-9D7E-5A1B2C3D4E5F",
                "C02XK0AAJGH6",
            ),
            (
                "ok/intel",
                "ioreg-platform-expert.intel.txt",
                "9A1C3E5F-7B2D-4F6A-8C0E-1D3F5A7B9C2E",
                "C02ZX0AALVDL",
            ),
        ];
        for (name, file, uuid, serial) in cases {
            let got = parse(&fixture(file)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, PlatformIds { uuid: (*uuid).into(), serial_number: (*serial).into() }, "{name}");
        }
    }

    #[test]
    fn inline_table() {
        let cases: &[(&str, &str, Result<(&str, &str), IoregError>)] = &[
            (
                "ok/lower-case-uuid-normalised",
                "\"IOPlatformUUID\" = \"9a1c3e5f-7b2d-4f6a-8c0e-1d3f5a7b9c2e\"\n\"IOPlatformSerialNumber\" = \"X1\"\n",
                Ok(("9A1C3E5F-7B2D-4F6A-8C0E-1D3F5A7B9C2E", "X1")),
            ),
            ("fail/empty", "", Err(IoregError::Missing { property: "IOPlatformUUID" })),
            (
                // The data property "serial-number" must not be taken for the string one.
                "fail/only-data-serial",
                "\"IOPlatformUUID\" = \"9A1C3E5F-7B2D-4F6A-8C0E-1D3F5A7B9C2E\"\n\"serial-number\" = <4330>\n",
                Err(IoregError::Missing { property: "IOPlatformSerialNumber" }),
            ),
            (
                "fail/empty-serial",
                "\"IOPlatformUUID\" = \"9A1C3E5F-7B2D-4F6A-8C0E-1D3F5A7B9C2E\"\n\"IOPlatformSerialNumber\" = \"\"\n",
                Err(IoregError::Missing { property: "IOPlatformSerialNumber" }),
            ),
            (
                "fail/not-a-uuid",
                "\"IOPlatformUUID\" = \"not-a-uuid\"\n\"IOPlatformSerialNumber\" = \"X1\"\n",
                Err(IoregError::BadUuid { value: "not-a-uuid".into() }),
            ),
        ];
        for (name, text, want) in cases {
            let got = parse(text);
            let want = want.clone().map(|(u, s)| PlatformIds { uuid: u.into(), serial_number: s.into() });
            assert_eq!(got, want, "{name}");
        }
    }
}
