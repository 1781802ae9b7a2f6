//! Same-origin checks: does a request's `Origin` name the very scheme, host and port the request
//! was sent to? One rule for vote's form and JSON API and for result's WebSocket handshake.
//!
//! An origin is `(scheme, host, port)`, with the scheme's default port (80 for `http`, 443 for
//! `https`) filled in where none is written, on both sides. Browsers leave default ports out of
//! both `Origin` and `Host`, so `Origin: http://example.com` matches `Host: example.com:80`,
//! and `Origin: http://example.com:8080` does not match `Host: example.com`.
//!
//! The request's side takes its scheme from where the request came in: the services serve
//! plain HTTP, so it is `http`, unless `http.trust_proxy` is on and the proxy's
//! `X-Forwarded-Proto` says `https` (a TLS terminator in front). The `Origin`'s scheme must be
//! that same scheme: behind a TLS terminator, turn `http.trust_proxy` on, or every browser's
//! `https://` origin is refused.

use http::HeaderMap;
use http::header::{HOST, ORIGIN};

/// What a request's `Origin` says about where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// No `Origin` header: not a browser's cross-origin request (curl, scripts, a page's own
    /// `GET`).
    Absent,
    /// The `Origin` names the scheme, host and port the request was sent to.
    Same,
    /// Anything else: another host, port or scheme, `null`, garbage, two `Origin`s, no `Host`.
    Foreign,
}

/// The scheme a request came over: `https` only when `trust_proxy` is on and the proxy's
/// `X-Forwarded-Proto` says so; otherwise `http`, which is what the services serve.
pub fn request_scheme(headers: &HeaderMap, trust_proxy: bool) -> &'static str {
    if trust_proxy {
        forwarded_proto(headers).unwrap_or("http")
    } else {
        "http"
    }
}

/// The scheme the browser used, as the proxy in front says in `X-Forwarded-Proto`: `http` or
/// `https` (the first entry of a list is the client's), `None` when absent or anything else.
/// Ask only when `http.trust_proxy` is on: any client can send this header.
pub fn forwarded_proto(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("x-forwarded-proto")?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    if first.eq_ignore_ascii_case("https") {
        Some("https")
    } else if first.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// Compares a request's `Origin` with its `Host`, on the scheme of [`request_scheme`].
pub fn check(headers: &HeaderMap, trust_proxy: bool) -> Origin {
    let mut origins = headers.get_all(ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return Origin::Absent;
    };
    if origins.next().is_some() {
        return Origin::Foreign;
    }
    let mut hosts = headers.get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Origin::Foreign;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return Origin::Foreign;
    };
    if same_origin(origin, request_scheme(headers, trust_proxy), host) {
        Origin::Same
    } else {
        Origin::Foreign
    }
}

/// Whether the serialized origin `origin` (`scheme://host[:port]`) is the origin of a request
/// sent over `scheme` with `Host: host` (`host[:port]`). Default ports are filled in on both
/// sides; host names compare without regard to ASCII case.
pub fn same_origin(origin: &str, scheme: &str, host: &str) -> bool {
    let Some((origin_scheme, authority)) = origin.split_once("://") else {
        return false; // `null` or garbage
    };
    if !origin_scheme.eq_ignore_ascii_case(scheme) {
        return false;
    }
    let Some(default) = default_port(scheme) else {
        return false;
    };
    match (endpoint(authority, default), endpoint(host, default)) {
        (Some((origin_name, origin_port)), Some((host_name, host_port))) => {
            origin_name.eq_ignore_ascii_case(host_name) && origin_port == host_port
        }
        _ => false,
    }
}

/// The port a scheme implies when none is written.
pub fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// `name[:port]` as the name and the port, `default` when none is written (`name` and
/// `name:` alike). Names may be bracketed IPv6 literals. `None` for anything else: an empty
/// name, a port that is not a number up to 65535, user info, a path.
fn endpoint(authority: &str, default: u16) -> Option<(&str, u16)> {
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        let (name, rest) = authority.split_at(end);
        if rest.is_empty() {
            (name, None)
        } else {
            (name, Some(rest.strip_prefix(':')?))
        }
    } else {
        match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    let bad = |c: char| matches!(c, '/' | '@' | '?' | '#' | ' ' | '\\') || c.is_control();
    if name.is_empty() || name.contains(bad) {
        return None;
    }
    let port = match port {
        None | Some("") => default,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let header = |(k, v): &(&str, &str)| (k.parse().unwrap(), v.parse().unwrap());
        pairs.iter().map(header).collect()
    }

    /// Each way a default port can be left out, on either side, for both schemes.
    #[test]
    fn default_ports_are_filled_in_on_both_sides() {
        // http: 80.
        assert!(same_origin("http://example.com", "http", "example.com"));
        assert!(same_origin("http://example.com", "http", "example.com:80"));
        assert!(same_origin("http://example.com:80", "http", "example.com"));
        assert!(same_origin(
            "http://example.com:80",
            "http",
            "example.com:80"
        ));
        assert!(same_origin("http://example.com", "http", "example.com:"));
        // https: 443.
        assert!(same_origin("https://example.com", "https", "example.com"));
        assert!(same_origin(
            "https://example.com",
            "https",
            "example.com:443"
        ));
        assert!(same_origin(
            "https://example.com:443",
            "https",
            "example.com"
        ));
        // Another port than the default is another origin, whichever side leaves it out.
        assert!(!same_origin("http://127.0.0.1:8080", "http", "127.0.0.1"));
        assert!(!same_origin("http://127.0.0.1", "http", "127.0.0.1:8080"));
        assert!(!same_origin(
            "https://example.com:8443",
            "https",
            "example.com"
        ));
        assert!(!same_origin(
            "http://example.com:443",
            "http",
            "example.com"
        ));
        assert!(!same_origin(
            "https://example.com",
            "https",
            "example.com:80"
        ));
        // Explicit ports.
        assert!(same_origin(
            "http://127.0.0.1:8081",
            "http",
            "127.0.0.1:8081"
        ));
        assert!(same_origin("http://[::1]:8081", "http", "[::1]:8081"));
        assert!(same_origin("http://[::1]", "http", "[::1]:80"));
        assert!(!same_origin("http://[::1]:8081", "http", "[::1]"));
    }

    #[test]
    fn the_scheme_must_be_the_requests() {
        assert!(!same_origin("https://example.com", "http", "example.com"));
        assert!(!same_origin("http://example.com", "https", "example.com"));
        assert!(!same_origin(
            "https://example.com:8443",
            "http",
            "example.com:8443"
        ));
        assert!(same_origin("HTTPS://Example.COM", "https", "example.com"));
        assert!(!same_origin("file://example.com", "http", "example.com"));
        assert!(!same_origin("ws://example.com", "http", "example.com"));
    }

    #[test]
    fn garbage_is_foreign() {
        for origin in [
            "null",
            "",
            "http://",
            "http://:80",
            "http://example.com:http",
            "http://example.com:65536",
            "http://example.com:-1",
            "http://user@example.com",
            "http://example.com/",
            "http://example.com/path",
            "http://[::1",
            "http://[::1]x",
            "http://example.com.evil.example",
        ] {
            assert!(!same_origin(origin, "http", "example.com"), "{origin:?}");
        }
        assert!(!same_origin("http://example.com", "http", ""));
        assert!(!same_origin("http://example.com", "gopher", "example.com"));
    }

    /// The request's scheme is `http` unless a trusted proxy says `https`.
    #[test]
    fn the_requests_scheme_comes_from_a_trusted_proxy_only() {
        let https = headers(&[("x-forwarded-proto", "https")]);
        assert_eq!(request_scheme(&https, false), "http");
        assert_eq!(request_scheme(&https, true), "https");
        assert_eq!(request_scheme(&HeaderMap::new(), true), "http");
        assert_eq!(
            request_scheme(&headers(&[("x-forwarded-proto", "gopher")]), true),
            "http"
        );
    }

    #[test]
    fn headers_are_read_whole() {
        assert_eq!(check(&headers(&[("host", "x")]), false), Origin::Absent);
        let same = headers(&[("origin", "http://x"), ("host", "x")]);
        assert_eq!(check(&same, false), Origin::Same);
        assert_eq!(check(&same, true), Origin::Same);
        let secure = headers(&[
            ("origin", "https://x"),
            ("host", "x"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(check(&secure, true), Origin::Same);
        assert_eq!(check(&secure, false), Origin::Foreign);
        // The attack: a page on port 8080 posting to the default port.
        let attack = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1"),
            ("sec-fetch-site", "same-site"),
        ]);
        assert_eq!(check(&attack, false), Origin::Foreign);
        assert_eq!(
            check(&headers(&[("origin", "http://x")]), false),
            Origin::Foreign,
            "no Host"
        );
        assert_eq!(
            check(
                &headers(&[("origin", "http://x"), ("host", "x"), ("host", "y")]),
                false
            ),
            Origin::Foreign,
            "two Hosts"
        );
        assert_eq!(
            check(
                &headers(&[
                    ("origin", "http://x"),
                    ("origin", "http://x"),
                    ("host", "x")
                ]),
                false
            ),
            Origin::Foreign,
            "two Origins"
        );
    }

    #[test]
    fn forwarded_proto_takes_the_clients_scheme() {
        let proto = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-proto", HeaderValue::from_str(value).unwrap());
            forwarded_proto(&headers)
        };
        assert_eq!(forwarded_proto(&HeaderMap::new()), None);
        assert_eq!(proto("https"), Some("https"));
        assert_eq!(proto("HTTPS"), Some("https"));
        assert_eq!(proto("http"), Some("http"));
        assert_eq!(
            proto(" https , http"),
            Some("https"),
            "the first proxy's view"
        );
        assert_eq!(proto("http,https"), Some("http"));
        assert_eq!(proto("wss"), None);
        assert_eq!(proto(""), None);
    }

    proptest! {
        /// Whatever the two headers hold, the check answers without panicking, and what it
        /// calls the same origin has the host's name.
        #[test]
        fn any_text_is_answered(origin in "\\PC{0,40}", host in "\\PC{0,40}", scheme in "https?") {
            if same_origin(&origin, &scheme, &host) {
                let (_, authority) = origin.split_once("://").unwrap();
                let name = |s: &str| s.split(':').next().unwrap_or("").to_ascii_lowercase();
                if !authority.starts_with('[') {
                    prop_assert_eq!(name(authority), name(&host));
                }
            }
        }

        /// A browser on this very scheme, host and port is the same origin, written with or
        /// without the default port; any other host or port is not.
        #[test]
        fn same_origin_means_this_scheme_host_and_port(
            name in "[a-z0-9][a-z0-9.-]{0,20}",
            port in proptest::option::of(1u16..),
            other in "[a-z0-9][a-z0-9.-]{0,20}",
            scheme in "https?",
        ) {
            let default = default_port(&scheme).unwrap();
            let host = match port { Some(p) => format!("{name}:{p}"), None => name.clone() };
            let effective = port.unwrap_or(default);
            let same = |origin: String| (same_origin(&origin, &scheme, &host), origin);
            let (ok, origin) = same(format!("{scheme}://{host}"));
            prop_assert!(ok, "{}", origin);
            let (ok, origin) = same(format!("{scheme}://{name}:{effective}"));
            prop_assert!(ok, "{}", origin);
            let (ok, origin) = same(format!("{scheme}://{name}"));
            prop_assert_eq!(ok, effective == default, "{}", origin);
            if !other.eq_ignore_ascii_case(&name) {
                let (ok, origin) = same(format!("{scheme}://{other}"));
                prop_assert!(!ok, "{}", origin);
            }
            let q = if effective == u16::MAX { 1 } else { effective + 1 };
            let (ok, origin) = same(format!("{scheme}://{name}:{q}"));
            prop_assert!(!ok, "{}", origin);
            let other_scheme = if scheme == "http" { "https" } else { "http" };
            let (ok, origin) = same(format!("{other_scheme}://{host}"));
            prop_assert!(!ok, "{}", origin);
        }
    }
}
