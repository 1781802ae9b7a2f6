//! How a room joins the poll from the results page: the voting page's address, and its QR
//! code drawn on the server as the path of an inline SVG (no script, no image request, no
//! inline style: nothing the CSP forbids).
//!
//! The address is `public_url` when configured. Otherwise it is the results page's own origin
//! as the browser sees it, with `/vote/`: `Host`, or with `http.trust_proxy` the proxy's
//! `X-Forwarded-Proto` and `X-Forwarded-Host`.

use ::http::HeaderMap;
use ::http::header::HOST;
use ::http::uri::Authority;
use domain::origin;
use qrcode::{Color, EcLevel, QrCode};

/// Modules of white around the code, as the QR specification asks.
const QUIET_ZONE: usize = 4;

/// The voting page's address for a results page requested with `headers`: `public_url` when
/// set, else `<scheme>://<host>/vote/`. `None` when the request names no usable host.
pub fn vote_url(public_url: &str, trust_proxy: bool, headers: &HeaderMap) -> Option<String> {
    if !public_url.is_empty() {
        return Some(public_url.to_string());
    }
    let header = |name| headers.get(name)?.to_str().ok();
    let forwarded_host = trust_proxy
        .then(|| header("x-forwarded-host"))
        .flatten()
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    let host = forwarded_host.or_else(|| header(HOST.as_str()))?;
    let authority: Authority = host.parse().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let scheme = origin::request_scheme(headers, trust_proxy);
    Some(format!("{scheme}://{authority}/vote/"))
}

/// The address as people type it: without the scheme and the last slash
/// (`poll.example.org/vote`).
pub fn short(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.strip_suffix('/').unwrap_or(rest)
}

/// A QR code as SVG geometry: a `size` × `size` square (quiet zone included) whose dark
/// modules are the one path `path`.
#[derive(Debug, PartialEq, Eq)]
pub struct Qr {
    pub size: usize,
    pub path: String,
}

impl Qr {
    /// The QR code of `text` at error correction level M (15 % may be unreadable); `None` when
    /// it does not fit a QR code.
    pub fn new(text: &str) -> Option<Qr> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
        let width = code.width();
        let colors = code.to_colors();
        let mut path = String::new();
        for (y, row) in colors.chunks(width).enumerate() {
            let mut x = 0;
            while x < width {
                if row[x] == Color::Dark {
                    let run = row[x..].iter().take_while(|&&c| c == Color::Dark).count();
                    let (px, py) = (x + QUIET_ZONE, y + QUIET_ZONE);
                    path.push_str(&format!("M{px} {py}h{run}v1h-{run}z"));
                    x += run;
                } else {
                    x += 1;
                }
            }
        }
        Some(Qr {
            size: width + 2 * QUIET_ZONE,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn public_url_wins() {
        let h = headers(&[("host", "internal:8083")]);
        assert_eq!(
            vote_url("https://poll.example.org/v/", false, &h).as_deref(),
            Some("https://poll.example.org/v/")
        );
    }

    #[test]
    fn the_url_follows_the_host_and_the_proxy_only_when_trusted() {
        let h = headers(&[
            ("host", "127.0.0.1:8081"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "poll.example.org, inner"),
        ]);
        assert_eq!(
            vote_url("", false, &h).as_deref(),
            Some("http://127.0.0.1:8081/vote/")
        );
        assert_eq!(
            vote_url("", true, &h).as_deref(),
            Some("https://poll.example.org/vote/")
        );
        let only_host = headers(&[("host", "poll.example.org")]);
        assert_eq!(
            vote_url("", true, &only_host).as_deref(),
            Some("http://poll.example.org/vote/")
        );
    }

    #[test]
    fn a_host_that_is_no_host_gives_no_url() {
        assert_eq!(vote_url("", false, &HeaderMap::new()), None);
        for bad in ["user@evil.example", "a b", "<svg>", ""] {
            assert_eq!(
                vote_url("", false, &headers(&[("host", bad)])),
                None,
                "{bad}"
            );
        }
        let forwarded = headers(&[("host", "ok.example"), ("x-forwarded-host", "\"x\"")]);
        assert_eq!(vote_url("", true, &forwarded), None);
    }

    #[test]
    fn the_short_form_drops_the_scheme_and_the_last_slash() {
        assert_eq!(
            short("https://poll.example.org/vote/"),
            "poll.example.org/vote"
        );
        assert_eq!(short("http://127.0.0.1:8081/vote/"), "127.0.0.1:8081/vote");
        assert_eq!(short("https://e.org"), "e.org");
    }

    #[test]
    fn the_code_has_its_quiet_zone_and_only_path_commands() {
        let qr = Qr::new("http://127.0.0.1:8081/vote/").unwrap();
        // Version 2 (25 modules) at level M holds 26 bytes or less... this URL needs version 3.
        assert_eq!(qr.size, 29 + 2 * QUIET_ZONE);
        assert!(
            qr.path.starts_with("M4 4h7v1h-7z"),
            "the finder's top row: {}",
            qr.path
        );
        assert!(
            qr.path
                .bytes()
                .all(|b| b.is_ascii_digit() || b"Mhvz -".contains(&b)),
            "{}",
            qr.path
        );
        assert!(Qr::new(&"x".repeat(3000)).is_none());
    }
}
