//! The voting page (askama template `templates/vote.html`) and its stylesheet.

use askama::Template;
use common::options::Options;

/// The page's stylesheet, served at `static/style.css` relative to the page.
pub const STYLE_CSS: &str = include_str!("../static/style.css");

#[derive(Template)]
#[template(path = "vote.html")]
pub struct VotePage<'a> {
    pub title: String,
    pub options: Vec<PageOption<'a>>,
    pub chosen_label: Option<&'a str>,
    pub hostname: &'a str,
    pub error: Option<String>,
}

pub struct PageOption<'a> {
    pub key: &'a str,
    pub label: &'a str,
    pub chosen: bool,
    /// Position in the list, for the option's colour.
    pub index: usize,
}

impl<'a> VotePage<'a> {
    /// The page for a voter whose current choice is `chosen` (if any).
    pub fn new(options: &'a Options, chosen: Option<&str>, hostname: &'a str) -> VotePage<'a> {
        let labels: Vec<&str> = options.iter().map(|o| o.label.as_str()).collect();
        let options: Vec<PageOption<'a>> = options
            .iter()
            .enumerate()
            .map(|(index, o)| PageOption {
                key: o.key.as_str(),
                label: &o.label,
                chosen: chosen == Some(o.key.as_str()),
                index,
            })
            .collect();
        let chosen_label = options.iter().find(|o| o.chosen).map(|o| o.label);
        VotePage {
            title: format!("{}!", labels.join(" vs ")),
            options,
            chosen_label,
            hostname,
            error: None,
        }
    }
}
