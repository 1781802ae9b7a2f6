//! `voting reset` and `worker reset` (the same, for compose and Kubernetes, where the worker's
//! image has what it needs: `docker compose exec worker worker reset`): starts a new poll. It says what it will delete (the votes and tallies in
//! PostgreSQL, the ballots queued in Redis, the legacy list and the dead letters), asks for
//! confirmation (or takes `--yes`), then deletes them: Redis first, so that no queued ballot
//! is applied afterwards, then `TRUNCATE votes, tallies` with `NOTIFY tallies` in one
//! transaction, so that every open results page shows the empty poll at once. It talks to the
//! Redis and PostgreSQL of the configuration, which must be running (the split services, or a
//! running `voting`). A ballot cast while the reset runs may count in either poll.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use common::config::{Config, Program};
use common::program::EXIT_CONFIG;

/// What the confirmation prompt wants typed.
pub const CONFIRMATION: &str = "reset";

#[derive(clap::Parser, Debug)]
#[command(
    version,
    about = "Start a new poll: delete every vote, tally and queued ballot, after saying what \
             will be deleted and asking for confirmation.",
    after_help = "Open results pages show the empty poll at once. It uses the Redis and \
                  PostgreSQL of the configuration (docs/configuration.md), which must be \
                  running."
)]
struct Cli {
    /// A TOML configuration file (also `VOTING_CONFIG`); environment variables override it.
    #[arg(short, long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Delete without asking (for scripts).
    #[arg(long)]
    yes: bool,
}

/// What a reset deletes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Rows of `votes`.
    pub votes: u64,
    /// `(option, count)` of `tallies`, by option.
    pub tallies: Vec<(String, i64)>,
    /// Entries of the stream.
    pub queued: u64,
    /// Entries of the legacy list (0 when it is disabled).
    pub legacy: u64,
    /// Entries of the dead-letter stream.
    pub dead: u64,
}

/// `<service> reset [--yes] [--config PATH]`: `args` are the arguments after `reset`.
pub fn main(service: Program, args: impl IntoIterator<Item = String>) -> ExitCode {
    with_servers(service, None, args, Ok)
}

/// The same, for a binary that has already loaded its configuration (`loaded`, used unless
/// `--config` follows `reset`) and that knows better where its servers are: `servers` turns
/// the configuration into the one to reset with (`voting` points it at its own sockets).
pub fn with_servers(
    service: Program,
    loaded: Option<&Config>,
    args: impl IntoIterator<Item = String>,
    servers: impl FnOnce(Config) -> Result<Config, String>,
) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let name = match service {
        Program::Voting => "voting reset",
        _ => "worker reset",
    };
    let args = std::iter::once(name.to_string()).chain(args);
    let command = Cli::command().name(name).bin_name(name);
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_CONFIG } else { 0 });
        }
    };
    let config = match (loaded, cli.config) {
        (Some(config), None) => Ok(config.clone()),
        (_, path) => Config::load(service, path).map_err(|e| e.to_string()),
    };
    let config = match config.and_then(servers) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let stdin = std::io::stdin();
    let confirm = |found: &Found| {
        print!("{}", describe(&config, found));
        if cli.yes {
            return true;
        }
        print!("Type \"{CONFIRMATION}\" to delete them: ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        stdin.lock().read_line(&mut line).is_ok() && line.trim() == CONFIRMATION
    };
    match runtime.block_on(reset(&config, confirm)) {
        Ok(true) => {
            println!("{name}: done, a new poll has started");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("{name}: not confirmed, nothing was deleted");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: {e:#}; nothing was deleted unless said above");
            ExitCode::FAILURE
        }
    }
}

/// Looks at what there is, asks `confirm`, and deletes it when it says yes. `Ok(false)`: not
/// confirmed, nothing deleted.
pub async fn reset(config: &Config, confirm: impl FnOnce(&Found) -> bool) -> anyhow::Result<bool> {
    let mut pg = common::pools::pg_connect(&config.postgres).await?;
    common::schema::migrate(&mut pg).await?;
    let redis = redis::Client::open(config.redis.url.0.expose())
        .with_context(|| format!("the Redis URL {}", config.redis.url))?;
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.url))?;
    let queue = &config.queue;

    let votes: i64 = pg
        .query_one("SELECT count(*) FROM votes", &[])
        .await
        .context("counting the votes")?
        .get(0);
    let tallies = pg
        .query(
            "SELECT vote, count FROM tallies WHERE count <> 0 ORDER BY vote",
            &[],
        )
        .await
        .context("reading the tallies")?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let len = |command: &str, key: &str| {
        let mut c = redis::cmd(command);
        c.arg(key);
        c
    };
    let queued: u64 = len("XLEN", &queue.stream).query_async(&mut conn).await?;
    let dead: u64 = len("XLEN", &queue.dead_letter)
        .query_async(&mut conn)
        .await?;
    let legacy: u64 = if queue.legacy_list.is_empty() {
        0
    } else {
        len("LLEN", &queue.legacy_list)
            .query_async(&mut conn)
            .await?
    };
    let found = Found {
        votes: u64::try_from(votes).unwrap_or(0),
        tallies,
        queued,
        legacy,
        dead,
    };
    if !confirm(&found) {
        return Ok(false);
    }

    // Redis first: the stream keeps its consumer group (the workers acknowledge entries that
    // were pending when they were trimmed), and no queued ballot lands after the truncation.
    let mut pipe = redis::pipe();
    pipe.cmd("XTRIM")
        .arg(&queue.stream)
        .arg("MAXLEN")
        .arg(0)
        .ignore();
    pipe.cmd("DEL").arg(&queue.dead_letter).ignore();
    if !queue.legacy_list.is_empty() {
        pipe.cmd("DEL").arg(&queue.legacy_list).ignore();
    }
    let () = pipe
        .query_async(&mut conn)
        .await
        .context("emptying the queue in Redis")?;
    pg.batch_execute("BEGIN; TRUNCATE votes, tallies; NOTIFY tallies; COMMIT")
        .await
        .context("deleting the votes and tallies in PostgreSQL (the queue in Redis is empty)")?;
    Ok(true)
}

/// The list of what will be deleted, for the prompt.
pub fn describe(config: &Config, found: &Found) -> String {
    let queue = &config.queue;
    let labels = config.options();
    let tallies: Vec<String> = found
        .tallies
        .iter()
        .map(|(key, count)| {
            let name = labels.get(key).map_or(key.as_str(), |o| o.label.as_str());
            format!("{name} {count}")
        })
        .collect();
    let tallies = if tallies.is_empty() {
        String::new()
    } else {
        format!(" ({})", tallies.join(", "))
    };
    let mut text = format!(
        "A reset starts a new poll. It deletes:\n  \
         - {}{tallies}: tables votes and tallies of PostgreSQL {}\n  \
         - {} waiting in Redis {} (stream {}), and {} ({})\n",
        plural(found.votes, "vote"),
        config.postgres.url,
        plural(found.queued, "ballot"),
        config.redis.url,
        queue.stream,
        plural(found.dead, "dead letter"),
        queue.dead_letter,
    );
    if !queue.legacy_list.is_empty() {
        text.push_str(&format!(
            "  - {} in the original app's list {}\n",
            plural(found.legacy, "vote"),
            queue.legacy_list
        ));
    }
    text
}

/// `1 vote`, `2 votes`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
