//! The voting page (askama template `templates/vote.html`) and its stylesheet.

use askama::Template;
use domain::options::Options;

/// The page's stylesheet, served at `static/style.css` relative to the page.
pub const STYLE_CSS: &str = include_str!("../static/style.css");

#[derive(Template)]
#[template(path = "vote.html")]
pub struct VotePage<'a> {
    /// The poll's question (`question`): the heading and the title.
    pub question: &'a str,
    pub options: Vec<PageOption<'a>>,
    pub chosen_label: Option<&'a str>,
    /// The replica serving the page, when there is one to name ([`common::replica_name`]).
    pub replica: Option<&'a str>,
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
    /// The page asking `question` for a voter whose current choice is `chosen` (if any).
    pub fn new(
        question: &'a str,
        options: &'a Options,
        chosen: Option<&str>,
        replica: Option<&'a str>,
    ) -> VotePage<'a> {
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
            question,
            options,
            chosen_label,
            replica,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(question: &str, replica: Option<&str>) -> String {
        let options = Options::new(Options::defaults()).unwrap();
        VotePage::new(question, &options, Some("b"), replica)
            .render()
            .unwrap()
    }

    #[test]
    fn the_question_is_the_heading_and_the_title_escaped() {
        let html = render("Tea <or> \"coffee\" & cake?", None);
        assert!(
            !html.contains("<or>") && !html.contains("\"coffee\""),
            "{html}"
        );
        let title = html
            .split("<title>")
            .nth(1)
            .unwrap()
            .split("</title>")
            .next()
            .unwrap();
        assert!(
            title.starts_with("Tea &") && title.ends_with(" cake?"),
            "{title}"
        );
        assert!(html.contains(&format!(">{title}</h1>")), "{html}");
    }

    #[test]
    fn the_replica_is_named_only_when_there_is_one() {
        let alone = render("Q", None);
        assert!(!alone.contains("Processed by"), "{alone}");
        let replica = render("Q", Some("3f4e5d6c7b8a"));
        assert!(
            replica.contains("Processed by replica <span id=\"replica\">3f4e5d6c7b8a</span>"),
            "{replica}"
        );
    }

    #[test]
    fn the_page_links_to_the_results_and_has_an_icon_and_a_description() {
        let html = render("Q", None);
        assert!(html.contains("href=\"../result/\""), "{html}");
        assert!(
            html.contains("<link rel=\"icon\" href=\"static/favicon.svg\" type=\"image/svg+xml\">")
        );
        assert!(
            html.contains("<meta name=\"description\" content=\"Vote: Q\">"),
            "{html}"
        );
    }
}
