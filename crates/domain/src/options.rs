//! The poll's options: an ordered list of 2 to 10 `{ key, label }` pairs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An option key: 1 to 32 characters of `[a-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OptionKey(String);

impl OptionKey {
    /// Parses a key; `None` unless it matches `^[a-z0-9_-]{1,32}$`.
    pub fn parse(s: &str) -> Option<OptionKey> {
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        ok.then(|| OptionKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OptionKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        OptionKey::parse(&s)
            .ok_or_else(|| format!("option key {s:?} must match ^[a-z0-9_-]{{1,32}}$"))
    }
}

impl From<OptionKey> for String {
    fn from(k: OptionKey) -> String {
        k.0
    }
}

impl fmt::Display for OptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One option as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteOption {
    pub key: OptionKey,
    pub label: String,
}

/// A checked option list: 2..=10 entries, unique keys, labels of 1..=64 characters. It reads
/// and writes as the plain list, checked on reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<VoteOption>", into = "Vec<VoteOption>")]
pub struct Options(Vec<VoteOption>);

pub const MIN_OPTIONS: usize = 2;
pub const MAX_OPTIONS: usize = 10;
pub const MAX_LABEL_CHARS: usize = 64;

impl Options {
    /// Checks a list of options; the error says what is wrong in one line.
    pub fn new(list: Vec<VoteOption>) -> Result<Options, String> {
        if !(MIN_OPTIONS..=MAX_OPTIONS).contains(&list.len()) {
            return Err(format!(
                "there must be {MIN_OPTIONS} to {MAX_OPTIONS} options, not {}",
                list.len()
            ));
        }
        for (i, option) in list.iter().enumerate() {
            check_label(&option.label)
                .map_err(|e| format!("option {:?}: {e}", option.key.as_str()))?;
            if list[..i].iter().any(|o| o.key == option.key) {
                return Err(format!(
                    "option key {:?} appears twice",
                    option.key.as_str()
                ));
            }
        }
        Ok(Options(list))
    }

    /// The default poll: `a` = Cats, `b` = Dogs.
    pub fn defaults() -> Vec<VoteOption> {
        ["Cats", "Dogs"]
            .iter()
            .zip(["a", "b"])
            .map(|(label, key)| VoteOption {
                key: OptionKey(key.to_string()),
                label: label.to_string(),
            })
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &VoteOption> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The configured option with this key, if any.
    pub fn get(&self, key: &str) -> Option<&VoteOption> {
        self.0.iter().find(|o| o.key.as_str() == key)
    }

    /// Sets the label of the option `key` (the original app's `OPTION_A` / `OPTION_B`).
    pub fn relabel(&mut self, key: &str, label: String) -> Result<(), String> {
        check_label(&label)?;
        let option = self
            .0
            .iter_mut()
            .find(|o| o.key.as_str() == key)
            .ok_or_else(|| format!("there is no option with key {key:?} to label"))?;
        option.label = label;
        Ok(())
    }
}

impl Default for Options {
    /// The default poll, [`Options::defaults`].
    fn default() -> Options {
        Options(Options::defaults())
    }
}

impl TryFrom<Vec<VoteOption>> for Options {
    type Error = String;
    fn try_from(list: Vec<VoteOption>) -> Result<Options, String> {
        Options::new(list)
    }
}

impl From<Options> for Vec<VoteOption> {
    fn from(options: Options) -> Vec<VoteOption> {
        options.0
    }
}

fn check_label(label: &str) -> Result<(), String> {
    let chars = label.chars().count();
    if chars == 0 || chars > MAX_LABEL_CHARS || label.trim().is_empty() {
        return Err(format!(
            "label must be 1 to {MAX_LABEL_CHARS} characters, not only spaces"
        ));
    }
    if label.chars().any(char::is_control) {
        return Err("label must not contain control characters".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opt(key: &str, label: &str) -> VoteOption {
        VoteOption {
            key: OptionKey::parse(key).unwrap(),
            label: label.into(),
        }
    }

    #[test]
    fn defaults_are_cats_and_dogs() {
        let o = Options::new(Options::defaults()).unwrap();
        assert_eq!(o.get("a").unwrap().label, "Cats");
        assert_eq!(o.get("b").unwrap().label, "Dogs");
        assert!(o.get("c").is_none());
        assert_eq!(Options::default(), o);
    }

    #[test]
    fn refuses_bad_lists() {
        assert!(Options::new(vec![opt("a", "A")]).is_err());
        assert!(
            Options::new(vec![opt("a", "A"), opt("a", "B")])
                .unwrap_err()
                .contains("twice")
        );
        assert!(Options::new(vec![opt("a", ""), opt("b", "B")]).is_err());
        assert!(Options::new(vec![opt("a", &"x".repeat(65)), opt("b", "B")]).is_err());
        let eleven = (0..11).map(|i| opt(&format!("k{i}"), "L")).collect();
        assert!(Options::new(eleven).is_err());
    }

    #[test]
    fn relabel_needs_the_key() {
        let mut o = Options::new(Options::defaults()).unwrap();
        o.relabel("a", "Tabs".into()).unwrap();
        assert_eq!(o.get("a").unwrap().label, "Tabs");
        assert!(o.relabel("z", "Zed".into()).is_err());
        assert!(o.relabel("b", String::new()).is_err());
    }

    proptest! {
        #[test]
        fn key_parse_matches_the_pattern(s in "\\PC{0,40}") {
            let valid = (1..=32).contains(&s.len())
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            prop_assert_eq!(OptionKey::parse(&s).is_some(), valid);
        }
    }
}
