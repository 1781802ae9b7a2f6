//! Voter identity: 128 random bits as 32 lowercase hex characters (the `voter_id` cookie).

use std::fmt;

/// A voter id that has been checked: exactly 32 characters of `[0-9a-f]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VoterId(String);

impl VoterId {
    /// Parses a voter id; anything but 32 lowercase hex characters is refused.
    pub fn parse(s: &str) -> Option<VoterId> {
        let ok = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| VoterId(s.to_owned()))
    }

    /// A fresh id from the thread's cryptographically secure generator.
    pub fn random() -> VoterId {
        VoterId(format!("{:032x}", rand::random::<u128>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VoterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VoterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VoterId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn random_ids_parse_and_differ() {
        let a = VoterId::random();
        let b = VoterId::random();
        assert_eq!(VoterId::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a, b);
    }

    #[test]
    fn refuses_near_misses() {
        assert!(VoterId::parse("").is_none());
        assert!(VoterId::parse(&"A".repeat(32)).is_none());
        assert!(VoterId::parse(&"a".repeat(31)).is_none());
        assert!(VoterId::parse(&"a".repeat(33)).is_none());
        assert!(VoterId::parse(&format!("{}g", "a".repeat(31))).is_none());
        assert!(VoterId::parse("0123456789abcdef0123456789abcde\u{e9}").is_none());
    }

    proptest! {
        #[test]
        fn accepts_exactly_lowercase_hex_of_32(s in "\\PC{0,40}") {
            let valid = s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
            prop_assert_eq!(VoterId::parse(&s).is_some(), valid);
        }

        #[test]
        fn every_hex_id_round_trips(s in "[0-9a-f]{32}") {
            let id = VoterId::parse(&s).expect("32 lowercase hex chars");
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }
}
