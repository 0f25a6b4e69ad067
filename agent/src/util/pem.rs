//! The agent's one PEM codec (RFC 7468's textual encoding), for the identity files, the NSS
//! import and the tools that speak PEM.
//!
//! It sits on the `pem` crate, which rcgen already brings into the build, rather than on
//! hand-written base64 framing: four encoders and two decoders had grown in the agent, each
//! with its own idea of line endings and of what a broken block means. Here a text that is
//! not well-formed PEM throughout yields nothing, so a truncated file is reported as corrupt
//! rather than read in part.

/// `der` as one PEM block labelled `label`: 64 columns, `\n` line endings, which every tool the
/// agent feeds (`certutil`, `pk12util`, `openssl`, Security.framework) reads.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// The DER of every block labelled `label` in `text`, in order; none when `text` is not
/// well-formed PEM throughout.
pub(crate) fn blocks(text: &[u8], label: &str) -> Vec<Vec<u8>> {
    match pem::parse_many(text) {
        Ok(all) => all.into_iter().filter(|p| p.tag() == label).map(pem::Pem::into_contents).collect(),
        Err(_) => Vec::new(),
    }
}

/// The DER of the first block labelled `label` in `text`.
pub(crate) fn first(text: &[u8], label: &str) -> Option<Vec<u8>> {
    blocks(text, label).into_iter().next()
}

/// Concatenated PEM certificates as one PEM string per certificate.
pub(crate) fn split_certificates(text: &str) -> Vec<String> {
    blocks(text.as_bytes(), "CERTIFICATE").iter().map(|der| encode("CERTIFICATE", der)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT_A: &str = "-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n";
    const CERT_B: &str = "-----BEGIN CERTIFICATE-----\nQg==\n-----END CERTIFICATE-----";

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let text = encode("PRIVATE KEY", &der);
        assert!(
            text.starts_with("-----BEGIN PRIVATE KEY-----\n")
                && text.ends_with("-----END PRIVATE KEY-----\n")
        );
        assert!(!text.contains('\r'), "line endings are \\n");
        assert!(text.lines().all(|l| l.len() <= 64), "64 columns: {text}");
        assert_eq!(first(text.as_bytes(), "PRIVATE KEY"), Some(der));
        assert_eq!(first(text.as_bytes(), "CERTIFICATE"), None);
    }

    #[test]
    fn blocks_table() {
        let table: [(&str, String, &str, Vec<Vec<u8>>); 6] = [
            (
                "ok/two-certificates",
                format!("{CERT_A}{CERT_B}\n"),
                "CERTIFICATE",
                vec![b"A".to_vec(), b"B".to_vec()],
            ),
            (
                "ok/other-labels-skipped",
                format!("{CERT_A}{}", encode("PRIVATE KEY", b"k")),
                "CERTIFICATE",
                vec![b"A".to_vec()],
            ),
            ("ok/crlf", CERT_A.replace('\n', "\r\n"), "CERTIFICATE", vec![b"A".to_vec()]),
            ("ok/none", "no pem here".to_owned(), "CERTIFICATE", vec![]),
            (
                "fail/truncated",
                format!("{CERT_A}-----BEGIN CERTIFICATE-----\nQg=="),
                "CERTIFICATE",
                vec![b"A".to_vec()],
            ),
            (
                "fail/bad-base64",
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned(),
                "CERTIFICATE",
                vec![],
            ),
        ];
        for (name, text, label, want) in table {
            assert_eq!(blocks(text.as_bytes(), label), want, "{name}");
        }
        assert_eq!(
            split_certificates(&format!("{CERT_A}{CERT_B}\n")),
            [CERT_A.to_owned(), format!("{CERT_B}\n")]
        );
    }
}
