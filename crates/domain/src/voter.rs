//! Voter identity: the `voter_id` cookie, which is also the idempotency key of a vote (one
//! voter, one row, whatever was retried).
//!
//! New ids are 128 random bits as 32 lowercase hex characters. The original example voting
//! app issues shorter ones (`hex(getrandbits(64))` less its prefix and last character: up to
//! 16 lowercase hex digits), and they are accepted too, by the vote service (its cookie) and
//! by the worker (its list), so a browser that voted there keeps its identity here.

use std::fmt;

/// The length of the ids this app issues.
pub const NEW_ID_LEN: usize = 32;
/// The longest id the original app issues.
pub const ORIGINAL_ID_MAX_LEN: usize = 16;

/// A voter id that has been checked: lowercase hex, 32 characters (ours) or 1 to 16 (the
/// original app's).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VoterId(String);

impl VoterId {
    /// Parses a voter id; anything but 32, or 1 to 16, lowercase hex characters is refused.
    pub fn parse(s: &str) -> Option<VoterId> {
        let len_ok = s.len() == NEW_ID_LEN || (1..=ORIGINAL_ID_MAX_LEN).contains(&s.len());
        let ok = len_ok && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| VoterId(s.to_owned()))
    }

    /// A fresh id from the thread's cryptographically secure generator.
    pub fn random() -> VoterId {
        VoterId::from_bits(rand::random())
    }

    /// The id of these 128 bits, as this app writes its ids: 32 lowercase hex characters.
    pub fn from_bits(bits: u128) -> VoterId {
        VoterId(format!("{bits:032x}"))
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
        assert_eq!(a.as_str().len(), NEW_ID_LEN);
        assert_eq!(VoterId::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a, b);
    }

    #[test]
    fn takes_the_original_apps_ids() {
        for id in [
            "5e1f0a2b3c4d",
            "a",
            "77aa",
            "ffffffffffffffff",
            "0123456789abcde",
        ] {
            assert!(VoterId::parse(id).is_some(), "{id}");
        }
    }

    #[test]
    fn refuses_near_misses() {
        assert!(VoterId::parse("").is_none());
        assert!(VoterId::parse(&"A".repeat(32)).is_none());
        assert!(VoterId::parse(&"a".repeat(17)).is_none());
        assert!(VoterId::parse(&"a".repeat(31)).is_none());
        assert!(VoterId::parse(&"a".repeat(33)).is_none());
        assert!(VoterId::parse("0x5e1f").is_none());
        assert!(VoterId::parse(&format!("{}g", "a".repeat(31))).is_none());
        assert!(VoterId::parse("0123456789abcdef0123456789abcde\u{e9}").is_none());
    }

    proptest! {
        #[test]
        fn accepts_exactly_lowercase_hex_of_32_or_up_to_16(s in "\\PC{0,40}|[0-9a-fA-F]{0,34}") {
            let hex = s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
            let valid = hex && (s.len() == 32 || (1..=16).contains(&s.len()));
            prop_assert_eq!(VoterId::parse(&s).is_some(), valid);
        }

        #[test]
        fn ids_from_bits_are_new_ids_of_those_bits(bits in any::<u128>()) {
            let id = VoterId::from_bits(bits);
            prop_assert_eq!(id.as_str().len(), NEW_ID_LEN);
            prop_assert_eq!(u128::from_str_radix(id.as_str(), 16).ok(), Some(bits));
            prop_assert_eq!(VoterId::parse(id.as_str()), Some(id));
        }

        #[test]
        fn every_hex_id_round_trips(s in "[0-9a-f]{32}|[0-9a-f]{1,16}") {
            let id = VoterId::parse(&s).expect("lowercase hex of a valid length");
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }
}
