//! Configuration: built-in defaults <- TOML file <- `VOTING_…` environment <- `OPTION_A`/`OPTION_B`.
//!
//! Every binary reads the same [`Config`], so one file can configure all services; only the
//! default of `listen` differs per service. Unknown keys are errors. [`ConfigError`] names the
//! key and where its value came from, and never carries a password.
//!
//! `redis.password_file` / `postgres.password_file` (e.g. a Docker secret under
//! `/run/secrets/`) name a file holding the password: it is read once, when the configuration
//! is loaded, trimmed, and put into the URL, so everything that connects gets it and nothing
//! prints it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::secret::SecretUrl;
use domain::options::{Options, VoteOption};

/// Prefix of the environment variables read as configuration (`__` separates nesting).
pub const ENV_PREFIX: &str = "VOTING_";

/// The longest question, in characters: it must fit a heading.
pub const MAX_QUESTION_CHARS: usize = 200;
/// The longest `public_url`, in bytes: it must fit a QR code that scans from afar.
pub const MAX_PUBLIC_URL_BYTES: usize = 200;

/// The deployable services; each has its own default listen address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Vote,
    Result,
    Worker,
    Voting,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Vote => "vote",
            Service::Result => "result",
            Service::Worker => "worker",
            Service::Voting => "voting",
        }
    }

    /// Threads of the async runtime when `threads` is 0. One for vote, result and the worker:
    /// each mostly waits on sockets, and on a small host it shares the cores with Nginx, Redis
    /// and PostgreSQL, where a second thread costs more in cross-thread wake-ups than it gives
    /// (measured: 12 % more CPU per vote in vote on two cores). The all-in-one binary, which
    /// does all their work, gets one per core.
    pub fn default_threads(self) -> usize {
        match self {
            Service::Voting => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Service::Vote | Service::Result | Service::Worker => 1,
        }
    }

    /// Distinct ports, so every service can run on one host at once.
    pub fn default_listen(self) -> SocketAddr {
        let port = match self {
            Service::Voting => 8081,
            Service::Vote => 8082,
            Service::Result => 8083,
            Service::Worker => 8084,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

/// Everything a service can be told. See the table in docs/configuration.md.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the service's HTTP listener (the worker's serves health and metrics only).
    pub listen: SocketAddr,
    /// Threads of the async runtime; 0 chooses ([`Service::default_threads`]).
    pub threads: usize,
    pub redis: RedisConfig,
    pub postgres: PostgresConfig,
    /// The poll's question: the heading and the title of both pages. Empty: the labels
    /// joined, "Cats vs Dogs!" for the default poll (see [`Config::question`]).
    pub question: String,
    /// The voting page's address as people outside should type it or scan it (the link and
    /// QR code of the results page), e.g. `https://poll.example.org/vote/`; empty: derived
    /// from each request of the results page (`Host`, or `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` with `http.trust_proxy`) as `<scheme>://<host>/vote/`.
    pub public_url: String,
    /// The poll's options, in display order.
    pub options: Vec<VoteOption>,
    /// The original app's `OPTION_A`: label of option `a`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_a: Option<String>,
    /// The original app's `OPTION_B`: label of option `b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_b: Option<String>,
    pub queue: QueueConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub vote: VoteConfig,
    pub worker: WorkerConfig,
    pub result: ResultConfig,
    pub voting: VotingConfig,
    /// Which server URLs the user named (not read from any source: worked out by
    /// [`Config::from_figment`]).
    #[serde(skip)]
    pub named: Named,
}

/// Whether `redis.url` and `postgres.url` were named by the user: set in a configuration file
/// or a `VOTING_…` variable (any source but the built-in defaults). `voting` starts its own
/// server for a URL that is not named, and never starts one for a URL that is.
/// `REDIS_PORT` / `POSTGRES_PORT` only change the built-in default URLs, so they do not name
/// one; nor does a `password_file` alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Named {
    pub redis_url: bool,
    pub postgres_url: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: RedisUrl,
    /// Multiplexed connections in the pool (each pipelines many requests).
    pub pool_size: u32,
    /// A file holding the password, put into `url` when the configuration is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: PostgresUrl,
    pub pool_size: u32,
    /// A file holding the password, put into `url` when the configuration is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// Names of the Redis keys that carry votes, and the bound on the backlog.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The stream votes are appended to.
    pub stream: String,
    /// The workers' consumer group.
    pub group: String,
    /// Where entries that can never be valid go, with the reason.
    pub dead_letter: String,
    /// The original app's list of JSON votes that the worker drains too; empty disables it.
    pub legacy_list: String,
    /// Refuse new votes (503) while the stream holds this many entries or more.
    pub max_backlog: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A client must send its request headers within this time.
    pub header_timeout_ms: u64,
    /// A client must send its request body within this time.
    pub body_timeout_ms: u64,
    /// A connection whose answer makes no progress (the client does not read it) for this
    /// long is closed.
    pub write_timeout_ms: u64,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Grace period for open requests on shutdown.
    pub shutdown_grace_ms: u64,
    /// Believe the proxy in front (Nginx) about the scheme the browser used: with
    /// `X-Forwarded-Proto: https`, vote marks its cookies `Secure` and result expects an
    /// `https://` origin on its WebSocket. Off: the header is ignored (any client can send it).
    pub trust_proxy: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteConfig {
    /// Add `Secure` to the cookies (serve over HTTPS only).
    pub secure_cookie: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Most stream entries taken (and applied in one transaction) at once.
    pub batch_size: usize,
    /// How long a read waits for new entries when the stream is empty.
    pub block_ms: u64,
    /// After a batch of more than one entry (votes are flowing) but less than a full one, the
    /// next read starts no sooner than this long after that batch's, so that batches grow
    /// under steady load; 0 never waits.
    /// A lone vote is applied at once.
    pub linger_ms: u64,
    /// Entries pending this long on another consumer are claimed (its owner is presumed dead).
    pub claim_idle_ms: u64,
    /// How often to look for such entries.
    pub claim_interval_ms: u64,
    /// Consumer name in the group; empty means `<host>-<pid>-<random>`, unique per process.
    pub consumer: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultConfig {
    /// WebSockets open at once; the next one is answered 503.
    pub max_sockets: usize,
    /// The safety poll: tallies are re-read this often even without a notification.
    pub poll_interval_ms: u64,
    /// Show the QR code and the address of the voting page on the results page (a page
    /// opened with `?qr=0` hides them too).
    pub show_qr: bool,
}

/// The all-in-one `voting` binary: the Redis and PostgreSQL it starts itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VotingConfig {
    /// Where the Redis and PostgreSQL it starts keep their data; empty means
    /// `$XDG_DATA_HOME/voting`, else `~/.local/share/voting` (as root: `/var/lib/voting`,
    /// which the `postgres` user can reach).
    pub data_dir: String,
    /// Start and supervise a private Redis and PostgreSQL (on Unix sockets in `data_dir`)
    /// for the URLs the user did not name. Off: start nothing, and use `redis.url` and
    /// `postgres.url` as they are, defaults included.
    pub supervise: bool,
}

macro_rules! url_newtype {
    ($name:ident, $what:literal, [$($scheme:literal),+]) => {
        #[doc = concat!("A ", $what, " URL (scheme checked when the configuration is read).")]
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub SecretUrl);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let url = SecretUrl::new(s);
                url.check_scheme(&[$($scheme),+])?;
                Ok($name(url))
            }
        }

        impl From<$name> for String {
            fn from(u: $name) -> String {
                u.0.expose().to_string()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

url_newtype!(RedisUrl, "Redis", ["redis", "rediss", "unix", "redis+unix"]);
url_newtype!(PostgresUrl, "PostgreSQL", ["postgres", "postgresql"]);

impl Config {
    /// The built-in defaults for `service`.
    pub fn defaults(service: Service) -> Config {
        Config::defaults_on(service, DEFAULT_REDIS_PORT, DEFAULT_POSTGRES_PORT)
    }

    /// The built-in defaults, with the default URLs on these loopback ports.
    fn defaults_on(service: Service, redis_port: u16, postgres_port: u16) -> Config {
        Config {
            listen: service.default_listen(),
            threads: 0,
            redis: RedisConfig {
                url: RedisUrl(SecretUrl::new(format!("redis://127.0.0.1:{redis_port}"))),
                pool_size: 4,
                password_file: None,
            },
            postgres: PostgresConfig {
                url: PostgresUrl(SecretUrl::new(format!(
                    "postgres://postgres@127.0.0.1:{postgres_port}/postgres"
                ))),
                pool_size: 4,
                password_file: None,
            },
            question: String::new(),
            public_url: String::new(),
            options: Options::defaults(),
            option_a: None,
            option_b: None,
            queue: QueueConfig {
                stream: "ballots".into(),
                group: "workers".into(),
                dead_letter: "ballots:dead".into(),
                legacy_list: "votes".into(),
                max_backlog: 1_000_000,
            },
            http: HttpConfig {
                max_connections: 10_000,
                header_timeout_ms: 10_000,
                body_timeout_ms: 10_000,
                write_timeout_ms: 20_000,
                max_body_bytes: 4096,
                shutdown_grace_ms: 10_000,
                trust_proxy: false,
            },
            log: LogConfig {
                format: LogFormat::Text,
            },
            vote: VoteConfig {
                secure_cookie: false,
            },
            worker: WorkerConfig {
                batch_size: 4000,
                block_ms: 1000,
                linger_ms: 10,
                claim_idle_ms: 10_000,
                claim_interval_ms: 5_000,
                consumer: String::new(),
            },
            result: ResultConfig {
                max_sockets: 20_000,
                poll_interval_ms: 5_000,
                show_qr: true,
            },
            voting: VotingConfig {
                data_dir: String::new(),
                supervise: true,
            },
            named: Named::default(),
        }
    }

    /// The layered sources for `service`: defaults, then the TOML file (if any), then the
    /// process environment. Tests build their own figment on top of [`Config::defaults`].
    ///
    /// figment's value parser panics on a few malformed strings (a quoted value with an
    /// unknown escape after multi-byte characters), and an `Env` provider parses while it is
    /// merged: each variable is tried alone first, so such a value is an error naming it.
    ///
    /// `REDIS_PORT` and `POSTGRES_PORT` (the variables docker-compose.yml and the native run
    /// publish the servers' ports with) set the ports of the default URLs.
    pub fn figment(service: Service, file: Option<&Path>) -> Result<Figment, ConfigError> {
        check_environment_values()?;
        let redis_port = default_port("REDIS_PORT", DEFAULT_REDIS_PORT)?;
        let postgres_port = default_port("POSTGRES_PORT", DEFAULT_POSTGRES_PORT)?;
        let defaults = Config::defaults_on(service, redis_port, postgres_port);
        let mut figment = Figment::from(Serialized::defaults(defaults));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        Ok(figment
            .merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]))
            .merge(Env::raw().only(&["option_a", "option_b"])))
    }

    /// Reads and checks the configuration from `figment`, then reads the password files.
    pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::from_figment(figment, e))?;
        let mut config = config.checked(figment)?.with_password_files(figment)?;
        let named = |key: &str| {
            figment
                .find_metadata(key)
                .is_some_and(|md| md.name != std::any::type_name::<Config>())
        };
        config.named = Named {
            redis_url: named("redis.url"),
            postgres_url: named("postgres.url"),
        };
        Ok(config)
    }

    /// Reads the configuration the way a binary does: `file` (from `--config`, or else the
    /// path in `VOTING_CONFIG`) must exist when given.
    pub fn load(service: Service, file: Option<PathBuf>) -> Result<Config, ConfigError> {
        let file = file.or_else(|| std::env::var_os("VOTING_CONFIG").map(PathBuf::from));
        if let Some(path) = &file
            && !path.is_file()
        {
            return Err(ConfigError {
                key: "config".into(),
                origin: format!("file {}", path.display()),
                message: "no such file".into(),
            });
        }
        Config::from_figment(&Config::figment(service, file.as_deref())?)
    }

    fn checked(self, figment: &Figment) -> Result<Config, ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            key: key.to_string(),
            origin: describe_source(figment, key),
            message,
        };
        self.poll_options()
            .map_err(|(key, message)| fail(key, message))?;
        check_question(&self.question).map_err(|m| fail("question", m))?;
        check_public_url(&self.public_url).map_err(|m| fail("public_url", m))?;
        for (key, name) in [
            ("queue.stream", &self.queue.stream),
            ("queue.group", &self.queue.group),
            ("queue.dead_letter", &self.queue.dead_letter),
        ] {
            if name.is_empty() {
                return Err(fail(key, "must not be empty".into()));
            }
        }
        let positive = [
            ("redis.pool_size", self.redis.pool_size as u64),
            ("postgres.pool_size", self.postgres.pool_size as u64),
            ("queue.max_backlog", self.queue.max_backlog),
            ("http.max_connections", self.http.max_connections as u64),
            ("http.max_body_bytes", self.http.max_body_bytes as u64),
            ("http.header_timeout_ms", self.http.header_timeout_ms),
            ("http.body_timeout_ms", self.http.body_timeout_ms),
            ("http.write_timeout_ms", self.http.write_timeout_ms),
            ("worker.batch_size", self.worker.batch_size as u64),
            ("worker.block_ms", self.worker.block_ms),
            ("worker.claim_idle_ms", self.worker.claim_idle_ms),
            ("worker.claim_interval_ms", self.worker.claim_interval_ms),
            ("result.max_sockets", self.result.max_sockets as u64),
            ("result.poll_interval_ms", self.result.poll_interval_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(fail(key, "must be greater than 0".into()));
            }
        }
        if self.worker.block_ms > 60_000 {
            return Err(fail("worker.block_ms", "must be at most 60000".into()));
        }
        if self.threads > 256 {
            return Err(fail("threads", "must be at most 256".into()));
        }
        if self.worker.linger_ms > 1000 {
            return Err(fail("worker.linger_ms", "must be at most 1000".into()));
        }
        Ok(self)
    }

    /// Puts the password read from `redis.password_file` / `postgres.password_file` into the
    /// URL (replacing any password it had); an empty setting means none. The error names the
    /// key and the file, never the file's content.
    fn with_password_files(mut self, figment: &Figment) -> Result<Config, ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            key: key.to_string(),
            origin: describe_source(figment, key),
            message,
        };
        let set = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = set(&self.redis.password_file) {
            let password = read_password_file(&path).map_err(|m| fail("redis.password_file", m))?;
            let url = self.redis.url.0.with_password(&password);
            self.redis.url = RedisUrl(url.map_err(|m| fail("redis.url", m))?);
        }
        if let Some(path) = set(&self.postgres.password_file) {
            let password =
                read_password_file(&path).map_err(|m| fail("postgres.password_file", m))?;
            let url = self.postgres.url.0.with_password(&password);
            self.postgres.url = PostgresUrl(url.map_err(|m| fail("postgres.url", m))?);
        }
        Ok(self)
    }

    /// The checked option list, with `option_a` / `option_b` applied as labels of `a` / `b`.
    /// The error names the key at fault.
    pub fn poll_options(&self) -> Result<Options, (&'static str, String)> {
        let mut options = Options::new(self.options.clone()).map_err(|e| ("options", e))?;
        for (key, name, label) in [
            ("a", "option_a", &self.option_a),
            ("b", "option_b", &self.option_b),
        ] {
            if let Some(label) = label {
                options.relabel(key, label.clone()).map_err(|e| (name, e))?;
            }
        }
        Ok(options)
    }

    /// The options; only call on a config from [`Config::from_figment`] (already checked).
    pub fn options(&self) -> Options {
        self.poll_options()
            .expect("options were checked when the configuration was read")
    }

    /// The poll's question: `question`, or when it is empty the labels joined as the original
    /// app did ("Cats vs Dogs!", "Tabs vs Spaces!").
    pub fn question(&self) -> String {
        if !self.question.is_empty() {
            return self.question.clone();
        }
        let labels: Vec<String> = self.options().iter().map(|o| o.label.clone()).collect();
        format!("{}!", labels.join(" vs "))
    }
}

/// The port of the default `redis.url`.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// The port of the default `postgres.url`.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;

/// The port in the environment variable `name`, or `default` when it is unset or empty, or
/// holds a Kubernetes service link (`tcp://10.0.0.5:6379`: Kubernetes sets `REDIS_PORT` so in
/// a pod beside a Service named `redis`, unless `enableServiceLinks` is off).
fn default_port(name: &str, default: u16) -> Result<u16, ConfigError> {
    match std::env::var(name) {
        Ok(value) if value.starts_with("tcp://") || value.starts_with("udp://") => Ok(default),
        Ok(value) if !value.is_empty() => match value.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(ConfigError {
                key: name.to_lowercase(),
                origin: format!("environment variable {name}"),
                message: format!("{value:?} is not a port number (1 to 65535)"),
            }),
        },
        _ => Ok(default),
    }
}

/// A question is empty (the labels make it) or 1 to [`MAX_QUESTION_CHARS`] characters, not
/// only spaces, and on one line.
fn check_question(question: &str) -> Result<(), String> {
    if question.is_empty() {
        return Ok(());
    }
    let chars = question.chars().count();
    if chars > MAX_QUESTION_CHARS || question.trim().is_empty() {
        return Err(format!(
            "must be 1 to {MAX_QUESTION_CHARS} characters, not only spaces"
        ));
    }
    if question.chars().any(char::is_control) {
        return Err("must be one line, without control characters".into());
    }
    Ok(())
}

/// `public_url` is empty, or an absolute `http://` or `https://` URL with a host, short
/// enough for a QR code that scans from the back of a room.
fn check_public_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    if url.len() > MAX_PUBLIC_URL_BYTES {
        return Err(format!("must be at most {MAX_PUBLIC_URL_BYTES} bytes"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "must be an absolute http:// or https:// URL".to_string())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.authority().is_some_and(|a| !a.host().is_empty());
    if !scheme_ok || !host_ok || url.contains(char::is_whitespace) {
        return Err(
            "must be an absolute http:// or https:// URL, e.g. https://poll.example.org/vote/"
                .into(),
        );
    }
    Ok(())
}

/// The password in `path`, without surrounding whitespace (a secret file often ends with a
/// newline). The error names the file, never what it holds.
fn read_password_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let password = text.trim();
    if password.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(password.to_string())
}

/// A configuration that cannot be used: which key, where it came from, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{key}` (from {origin}): {message}")]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub message: String,
}

impl ConfigError {
    fn from_figment(figment: &Figment, e: figment::Error) -> ConfigError {
        let mut path = e.path.clone();
        let message = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => {
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                "unknown key".to_string()
            }
            kind => kind.to_string(),
        };
        let key = if path.is_empty() {
            "<root>".to_string()
        } else {
            path.join(".")
        };
        let source = match &e.metadata {
            Some(md) if !matches!(e.kind, figment::error::Kind::UnknownField(..)) => {
                describe_metadata(md, &path)
            }
            _ => describe_source(figment, &key),
        };
        ConfigError {
            key,
            origin: source,
            message,
        }
    }
}

/// Parses each variable that [`Config::figment`] reads on its own, catching figment's panic.
fn check_environment_values() -> Result<(), ConfigError> {
    let ours = |name: &str| {
        name.starts_with(ENV_PREFIX)
            || name.eq_ignore_ascii_case("OPTION_A")
            || name.eq_ignore_ascii_case("OPTION_B")
    };
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if !ours(name) {
            continue;
        }
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let parsed = std::panic::catch_unwind(|| value.parse::<figment::value::Value>().is_ok());
        std::panic::set_hook(quiet);
        if parsed.is_err() {
            let key = name
                .strip_prefix(ENV_PREFIX)
                .unwrap_or(name)
                .to_lowercase()
                .replace("__", ".");
            return Err(ConfigError {
                key,
                origin: format!("environment variable {name}"),
                message: "the value cannot be parsed (check its quotes and backslashes)".into(),
            });
        }
    }
    Ok(())
}

/// Where the value of `key` came from, for error messages.
fn describe_source(figment: &Figment, key: &str) -> String {
    let mut path: Vec<&str> = key.split('.').collect();
    // Walk up until a key with known metadata is found (the value may be nested in a list).
    while !path.is_empty() {
        let joined = path.join(".");
        if let Some(md) = figment.find_metadata(&joined) {
            return describe_metadata(md, &path);
        }
        path.pop();
    }
    "unknown source".to_string()
}

fn describe_metadata<K: AsRef<str>>(md: &figment::Metadata, path: &[K]) -> String {
    match &md.source {
        Some(figment::Source::File(file)) => format!("file {}", file.display()),
        _ if md.name.contains("environment") => {
            let keys: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
            let prefix = if md.name.contains(ENV_PREFIX) {
                ENV_PREFIX
            } else {
                ""
            };
            format!(
                "environment variable {prefix}{}",
                keys.join("__").to_uppercase()
            )
        }
        _ if md.name.contains("Serialized") || md.name.contains("default") => {
            "built-in default".to_string()
        }
        _ => md.name.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use super::*;
    use domain::options::OptionKey;
    use figment::Jail;

    fn load(jail_file: Option<&str>) -> Result<Config, ConfigError> {
        Config::from_figment(&Config::figment(Service::Vote, jail_file.map(Path::new))?)
    }

    #[test]
    fn defaults_need_no_configuration() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let c = load(None).unwrap();
            assert_eq!(c.listen.to_string(), "127.0.0.1:8082");
            assert_eq!(c.redis.url.0.expose(), "redis://127.0.0.1:6379");
            assert_eq!(
                c.postgres.url.0.expose(),
                "postgres://postgres@127.0.0.1:5432/postgres"
            );
            assert_eq!(c.options().get("a").unwrap().label, "Cats");
            Ok(())
        });
    }

    #[test]
    fn question_and_public_url_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load(None).unwrap();
            assert_eq!(c.question(), "Cats vs Dogs!");
            assert_eq!(c.public_url, "");
            jail.set_env("OPTION_A", "Tabs");
            jail.set_env("OPTION_B", "Spaces");
            assert_eq!(load(None).unwrap().question(), "Tabs vs Spaces!");
            assert!(c.result.show_qr);
            jail.set_env("VOTING_QUESTION", "Tea or coffee?");
            jail.set_env("VOTING_PUBLIC_URL", "https://poll.example.org/vote/");
            jail.set_env("VOTING_RESULT__SHOW_QR", "false");
            let c = load(None).unwrap();
            assert_eq!(c.question(), "Tea or coffee?");
            assert_eq!(c.public_url, "https://poll.example.org/vote/");
            assert!(!c.result.show_qr);
            Ok(())
        });
    }

    #[test]
    fn bad_questions_and_public_urls_are_named() {
        for (key, value) in [
            ("VOTING_QUESTION", "\"   \""),
            ("VOTING_QUESTION", &"?".repeat(MAX_QUESTION_CHARS + 1)),
            ("VOTING_QUESTION", "\"two\nlines\""),
            ("VOTING_PUBLIC_URL", "poll.example.org/vote/"),
            ("VOTING_PUBLIC_URL", "ftp://poll.example.org/"),
            ("VOTING_PUBLIC_URL", "javascript:alert(1)"),
            (
                "VOTING_PUBLIC_URL",
                &format!("https://e.org/{}", "v".repeat(200)),
            ),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(key, value);
                let e = load(None).unwrap_err();
                let want = key.strip_prefix("VOTING_").unwrap().to_lowercase();
                assert_eq!(e.key, want, "{value}: {e}");
                assert!(e.origin.contains(key), "{e}");
                Ok(())
            });
        }
    }

    #[test]
    fn each_service_has_its_own_port() {
        let ports: Vec<u16> = [
            Service::Voting,
            Service::Vote,
            Service::Result,
            Service::Worker,
        ]
        .iter()
        .map(|s| Config::defaults(*s).listen.port())
        .collect();
        assert_eq!(ports, [8081, 8082, 8083, 8084]);
    }

    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "voting.toml",
                r#"
                listen = "127.0.0.1:9000"
                [redis]
                url = "redis://cache:6380"
                [[options]]
                key = "tabs"
                label = "Tabs"
                [[options]]
                key = "spaces"
                label = "Spaces"
                "#,
            )?;
            jail.set_env("VOTING_REDIS__URL", "redis://other:6381");
            jail.set_env("VOTING_WORKER__BATCH_SIZE", "50");
            let c = load(Some("voting.toml")).unwrap();
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.redis.url.0.expose(), "redis://other:6381");
            assert_eq!(c.worker.batch_size, 50);
            let keys: Vec<_> = c.options().iter().map(|o| o.key.to_string()).collect();
            assert_eq!(keys, ["tabs", "spaces"]);
            Ok(())
        });
    }

    #[test]
    fn a_value_that_crashes_the_parser_is_a_named_error() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "VOTING_WORKER__CONSUMER",
                "\"\u{1290}\u{fdf0}\u{a95f} \\a\"",
            );
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "worker.consumer", "{e}");
            assert!(e.origin.contains("VOTING_WORKER__CONSUMER"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn options_list_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_OPTIONS", r#"[{key="tea",label="Tea"},{key="coffee",label="Coffee"},{key="water",label="Water"}]"#);
            let c = load(None).unwrap();
            let keys: Vec<_> = c.options().iter().map(|o| o.key.to_string()).collect();
            assert_eq!(keys, ["tea", "coffee", "water"]);
            Ok(())
        });
    }

    #[test]
    fn option_a_and_b_relabel() {
        Jail::expect_with(|jail| {
            jail.set_env("OPTION_A", "Tea");
            jail.set_env("OPTION_B", "Coffee");
            let c = load(None).unwrap();
            let labels: Vec<_> = c.options().iter().map(|o| o.label.clone()).collect();
            assert_eq!(labels, ["Tea", "Coffee"]);
            Ok(())
        });
    }

    #[test]
    fn option_a_without_key_a_names_option_a() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "v.toml",
                "options = [{ key = \"x\", label = \"X\" }, { key = \"y\", label = \"Y\" }]",
            )?;
            jail.set_env("OPTION_A", "Tea");
            let e = load(Some("v.toml")).unwrap_err();
            assert_eq!(e.key, "option_a");
            assert!(e.origin.contains("OPTION_A"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_file_is_named_with_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("v.toml", "[redis]\nurl = \"redis://x\"\npoolsize = 3\n")?;
            let e = load(Some("v.toml")).unwrap_err();
            assert_eq!(e.key, "redis.poolsize");
            assert_eq!(e.message, "unknown key");
            assert!(e.origin.contains("v.toml"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_top_level_env_key_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_LISTN", "127.0.0.1:1");
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "listn");
            assert!(e.origin.contains("VOTING_LISTN"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn bad_value_names_key_and_env_var() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_LISTEN", "not-an-address");
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "listen");
            assert!(e.origin.contains("VOTING_LISTEN"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn wrong_type_in_file() {
        Jail::expect_with(|jail| {
            jail.create_file("v.toml", "[worker]\nbatch_size = \"many\"\n")?;
            let e = load(Some("v.toml")).unwrap_err();
            assert_eq!(e.key, "worker.batch_size");
            assert!(e.origin.contains("v.toml"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn bad_url_scheme_and_secret_stays_secret() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_POSTGRES__URL", "mysql://root:hunter2@db/x");
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "postgres.url");
            assert!(!e.to_string().contains("hunter2"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn debug_output_hides_passwords() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_POSTGRES__URL", "postgres://app:hunter2@db/x");
            jail.set_env("VOTING_REDIS__URL", "redis://:s3cret@cache:6379");
            let c = load(None).unwrap();
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("s3cret"),
                "{shown}"
            );
            Ok(())
        });
    }

    #[test]
    fn password_files_go_into_the_urls() {
        Jail::expect_with(|jail| {
            jail.create_file("pg-password", "hunter2\n")?;
            jail.create_file("redis-password", "  s3cret \n")?;
            jail.set_env("VOTING_POSTGRES__PASSWORD_FILE", "pg-password");
            jail.set_env("VOTING_REDIS__URL", "redis://cache:6379");
            jail.set_env("VOTING_REDIS__PASSWORD_FILE", "redis-password");
            let c = load(None).unwrap();
            assert_eq!(
                c.postgres.url.0.expose(),
                "postgres://postgres:hunter2@127.0.0.1:5432/postgres"
            );
            assert_eq!(c.redis.url.0.expose(), "redis://:s3cret@cache:6379");
            let shown = format!("{c:?} {} {}", c.postgres.url, c.redis.url);
            assert!(
                !shown.contains("hunter2") && !shown.contains("s3cret"),
                "{shown}"
            );
            Ok(())
        });
    }

    #[test]
    fn password_file_replaces_the_password_of_the_url() {
        Jail::expect_with(|jail| {
            jail.create_file("pw", "new")?;
            jail.create_file(
                "v.toml",
                "[postgres]\nurl = \"postgres://app:old@db:5432/votes\"\npassword_file = \"pw\"\n",
            )?;
            let c = load(Some("v.toml")).unwrap();
            assert_eq!(
                c.postgres.url.0.expose(),
                "postgres://app:new@db:5432/votes"
            );
            Ok(())
        });
    }

    #[test]
    fn any_password_survives_the_url() {
        Jail::expect_with(|jail| {
            let password = "p@ss:w/rd%?#&= é";
            jail.create_file("pw", password)?;
            jail.set_env("VOTING_POSTGRES__PASSWORD_FILE", "pw");
            let c = load(None).unwrap();
            let pg: tokio_postgres::Config = c.postgres.url.0.expose().parse().unwrap();
            assert_eq!(pg.get_password(), Some(password.as_bytes()));
            assert_eq!(pg.get_user(), Some("postgres"));
            assert_eq!(pg.get_dbname(), Some("postgres"));
            Ok(())
        });
    }

    #[test]
    fn missing_or_empty_password_file_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_POSTGRES__PASSWORD_FILE", "/nonexistent/pg-password");
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "postgres.password_file");
            assert!(e.origin.contains("VOTING_POSTGRES__PASSWORD_FILE"), "{e}");
            assert!(e.message.contains("/nonexistent/pg-password"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("empty", " \n")?;
            jail.create_file("v.toml", "[redis]\npassword_file = \"empty\"\n")?;
            let e = load(Some("v.toml")).unwrap_err();
            assert_eq!(e.key, "redis.password_file");
            assert!(e.origin.contains("v.toml"), "{e}");
            assert!(e.message.contains("is empty"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn empty_password_file_setting_means_none() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_POSTGRES__PASSWORD_FILE", "");
            let c = load(None).unwrap();
            assert_eq!(
                c.postgres.url.0.expose(),
                "postgres://postgres@127.0.0.1:5432/postgres"
            );
            Ok(())
        });
    }

    #[test]
    fn password_file_needs_a_url_with_a_host() {
        Jail::expect_with(|jail| {
            jail.create_file("pw", "s3cret")?;
            jail.set_env("VOTING_REDIS__URL", "unix:///run/redis.sock");
            jail.set_env("VOTING_REDIS__PASSWORD_FILE", "pw");
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "redis.url");
            assert!(!e.to_string().contains("s3cret"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn zero_batch_size_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_WORKER__BATCH_SIZE", "0");
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "worker.batch_size");
            assert!(e.origin.contains("VOTING_WORKER__BATCH_SIZE"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn trust_proxy_is_off_unless_asked_for() {
        Jail::expect_with(|jail| {
            assert!(!load(None).unwrap().http.trust_proxy);
            jail.create_file("v.toml", "[http]\ntrust_proxy = true\n")?;
            assert!(load(Some("v.toml")).unwrap().http.trust_proxy);
            jail.set_env("VOTING_HTTP__TRUST_PROXY", "false");
            assert!(!load(Some("v.toml")).unwrap().http.trust_proxy);
            jail.set_env("VOTING_HTTP__TRUST_PROXY", "maybe");
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "http.trust_proxy");
            assert!(e.origin.contains("VOTING_HTTP__TRUST_PROXY"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn result_settings_are_checked() {
        Jail::expect_with(|jail| {
            assert_eq!(load(None).unwrap().result.max_sockets, 20_000);
            jail.set_env("VOTING_RESULT__POLL_INTERVAL_MS", "0");
            let e = load(None).unwrap_err();
            assert_eq!(e.key, "result.poll_interval_ms");
            Ok(())
        });
    }

    #[test]
    fn threads_default_to_automatic() {
        Jail::expect_with(|jail| {
            assert_eq!(load(None).unwrap().threads, 0);
            assert_eq!(Service::Vote.default_threads(), 1);
            // The one-process binary takes every core: it runs three services at once.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            assert_eq!(Service::Voting.default_threads(), cores);
            jail.set_env("VOTING_THREADS", "4");
            assert_eq!(load(None).unwrap().threads, 4);
            jail.set_env("VOTING_THREADS", "1000");
            assert_eq!(load(None).unwrap_err().key, "threads");
            Ok(())
        });
    }

    #[test]
    fn worker_linger_is_bounded() {
        Jail::expect_with(|jail| {
            assert_eq!(load(None).unwrap().worker.linger_ms, 10);
            jail.set_env("VOTING_WORKER__LINGER_MS", "0");
            assert_eq!(load(None).unwrap().worker.linger_ms, 0);
            jail.set_env("VOTING_WORKER__LINGER_MS", "1001");
            assert_eq!(load(None).unwrap_err().key, "worker.linger_ms");
            Ok(())
        });
    }

    #[test]
    fn voting_settings_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load(None).unwrap();
            assert_eq!(c.voting.data_dir, "");
            assert!(c.voting.supervise);
            jail.set_env("VOTING_VOTING__DATA_DIR", "/srv/voting");
            jail.set_env("VOTING_VOTING__SUPERVISE", "false");
            let c = load(None).unwrap();
            assert_eq!(c.voting.data_dir, "/srv/voting");
            assert!(!c.voting.supervise);
            jail.set_env("VOTING_VOTING__SUPERVISE", "sometimes");
            assert_eq!(load(None).unwrap_err().key, "voting.supervise");
            Ok(())
        });
    }

    #[test]
    fn a_url_is_named_by_a_file_or_the_environment_never_by_the_defaults() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            assert_eq!(load(None).unwrap().named, Named::default());
            jail.set_env("REDIS_PORT", "6390");
            jail.set_env("POSTGRES_PORT", "5440");
            let c = load(None).unwrap();
            assert_eq!(
                c.named,
                Named::default(),
                "the ports only move the defaults"
            );
            assert_eq!(c.redis.url.0.expose(), "redis://127.0.0.1:6390");
            assert_eq!(
                c.postgres.url.0.expose(),
                "postgres://postgres@127.0.0.1:5440/postgres"
            );
            jail.create_file("v.toml", "[postgres]\nurl = \"postgres://app@db/votes\"\n")?;
            let c = load(Some("v.toml")).unwrap();
            assert!(c.named.postgres_url && !c.named.redis_url);
            jail.set_env("VOTING_REDIS__URL", "redis://127.0.0.1:6379");
            let c = load(None).unwrap();
            assert!(
                c.named.redis_url && !c.named.postgres_url,
                "even the default value"
            );
            jail.set_env("REDIS_PORT", "tcp://10.0.0.5:6379");
            let c = load(None).unwrap();
            assert_eq!(
                c.redis.url.0.expose(),
                "redis://127.0.0.1:6379",
                "a service link"
            );
            jail.set_env("REDIS_PORT", "redis");
            let e = load(None).unwrap_err();
            assert!(e.to_string().contains("REDIS_PORT"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn bad_options_list() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "v.toml",
                "options = [{ key = \"Bad Key\", label = \"X\" }, { key = \"y\", label = \"Y\" }]",
            )?;
            let e = load(Some("v.toml")).unwrap_err();
            assert!(e.key.starts_with("options"), "{e}");
            Ok(())
        });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever text a variable holds, the result is a value that was asked for, or an
        /// error naming that very key and variable: never a panic, never another key.
        #[test]
        fn any_env_value_is_taken_or_named(value in "\\PC{0,24}") {
            Jail::expect_with(|jail| {
                jail.set_env("VOTING_WORKER__BATCH_SIZE", &value);
                match load(None) {
                    Ok(c) => assert_eq!(value.trim().trim_start_matches('+').parse::<usize>(), Ok(c.worker.batch_size), "{value:?}"),
                    Err(e) => {
                        assert_eq!(e.key, "worker.batch_size", "{e}");
                        assert!(e.origin.contains("VOTING_WORKER__BATCH_SIZE"), "{e}");
                    }
                }
                Ok(())
            });
        }

        #[test]
        fn any_label_is_accepted_or_refused_cleanly(label in "\\PC{0,80}") {
            Jail::expect_with(|jail| {
                jail.set_env("OPTION_A", &label);
                match load(None) {
                    // figment unquotes and trims some values; whatever it makes of the
                    // text, what is kept is a valid label.
                    Ok(c) => {
                        let got = c.options().get("a").unwrap().label.clone();
                        assert!(Options::new(vec![VoteOption { key: OptionKey::parse("a").unwrap(), label: got.clone() }, Options::defaults()[1].clone()]).is_ok(), "{got:?} from {label:?}");
                    }
                    Err(e) => assert_eq!(e.key, "option_a", "{e}"),
                }
                Ok(())
            });
        }
    }
}
