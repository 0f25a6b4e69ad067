//! The https origins the agent writes into browser settings, checked by one validator for
//! every place that writes one: Chromium's and Chrome's managed policy on Linux, Chrome's
//! and Edge's preferences and Safari's identity preferences on macOS, and the configuration
//! profiles (`profile`). So "a safe origin" means the same on both platforms.
//!
//! A browser setting says where the device certificate is presented without asking. An
//! origin broader than one site (`*`, `https://*`, a path the browser would ignore) would make
//! every user's browser present the certificate to every site, so the rules are strict and are
//! checked before anything is written:
//!
//! - the scheme is `https`;
//! - there is a host: a DNS name of letters, digits and hyphens (an internationalised name is
//!   turned into its `xn--` form), an IPv4 address, or an IPv6 address in brackets;
//! - an optional port, 1 to 65535 (the default, 443, is dropped);
//! - no user info, no path (a lone `/` is allowed and dropped), no query, no fragment;
//! - no wildcard, except Chrome's leading `[*.]` label ("this host and its subdomains") in
//!   front of a DNS name of at least two labels. `*`, `https://*`, `https://*.example.com`,
//!   `https://ev*l.example.com` and `https://[*.]com` are refused. There is no public suffix
//!   list here, so `https://[*.]co.uk` passes: the CA's administrator chose it;
//! - no whitespace, control characters or backslashes anywhere, which URL parsers drop or
//!   read as something else.
//!
//! The checked [`Origin`] prints in one canonical form (lowercase host, no default port, no
//! trailing slash), which is what the agent writes.

use std::fmt;

use url::{Host, Url};

/// A checked https origin, possibly with Chrome's leading `[*.]` subdomain wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    host: String,
    port: Option<u16>,
    subdomains: bool,
}

/// What is wrong with an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum OriginProblem {
    /// Nothing was given.
    Empty,
    /// Whitespace, a control character or a backslash.
    Characters,
    /// No `scheme://`.
    NoScheme,
    /// A scheme other than https.
    NotHttps,
    /// `user@` or `user:password@` before the host.
    UserInfo,
    /// Nothing between `https://` and the end, the path, the query or the fragment.
    NoHost,
    /// A path other than `/`.
    Path,
    /// A `?query`.
    Query,
    /// A `#fragment`.
    Fragment,
    /// The host is not a DNS name, an IPv4 or an IPv6 address.
    Host,
    /// The port is not a number from 1 to 65535.
    Port,
    /// A `*` anywhere but in a leading `[*.]` label.
    Wildcard,
    /// `[*.]` in front of an address or of a single label (a top-level domain).
    WildcardTooBroad,
}

impl fmt::Display for OriginProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "it is empty",
            Self::Characters => "it contains whitespace, a control character or a backslash",
            Self::NoScheme => "it does not start with https://",
            Self::NotHttps => "the scheme must be https",
            Self::UserInfo => "it has user info (user@ before the host)",
            Self::NoHost => "it has no host",
            Self::Path => "it has a path; an origin ends after the host and port",
            Self::Query => "it has a query",
            Self::Fragment => "it has a fragment",
            Self::Host => "the host is not a dns name, an ipv4 address or a bracketed ipv6 address",
            Self::Port => "the port is not a number from 1 to 65535",
            Self::Wildcard => "a wildcard is allowed only as a leading [*.] label",
            Self::WildcardTooBroad => "[*.] must be followed by a dns name of at least two labels",
        })
    }
}

/// Why a value is not a safe https origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a safe https origin: {problem}")]
pub(crate) struct OriginError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub problem: OriginProblem,
}

/// Chrome's pattern syntax for "this host and its subdomains".
const SUBDOMAIN_WILDCARD: &str = "[*.]";

impl Origin {
    /// Checks `value` against the rules in the module documentation.
    pub(crate) fn parse(value: &str) -> Result<Self, OriginError> {
        let fail = |problem| Err(OriginError { value: value.to_owned(), problem });
        if value.is_empty() {
            return fail(OriginProblem::Empty);
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
            return fail(OriginProblem::Characters);
        }
        let Some((scheme, rest)) = value.split_once("://") else {
            return fail(if value.contains('*') { OriginProblem::Wildcard } else { OriginProblem::NoScheme });
        };
        if !scheme.eq_ignore_ascii_case("https") {
            return fail(OriginProblem::NotHttps);
        }
        // The wildcard is not URL syntax (brackets mean IPv6 there): take it off first.
        let (subdomains, rest) = match rest.strip_prefix(SUBDOMAIN_WILDCARD) {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if rest.contains('*') {
            return fail(OriginProblem::Wildcard);
        }
        // The raw text is split here rather than read back from the parsed URL, which would
        // hide a path such as `/.` (dot segments are removed) or an empty `?`.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let tail = tail.strip_prefix('/').unwrap_or(tail);
        match tail.chars().next() {
            None => {}
            Some('?') => return fail(OriginProblem::Query),
            Some('#') => return fail(OriginProblem::Fragment),
            Some(_) => return fail(OriginProblem::Path),
        }
        if authority.contains('@') {
            return fail(OriginProblem::UserInfo);
        }
        if authority.is_empty() {
            return fail(OriginProblem::NoHost);
        }
        let Ok(url) = Url::parse(&format!("https://{authority}/")) else {
            let port_text = authority.rsplit_once(':').map(|(_, p)| p).filter(|_| !authority.ends_with(']'));
            let bad_port = port_text.is_some_and(|p| p.parse::<u16>().is_err());
            return fail(if bad_port { OriginProblem::Port } else { OriginProblem::Host });
        };
        let host = match url.host() {
            Some(Host::Domain(domain)) => {
                if !is_dns_name(domain) {
                    return fail(OriginProblem::Host);
                }
                if subdomains && domain.split('.').count() < 2 {
                    return fail(OriginProblem::WildcardTooBroad);
                }
                domain.to_owned()
            }
            Some(Host::Ipv4(_) | Host::Ipv6(_)) if subdomains => {
                return fail(OriginProblem::WildcardTooBroad);
            }
            Some(Host::Ipv4(address)) => address.to_string(),
            Some(Host::Ipv6(address)) => format!("[{address}]"),
            None => return fail(OriginProblem::NoHost),
        };
        if url.port() == Some(0) {
            return fail(OriginProblem::Port);
        }
        Ok(Self { host, port: url.port(), subdomains })
    }

    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// The host: a lowercase DNS name, an IPv4 address or a bracketed IPv6 address, without
    /// the wildcard.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    #[cfg(test)]
    /// The port, unless it is the default (443).
    pub(crate) fn port(&self) -> Option<u16> {
        self.port
    }

    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// Whether the origin covers the host's subdomains too (Chrome's leading `[*.]`).
    pub(crate) fn includes_subdomains(&self) -> bool {
        self.subdomains
    }

    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// The host's own origin as a URL with a root path, `https://host[:port]/`, without the
    /// wildcard: what Safari's identity preference for the site is named.
    pub(crate) fn root_url(&self) -> String {
        match self.port {
            Some(port) => format!("https://{}:{port}/", self.host),
            None => format!("https://{}/", self.host),
        }
    }
}

/// The canonical form: `https://[[*.]]host[:port]`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wildcard = if self.subdomains { SUBDOMAIN_WILDCARD } else { "" };
        write!(f, "https://{wildcard}{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Whether `name` is a DNS name of letters, digits and hyphens in dot-separated labels (each
/// 1 to 63 characters, not starting or ending with a hyphen; 253 characters in all). No
/// wildcard, no trailing dot, no scheme or port.
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        use OriginProblem as P;
        let cases: &[(&str, &str, Result<&str, OriginProblem>)] = &[
            ("ok/origin", "https://ca.example.com", Ok("https://ca.example.com")),
            ("ok/trailing-slash-dropped", "https://ca.example.com/", Ok("https://ca.example.com")),
            ("ok/port", "https://ca.example.com:8443", Ok("https://ca.example.com:8443")),
            ("ok/default-port-dropped", "https://ca.example.com:443/", Ok("https://ca.example.com")),
            ("ok/case-folded", "HTTPS://CA.Example.COM", Ok("https://ca.example.com")),
            ("ok/single-label", "https://localhost:8443", Ok("https://localhost:8443")),
            ("ok/ipv4", "https://127.0.0.1:8443", Ok("https://127.0.0.1:8443")),
            ("ok/ipv6", "https://[::1]:8443", Ok("https://[::1]:8443")),
            ("ok/idn-as-punycode", "https://bücher.example", Ok("https://xn--bcher-kva.example")),
            ("ok/subdomain-wildcard", "https://[*.]example.com", Ok("https://[*.]example.com")),
            (
                "ok/subdomain-wildcard-port",
                "https://[*.]Example.com:8443/",
                Ok("https://[*.]example.com:8443"),
            ),
            ("fail/empty", "", Err(P::Empty)),
            ("fail/star", "*", Err(P::Wildcard)),
            ("fail/https-star", "https://*", Err(P::Wildcard)),
            ("fail/https-star-slash", "https://*/", Err(P::Wildcard)),
            ("fail/star-label", "https://*.example.com", Err(P::Wildcard)),
            ("fail/star-inside-label", "https://ev*l.example.com", Err(P::Wildcard)),
            ("fail/star-in-the-middle", "https://a.*.example.com", Err(P::Wildcard)),
            ("fail/star-port", "https://ca.example.com:*", Err(P::Wildcard)),
            ("fail/two-wildcards", "https://[*.][*.]example.com", Err(P::Wildcard)),
            ("fail/wildcard-without-scheme", "[*.]example.com", Err(P::Wildcard)),
            ("fail/wildcard-tld", "https://[*.]com", Err(P::WildcardTooBroad)),
            ("fail/wildcard-ipv4", "https://[*.]127.0.0.1", Err(P::WildcardTooBroad)),
            ("fail/path", "https://evil.example/path", Err(P::Path)),
            ("fail/dot-path", "https://evil.example/.", Err(P::Path)),
            ("fail/double-slash", "https://evil.example//", Err(P::Path)),
            ("fail/query", "https://ca.example.com?x=1", Err(P::Query)),
            ("fail/empty-query", "https://ca.example.com/?", Err(P::Query)),
            ("fail/fragment", "https://ca.example.com#top", Err(P::Fragment)),
            ("fail/userinfo", "https://user@ca.example.com", Err(P::UserInfo)),
            ("fail/userinfo-password", "https://u:p@ca.example.com", Err(P::UserInfo)),
            ("fail/empty-userinfo", "https://@ca.example.com", Err(P::UserInfo)),
            ("fail/userinfo-hiding-host", "https://ca.example.com@evil.example", Err(P::UserInfo)),
            ("fail/http", "http://ca.example.com", Err(P::NotHttps)),
            ("fail/wss", "wss://ca.example.com", Err(P::NotHttps)),
            ("fail/no-scheme", "ca.example.com", Err(P::NoScheme)),
            ("fail/no-host", "https://", Err(P::NoHost)),
            ("fail/no-host-slash", "https:///", Err(P::NoHost)),
            ("fail/space", "https://ca example.com", Err(P::Characters)),
            ("fail/surrounding-space", " https://ca.example.com", Err(P::Characters)),
            ("fail/newline", "https://ca.exa\nmple.com", Err(P::Characters)),
            ("fail/tab", "https://ca.example.com\t", Err(P::Characters)),
            ("fail/backslash", "https://evil.example\\@ca.example.com", Err(P::Characters)),
            ("fail/empty-label", "https://ca..example.com", Err(P::Host)),
            ("fail/trailing-dot", "https://ca.example.com.", Err(P::Host)),
            ("fail/underscore", "https://ca_1.example.com", Err(P::Host)),
            ("fail/leading-hyphen", "https://-ca.example.com", Err(P::Host)),
            ("fail/port-zero", "https://ca.example.com:0", Err(P::Port)),
            ("fail/port-too-big", "https://ca.example.com:65536", Err(P::Port)),
            ("fail/port-not-a-number", "https://ca.example.com:https", Err(P::Port)),
        ];
        for (name, value, want) in cases {
            let got = Origin::parse(value).map(|o| o.to_string()).map_err(|e| {
                assert_eq!(e.value, *value, "{name}: the error names the value");
                e.problem
            });
            assert_eq!(got.as_ref().map(String::as_str).map_err(|p| *p), *want, "{name}");
        }
    }

    #[test]
    fn parts_and_message() {
        let origin = Origin::parse("https://[*.]Example.com:8443").unwrap();
        assert_eq!(origin.host(), "example.com");
        assert_eq!(origin.port(), Some(8443));
        assert!(origin.includes_subdomains());
        assert_eq!(origin.root_url(), "https://example.com:8443/");
        let plain = Origin::parse("https://ca.example.com/").unwrap();
        assert!(!plain.includes_subdomains());
        assert_eq!((plain.port(), plain.root_url().as_str()), (None, "https://ca.example.com/"));
        // Canonical text parses to the same origin.
        assert_eq!(Origin::parse(&origin.to_string()).unwrap(), origin);

        let err = Origin::parse("https://*").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"https://*\" is not a safe https origin: a wildcard is allowed only as a leading [*.] label"
        );
        // Control characters are shown escaped, never raw.
        assert!(Origin::parse("https://a\u{7}").unwrap_err().to_string().contains("\\u{7}"));
    }

    #[test]
    fn dns_name_table() {
        let cases = [
            ("ok/two-labels", "example.com", true),
            ("ok/one-label", "localhost", true),
            ("ok/digits-and-hyphens", "ca-1.example-2.com", true),
            ("fail/empty", "", false),
            ("fail/wildcard", "*.example.com", false),
            ("fail/scheme", "https://example.com", false),
            ("fail/port", "example.com:443", false),
            ("fail/trailing-dot", "example.com.", false),
            ("fail/long-label", &format!("{}.com", "a".repeat(64)), false),
        ];
        for (name, value, want) in cases {
            assert_eq!(is_dns_name(value), want, "{name}");
        }
    }
}
