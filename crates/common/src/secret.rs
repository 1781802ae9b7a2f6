//! Connection URLs that may hold a password: they print with the password replaced by `***`.
//!
//! One rule, [`redact`], for every URL the code prints or serves (logs, error messages,
//! `/readyz`, `voting`'s start line, the health check's output): the password of the user
//! info, and the value of every query parameter whose name looks like a password (it holds
//! `pass`, `pwd`, `secret` or `token`, in any case, percent-encoded or not: tokio-postgres takes
//! `?password=`, redis-rs `unix://…?pass=`), become `***`, and so does a fragment. A URL that
//! does not parse is not shown at all.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A URL whose `Debug` and `Display` never show its password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The full URL, password included: only for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, for logs and error messages: see
    /// [`redact`].
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// The same URL with `password` (percent-encoded as needed) in place of any it had.
    pub fn with_password(&self, password: &str) -> Result<SecretUrl, String> {
        let mut u = url::Url::parse(&self.0).map_err(|e| format!("not a URL ({e})"))?;
        u.set_password(Some(password))
            .map_err(|()| "this URL cannot carry a password (it has no host)".to_string())?;
        Ok(SecretUrl(u.to_string()))
    }

    /// Checks that the URL parses and has one of the given schemes.
    pub fn check_scheme(&self, schemes: &[&str]) -> Result<(), String> {
        let u = url::Url::parse(&self.0).map_err(|e| format!("not a URL ({e})"))?;
        if schemes.contains(&u.scheme()) {
            Ok(())
        } else {
            Err(format!(
                "scheme must be one of {}, not {:?}",
                schemes.join(", "),
                u.scheme()
            ))
        }
    }
}

/// `url` with its secrets replaced by `***`: the user info's password, the values of
/// password-like query parameters ([`is_password_like`]) and the fragment. A URL that does not
/// parse shows as `<unparsable url>`.
pub fn redact(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "<unparsable url>".to_string();
    };
    if u.password().is_some() {
        // Setting a password only fails for URLs that cannot have one.
        if u.set_password(Some("***")).is_err() {
            return "<unparsable url>".to_string();
        }
    }
    if let Some(query) = u.query() {
        let query = redact_query(query);
        u.set_query(Some(&query));
    }
    if u.fragment().is_some() {
        u.set_fragment(Some("***"));
    }
    u.to_string()
}

/// Whether a query parameter's name (decoded) names a secret: it holds `pass`, `pwd`,
/// `secret` or `token`, in any case (`password`, `pass`, `sslpassword`, `PASSWD`, …).
pub fn is_password_like(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

/// A query string with the value of every password-like parameter replaced by `***`; the
/// other parameters stay as written.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let secret = url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_some_and(|(name, _)| is_password_like(&name));
            if secret {
                format!("{raw_name}=***")
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_prints() {
        let u = SecretUrl::new("postgres://app:hunter2@db:5432/votes");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(!format!("{u}").contains("hunter2"));
        assert!(format!("{u}").contains("app:***@db"));
        assert_eq!(u.expose(), "postgres://app:hunter2@db:5432/votes");
    }

    #[test]
    fn garbage_does_not_print_either() {
        let u = SecretUrl::new("not a url with hunter2");
        assert!(!format!("{u}").contains("hunter2"));
    }

    #[test]
    fn password_is_put_in_and_encoded() {
        let u = SecretUrl::new("postgres://app@db:5432/votes");
        assert_eq!(
            u.with_password("hunter2").unwrap().expose(),
            "postgres://app:hunter2@db:5432/votes"
        );
        let odd = u.with_password("a@b:c/d").unwrap();
        assert_eq!(odd.expose(), "postgres://app:a%40b%3Ac%2Fd@db:5432/votes");
        assert!(!format!("{odd}").contains("a%40b"));
        assert!(
            SecretUrl::new("unix:///run/redis.sock")
                .with_password("x")
                .is_err()
        );
    }

    #[test]
    fn password_like_query_parameters_never_print() {
        let cases = [
            (
                "postgres://app@db/votes?password=hunter2",
                "postgres://app@db/votes?password=***",
            ),
            (
                "postgresql://app@db/votes?sslmode=disable&PassWord=hunter2&application_name=x",
                "postgresql://app@db/votes?sslmode=disable&PassWord=***&application_name=x",
            ),
            (
                "unix:///run/redis.sock?db=1&pass=hunter2",
                "unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "redis+unix:///run/redis.sock?pass=hunter2",
                "redis+unix:///run/redis.sock?pass=***",
            ),
            (
                "postgres://app@db/votes?p%61ssword=hunter2",
                "postgres://app@db/votes?p%61ssword=***",
            ),
            (
                "rediss://u:hunter2@cache:6380/0?token=hunter2#hunter2",
                "rediss://u:***@cache:6380/0?token=***#***",
            ),
            (
                "postgres://app@db/votes?password",
                "postgres://app@db/votes?password=***",
            ),
        ];
        for (url, shown) in cases {
            let u = SecretUrl::new(url);
            assert_eq!(u.redacted(), shown);
            assert_eq!(format!("{u}"), shown);
            assert!(!format!("{u:?}").contains("hunter2"));
            assert_eq!(u.expose(), url, "the client library gets it whole");
        }
    }

    /// Every scheme the services accept, with a password in the user info, in a password-like
    /// query parameter (any case, percent-encoded names), or both: the password never shows,
    /// neither as given nor percent-encoded.
    mod every_scheme {
        use super::*;
        use proptest::prelude::*;

        const SCHEMES: [&str; 6] = [
            "redis",
            "rediss",
            "unix",
            "redis+unix",
            "postgres",
            "postgresql",
        ];
        const NAMES: [&str; 8] = [
            "password",
            "pass",
            "PASSWORD",
            "Pass",
            "passwd",
            "sslpassword",
            "p%61ssword",
            "pa%73s",
        ];

        /// Query-string escaping of everything but letters and digits.
        fn encode(s: &str) -> String {
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
        }

        /// Every spelling of `secret` that could show it.
        fn spellings(secret: &str) -> Vec<String> {
            let percent: String = secret
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            vec![secret.to_string(), encode(secret), percent]
        }

        proptest! {
            #[test]
            fn the_password_never_shows(
                scheme in proptest::sample::select(&SCHEMES[..]),
                // Two capitals first: nothing else in these URLs has any.
                secret in "[A-Z]{2}[A-Za-z0-9 !$&'()*+,;=:@/?#%~-]{4,16}",
                user in "[a-z]{0,6}",
                host in "[a-z][a-z0-9.-]{0,12}",
                port in proptest::option::of(1u16..),
                path in "[a-z0-9/]{0,12}",
                in_user_info in any::<bool>(),
                in_query in proptest::option::of(proptest::sample::select(&NAMES[..])),
                before in proptest::collection::vec("[a-z]{1,6}=[a-z0-9]{0,6}", 0..3),
                after in proptest::collection::vec("[a-z]{1,6}=[a-z0-9]{0,6}", 0..3),
            ) {
                prop_assume!(in_user_info || in_query.is_some());
                let authority = match port {
                    Some(p) => format!("{host}:{p}"),
                    None => host.clone(),
                };
                let user_info = if in_user_info {
                    format!("{user}:{}@", encode(&secret))
                } else {
                    String::new()
                };
                let mut query = before.clone();
                if let Some(name) = in_query {
                    query.push(format!("{name}={}", encode(&secret)));
                }
                query.extend(after);
                let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
                let url = if scheme.contains("unix") && !in_user_info {
                    format!("{scheme}:///{path}{query}")
                } else {
                    format!("{scheme}://{user_info}{authority}/{path}{query}")
                };
                let u = SecretUrl::new(url.as_str());
                for shown in [format!("{u}"), format!("{u:?}"), redact(&url)] {
                    for spelling in spellings(&secret) {
                        prop_assert!(!shown.contains(&spelling), "{} shows {} as {}", url, spelling, shown);
                    }
                }
            }

            /// Whatever text a URL holds, redacting it never panics.
            #[test]
            fn any_text_is_redacted_cleanly(url in "\\PC{0,80}") {
                let _ = redact(&url);
            }
        }
    }

    #[test]
    fn scheme_is_checked() {
        let u = SecretUrl::new("redis://127.0.0.1:6379");
        assert!(u.check_scheme(&["redis", "rediss"]).is_ok());
        assert!(u.check_scheme(&["postgres"]).is_err());
    }
}
