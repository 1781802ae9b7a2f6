//! The Redis side of the protocol between vote and worker.
//!
//! One stream entry per vote, fields [`FIELD_VOTER`] and [`FIELD_VOTE`], or [`FIELD_LEGACY`]
//! for an entry of the original app's list that the worker moved into the stream. The entry ID
//! that Redis assigns (`<ms>-<seq>`) is the vote's version: a later entry of the same voter
//! wins.

use std::fmt;

pub const FIELD_VOTER: &str = "voter_id";
pub const FIELD_VOTE: &str = "vote";
/// The field of an entry of the original app's list, moved into the stream as it was (JSON).
pub const FIELD_LEGACY: &str = "legacy";

/// A stream entry ID, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    /// Parses `<ms>-<seq>`.
    pub fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_redis_ids() {
        assert_eq!(
            EntryId::parse("1700000000000-3"),
            Some(EntryId {
                ms: 1_700_000_000_000,
                seq: 3
            })
        );
        assert!(EntryId::parse("17-").is_none());
        assert!(EntryId::parse("-1").is_none());
        assert!(EntryId::parse("1-2-3").is_none());
        assert!(EntryId::parse("+1-2").is_none());
        assert!(EntryId::parse("99999999999999999999-1").is_none());
    }

    proptest! {
        #[test]
        fn round_trips_and_orders(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let x = EntryId { ms: a.0, seq: a.1 };
            let y = EntryId { ms: b.0, seq: b.1 };
            prop_assert_eq!(EntryId::parse(&x.to_string()), Some(x));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }

        /// Any text, near-miss IDs included, parses or not without panicking; what parses is
        /// a pair of decimal numbers that prints back to an equal ID.
        #[test]
        fn any_text_parses_cleanly(s in "(\\PC{0,45}|[0-9+-]{0,24}|[0-9]{0,22}-[0-9]{0,22})") {
            if let Some(id) = EntryId::parse(&s) {
                let (ms, seq) = s.split_once('-').expect("a parsed ID has a dash");
                prop_assert_eq!(ms.parse::<u64>().ok(), Some(id.ms));
                prop_assert_eq!(seq.parse::<u64>().ok(), Some(id.seq));
                prop_assert_eq!(EntryId::parse(&id.to_string()), Some(id));
            }
        }
    }
}
