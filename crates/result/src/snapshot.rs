//! A tally snapshot: every configured option with its count, and the JSON that goes to the
//! sockets and to `GET /api/tally`, serialized once when the snapshot is made.
//!
//! The JSON is the contract of DESIGN.md, with three extra fields:
//! `{"options":[{"key":"a","label":"Cats","count":12,"percent":60}],"total":20,"stale":false,"version":7}`.
//! `percent` is the option's whole percentage, by the largest remainder method so that they add
//! up to 100 ([`crate::numbers::percentages`]); `stale` is true while PostgreSQL cannot be read
//! (the counts are the last ones known); `version` grows by one with every snapshot a process
//! publishes.

use domain::options::Options;
use serde::Serialize;

use crate::numbers::percentages;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One published state of the tally. Immutable; shared as `Arc<Snapshot>`.
#[derive(Debug)]
pub struct Snapshot {
    /// Grows by one per published snapshot; 0 is the placeholder before the first read.
    pub version: u64,
    /// Counts in the order of the configured options.
    pub counts: Vec<u64>,
    /// Their whole percentages, adding up to 100 (all 0 without votes).
    pub percents: Vec<u64>,
    /// Sum of `counts`.
    pub total: u64,
    /// The counts could not be confirmed: PostgreSQL is unreachable (or not read yet).
    pub stale: bool,
    /// The JSON above. `Utf8Bytes` is reference-counted: handing it to a socket copies nothing.
    json: Utf8Bytes,
}

#[derive(Serialize)]
struct Json<'a> {
    options: Vec<JsonOption<'a>>,
    total: u64,
    stale: bool,
    version: u64,
}

#[derive(Serialize)]
struct JsonOption<'a> {
    key: &'a str,
    label: &'a str,
    count: u64,
    percent: u64,
}

impl Snapshot {
    /// Builds a snapshot (and its JSON) from counts aligned with `options`.
    pub fn new(options: &Options, counts: Vec<u64>, stale: bool, version: u64) -> Snapshot {
        debug_assert_eq!(counts.len(), options.len());
        let total = counts.iter().sum();
        let percents = percentages(&counts);
        let json = Json {
            options: options
                .iter()
                .zip(counts.iter().zip(&percents))
                .map(|(o, (&count, &percent))| JsonOption {
                    key: o.key.as_str(),
                    label: &o.label,
                    count,
                    percent,
                })
                .collect(),
            total,
            stale,
            version,
        };
        let json = serde_json::to_string(&json).expect("a tally always serializes");
        Snapshot {
            version,
            counts,
            percents,
            total,
            stale,
            json: json.into(),
        }
    }

    /// What is shown before PostgreSQL was ever read: no votes, and stale.
    pub fn placeholder(options: &Options) -> Snapshot {
        Snapshot::new(options, vec![0; options.len()], true, 0)
    }

    /// The JSON text, ready to be sent as a WebSocket text frame or an HTTP body.
    pub fn json(&self) -> &Utf8Bytes {
        &self.json
    }
}

/// Counts aligned with `options` from `(key, count)` rows of `tallies`: an option without a
/// row counts 0, rows of keys that are not configured are ignored, negative counts read as 0.
pub fn counts_from_rows<'a>(
    options: &Options,
    rows: impl IntoIterator<Item = (&'a str, i64)>,
) -> Vec<u64> {
    let mut counts = vec![0; options.len()];
    for (key, count) in rows {
        if let Some(i) = options.iter().position(|o| o.key.as_str() == key) {
            counts[i] = u64::try_from(count).unwrap_or(0);
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::options::{OptionKey, VoteOption};

    fn options(keys: &[&str]) -> Options {
        Options::new(
            keys.iter()
                .map(|k| VoteOption {
                    key: OptionKey::parse(k).unwrap(),
                    label: k.to_uppercase(),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn json_follows_the_contract() {
        let o = options(&["a", "b"]);
        let s = Snapshot::new(&o, vec![12, 8], false, 3);
        let v: serde_json::Value = serde_json::from_str(s.json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "options": [
                    {"key": "a", "label": "A", "count": 12, "percent": 60},
                    {"key": "b", "label": "B", "count": 8, "percent": 40},
                ],
                "total": 20,
                "stale": false,
                "version": 3,
            })
        );
    }

    #[test]
    fn labels_are_escaped_in_json() {
        let mut o = options(&["a", "b"]);
        o.relabel("a", "Say \"hi\" \\ <b>".into()).unwrap();
        let s = Snapshot::new(&o, vec![0, 0], true, 0);
        let v: serde_json::Value = serde_json::from_str(s.json()).unwrap();
        assert_eq!(v["options"][0]["label"], "Say \"hi\" \\ <b>");
    }

    #[test]
    fn rows_merge_with_the_configured_options() {
        let o = options(&["a", "b", "c"]);
        let counts = counts_from_rows(&o, [("c", 4), ("zebra", 99), ("a", 1), ("b", -2)]);
        assert_eq!(counts, [1, 0, 4]);
        assert_eq!(Snapshot::new(&o, counts, false, 1).total, 5);
    }
}
