//! The results page (askama template `templates/result.html`), its stylesheet and its script.
//!
//! The page is complete without JavaScript: the server renders every bar, count and
//! percentage, and the QR code of the voting page. The script then keeps it live over the
//! WebSocket. The CSP forbids inline styles and scripts, so bar widths are classes (`w-0` …
//! `w-100`), the QR code is SVG geometry, and both assets are files served next to the page,
//! at relative URLs.

use askama::Template;
use domain::options::Options;

use crate::join::{self, Qr};
use crate::numbers::{self, Grouping};
use crate::snapshot::Snapshot;

/// Served at `static/result.css` relative to the page.
pub const STYLE_CSS: &str = include_str!("../static/result.css");
/// Served at `static/result.js` relative to the page.
pub const SCRIPT_JS: &str = include_str!("../static/result.js");

#[derive(Template)]
#[template(path = "result.html")]
pub struct ResultPage<'a> {
    /// The poll's question (`question`): the heading and the title.
    pub question: &'a str,
    pub rows: Vec<Row<'a>>,
    pub total: u64,
    pub total_words: String,
    pub stale: bool,
    /// How counts are written, for the script's live updates too.
    pub grouping: Grouping,
    /// Where and how to vote; `None` when hidden (`result.show_qr`, `?qr=0`).
    pub join: Option<Join>,
}

/// One option's line on the page.
pub struct Row<'a> {
    pub key: &'a str,
    pub label: &'a str,
    /// The count, its digits grouped.
    pub count: String,
    pub percent: u64,
    /// No votes: the bar is drawn empty.
    pub zero: bool,
    /// Position in the list, for the option's colour.
    pub index: usize,
}

/// The voting page's address and its QR code.
pub struct Join {
    pub url: String,
    /// The address as people type it ([`join::short`]).
    pub short: String,
    pub qr: Qr,
}

impl Join {
    /// The block for `url`; `None` when it does not fit a QR code.
    pub fn new(url: String) -> Option<Join> {
        let qr = Qr::new(&url)?;
        Some(Join {
            short: join::short(&url).to_string(),
            url,
            qr,
        })
    }
}

impl<'a> ResultPage<'a> {
    /// The page showing `snapshot` (whose counts follow the order of `options`).
    pub fn new(
        question: &'a str,
        options: &'a Options,
        snapshot: &Snapshot,
        grouping: Grouping,
        join: Option<Join>,
    ) -> ResultPage<'a> {
        let rows = options
            .iter()
            .zip(snapshot.counts.iter().zip(&snapshot.percents))
            .enumerate()
            .map(|(index, (o, (&count, &percent)))| Row {
                key: o.key.as_str(),
                label: &o.label,
                count: numbers::group(count, grouping),
                percent,
                zero: count == 0,
                index,
            })
            .collect();
        ResultPage {
            question,
            rows,
            total: snapshot.total,
            total_words: numbers::total_words(snapshot.total, grouping),
            stale: snapshot.stale,
            grouping,
            join,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbers::DEFAULT_GROUPING;

    fn render(counts: Vec<u64>, stale: bool, join: Option<Join>) -> String {
        let options = Options::new(Options::defaults()).unwrap();
        let snapshot = Snapshot::new(&options, counts, stale, 1);
        ResultPage::new("Cats vs Dogs!", &options, &snapshot, DEFAULT_GROUPING, join)
            .render()
            .unwrap()
    }

    #[test]
    fn renders_counts_percentages_and_level_bars() {
        let empty = render(vec![0, 0], false, None);
        assert!(empty.contains("No votes yet"));
        assert_eq!(empty.matches("bar w-0 none\"").count(), 2, "{empty}");
        assert!(
            empty.contains("<title>Results: Cats vs Dogs!</title>"),
            "{empty}"
        );
        assert!(empty.contains(">Cats vs Dogs!</h1>"), "{empty}");

        let some = render(vec![3, 1], false, None);
        assert!(some.contains("4 votes"));
        assert!(
            some.contains("bar w-75\"") && some.contains("bar w-25\""),
            "{some}"
        );
        assert!(some.contains(">75%<") && some.contains(">25%<"), "{some}");

        let many = render(vec![8551, 0], false, None);
        assert!(
            many.contains(">8,551<") && many.contains("8,551 votes"),
            "{many}"
        );
        assert!(many.contains("bar w-100\"") && many.contains("bar w-0 none\""));
    }

    #[test]
    fn one_status_never_live_and_stale_at_once() {
        let stale = render(vec![1, 0], true, None);
        assert_eq!(stale.matches("role=\"status\"").count(), 1, "{stale}");
        assert!(
            stale.contains("data-state=\"stale\">These results may be stale"),
            "{stale}"
        );
        assert!(
            !stale.contains(">Live<") && !stale.contains("\"live\""),
            "{stale}"
        );
        let fresh = render(vec![1, 0], false, None);
        assert!(
            fresh.contains("data-state=\"connecting\" hidden>"),
            "{fresh}"
        );
    }

    #[test]
    fn the_join_block_shows_the_url_and_its_code_or_a_link() {
        let url = "https://poll.example.org/vote/".to_string();
        let html = render(vec![0, 0], false, Join::new(url));
        assert!(
            html.contains("<a href=\"https://poll.example.org/vote/\">poll.example.org/vote</a>"),
            "{html}"
        );
        assert!(
            html.contains("<svg class=\"qr\" viewBox=\"0 0 37 37\""),
            "{html}"
        );
        assert!(!html.contains("style="), "{html}");
        let hidden = render(vec![0, 0], false, None);
        assert!(!hidden.contains("<svg"), "{hidden}");
        assert!(
            hidden.contains("href=\"../vote/\""),
            "the pages link to each other: {hidden}"
        );
    }

    #[test]
    fn stylesheet_has_every_width() {
        for p in 0..=100 {
            assert!(
                STYLE_CSS.contains(&format!(".w-{p} {{ width: {p}%; }}")),
                "missing .w-{p}"
            );
        }
    }
}
