//! The bench's output: a Markdown table of figures beside their references, and the
//! replacement of the generated section of `docs/benchmarks.md` (between [`BEGIN`] and
//! [`END`]), so that the hand-written text around it stays.

use std::fmt::Write as _;

pub const BEGIN: &str =
    "<!-- bench:begin: written by `cargo xtask bench`, edit outside these marks -->";
pub const END: &str = "<!-- bench:end -->";

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub scenario: String,
    pub figure: String,
    /// The reference measured in the same run, or why there is none.
    pub reference: String,
    /// figure / reference.
    pub ratio: Option<f64>,
    pub goal: String,
    /// Whether the goal is met; `None` when there is no goal to judge.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(scenario: impl Into<String>, figure: impl Into<String>) -> Row {
        Row {
            scenario: scenario.into(),
            figure: figure.into(),
            reference: "—".into(),
            ratio: None,
            goal: "—".into(),
            met: None,
        }
    }

    pub fn reference(mut self, reference: impl Into<String>, ratio: Option<f64>) -> Row {
        self.reference = reference.into();
        self.ratio = ratio;
        self
    }

    pub fn goal(mut self, goal: impl Into<String>, met: bool) -> Row {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
}

/// When and where the figures were measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub date: String,
    pub cores: usize,
    pub cpu: String,
    pub load_before: f64,
    pub load_after: f64,
    pub command: String,
    pub elapsed_s: f64,
}

/// The generated section, markers included.
pub fn section(context: &Context, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(
        out,
        "Measured {} on {} cores ({}), load average {:.2} before and {:.2} after, by `{}` \
         ({:.0} s in all).\n",
        context.date,
        context.cores,
        context.cpu,
        context.load_before,
        context.load_after,
        context.command,
        context.elapsed_s
    );
    out.push_str(&table(rows));
    let _ = writeln!(out, "{END}");
    out
}

/// The table alone.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | figure | reference in the same run | ratio | goal | met |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = r
            .ratio
            .map_or("—".to_string(), |x| format!("{:.0} %", 100.0 * x));
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} | {} | {met} |",
            cell(&r.scenario),
            cell(&r.figure),
            cell(&r.reference),
            cell(&r.goal)
        );
    }
    out
}

/// A table cell: no line breaks, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

/// `doc` with the text between the markers (markers included) replaced by `section`.
pub fn replace_section(doc: &str, section: &str) -> anyhow::Result<String> {
    let start = doc
        .find(BEGIN)
        .ok_or_else(|| anyhow::anyhow!("the marker {BEGIN:?} is missing"))?;
    let end = doc[start..]
        .find(END)
        .map(|i| start + i + END.len())
        .ok_or_else(|| anyhow::anyhow!("the marker {END:?} is missing after the begin marker"))?;
    // The section ends with a newline; so did the end marker's line.
    let rest = doc[end..].strip_prefix('\n').unwrap_or(&doc[end..]);
    Ok(format!("{}{section}{rest}", &doc[..start]))
}

/// A count with thousands separators: 12,345.
pub fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Milliseconds with about three significant digits.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            date: "2026-01-02".into(),
            cores: 2,
            cpu: "Some CPU".into(),
            load_before: 1.5,
            load_after: 2.25,
            command: "cargo xtask bench".into(),
            elapsed_s: 150.0,
        }
    }

    #[test]
    fn rows_render_with_ratio_and_verdict() {
        let rows = [
            Row::new("vote | json", "9,000 votes/s")
                .reference("20,000/s", Some(0.45))
                .goal(">= 50 %", false),
            Row::new("idle RSS", "5.0 MB").goal("< 15 MB", true),
            Row::new("note", "x"),
        ];
        let t = table(&rows);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[2],
            "| vote \\| json | 9,000 votes/s | 20,000/s | 45 % | >= 50 % | **no** |"
        );
        assert_eq!(lines[3], "| idle RSS | 5.0 MB | — | — | < 15 MB | yes |");
        assert_eq!(lines[4], "| note | x | — | — | — | — |");
    }

    #[test]
    fn the_section_is_replaced_and_the_rest_kept() {
        let doc = format!("# Title\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## After\ntext\n");
        let s = section(&context(), &[Row::new("a", "b")]);
        let new = replace_section(&doc, &s).unwrap();
        assert!(new.starts_with("# Title\n\nintro\n\n"));
        assert!(new.ends_with(&format!("{END}\n\n## After\ntext\n")));
        assert!(!new.contains("old table"));
        assert!(new.contains("Measured 2026-01-02 on 2 cores (Some CPU), load average 1.50"));
        assert!(new.contains("| a | b | — | — | — | — |"));
        // Replacing again gives the same text: nothing accumulates.
        assert_eq!(replace_section(&new, &s).unwrap(), new);
    }

    #[test]
    fn missing_markers_are_an_error() {
        let s = section(&context(), &[]);
        assert!(replace_section("no markers", &s).is_err());
        assert!(replace_section(&format!("{BEGIN}\nno end"), &s).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(ms(1.234), "1.23 ms");
        assert_eq!(ms(12.34), "12.3 ms");
        assert_eq!(ms(123.4), "123 ms");
    }
}
