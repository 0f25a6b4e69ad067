//! Reading the browser's client certificate out of the header a proxy put it in.
//!
//! Each proxy writes the certificate in its own format, and each relying party is configured
//! with the one proxy it is ([`ProxyKind`]): the CA reads that proxy's header and no other.
//! Anything the proxy did not write (a header of another format, a second copy) is never
//! looked at, so a browser cannot smuggle a certificate past a proxy that overwrites only
//! its own header. Every input is bounded ([`MAX_HEADER`]) before it is decoded.

use base64::Engine as _;

use crate::config::ProxyKind;

/// The header nginx and Caddy are configured to write (see `docs/relying-parties.md`).
pub const DEVICETRUST_CERT_HEADER: &str = "x-devicetrust-client-cert";
/// Traefik's `passTLSClientCert` header.
pub const TRAEFIK_CERT_HEADER: &str = "x-forwarded-tls-client-cert";
/// Envoy's `forward_client_cert_details` header (XFCC).
pub const ENVOY_XFCC_HEADER: &str = "x-forwarded-client-cert";

/// Longest header value read: a client certificate of this CA is well under 2 KiB of DER,
/// and URL-escaped PEM about doubles it.
pub const MAX_HEADER: usize = 12 * 1024;

/// Why the header holds no usable certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header is longer than [`MAX_HEADER`].
    #[error("the certificate header is over {MAX_HEADER} bytes")]
    TooLong,
    /// The header appears more than once: which one the proxy wrote is unknowable.
    #[error("the certificate header appears more than once")]
    Repeated,
    /// Not the format this relying party's proxy writes.
    #[error("the certificate header is not {expected}")]
    Malformed {
        /// The format expected.
        expected: &'static str,
    },
    /// XFCC with several elements: more than one proxy hop, or a forged element.
    #[error("the x-forwarded-client-cert header has {0} elements; exactly one is accepted")]
    XfccElements(usize),
}

/// The header `proxy` writes the certificate into.
pub fn header_name(proxy: ProxyKind) -> &'static str {
    match proxy {
        ProxyKind::Nginx | ProxyKind::Caddy => DEVICETRUST_CERT_HEADER,
        ProxyKind::Traefik => TRAEFIK_CERT_HEADER,
        ProxyKind::Envoy => ENVOY_XFCC_HEADER,
    }
}

/// The DER certificate in `values` (every value of the proxy's header, in order), or
/// `None` when the proxy sent no certificate (no header, or an empty one: nginx and Caddy
/// write an empty value for a browser that presented none).
pub fn certificate_der(proxy: ProxyKind, values: &[&[u8]]) -> Result<Option<Vec<u8>>, HeaderError> {
    let value = match values {
        [] => return Ok(None),
        [value] => *value,
        _ => return Err(HeaderError::Repeated),
    };
    if value.len() > MAX_HEADER {
        return Err(HeaderError::TooLong);
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| HeaderError::Malformed { expected: format_name(proxy) })?
        .trim();
    if value.is_empty() {
        return Ok(None);
    }
    let malformed = || HeaderError::Malformed { expected: format_name(proxy) };
    match proxy {
        ProxyKind::Nginx => {
            pem_to_der(&percent_decode(value).ok_or_else(malformed)?).ok_or_else(malformed).map(Some)
        }
        ProxyKind::Caddy => {
            base64_der(&percent_decode(value).ok_or_else(malformed)?).ok_or_else(malformed).map(Some)
        }
        ProxyKind::Traefik => {
            // Traefik URL-escapes the base64 in some versions (base64 has no '%', so decoding
            // is harmless otherwise) and joins a chain with commas, leaf first.
            let text = percent_decode(value).ok_or_else(malformed)?;
            let leaf = text.split(',').next().unwrap_or_default();
            base64_der(leaf).ok_or_else(malformed).map(Some)
        }
        ProxyKind::Envoy => xfcc_certificate(value).map(Some),
    }
}

/// What nginx's `$ssl_client_escaped_cert` makes of a PEM certificate: every byte but the
/// unreserved ones percent-encoded. For load generators and tests that play nginx.
pub fn nginx_escaped_pem(pem: &str) -> String {
    pem.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn format_name(proxy: ProxyKind) -> &'static str {
    match proxy {
        ProxyKind::Nginx => "url-escaped pem (nginx $ssl_client_escaped_cert)",
        ProxyKind::Caddy => "base64 der (caddy certificate_der_base64)",
        ProxyKind::Traefik => "base64 der (traefik passTLSClientCert)",
        ProxyKind::Envoy => "xfcc with a Cert key (envoy forward_client_cert_details)",
    }
}

/// Decodes `%XX` escapes (not `+`: none of the proxies form-encode). `None` for a bad escape
/// or a result that is not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The single `CERTIFICATE` block of a PEM text.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut blocks = CertificateDer::pem_slice_iter(pem.as_bytes());
    let first = blocks.next()?.ok()?;
    blocks.next().is_none().then(|| first.to_vec())
}

/// Base64 DER, with or without padding or line breaks.
fn base64_der(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let trimmed = compact.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed).ok().filter(|der| !der.is_empty())
}

/// The `Cert` key of a one-element XFCC header: `By=…;Hash=…;Cert="<URL-escaped PEM>";…`.
fn xfcc_certificate(value: &str) -> Result<Vec<u8>, HeaderError> {
    let malformed = || HeaderError::Malformed { expected: format_name(ProxyKind::Envoy) };
    let elements = split_unquoted(value, ',');
    if elements.len() != 1 {
        return Err(HeaderError::XfccElements(elements.len()));
    }
    let mut cert = None;
    for pair in split_unquoted(elements[0], ';') {
        let Some((key, raw)) = pair.split_once('=') else { return Err(malformed()) };
        if key.trim().eq_ignore_ascii_case("cert") {
            if cert.is_some() {
                return Err(malformed());
            }
            let raw = raw.trim();
            let unquoted = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
            cert = Some(unquoted.to_owned());
        }
    }
    let cert = cert.ok_or_else(malformed)?;
    pem_to_der(&percent_decode(&cert).ok_or_else(malformed)?).ok_or_else(malformed)
}

/// Splits on `separator` outside double quotes (XFCC quotes values that hold `,` `;` `=`).
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.der().to_vec(), cert.pem())
    }

    #[test]
    fn formats() {
        let (der, pem) = sample();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let xfcc = format!(
            "By=spiffe://app;Hash=abc;Cert=\"{}\";Subject=\"CN=x,O=y\";URI=",
            nginx_escaped_pem(&pem)
        );
        type Case = (&'static str, ProxyKind, Vec<String>, Result<Option<Vec<u8>>, HeaderError>);
        let cases: Vec<Case> = vec![
            ("ok/nginx-escaped-pem", ProxyKind::Nginx, vec![nginx_escaped_pem(&pem)], Ok(Some(der.clone()))),
            ("ok/caddy-base64-der", ProxyKind::Caddy, vec![b64.clone()], Ok(Some(der.clone()))),
            (
                "ok/traefik-escaped-base64",
                ProxyKind::Traefik,
                vec![b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")],
                Ok(Some(der.clone())),
            ),
            (
                "ok/traefik-chain-leaf-first",
                ProxyKind::Traefik,
                vec![format!("{b64},{b64}")],
                Ok(Some(der.clone())),
            ),
            (
                "fail/caddy-chain",
                ProxyKind::Caddy,
                vec![format!("{b64},{b64}")],
                Err(HeaderError::Malformed { expected: format_name(ProxyKind::Caddy) }),
            ),
            ("ok/envoy-xfcc", ProxyKind::Envoy, vec![xfcc.clone()], Ok(Some(der.clone()))),
            ("ok/no-header", ProxyKind::Nginx, vec![], Ok(None)),
            ("ok/empty-header", ProxyKind::Caddy, vec![String::new()], Ok(None)),
            (
                "fail/repeated",
                ProxyKind::Nginx,
                vec![nginx_escaped_pem(&pem), nginx_escaped_pem(&pem)],
                Err(HeaderError::Repeated),
            ),
            ("fail/too-long", ProxyKind::Caddy, vec!["A".repeat(MAX_HEADER + 1)], Err(HeaderError::TooLong)),
            (
                "fail/nginx-given-base64",
                ProxyKind::Nginx,
                vec![b64.clone()],
                Err(HeaderError::Malformed { expected: format_name(ProxyKind::Nginx) }),
            ),
            (
                "fail/caddy-given-pem",
                ProxyKind::Caddy,
                vec![nginx_escaped_pem(&pem)],
                Err(HeaderError::Malformed { expected: format_name(ProxyKind::Caddy) }),
            ),
            (
                "fail/bad-escape",
                ProxyKind::Nginx,
                vec!["%ZZ".into()],
                Err(HeaderError::Malformed { expected: format_name(ProxyKind::Nginx) }),
            ),
            (
                "fail/two-pem-blocks",
                ProxyKind::Nginx,
                vec![nginx_escaped_pem(&format!("{pem}{pem}"))],
                Err(HeaderError::Malformed { expected: format_name(ProxyKind::Nginx) }),
            ),
            (
                "fail/xfcc-two-elements",
                ProxyKind::Envoy,
                vec![format!("{xfcc},{xfcc}")],
                Err(HeaderError::XfccElements(2)),
            ),
            (
                "fail/xfcc-no-cert",
                ProxyKind::Envoy,
                vec!["By=x;Hash=y".into()],
                Err(HeaderError::Malformed { expected: format_name(ProxyKind::Envoy) }),
            ),
        ];
        for (name, proxy, values, expected) in cases {
            let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            assert_eq!(certificate_der(proxy, &values), expected, "{name}");
        }
    }

    #[test]
    fn each_proxy_has_its_own_header() {
        assert_eq!(header_name(ProxyKind::Nginx), DEVICETRUST_CERT_HEADER);
        assert_eq!(header_name(ProxyKind::Caddy), DEVICETRUST_CERT_HEADER);
        assert_eq!(header_name(ProxyKind::Traefik), TRAEFIK_CERT_HEADER);
        assert_eq!(header_name(ProxyKind::Envoy), ENVOY_XFCC_HEADER);
    }
}
