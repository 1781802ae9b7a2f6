//! Turning what Redis holds into ballots, or into a reason to dead-letter it.
//!
//! A stream entry is either a vote from the vote service, with fields `voter_id` and `vote`,
//! or an entry of the original app's `votes` list moved into the stream as it was (field
//! [`FIELD_LEGACY`]: JSON `{"voter_id": "...", "vote": "..."}`). Both carry a voter id that
//! [`VoterId::parse`] accepts, and both take the entry's ID as their version.

use std::collections::HashMap;

use domain::options::Options;
use domain::queue::{EntryId, FIELD_LEGACY, FIELD_VOTE, FIELD_VOTER};
use domain::voter::VoterId;
use serde::Deserialize;

/// A vote ready to be applied: `version` orders the votes of one voter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ballot {
    pub voter: String,
    pub vote: String,
    pub version: EntryId,
}

/// Why an entry can never be applied; it goes to the dead-letter stream with this text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{0}` is not UTF-8")]
    NotUtf8(&'static str),
    #[error("malformed voter id")]
    BadVoter,
    #[error("malformed entry id")]
    BadId,
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    #[error("not a JSON vote: {0}")]
    BadJson(String),
}

/// Parses one stream entry's fields (as Redis returned them, bytes).
pub fn from_stream(
    id: EntryId,
    fields: &HashMap<String, Vec<u8>>,
    options: &Options,
) -> Result<Ballot, Invalid> {
    if let Some(raw) = fields.get(FIELD_LEGACY) {
        return from_legacy(raw, id, options);
    }
    let field = |name: &'static str| -> Result<&str, Invalid> {
        let raw = fields.get(name).ok_or(Invalid::MissingField(name))?;
        std::str::from_utf8(raw).map_err(|_| Invalid::NotUtf8(name))
    };
    ballot(field(FIELD_VOTER)?, field(FIELD_VOTE)?, id, options)
}

#[derive(Deserialize)]
struct LegacyVote {
    voter_id: String,
    vote: String,
}

/// Parses one entry of the original app's `votes` list, moved into the stream as entry `id`.
pub fn from_legacy(raw: &[u8], id: EntryId, options: &Options) -> Result<Ballot, Invalid> {
    let parsed: LegacyVote =
        serde_json::from_slice(raw).map_err(|e| Invalid::BadJson(e.to_string()))?;
    ballot(&parsed.voter_id, &parsed.vote, id, options)
}

fn ballot(voter: &str, vote: &str, id: EntryId, options: &Options) -> Result<Ballot, Invalid> {
    let voter = VoterId::parse(voter).ok_or(Invalid::BadVoter)?;
    let option = options
        .get(vote)
        .ok_or_else(|| Invalid::UnknownOption(clip(vote)))?;
    Ok(Ballot {
        voter: voter.as_str().to_owned(),
        vote: option.key.as_str().to_owned(),
        version: id,
    })
}

/// At most 64 characters of untrusted text, for a dead-letter reason.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Keeps the newest ballot of each voter (PostgreSQL refuses to update one row twice in one
/// statement) and sorts by voter, so concurrent workers lock rows in the same order.
pub fn newest_per_voter(mut ballots: Vec<Ballot>) -> Vec<Ballot> {
    ballots.sort_by(|a, b| a.voter.cmp(&b.voter).then(b.version.cmp(&a.version)));
    ballots.dedup_by(|later, first| later.voter == first.voter);
    ballots
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::options::Options;
    use proptest::prelude::*;

    fn options() -> Options {
        Options::new(Options::defaults()).unwrap()
    }

    fn id(ms: u64, seq: u64) -> EntryId {
        EntryId { ms, seq }
    }

    fn fields(pairs: &[(&str, &[u8])]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn stream_entries() {
        let voter = "0123456789abcdef0123456789abcdef";
        let ok = from_stream(
            id(1, 0),
            &fields(&[("voter_id", voter.as_bytes()), ("vote", b"a")]),
            &options(),
        );
        assert_eq!(ok.unwrap().vote, "a");
        let missing = from_stream(id(1, 0), &fields(&[("vote", b"a")]), &options());
        assert_eq!(missing, Err(Invalid::MissingField("voter_id")));
        let unknown = from_stream(
            id(1, 0),
            &fields(&[("voter_id", voter.as_bytes()), ("vote", b"z")]),
            &options(),
        );
        assert_eq!(unknown, Err(Invalid::UnknownOption("z".into())));
        let bad_voter = from_stream(
            id(1, 0),
            &fields(&[("voter_id", b"x' OR 1=1"), ("vote", b"a")]),
            &options(),
        );
        assert_eq!(bad_voter, Err(Invalid::BadVoter));
        let binary = from_stream(
            id(1, 0),
            &fields(&[("voter_id", voter.as_bytes()), ("vote", b"\xff")]),
            &options(),
        );
        assert_eq!(binary, Err(Invalid::NotUtf8("vote")));
    }

    #[test]
    fn legacy_entries() {
        let ok = from_legacy(
            br#"{"voter_id":"3fa2b9c1d2e4f5a","vote":"b"}"#,
            id(5, 1),
            &options(),
        )
        .unwrap();
        assert_eq!(
            (ok.voter.as_str(), ok.vote.as_str()),
            ("3fa2b9c1d2e4f5a", "b")
        );
        assert!(matches!(
            from_legacy(b"a", id(5, 1), &options()),
            Err(Invalid::BadJson(_))
        ));
        assert_eq!(
            from_legacy(br#"{"voter_id":"","vote":"b"}"#, id(5, 1), &options()),
            Err(Invalid::BadVoter)
        );
        // 17 to 31 digits: issued by neither app.
        assert_eq!(
            from_legacy(
                br#"{"voter_id":"0123456789abcdef0","vote":"b"}"#,
                id(5, 1),
                &options()
            ),
            Err(Invalid::BadVoter)
        );
        // A list entry moved into the stream is recognised by its field.
        let moved = from_stream(
            id(6, 0),
            &fields(&[("legacy", br#"{"voter_id":"77aa","vote":"a"}"#)]),
            &options(),
        )
        .unwrap();
        assert_eq!((moved.voter.as_str(), moved.version), ("77aa", id(6, 0)));
    }

    #[test]
    fn newest_wins() {
        let b = |voter: &str, vote: &str, ms| Ballot {
            voter: voter.into(),
            vote: vote.into(),
            version: id(ms, 0),
        };
        let kept = newest_per_voter(vec![
            b("y", "a", 1),
            b("x", "a", 1),
            b("x", "b", 3),
            b("x", "a", 2),
        ]);
        assert_eq!(kept, vec![b("x", "b", 3), b("y", "a", 1)]);
    }

    proptest! {
        /// Whatever another writer put in the stream, parsing does not panic, and only a
        /// well-formed voter id and a configured option ever come out as a ballot.
        #[test]
        fn stream_parser_never_panics(
            voter in proptest::collection::vec(any::<u8>(), 0..40),
            vote in proptest::collection::vec(any::<u8>(), 0..40),
            extra in proptest::option::of(("\\PC{0,10}", proptest::collection::vec(any::<u8>(), 0..20))),
            drop_field in 0usize..3,
        ) {
            let mut entry = fields(&[("voter_id", &voter), ("vote", &vote)]);
            match drop_field {
                1 => { entry.remove("voter_id"); }
                2 => { entry.remove("vote"); }
                _ => {}
            }
            if let Some((name, value)) = extra {
                entry.entry(name).or_insert(value);
            }
            if let Ok(ballot) = from_stream(id(1, 0), &entry, &options()) {
                prop_assert!(VoterId::parse(&ballot.voter).is_some(), "{:?}", ballot);
                prop_assert!(options().get(&ballot.vote).is_some(), "{:?}", ballot);
            }
        }

        /// A 32-hex-digit voter id with a configured option is a ballot, whatever else the
        /// entry holds.
        #[test]
        fn valid_stream_entries_parse(voter in "[0-9a-f]{32}", vote in "(a|b)", extra in "[a-z]{1,8}") {
            let mut entry = fields(&[("voter_id", voter.as_bytes()), ("vote", vote.as_bytes())]);
            entry.entry(extra).or_insert_with(|| b"x".to_vec());
            let ballot = from_stream(id(7, 1), &entry, &options()).unwrap();
            prop_assert_eq!((ballot.voter, ballot.vote, ballot.version), (voter, vote, id(7, 1)));
        }

        /// Whatever is in the original app's list, parsing does not panic, and a ballot has
        /// a voter id that the vote service accepts too, and a configured option.
        #[test]
        fn legacy_parser_never_panics(
            raw in proptest::prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                ("\\PC{0,40}", "\\PC{0,10}").prop_map(|(v, k)| serde_json::json!({"voter_id": v, "vote": k}).to_string().into_bytes()),
            ],
        ) {
            if let Ok(ballot) = from_legacy(&raw, id(1, 0), &options()) {
                prop_assert!(VoterId::parse(&ballot.voter).is_some(), "{:?}", ballot);
                prop_assert!(options().get(&ballot.vote).is_some(), "{:?}", ballot);
            }
        }

        #[test]
        fn dedupe_keeps_exactly_the_newest(entries in proptest::collection::vec((0u8..5, 0u64..20), 0..50)) {
            let ballots: Vec<Ballot> = entries.iter().enumerate()
                .map(|(i, (v, ms))| Ballot { voter: v.to_string(), vote: "a".into(), version: id(*ms, i as u64) })
                .collect();
            let kept = newest_per_voter(ballots.clone());
            for k in &kept {
                let newest = ballots.iter().filter(|b| b.voter == k.voter).map(|b| b.version).max();
                prop_assert_eq!(Some(k.version), newest);
            }
            let voters: std::collections::BTreeSet<_> = ballots.iter().map(|b| b.voter.clone()).collect();
            prop_assert_eq!(kept.len(), voters.len());
        }
    }
}
