//! `voting psql [ARGS]` and `voting redis-cli [ARGS]`: a shell on the PostgreSQL and the Redis
//! that `voting`, with the same configuration, uses. For a server it starts itself, that is its
//! Unix socket in the data directory (the server must be running: these start nothing); for a
//! URL the user named, that URL, its password handed over in the environment (`PGPASSWORD`,
//! `REDISCLI_AUTH`) rather than on the command line. The arguments after the subcommand are
//! passed on, e.g. `voting psql -c 'SELECT * FROM tallies'`.
//!
//! `voting reset [--yes]` starts a new poll ([`worker::reset`]) on the same servers: its own
//! sockets, or the URLs named. Never the defaults' TCP ports, where a stranger's servers may be.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use common::config::{Config, PostgresUrl, Program, RedisUrl};
use common::program::Tool;
use common::secret::SecretUrl;
use common::system;

use crate::daemons;
use crate::plan::{PostgresPlan, RedisPlan};

/// The subcommands of the `voting` binary.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "psql",
        about: "Open psql on the PostgreSQL voting uses (its own, or postgres.url)",
        run: psql,
    },
    Tool {
        name: "redis-cli",
        about: "Open redis-cli on the Redis voting uses (its own, or redis.url)",
        run: redis_cli,
    },
    Tool {
        name: "reset",
        about: "Start a new poll: say what will be deleted, ask, then delete every vote",
        run: reset,
    },
];

fn reset(config: &Config, args: Vec<String>) -> ExitCode {
    worker::reset::with_servers(Program::Voting, Some(config), args, servers)
}

/// `config` with the URLs of the servers `voting` uses: for each one it starts (supervision
/// on, URL not named), its Unix socket in the data directory.
pub fn servers(mut config: Config) -> Result<Config, String> {
    if let Some(dir) = own_data_dir(&config, config.named.redis_url)? {
        let url = RedisPlan::new(&dir, PathBuf::new()).url();
        config.redis.url = RedisUrl(SecretUrl::new(url));
    }
    if let Some(dir) = own_data_dir(&config, config.named.postgres_url)? {
        let own = PostgresPlan {
            cluster: PostgresPlan::cluster_in(&dir),
            initdb: PathBuf::new(),
            postgres: PathBuf::new(),
            run_as: None,
        };
        config.postgres.url = PostgresUrl(SecretUrl::new(own.url()));
    }
    Ok(config)
}

/// What to run: the program, its arguments, and variables for its environment.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub args: Vec<OsString>,
    pub env: Vec<(&'static str, String)>,
}

fn psql(config: &Config, extra: Vec<String>) -> ExitCode {
    match psql_invocation(config) {
        Ok(invocation) => exec("psql", program("psql"), invocation, extra),
        Err(e) => fail(&e),
    }
}

fn redis_cli(config: &Config, extra: Vec<String>) -> ExitCode {
    match redis_cli_invocation(config) {
        Ok(invocation) => exec("redis-cli", program("redis-cli"), invocation, extra),
        Err(e) => fail(&e),
    }
}

/// `psql` for `config`: the own cluster's socket, or `postgres.url`.
pub fn psql_invocation(config: &Config) -> Result<Invocation, String> {
    if let Some(dir) = own_data_dir(config, config.named.postgres_url)? {
        let socket_dir = PostgresPlan::cluster_in(&dir);
        return Ok(Invocation {
            args: daemons::psql_args(&socket_dir),
            env: Vec::new(),
        });
    }
    let mut url = url::Url::parse(config.postgres.url.0.expose()).map_err(|e| e.to_string())?;
    let mut env = Vec::new();
    if let Some(password) = url.password() {
        let decoded = percent_decode(password);
        env.push(("PGPASSWORD", decoded));
        let _ = url.set_password(None);
    }
    Ok(Invocation {
        args: vec![url.to_string().into()],
        env,
    })
}

/// `redis-cli` for `config`: the own server's socket, or `redis.url`.
pub fn redis_cli_invocation(config: &Config) -> Result<Invocation, String> {
    if let Some(dir) = own_data_dir(config, config.named.redis_url)? {
        let socket = RedisPlan::new(&dir, PathBuf::new()).socket();
        return Ok(Invocation {
            args: vec!["-s".into(), socket.into_os_string()],
            env: Vec::new(),
        });
    }
    let mut url = url::Url::parse(config.redis.url.0.expose()).map_err(|e| e.to_string())?;
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let mut env = Vec::new();
    let mut args: Vec<OsString> = Vec::new();
    if matches!(url.scheme(), "unix" | "redis+unix") {
        let path = url
            .to_file_path()
            .map_err(|()| "redis.url has no socket path".to_string())?;
        args.extend(["-s".into(), path.into_os_string()]);
        for (key, value) in query {
            match key.as_str() {
                "pass" => env.push(("REDISCLI_AUTH", value)),
                "user" => args.extend(["--user".into(), value.into()]),
                "db" => args.extend(["-n".into(), value.into()]),
                _ => {}
            }
        }
    } else {
        if let Some(password) = url.password() {
            env.push(("REDISCLI_AUTH", percent_decode(password)));
            let _ = url.set_password(None);
        }
        args.extend(["-u".into(), url.to_string().into()]);
    }
    Ok(Invocation { args, env })
}

/// The data directory when the server is `voting`'s own (supervision on, URL not named).
fn own_data_dir(config: &Config, named: bool) -> Result<Option<PathBuf>, String> {
    if named || !config.voting.supervise {
        return Ok(None);
    }
    crate::plan::data_dir(&config.voting.data_dir, system::is_root(), |name| {
        std::env::var_os(name)
    })
    .map(Some)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The program: from `PATH`, and for `psql` also from Debian's PostgreSQL directories.
fn program(name: &str) -> Option<PathBuf> {
    system::find_on_path(name).or_else(|| {
        system::postgres_bin_dirs()
            .iter()
            .map(|dir| dir.join(name))
            .find(|p| system::is_executable(p))
    })
}

/// Replaces this process with the program; only returns on failure.
fn exec(
    name: &str,
    program: Option<PathBuf>,
    invocation: Invocation,
    extra: Vec<String>,
) -> ExitCode {
    let Some(program) = program else {
        return fail(&servers::not_found(&[name]));
    };
    let error = std::process::Command::new(&program)
        .args(&invocation.args)
        .args(&extra)
        .envs(invocation.env)
        .exec();
    fail(&format!("cannot run {}: {error}", program.display()))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("voting: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data_dir: &str) -> Config {
        let mut config = Config::defaults(Program::Voting);
        config.voting.data_dir = data_dir.into();
        config
    }

    #[test]
    fn own_servers_are_reached_through_their_sockets() {
        let c = config("/srv/v");
        let pg = psql_invocation(&c).unwrap();
        assert_eq!(
            daemons::shell_line("psql", &pg.args),
            "psql -h /srv/v/postgres -p 5432 -U postgres -d postgres"
        );
        let redis = redis_cli_invocation(&c).unwrap();
        assert_eq!(
            daemons::shell_line("redis-cli", &redis.args),
            "redis-cli -s /srv/v/redis/redis.sock"
        );
    }

    #[test]
    fn a_reset_reaches_the_own_servers_and_the_named_ones_as_named() {
        let own = servers(config("/srv/v")).unwrap();
        assert_eq!(
            own.redis.url.0.expose(),
            "redis+unix:///srv/v/redis/redis.sock"
        );
        assert!(
            own.postgres.url.0.expose().contains("host=/srv/v/postgres"),
            "{}",
            own.postgres.url
        );
        let mut c = config("/srv/v");
        c.named.redis_url = true;
        c.redis.url = RedisUrl(SecretUrl::new("redis://cache:6380"));
        let mixed = servers(c).unwrap();
        assert_eq!(mixed.redis.url.0.expose(), "redis://cache:6380");
        assert!(
            mixed
                .postgres
                .url
                .0
                .expose()
                .contains("host=/srv/v/postgres")
        );
    }

    #[test]
    fn named_urls_are_used_with_the_password_in_the_environment() {
        let mut c = config("/srv/v");
        c.named.postgres_url = true;
        c.named.redis_url = true;
        c.postgres.url = PostgresUrl(SecretUrl::new("postgres://app:p%40ss@db:5433/votes"));
        c.redis.url = RedisUrl(SecretUrl::new("redis://:s3cret@cache:6380/2"));
        let pg = psql_invocation(&c).unwrap();
        assert_eq!(pg.args, [OsString::from("postgres://app@db:5433/votes")]);
        assert_eq!(pg.env, [("PGPASSWORD", "p@ss".to_string())]);
        let redis = redis_cli_invocation(&c).unwrap();
        assert_eq!(
            redis.args,
            [OsString::from("-u"), OsString::from("redis://cache:6380/2")]
        );
        assert_eq!(redis.env, [("REDISCLI_AUTH", "s3cret".to_string())]);
        c.redis.url = RedisUrl(SecretUrl::new("unix:///run/r.sock?db=1&pass=pw"));
        let redis = redis_cli_invocation(&c).unwrap();
        assert_eq!(
            daemons::shell_line("redis-cli", &redis.args),
            "redis-cli -s /run/r.sock -n 1"
        );
        assert_eq!(redis.env, [("REDISCLI_AUTH", "pw".to_string())]);
    }

    #[test]
    fn without_supervision_the_configured_urls_are_used() {
        let mut c = config("/srv/v");
        c.voting.supervise = false;
        let pg = psql_invocation(&c).unwrap();
        assert_eq!(
            pg.args,
            [OsString::from(
                "postgres://postgres@127.0.0.1:5432/postgres"
            )]
        );
    }
}
