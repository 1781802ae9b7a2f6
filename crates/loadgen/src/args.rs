//! The command line: clap's parser into [`Config`], with the help text, and the parsers of its
//! values (durations, rates, option mixes, the target URL).
//!
//! Every value is checked here, so a bad argument stops the program before it sends anything
//! (exit code 2, clap's message naming the argument).

use std::fmt;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use domain::options::{OptionKey, Options};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    /// `--help`: the text to print.
    Help(String),
    /// `--version`: the text to print.
    Version(String),
}

/// Everything a run needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub target: Target,
    /// Stop after this many votes.
    pub votes: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Open-loop pacing: votes per second, each scheduled at a fixed interval.
    pub rate: Option<f64>,
    /// Connections, each with at most one request in flight.
    pub concurrency: usize,
    /// Distinct voters at most (default: one per vote).
    pub voters: Option<u64>,
    /// Fraction of votes cast again by a voter who already voted.
    pub revote_ratio: f64,
    pub mix: Mix,
    /// `POST <url>` with a form (expects 303) instead of `POST <url>api/vote` with JSON (202).
    pub form: bool,
    /// Longest a single request may take, connecting included.
    pub timeout: Duration,
    /// PostgreSQL to check every accepted vote against, after sending.
    pub verify: Option<String>,
    pub verify_timeout: Duration,
    pub json: bool,
    pub quiet: bool,
    /// Seed of voter ids and option choices (random when absent).
    pub seed: Option<u64>,
    /// Threads of the runtime that sends the requests.
    pub threads: usize,
}

/// The most votes one run sends (each voter costs a few bytes of bookkeeping).
pub const MAX_VOTES: u64 = 100_000_000;
/// The longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
pub const MAX_CONCURRENCY: usize = 10_000;
pub const MAX_RATE: f64 = 10_000_000.0;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const MAX_OPTIONS: usize = 16;
pub const MAX_THREADS: usize = 64;

pub const DEFAULT_URL: &str = "http://localhost:8081/vote/";
pub const DEFAULT_CONCURRENCY: usize = 64;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

const AFTER_HELP: &str = "\
Examples:
  loadgen --url http://localhost:8081/vote/ --votes 100000 --concurrency 64
  loadgen --rate 5000 --duration 30s --voters 1000 --revote-ratio 0.2
  loadgen --votes 3000 --mix a=60,b=40 --verify postgres://postgres@127.0.0.1/postgres

At least one of --votes and --duration is needed; whichever comes first stops the run.
A voter never has two votes in flight at once, so the last vote answered is the last queued.

Exit status: 0 all votes accepted (and verified); 1 a vote was refused (any status but 202,
or 303 with --form), failed (connect, timeout) or lost/wrong in PostgreSQL, or the run was
interrupted; 2 bad arguments.";

/// loadgen: votes over HTTP against the vote service, then optionally checks that every
/// accepted vote reached PostgreSQL
#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    override_usage = "loadgen [OPTIONS] (--votes N | --duration D)",
    after_help = AFTER_HELP
)]
struct Cli {
    /// The vote page, http:// only; JSON votes go to POST <URL>api/vote and must answer 202
    #[arg(long, value_name = "URL", default_value = DEFAULT_URL, value_parser = url_arg, help_heading = "What to send")]
    url: String,
    /// Send the page's form instead: POST <URL> with vote=<key>, expects 303
    #[arg(long, help_heading = "What to send")]
    form: bool,
    /// Option keys, chosen evenly [default: a,b]
    #[arg(long, value_name = "A,B,...", value_parser = parse_options, conflicts_with = "mix", help_heading = "What to send")]
    options: Option<Mix>,
    /// Option keys with weights, e.g. a=60,b=40 (instead of --options)
    #[arg(long, value_name = "A=W,B=W,...", value_parser = parse_mix, help_heading = "What to send")]
    mix: Option<Mix>,
    /// Distinct voters, each with its own voter_id cookie [default: one per vote]
    #[arg(long, value_name = "N", value_parser = votes_arg, help_heading = "What to send")]
    voters: Option<u64>,
    /// Fraction (0 to 1) of votes cast again by a voter who already voted; once all voters
    /// have voted, every vote is a re-vote
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = ratio_arg, help_heading = "What to send")]
    revote_ratio: f64,
    /// Seed of voter ids and choices [default: random]
    #[arg(long, value_name = "N", help_heading = "What to send")]
    seed: Option<u64>,

    /// Votes to send (at most 100000000)
    #[arg(long, value_name = "N", value_parser = votes_arg, help_heading = "How much, how fast")]
    votes: Option<u64>,
    /// How long to send, e.g. 500ms, 30s, 2m (at most 1h)
    #[arg(long, value_name = "D", value_parser = up_to_an_hour, help_heading = "How much, how fast")]
    duration: Option<Duration>,
    /// Open loop: N votes per second at fixed intervals, latency measured from each vote's
    /// scheduled time [default: as fast as answered]
    #[arg(long, value_name = "N", value_parser = parse_rate, help_heading = "How much, how fast")]
    rate: Option<f64>,
    /// Connections (keep-alive), one request in flight on each
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY, value_parser = concurrency_arg, help_heading = "How much, how fast")]
    concurrency: usize,
    /// Longest one request may take, connecting included [default: 10s]
    #[arg(long, value_name = "D", value_parser = timeout_arg, help_heading = "How much, how fast")]
    timeout: Option<Duration>,
    /// Threads sending requests
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = threads_arg, help_heading = "How much, how fast")]
    threads: usize,

    /// After sending, wait until every accepted vote is in PostgreSQL: each voter's last
    /// accepted vote must be its row in `votes`
    #[arg(long, value_name = "PG_URL", value_parser = pg_url_arg, help_heading = "Checking")]
    verify: Option<String>,
    /// How long to wait for that [default: 60s]
    #[arg(long, value_name = "D", value_parser = up_to_an_hour, help_heading = "Checking")]
    verify_timeout: Option<Duration>,

    /// Print the summary as one JSON object
    #[arg(long, help_heading = "Output")]
    json: bool,
    /// No progress (a bar on a terminal, else a line a second on stderr)
    #[arg(short, long, help_heading = "Output")]
    quiet: bool,
}

/// A bad command line: clap's message, naming the argument, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// The help text (`--help`).
pub fn help() -> String {
    Cli::command().render_help().to_string()
}

/// Parses the arguments (without the program name).
pub fn parse<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut command = Cli::command();
    let args = std::iter::once("loadgen".to_string()).chain(args.into_iter().map(Into::into));
    let matches = match command.try_get_matches_from_mut(args) {
        Ok(m) => m,
        Err(e) => {
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp => Ok(Command::Help(e.render().to_string())),
                clap::error::ErrorKind::DisplayVersion => {
                    Ok(Command::Version(e.render().to_string()))
                }
                _ => Err(usage(e.render().to_string())),
            };
        }
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| usage(e.render().to_string()))?;
    let refuse =
        |kind, message: &str| usage(command.clone().error(kind, message).render().to_string());
    if cli.votes.is_none() && cli.duration.is_none() {
        return Err(refuse(
            clap::error::ErrorKind::MissingRequiredArgument,
            "say how much to send: --votes N, --duration D, or both",
        ));
    }
    let mix = cli.options.or(cli.mix).unwrap_or_default();
    let target = Target::parse(&cli.url, cli.form).map_err(|e| {
        refuse(
            clap::error::ErrorKind::ValueValidation,
            &format!("--url: {e}"),
        )
    })?;
    Ok(Command::Run(Box::new(Config {
        target,
        votes: cli.votes,
        duration: cli.duration,
        rate: cli.rate,
        concurrency: cli.concurrency,
        voters: cli.voters,
        revote_ratio: cli.revote_ratio,
        mix,
        form: cli.form,
        timeout: cli.timeout.unwrap_or(DEFAULT_TIMEOUT),
        verify: cli.verify,
        verify_timeout: cli.verify_timeout.unwrap_or(DEFAULT_VERIFY_TIMEOUT),
        json: cli.json,
        quiet: cli.quiet,
        seed: cli.seed,
        threads: cli.threads,
    })))
}

fn url_arg(s: &str) -> Result<String, String> {
    Target::parse(s, false).map(|_| s.to_string())
}

fn votes_arg(s: &str) -> Result<u64, String> {
    count(s, 1, MAX_VOTES)
}

fn concurrency_arg(s: &str) -> Result<usize, String> {
    count(s, 1, MAX_CONCURRENCY as u64).map(|n| n as usize)
}

fn threads_arg(s: &str) -> Result<usize, String> {
    count(s, 1, MAX_THREADS as u64).map(|n| n as usize)
}

fn ratio_arg(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("{s:?} is not a number from 0 to 1"))
}

fn up_to_an_hour(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_DURATION {
        return Err("at most 1h".into());
    }
    Ok(d)
}

fn timeout_arg(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_TIMEOUT {
        return Err("at most 5m".into());
    }
    Ok(d)
}

fn pg_url_arg(s: &str) -> Result<String, String> {
    s.parse::<tokio_postgres::Config>()
        .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    Ok(s.to_string())
}

/// A whole number from `min` to `max` (`_` may separate digits).
fn count(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n = v
        .replace('_', "")
        .parse::<u64>()
        .map_err(|_| format!("{v:?} is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{n} is not from {min} to {max}"));
    }
    Ok(n)
}

/// A positive duration: a number (decimals allowed) and a unit `ms`, `s`, `m` or `h`; a bare
/// number is seconds. `500ms`, `30s`, `1.5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unknown unit (use ms, s, m or h)")),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s or 2m"))?;
    let d = Duration::try_from_secs_f64(n * scale).map_err(|_| format!("{s:?} is too long"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

/// Votes per second: `5000`, `5000/s` or `250.5`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    let r: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 5000 or 5000/s"))?;
    if !(r > 0.0 && r <= MAX_RATE) {
        return Err(format!("{s:?}: must be more than 0 and at most {MAX_RATE}"));
    }
    Ok(r)
}

/// The options to vote for and their weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    entries: Vec<(OptionKey, f64)>,
}

/// The app's default poll (`a` and `b`), evenly.
impl Default for Mix {
    fn default() -> Mix {
        Mix::even(Options::defaults().into_iter().map(|o| o.key))
    }
}

impl Mix {
    /// Equal weights.
    pub fn even(keys: impl IntoIterator<Item = OptionKey>) -> Mix {
        Mix {
            entries: keys.into_iter().map(|k| (k, 1.0)).collect(),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    pub fn key(&self, index: usize) -> &str {
        self.entries[index].0.as_str()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each option's share of the votes, from 0 to 1.
    pub fn shares(&self) -> Vec<f64> {
        let total: f64 = self.entries.iter().map(|(_, w)| w).sum();
        self.entries.iter().map(|(_, w)| w / total).collect()
    }

    /// The option for a uniform sample `u` in `[0, 1)`.
    pub fn pick(&self, u: f64) -> usize {
        let mut acc = 0.0;
        let shares = self.entries.iter().map(|(_, w)| *w);
        let total: f64 = shares.clone().sum();
        for (i, w) in shares.enumerate() {
            acc += w / total;
            if u < acc && w > 0.0 {
                return i;
            }
        }
        // Rounding at the top end: the last option with any weight.
        self.entries
            .iter()
            .rposition(|(_, w)| *w > 0.0)
            .expect("a mix has a positive weight")
    }
}

/// Checks the keys as the vote service does ([`OptionKey::parse`]), each given once, 1 to
/// [`MAX_OPTIONS`] of them.
fn check_keys(entries: Vec<(&str, f64)>) -> Result<Vec<(OptionKey, f64)>, String> {
    if entries.is_empty() || entries.len() > MAX_OPTIONS {
        return Err(format!("give 1 to {MAX_OPTIONS} options"));
    }
    let mut checked: Vec<(OptionKey, f64)> = Vec::with_capacity(entries.len());
    for (key, weight) in entries {
        let key = OptionKey::try_from(key.to_string())?;
        if checked.iter().any(|(k, _)| *k == key) {
            return Err(format!("{key:?} is given twice"));
        }
        checked.push((key, weight));
    }
    Ok(checked)
}

/// `a,b,c`: equal weights.
pub fn parse_options(s: &str) -> Result<Mix, String> {
    let entries = check_keys(s.split(',').map(|k| (k.trim(), 1.0)).collect())?;
    Ok(Mix { entries })
}

/// `a=60,b=40`: weights are non-negative numbers, not all zero; they need not add up to 100.
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut entries = Vec::new();
    for part in s.split(',') {
        let (key, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=WEIGHT"))?;
        let w: f64 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| format!("{part:?}: the weight is not a number of at least 0"))?;
        entries.push((key.trim(), w));
    }
    let entries = check_keys(entries)?;
    if entries.iter().all(|(_, w)| *w == 0.0) {
        return Err("every weight is 0".into());
    }
    Ok(Mix { entries })
}

/// Where the votes go: an `http://` URL, its path ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to (and to resolve).
    pub authority: String,
    /// The `Host` header.
    pub host_header: String,
    /// The request path of a vote: `<path>api/vote` (JSON) or `<path>` (form).
    pub vote_path: String,
    /// The URL as given, for the summary.
    pub url: String,
}

impl Target {
    pub fn parse(s: &str, form: bool) -> Result<Target, String> {
        let url = url::Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "{s:?}: only http:// URLs are supported (no TLS); use the plain HTTP port"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{s:?}: credentials in the URL are not supported"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{s:?}: no query or fragment, please"));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            Some(host) => host.to_string(),
            None => return Err(format!("{s:?}: no host")),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let mut path = url.path().to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Target {
            authority: format!("{host}:{port}"),
            host_header,
            vote_path: if form {
                path
            } else {
                format!("{path}api/vote")
            },
            url: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, UsageError> {
        match parse(args.iter().copied())? {
            Command::Run(c) => Ok(*c),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in [
            "", "s", "0s", "0", "-1s", "10x", "1.2.3s", "ms30", "1 s", "inf",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("5000"), Ok(5000.0));
        assert_eq!(parse_rate("5000/s"), Ok(5000.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["0", "-3", "x", "5000/m", "NaN", "inf", "1e12"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn mixes() {
        let m = parse_mix("a=60,b=40").unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.shares(), [0.6, 0.4]);
        assert_eq!(m.pick(0.0), 0);
        assert_eq!(m.pick(0.59), 0);
        assert_eq!(m.pick(0.61), 1);
        assert_eq!(m.pick(0.999_999), 1);

        let m = parse_mix("cats=1, dogs=0, birds=3").unwrap();
        assert_eq!(m.shares(), [0.25, 0.0, 0.75]);
        assert_eq!(m.pick(0.25), 2, "a zero weight is never picked");
        assert_eq!(m.pick(0.2499), 0);

        for bad in [
            "", "a", "a=", "a=x", "a=-1", "a=0,b=0", "A=1", "a=1,a=2", "a b=1", "a=inf",
        ] {
            assert!(parse_mix(bad).is_err(), "{bad:?} is refused");
        }
        let m = parse_options("a,b,c").unwrap();
        assert_eq!(m.len(), 3);
        assert!(parse_options("a,,b").is_err());
        assert!(parse_options(&"x".repeat(33)).is_err());
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://localhost:8081/vote/", false).unwrap();
        assert_eq!(t.authority, "localhost:8081");
        assert_eq!(t.host_header, "localhost:8081");
        assert_eq!(t.vote_path, "/vote/api/vote");
        let t = Target::parse("http://127.0.0.1:8081/vote", true).unwrap();
        assert_eq!(t.vote_path, "/vote/", "a missing trailing slash is added");
        let t = Target::parse("http://example.test", false).unwrap();
        assert_eq!(t.authority, "example.test:80");
        assert_eq!(t.host_header, "example.test");
        assert_eq!(t.vote_path, "/api/vote");
        let t = Target::parse("http://[::1]:8082/", false).unwrap();
        assert_eq!(t.authority, "[::1]:8082");
        for bad in [
            "https://localhost/vote/",
            "localhost:8081",
            "http://u:p@localhost/",
            "http://localhost/?x=1",
            "ftp://x/",
        ] {
            assert!(Target::parse(bad, false).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn a_full_command_line() {
        let c = run(&[
            "--url=http://127.0.0.1:9/vote/",
            "--votes",
            "1_000",
            "--duration",
            "30s",
            "--rate",
            "200/s",
            "--concurrency",
            "8",
            "--voters",
            "20",
            "--revote-ratio",
            "0.5",
            "--mix",
            "a=60,b=40",
            "--form",
            "--timeout",
            "500ms",
            "--verify",
            "postgres://postgres:secret@127.0.0.1:5432/postgres",
            "--verify-timeout=2m",
            "--json",
            "--quiet",
            "--seed",
            "7",
            "--threads",
            "2",
        ])
        .unwrap();
        assert_eq!(c.votes, Some(1000));
        assert_eq!(c.duration, Some(Duration::from_secs(30)));
        assert_eq!(c.rate, Some(200.0));
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.voters, Some(20));
        assert_eq!(c.revote_ratio, 0.5);
        assert_eq!(c.mix.shares(), [0.6, 0.4]);
        assert!(c.form && c.json && c.quiet);
        assert_eq!(c.target.vote_path, "/vote/");
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.verify_timeout, Duration::from_secs(120));
        assert_eq!(c.seed, Some(7));
        assert_eq!(c.threads, 2);
    }

    #[test]
    fn defaults() {
        let c = run(&["--votes", "10"]).unwrap();
        assert_eq!(c.target.authority, "localhost:8081");
        assert_eq!(c.target.vote_path, "/vote/api/vote");
        assert_eq!(c.concurrency, 64);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.verify_timeout, Duration::from_secs(60));
        assert_eq!(c.mix.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(c.mix.shares(), [0.5, 0.5]);
        assert_eq!((c.rate, c.voters, c.duration), (None, None, None));
        assert_eq!(c.revote_ratio, 0.0);
        assert!(!c.form && !c.json && !c.quiet);
    }

    #[test]
    fn bad_command_lines_name_the_argument() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "--votes N, --duration D"),
            (&["--rate", "100"], "--votes N, --duration D"),
            (&["--votes", "0"], "--votes"),
            (&["--votes", "ten"], "--votes"),
            (&["--votes"], "a value is required for '--votes"),
            (&["--votes", "1", "--duration", "2h"], "--duration"),
            (&["--votes", "1", "--concurrency", "0"], "--concurrency"),
            (&["--votes", "1", "--revote-ratio", "1.5"], "--revote-ratio"),
            (&["--votes", "1", "--url", "https://x/"], "--url"),
            (
                &["--votes", "1", "--mix", "a=1", "--options", "a"],
                "cannot be used with",
            ),
            (&["--votes", "1", "--options", "Cats"], "--options"),
            (&["--votes", "1", "--verify", "mysql://x"], "--verify"),
            (&["--votes", "1", "--timeout", "10m"], "--timeout"),
            (
                &["--votes", "1", "--form=yes"],
                "unexpected value 'yes' for '--form'",
            ),
            (
                &["--votes", "1", "--frobnicate"],
                "unexpected argument '--frobnicate'",
            ),
            (&["--votes", "1", "stray"], "unexpected argument 'stray'"),
        ];
        for (args, wanted) in cases {
            let err = run(args).expect_err("refused");
            assert!(err.0.contains(wanted), "{args:?}: {err} lacks {wanted:?}");
        }
    }

    #[test]
    fn help_and_version() {
        let Ok(Command::Help(help)) = parse(["--votes", "1", "--help"]) else {
            panic!("--help asks for the help")
        };
        assert!(
            help.contains("Usage: loadgen [OPTIONS] (--votes N | --duration D)"),
            "{help}"
        );
        for heading in [
            "What to send:",
            "How much, how fast:",
            "Checking:",
            "Output:",
        ] {
            assert!(help.contains(heading), "{heading}: {help}");
        }
        assert!(
            help.contains("Exit status:") && help.contains("Examples:"),
            "{help}"
        );
        assert_eq!(
            parse(["-V"]),
            Ok(Command::Version(format!(
                "loadgen {}\n",
                env!("CARGO_PKG_VERSION")
            )))
        );
    }

    #[test]
    fn every_value_is_checked_where_it_is_given() {
        let wrong: &[(&[&str], &str)] = &[
            (&["--votes", "1", "--voters", "0"], "--voters"),
            (&["--votes", "1", "--threads", "65"], "--threads"),
            (&["--votes", "1", "--rate", "0"], "--rate"),
            (&["--votes", "1", "--verify-timeout", "2h"], "at most 1h"),
            (&["--votes", "1", "--seed", "x"], "--seed"),
            (&["--votes", "1", "--mix", "a=0"], "every weight is 0"),
        ];
        for (args, wanted) in wrong {
            let err = run(args).expect_err("refused");
            assert!(err.0.contains(wanted), "{args:?}: {err} lacks {wanted:?}");
        }
        assert!(run(&["--votes", "1", "-q"]).unwrap().quiet);
    }
}
