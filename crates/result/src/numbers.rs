//! Numbers a room can read: percentages that add up to 100, and counts with the thousands
//! separator of the page's language.
//!
//! The page's script formats the counts of live updates with the same [`Grouping`], which the
//! page hands it in data attributes; the percentages travel in the snapshot's JSON, so the
//! script never rounds on its own.

/// Whole percentages of `counts` by the largest remainder method: each is its exact share
/// rounded down, then the points still missing to 100 go to the largest remainders (ties: the
/// larger count, then the earlier option). They add up to exactly 100 (all 0 when there is no
/// vote), each is within one point of its exact share, an option without votes gets 0, and a
/// larger count never gets a smaller percentage.
pub fn percentages(counts: &[u64]) -> Vec<u64> {
    let total: u128 = counts.iter().map(|&c| u128::from(c)).sum();
    if total == 0 {
        return vec![0; counts.len()];
    }
    let share = |c: u64| u128::from(c) * 100;
    let mut out: Vec<u64> = counts
        .iter()
        .map(|&c| u64::try_from(share(c) / total).expect("a share is at most 100"))
        .collect();
    let missing = 100 - out.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&i, &j| {
        let (ri, rj) = (share(counts[i]) % total, share(counts[j]) % total);
        rj.cmp(&ri).then(counts[j].cmp(&counts[i])).then(i.cmp(&j))
    });
    for &i in order
        .iter()
        .take(usize::try_from(missing).expect("at most 100"))
    {
        out[i] += 1;
    }
    out
}

/// How a language groups the digits of large numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grouping {
    /// Between groups of three digits.
    pub separator: &'static str,
    /// Numbers with fewer digits are not grouped (Spanish and Polish write `1000` but
    /// `10 000`).
    pub min_digits: usize,
}

/// English: `8,551`. The default when the browser names no language of [`GROUPINGS`].
pub const DEFAULT_GROUPING: Grouping = Grouping {
    separator: ",",
    min_digits: 4,
};

const COMMA: Grouping = DEFAULT_GROUPING;
const DOT: Grouping = Grouping {
    separator: ".",
    min_digits: 4,
};
const DOT_FROM_5: Grouping = Grouping {
    separator: ".",
    min_digits: 5,
};
/// A no-break space, so a number never breaks across lines.
const SPACE: Grouping = Grouping {
    separator: "\u{a0}",
    min_digits: 4,
};
const SPACE_FROM_5: Grouping = Grouping {
    separator: "\u{a0}",
    min_digits: 5,
};
/// French uses the narrow no-break space.
const NARROW_SPACE: Grouping = Grouping {
    separator: "\u{202f}",
    min_digits: 4,
};
const APOSTROPHE: Grouping = Grouping {
    separator: "\u{2019}",
    min_digits: 4,
};

/// Languages (a primary tag, or a tag with its region where the region differs) and how they
/// group digits, after the Unicode CLDR's number formats.
pub const GROUPINGS: &[(&str, Grouping)] = &[
    ("de-ch", APOSTROPHE),
    ("it-ch", APOSTROPHE),
    ("pt-pt", SPACE),
    ("en", COMMA),
    ("ja", COMMA),
    ("ko", COMMA),
    ("zh", COMMA),
    ("he", COMMA),
    ("th", COMMA),
    ("de", DOT),
    ("da", DOT),
    ("el", DOT),
    ("id", DOT),
    ("it", DOT),
    ("nl", DOT),
    ("pt", DOT),
    ("ro", DOT),
    ("tr", DOT),
    ("es", DOT_FROM_5),
    ("fr", NARROW_SPACE),
    ("cs", SPACE),
    ("fi", SPACE),
    ("nb", SPACE),
    ("no", SPACE),
    ("ru", SPACE),
    ("sk", SPACE),
    ("sv", SPACE),
    ("uk", SPACE),
    ("hu", SPACE),
    ("pl", SPACE_FROM_5),
];

/// The grouping of the most preferred language of an `Accept-Language` header that
/// [`GROUPINGS`] knows (`de-CH` first as itself, then as `de`); [`DEFAULT_GROUPING`] when it
/// knows none, or the header is missing or malformed.
pub fn grouping(accept_language: Option<&str>) -> Grouping {
    let Some(header) = accept_language else {
        return DEFAULT_GROUPING;
    };
    let mut ranges: Vec<(u16, usize, String)> = header
        .split(',')
        .take(32)
        .enumerate()
        .filter_map(|(position, item)| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim().to_ascii_lowercase();
            let mut weight = 1000;
            for param in parts {
                if let Some(q) = param.trim().strip_prefix("q=") {
                    weight = quality(q)?;
                }
            }
            (weight > 0 && !tag.is_empty() && tag != "*").then_some((weight, position, tag))
        })
        .collect();
    ranges.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, tag) in ranges {
        let mut subtags = tag.split('-');
        let primary = subtags.next().unwrap_or_default();
        let region = subtags.find(|s| s.len() == 2).unwrap_or_default();
        let with_region = format!("{primary}-{region}");
        for wanted in [with_region.as_str(), primary] {
            if let Some((_, g)) = GROUPINGS.iter().find(|(name, _)| *name == wanted) {
                return *g;
            }
        }
    }
    DEFAULT_GROUPING
}

/// A quality value (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
fn quality(q: &str) -> Option<u16> {
    let (whole, fraction) = q.split_once('.').unwrap_or((q, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `n` with its digits grouped by threes as `grouping` says: `8,551`, `8.551`, `8 551`.
pub fn group(n: u64, grouping: Grouping) -> String {
    let digits = n.to_string();
    if digits.len() < grouping.min_digits {
        return digits;
    }
    let mut out = String::with_capacity(digits.len() * 2);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(grouping.separator);
        }
        out.push(d);
    }
    out
}

/// The total in the original app's words: "No votes yet", "1 vote", "8,551 votes".
pub fn total_words(total: u64, grouping: Grouping) -> String {
    match total {
        0 => "No votes yet".to_string(),
        1 => "1 vote".to_string(),
        n => format!("{} votes", group(n, grouping)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn three_equal_counts_add_up_to_100() {
        assert_eq!(percentages(&[1, 1, 1]), [34, 33, 33]);
        assert_eq!(percentages(&[0, 0]), [0, 0]);
        assert_eq!(percentages(&[3, 1]), [75, 25]);
        assert_eq!(percentages(&[1, 0, 2]), [33, 0, 67]);
        assert_eq!(
            percentages(&[1, 1, 1, 1, 1, 1, 1]),
            [15, 15, 14, 14, 14, 14, 14]
        );
        // 1 vote in 1,000: less than half a point, still 0 (the bar shows it as a dot).
        assert_eq!(percentages(&[999, 1]), [100, 0]);
        assert_eq!(percentages(&[u64::MAX, u64::MAX]), [50, 50]);
    }

    proptest! {
        #[test]
        fn percentages_add_up_and_stay_near_the_exact_share(
            counts in prop::collection::vec(0u64..5_000, 2..=10)
        ) {
            let total: u64 = counts.iter().sum();
            let p = percentages(&counts);
            prop_assert_eq!(p.len(), counts.len());
            if total == 0 {
                prop_assert!(p.iter().all(|&x| x == 0));
            } else {
                prop_assert_eq!(p.iter().sum::<u64>(), 100);
                for (i, (&c, &x)) in counts.iter().zip(&p).enumerate() {
                    // |x - 100 c / total| < 1
                    let exact = u128::from(c) * 100;
                    let shown = u128::from(x) * u128::from(total);
                    prop_assert!(exact.abs_diff(shown) < u128::from(total), "{:?} -> {:?}", counts, p);
                    if c == 0 {
                        prop_assert_eq!(x, 0);
                    }
                    for (&d, &y) in counts.iter().zip(&p).skip(i + 1) {
                        if c > d { prop_assert!(x >= y, "{:?} -> {:?}", counts, p); }
                        if d > c { prop_assert!(y >= x, "{:?} -> {:?}", counts, p); }
                    }
                }
            }
        }
    }

    #[test]
    fn thousands_are_grouped_in_the_pages_language() {
        let g = |header: &str| grouping(Some(header));
        assert_eq!(group(8551, g("en-US,en;q=0.9")), "8,551");
        assert_eq!(group(8551, g("de-DE,de;q=0.9,en;q=0.8")), "8.551");
        assert_eq!(group(1_234_567, g("fr-FR")), "1\u{202f}234\u{202f}567");
        assert_eq!(group(8551, g("de-CH")), "8\u{2019}551");
        assert_eq!(group(8551, g("es")), "8551");
        assert_eq!(group(85_510, g("es-ES")), "85.510");
        assert_eq!(group(85_510, g("pl")), "85\u{a0}510");
        // The highest quality wins, whatever the order; unknown languages are passed over.
        assert_eq!(g("en;q=0.5, de;q=0.8"), DOT);
        assert_eq!(g("xx, de;q=0.1"), DOT);
        assert_eq!(g("de;q=0, en"), COMMA);
        // Nothing known, missing or malformed: English.
        assert_eq!(grouping(None), DEFAULT_GROUPING);
        assert_eq!(g("xx-YY"), DEFAULT_GROUPING);
        assert_eq!(g("de;q=2"), DEFAULT_GROUPING);
        assert_eq!(g(";;,,*"), DEFAULT_GROUPING);
        assert_eq!(group(0, DEFAULT_GROUPING), "0");
        assert_eq!(group(999, DEFAULT_GROUPING), "999");
        assert_eq!(group(1000, DEFAULT_GROUPING), "1,000");
        assert_eq!(
            group(u64::MAX, DEFAULT_GROUPING),
            "18,446,744,073,709,551,615"
        );
    }

    #[test]
    fn total_in_words() {
        assert_eq!(total_words(0, DEFAULT_GROUPING), "No votes yet");
        assert_eq!(total_words(1, DEFAULT_GROUPING), "1 vote");
        assert_eq!(total_words(2, DEFAULT_GROUPING), "2 votes");
        assert_eq!(total_words(8551, DEFAULT_GROUPING), "8,551 votes");
        assert_eq!(total_words(8551, DOT), "8.551 votes");
    }
}
