//! Parsing what a client sends. Each function returns a one-line reason on failure; nothing
//! here touches Redis.

use domain::origin::{self, Origin};
use http::HeaderMap;
use http::header::COOKIE;
use percent_encoding::percent_decode;
use serde::Deserialize;

/// Why a vote request was refused as malformed (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("the form has no `vote` field")]
    MissingVote,
    #[error("the form has more than one `vote` field")]
    RepeatedVote,
    #[error("no option was chosen")]
    EmptyVote,
    #[error("the body is not valid UTF-8")]
    NotUtf8,
    #[error("the form has a `%` that is not followed by two hex digits")]
    BadEscape,
    #[error("the body is not a JSON object {{\"vote\": \"<option key>\"}}: {0}")]
    BadJson(String),
}

/// The `vote` field of an `application/x-www-form-urlencoded` body. Other fields are ignored,
/// but every name and value must decode: an invalid percent-escape (`%ff`, which is not
/// UTF-8, or `%zz`) is refused whichever field holds it.
pub fn form_vote(body: &[u8]) -> Result<String, InputError> {
    let body = std::str::from_utf8(body).map_err(|_| InputError::NotUtf8)?;
    let mut vote = None;
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name)?, decode(value)?);
        if name != "vote" {
            continue;
        }
        if vote.is_some() {
            return Err(InputError::RepeatedVote);
        }
        vote = Some(value);
    }
    let vote = vote.ok_or(InputError::MissingVote)?;
    if vote.is_empty() {
        return Err(InputError::EmptyVote);
    }
    Ok(vote)
}

fn decode(s: &str) -> Result<String, InputError> {
    let bytes = s.as_bytes();
    let escapes_are_whole = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_are_whole {
        return Err(InputError::BadEscape);
    }
    let plus_as_space = s.replace('+', " ");
    percent_decode(plus_as_space.as_bytes())
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| InputError::NotUtf8)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonVote {
    vote: String,
}

/// The option key of a JSON body `{"vote": "a"}`.
pub fn json_vote(body: &[u8]) -> Result<String, InputError> {
    // serde's derived struct visitor also takes a sequence (`["a"]`); only an object is a vote.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(InputError::BadJson("expected a JSON object".into()));
    }
    let parsed: JsonVote = serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages carry no input text beyond a short excerpt; keep line and column.
        InputError::BadJson(e.to_string())
    })?;
    if parsed.vote.is_empty() {
        return Err(InputError::EmptyVote);
    }
    Ok(parsed.vote)
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// Whether a browser says this request comes from another site: `Sec-Fetch-Site: cross-site`,
/// or an `Origin` that is not the scheme, host and port the request was sent to (see
/// [`domain::origin`]: default ports filled in, the scheme `http` unless a trusted proxy says
/// `https`). `Origin: null`, sent by sandboxed documents, counts as foreign. Requests with
/// neither header (curl, scripts) are not browsers' cross-site requests.
pub fn is_cross_site(headers: &HeaderMap, trust_proxy: bool) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site.eq_ignore_ascii_case("cross-site")
    {
        return true;
    }
    origin::check(headers, trust_proxy) == Origin::Foreign
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HOST, ORIGIN};
    use http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    #[test]
    fn form_fields() {
        assert_eq!(form_vote(b"vote=a"), Ok("a".into()));
        assert_eq!(form_vote(b"x=1&vote=b&y=2"), Ok("b".into()));
        assert_eq!(form_vote(b"vote=with+space%21"), Ok("with space!".into()));
        assert_eq!(form_vote(b""), Err(InputError::MissingVote));
        assert_eq!(form_vote(b"vote="), Err(InputError::EmptyVote));
        assert_eq!(form_vote(b"vote"), Err(InputError::EmptyVote));
        assert_eq!(form_vote(b"vote=a&vote=b"), Err(InputError::RepeatedVote));
        assert_eq!(form_vote(b"vote=%ff"), Err(InputError::NotUtf8));
        assert_eq!(form_vote(b"vote=\xff"), Err(InputError::NotUtf8));
        // Any field's escapes must decode, not only the vote's.
        assert_eq!(form_vote(b"x=%ff&vote=a"), Err(InputError::NotUtf8));
        assert_eq!(form_vote(b"%ff=1&vote=a"), Err(InputError::NotUtf8));
        assert_eq!(form_vote(b"vote=a&x=%ff"), Err(InputError::NotUtf8));
        assert_eq!(form_vote(b"x=%zz&vote=a"), Err(InputError::BadEscape));
        assert_eq!(form_vote(b"vote=a%"), Err(InputError::BadEscape));
        assert_eq!(form_vote(b"vote=a%2"), Err(InputError::BadEscape));
        assert_eq!(form_vote(b"x=%41&vote=a%25"), Ok("a%".into()));
    }

    #[test]
    fn json_bodies() {
        assert_eq!(json_vote(br#"{"vote":"a"}"#), Ok("a".into()));
        assert_eq!(json_vote(br#"{"vote":""}"#), Err(InputError::EmptyVote));
        assert!(matches!(
            json_vote(br#"{"vote":1}"#),
            Err(InputError::BadJson(_))
        ));
        assert!(matches!(
            json_vote(br#"{"vote":"a","x":1}"#),
            Err(InputError::BadJson(_))
        ));
        assert!(matches!(json_vote(b"vote=a"), Err(InputError::BadJson(_))));
        assert!(matches!(
            json_vote(br#"["a"]"#),
            Err(InputError::BadJson(_))
        ));
        assert_eq!(json_vote(b" \n{\"vote\":\"a\"}"), Ok("a".into()));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cookies() {
        let h = headers(&[("cookie", "a=1; voter_id=abc"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, "voter_id"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "voter"), None);
    }

    #[test]
    fn cross_site_detection() {
        let cross = |h: &HeaderMap| is_cross_site(h, false);
        assert!(!cross(&headers(&[])));
        assert!(cross(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!cross(&headers(&[("sec-fetch-site", "same-origin")])));
        let same = headers(&[
            ("origin", "http://localhost:8081"),
            ("host", "localhost:8081"),
        ]);
        assert!(!cross(&same));
        let default_port = headers(&[("origin", "http://localhost"), ("host", "localhost:80")]);
        assert!(!cross(&default_port));
        // A `Host` without a port is port 80: a page on another port is another origin.
        let port_less = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1"),
            ("sec-fetch-site", "same-site"),
        ]);
        assert!(cross(&port_less));
        let foreign = headers(&[
            ("origin", "https://evil.example"),
            ("host", "localhost:8081"),
        ]);
        assert!(cross(&foreign));
        let other_port = headers(&[
            ("origin", "http://localhost:9999"),
            ("host", "localhost:8081"),
        ]);
        assert!(cross(&other_port));
        assert!(cross(&headers(&[
            ("origin", "null"),
            ("host", "localhost")
        ])));
        // https only where a trusted proxy says the browser used it.
        let secure = headers(&[
            ("origin", "https://localhost"),
            ("host", "localhost"),
            ("x-forwarded-proto", "https"),
        ]);
        assert!(!is_cross_site(&secure, true));
        assert!(is_cross_site(&secure, false));
    }

    proptest! {
        /// Whatever the body, the parser answers without panicking, and a vote it accepts
        /// is never empty and comes from a UTF-8 body.
        #[test]
        fn form_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(vote) = form_vote(&body) {
                prop_assert!(!vote.is_empty());
                prop_assert!(std::str::from_utf8(&body).is_ok());
            }
        }

        #[test]
        fn form_value_round_trips(value in "\\PC{1,40}") {
            let encoded: String = percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).to_string();
            prop_assert_eq!(form_vote(format!("vote={encoded}").as_bytes()), Ok(value));
        }

        /// Whatever the body (bytes, or an object with any `vote` string), the parser answers
        /// without panicking, and a vote it accepts is the object's non-empty `vote`.
        #[test]
        fn json_parser_never_panics(
            body in proptest::prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..512),
                "\\PC{0,20}".prop_map(|v| serde_json::json!({ "vote": v }).to_string().into_bytes()),
            ],
        ) {
            if let Ok(vote) = json_vote(&body) {
                let value: serde_json::Value = serde_json::from_slice(&body).expect("accepted JSON parses");
                prop_assert_eq!(value["vote"].as_str(), Some(vote.as_str()));
                prop_assert!(!vote.is_empty());
            }
        }

        /// Whatever `Cookie` headers arrive, the lookup does not panic, and what it finds is
        /// a trimmed piece of one of them.
        #[test]
        fn cookie_parser_never_panics(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
            name in "\\PC{0,12}",
        ) {
            let mut h = HeaderMap::new();
            for value in &values {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    h.append(COOKIE, value);
                }
            }
            if let Some(found) = cookie(&h, &name) {
                prop_assert_eq!(found, found.trim());
                prop_assert!(h.get_all(COOKIE).iter().any(|v| v.to_str().is_ok_and(|v| v.contains(found))));
            }
        }

        /// A `voter_id` among other cookies, in any order and spacing, is found as sent.
        #[test]
        fn the_voter_cookie_is_found_among_others(
            id in "[0-9a-f]{32}",
            before in proptest::collection::vec("[a-z_]{1,8}=[a-zA-Z0-9]{0,8}", 0..4),
            after in proptest::collection::vec("[a-z_]{1,8}=[a-zA-Z0-9]{0,8}", 0..4),
            space in " {0,2}",
        ) {
            let others = |list: &[String]| list.iter().filter(|c| !c.starts_with("voter_id=")).cloned().collect::<Vec<_>>();
            let mut pairs = others(&before);
            pairs.push(format!("voter_id={id}"));
            pairs.extend(others(&after));
            let mut h = HeaderMap::new();
            h.insert(COOKIE, HeaderValue::from_str(&pairs.join(&format!(";{space}"))).unwrap());
            prop_assert_eq!(cookie(&h, "voter_id"), Some(id.as_str()));
        }

        /// Whatever `Origin`, `Host` and `Sec-Fetch-Site` say, the check answers without
        /// panicking; a `Sec-Fetch-Site: cross-site` is always refused.
        #[test]
        fn cross_site_check_never_panics(
            origin in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60)),
            host in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60)),
            site in proptest::option::of("(cross-site|same-origin|same-site|none|\\PC{0,12})"),
        ) {
            let mut h = HeaderMap::new();
            for (name, value) in [(ORIGIN, origin), (HOST, host), (HeaderName::from_static("sec-fetch-site"), site.clone().map(String::into_bytes))] {
                if let Some(value) = value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                    h.insert(name, value);
                }
            }
            let cross = is_cross_site(&h, false) && is_cross_site(&h, true);
            if h.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")) {
                prop_assert!(cross);
            }
            let _ = is_cross_site(&h, true);
        }

        /// An `Origin` naming the very scheme, `Host` and port is same-site; any other host,
        /// port or scheme is not.
        #[test]
        fn origins_match_their_host_only(
            name in "[a-z0-9][a-z0-9.-]{0,20}",
            port in proptest::option::of(1u16..),
            other in "[a-z0-9][a-z0-9.-]{0,20}",
            scheme in "https?",
        ) {
            let host = match port { Some(p) => format!("{name}:{p}"), None => name.clone() };
            let headers = |origin: &str| {
                let mut h = HeaderMap::new();
                h.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
                h.insert(HOST, HeaderValue::from_str(&host).unwrap());
                h.insert("x-forwarded-proto", HeaderValue::from_str(&scheme).unwrap());
                h
            };
            let cross = |origin: &str| is_cross_site(&headers(origin), true);
            let same = format!("{scheme}://{host}");
            prop_assert!(!cross(&same), "{}", same);
            if other != name {
                let foreign = format!("{scheme}://{other}");
                prop_assert!(cross(&foreign), "{}", foreign);
            }
            let default = if scheme == "http" { 80 } else { 443 };
            let effective = port.unwrap_or(default);
            let q = if effective == u16::MAX { 1 } else { effective + 1 };
            let other_port = format!("{scheme}://{name}:{q}");
            prop_assert!(cross(&other_port), "{}", other_port);
            let other_scheme = if scheme == "http" { "https" } else { "http" };
            let downgraded = format!("{other_scheme}://{host}");
            prop_assert!(cross(&downgraded), "{}", downgraded);
        }
    }
}
