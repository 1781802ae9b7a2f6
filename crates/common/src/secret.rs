//! Connection URLs that may hold a password: they print with the password replaced by `***`.

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

    /// The URL with any password replaced by `***`, for logs and error messages.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                // Setting a password only fails for URLs that cannot have one.
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            Ok(_) => self.0.clone(),
            Err(_) => "<unparsable url>".to_string(),
        }
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
    fn scheme_is_checked() {
        let u = SecretUrl::new("redis://127.0.0.1:6379");
        assert!(u.check_scheme(&["redis", "rediss"]).is_ok());
        assert!(u.check_scheme(&["postgres"]).is_err());
    }
}
