//! The results page (askama template `templates/result.html`), its stylesheet and its script.
//!
//! The page is complete without JavaScript: the server renders every bar, count and
//! percentage. The script then keeps it live over the WebSocket. The CSP forbids inline
//! styles and scripts, so bar widths are classes (`w-0` … `w-100`) and both assets are
//! files served next to the page, at relative URLs.

use askama::Template;
use common::options::Options;

use crate::snapshot::{self, Snapshot};

/// Served at `static/result.css` relative to the page.
pub const STYLE_CSS: &str = include_str!("../static/result.css");
/// Served at `static/result.js` relative to the page.
pub const SCRIPT_JS: &str = include_str!("../static/result.js");

#[derive(Template)]
#[template(path = "result.html")]
pub struct ResultPage<'a> {
    pub title: String,
    pub rows: Vec<Row<'a>>,
    pub total: u64,
    pub total_words: String,
    pub stale: bool,
}

/// One option's line on the page.
pub struct Row<'a> {
    pub key: &'a str,
    pub label: &'a str,
    pub count: u64,
    pub percent: u64,
    /// Position in the list, for the option's colour.
    pub index: usize,
}

impl<'a> ResultPage<'a> {
    /// The page showing `snapshot` (whose counts follow the order of `options`).
    pub fn new(options: &'a Options, snapshot: &Snapshot) -> ResultPage<'a> {
        let labels: Vec<&str> = options.iter().map(|o| o.label.as_str()).collect();
        let rows = options
            .iter()
            .zip(&snapshot.counts)
            .enumerate()
            .map(|(index, (o, &count))| Row {
                key: o.key.as_str(),
                label: &o.label,
                count,
                percent: snapshot::percent(count, snapshot.total),
                index,
            })
            .collect();
        ResultPage {
            title: labels.join(" vs "),
            rows,
            total: snapshot.total,
            total_words: snapshot::total_words(snapshot.total),
            stale: snapshot.stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_percentages_and_level_bars() {
        let options = Options::new(Options::defaults()).unwrap();
        let empty = ResultPage::new(&options, &Snapshot::new(&options, vec![0, 0], false, 1))
            .render()
            .unwrap();
        assert!(empty.contains("No votes yet"));
        assert_eq!(empty.matches("bar w-0\"").count(), 2, "{empty}");
        assert!(empty.contains("Cats vs Dogs"));

        let some = ResultPage::new(&options, &Snapshot::new(&options, vec![3, 1], false, 2))
            .render()
            .unwrap();
        assert!(some.contains("4 votes"));
        assert!(
            some.contains("bar w-75\"") && some.contains("bar w-25\""),
            "{some}"
        );
        assert!(some.contains(">75%<") && some.contains(">25%<"), "{some}");
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
