//! Configuration: built-in defaults <- TOML file <- `VOTING_…` environment <- `OPTION_A`/`OPTION_B`.
//!
//! Every binary reads the same [`Config`], so one file can configure all services; only the
//! default of `listen` differs per service. Unknown keys are errors. [`ConfigError`] names the
//! key and where its value came from, and never carries a password.
//!
//! Each value is parsed into the type it means while it is read: counts that cannot be zero
//! are `NonZero…`, the `…_ms` keys are [`Millis`] (a [`Duration`] with its range), strings
//! with rules are checked by their deserializer, and the options come out resolved
//! ([`Options`], with `OPTION_A`/`OPTION_B` applied). A bad value is an error naming its key
//! when the configuration is loaded; nothing is checked again later.
//!
//! The environment is read by [`Environment`], which parses each variable per its key's
//! type (a number, a boolean, a string, or a TOML list or table), never with figment's
//! lenient value parser (it panics on some malformed quoted strings).
//!
//! `redis.password_file` / `postgres.password_file` (e.g. a Docker secret under
//! `/run/secrets/`) name a file holding the password: it is read once, when the configuration
//! is loaded, trimmed, and put into the URL, so everything that connects gets it and nothing
//! prints it.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Num, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::SecretUrl;
use domain::options::Options;

/// Prefix of the environment variables read as configuration (`__` separates nesting).
pub const ENV_PREFIX: &str = "VOTING_";

/// The longest question, in characters: it must fit a heading.
pub const MAX_QUESTION_CHARS: usize = 200;
/// The longest `public_url`, in bytes: it must fit a QR code that scans from afar.
pub const MAX_PUBLIC_URL_BYTES: usize = 200;

/// The program reading the configuration (one per binary: the three services and the
/// all-in-one `voting`): it picks the defaults, such as the listen address and the threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Vote,
    Result,
    Worker,
    Voting,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Vote => "vote",
            Program::Result => "result",
            Program::Worker => "worker",
            Program::Voting => "voting",
        }
    }

    /// Threads of the async runtime when `threads` is 0. One for vote, result and the worker:
    /// each mostly waits on sockets, and on a small host it shares the cores with Nginx, Redis
    /// and PostgreSQL, where a second thread costs more in cross-thread wake-ups than it gives
    /// (measured: 12 % more CPU per vote in vote on two cores). The all-in-one binary, which
    /// does all their work, gets one per core.
    pub fn default_threads(self) -> usize {
        match self {
            Program::Voting => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Program::Vote | Program::Result | Program::Worker => 1,
        }
    }

    /// Distinct ports, so every service can run on one host at once.
    pub fn default_listen(self) -> SocketAddr {
        let port = match self {
            Program::Voting => 8081,
            Program::Vote => 8082,
            Program::Result => 8083,
            Program::Worker => 8084,
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
    /// Threads of the async runtime, at most [`MAX_THREADS`]; 0 chooses
    /// ([`Program::default_threads`]).
    #[serde(deserialize_with = "threads")]
    pub threads: usize,
    pub redis: RedisConfig,
    pub postgres: PostgresConfig,
    /// The poll's question: the heading and the title of both pages. Empty: the labels
    /// joined, "Cats vs Dogs!" for the default poll (see [`Config::question`]).
    #[serde(deserialize_with = "question")]
    pub question: String,
    /// The voting page's address as people outside should type it or scan it (the link and
    /// QR code of the results page), e.g. `https://poll.example.org/vote/`; empty: derived
    /// from each request of the results page (`Host`, or `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` with `http.trust_proxy`) as `<scheme>://<host>/vote/`.
    #[serde(deserialize_with = "public_url")]
    pub public_url: String,
    /// The poll's options, in display order, checked; on a loaded configuration `option_a`
    /// and `option_b` are applied already (see [`Config::options`]).
    pub options: Options,
    /// The original app's `OPTION_A`: label of option `a`. [`Config::from_figment`] applies
    /// it to `options` and leaves `None` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_a: Option<String>,
    /// The original app's `OPTION_B`: label of option `b`, applied like `option_a`.
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
    #[serde(deserialize_with = "positive")]
    pub pool_size: NonZeroU32,
    /// A file holding the password, put into `url` when the configuration is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: PostgresUrl,
    #[serde(deserialize_with = "positive")]
    pub pool_size: NonZeroU32,
    /// A file holding the password, put into `url` when the configuration is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// Names of the Redis keys that carry votes, and the bound on the backlog.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The stream votes are appended to.
    #[serde(deserialize_with = "redis_key")]
    pub stream: String,
    /// The workers' consumer group.
    #[serde(deserialize_with = "redis_key")]
    pub group: String,
    /// Where entries that can never be valid go, with the reason.
    #[serde(deserialize_with = "redis_key")]
    pub dead_letter: String,
    /// The original app's list of JSON votes that the worker drains too; empty disables it.
    pub legacy_list: String,
    /// Refuse new votes (503) while the stream holds this many entries or more.
    #[serde(deserialize_with = "positive")]
    pub max_backlog: NonZeroU64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once; more wait in the kernel's accept queue.
    #[serde(deserialize_with = "positive")]
    pub max_connections: NonZeroUsize,
    /// A client must send its request headers within this time.
    pub header_timeout_ms: Millis<1>,
    /// A client must send its request body within this time.
    pub body_timeout_ms: Millis<1>,
    /// A connection whose answer makes no progress (the client does not read it) for this
    /// long is closed.
    pub write_timeout_ms: Millis<1>,
    /// Largest request body accepted (413 above).
    #[serde(deserialize_with = "positive")]
    pub max_body_bytes: NonZeroUsize,
    /// Grace period for open requests on shutdown.
    pub shutdown_grace_ms: Millis,
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
    #[serde(deserialize_with = "positive")]
    pub batch_size: NonZeroUsize,
    /// How long a read waits for new entries when the stream is empty (at most a minute).
    pub block_ms: Millis<1, 60_000>,
    /// After a batch of more than one entry (votes are flowing) but less than a full one, the
    /// next read starts no sooner than this long after that batch's, so that batches grow
    /// under steady load; 0 never waits.
    /// A lone vote is applied at once. At most a second.
    pub linger_ms: Millis<0, 1000>,
    /// Entries pending this long on another consumer are claimed (its owner is presumed dead).
    pub claim_idle_ms: Millis<1>,
    /// How often to look for such entries.
    pub claim_interval_ms: Millis<1>,
    /// Consumer name in the group; empty means `<host>-<pid>-<random>`, unique per process.
    pub consumer: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultConfig {
    /// WebSockets open at once; the next one is answered 503.
    #[serde(deserialize_with = "positive")]
    pub max_sockets: NonZeroUsize,
    /// The safety poll: tallies are re-read this often even without a notification.
    pub poll_interval_ms: Millis<1>,
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
    ($name:ident, $what:literal, [$($scheme:literal),+], $parses:expr) => {
        #[doc = concat!("A ", $what, " URL, its scheme checked and the URL parsed by the ",
            "client when the configuration is read.")]
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub SecretUrl);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let url = SecretUrl::new(s);
                url.check_scheme(&[$($scheme),+])?;
                // The client's own message could quote the password: not shown.
                if !$parses(url.expose()) {
                    return Err(concat!("not a URL the ", $what, " client accepts").into());
                }
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

url_newtype!(
    RedisUrl,
    "Redis",
    // No `rediss`: the client is built without TLS.
    ["redis", "unix", "redis+unix"],
    |url: &str| redis::Client::open(url).is_ok()
);
url_newtype!(
    PostgresUrl,
    "PostgreSQL",
    ["postgres", "postgresql"],
    |url: &str| url.parse::<tokio_postgres::Config>().is_ok()
);

/// A duration written as whole milliseconds (the `…_ms` keys), from `MIN` to `MAX`: a number
/// out of that range is refused while the configuration is read, with an error naming the
/// key. The code reads the [`Duration`] ([`Millis::get`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Millis<const MIN: u64 = 0, const MAX: u64 = { u64::MAX }>(Duration);

impl<const MIN: u64, const MAX: u64> Millis<MIN, MAX> {
    /// `ms` milliseconds, if within `MIN..=MAX`.
    pub const fn new(ms: u64) -> Option<Self> {
        if MIN <= ms && ms <= MAX {
            Some(Millis(Duration::from_millis(ms)))
        } else {
            None
        }
    }

    /// A constant in range, checked at compile time: `const { Millis::ms(10) }`.
    pub const fn ms(ms: u64) -> Self {
        match Self::new(ms) {
            Some(millis) => millis,
            None => panic!("a constant Millis out of its range"),
        }
    }

    /// The duration, for the code that waits or times out.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl<const MIN: u64, const MAX: u64> TryFrom<u64> for Millis<MIN, MAX> {
    type Error = String;
    fn try_from(ms: u64) -> Result<Self, String> {
        Millis::new(ms).ok_or_else(|| match (MIN, MAX) {
            (1, u64::MAX) => "must be greater than 0".to_string(),
            (_, u64::MAX) => format!("must be at least {MIN}"),
            _ => format!("must be {MIN} to {MAX}"),
        })
    }
}

impl<const MIN: u64, const MAX: u64> From<Millis<MIN, MAX>> for u64 {
    fn from(millis: Millis<MIN, MAX>) -> u64 {
        // Made from a u64 of milliseconds, so it fits.
        millis.0.as_millis() as u64
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Debug for Millis<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// The most runtime threads `threads` may ask for.
pub const MAX_THREADS: usize = 256;

/// A constant that is not zero, checked at compile time: `const { nonzero(4) }`.
const fn nonzero(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => panic!("zero"),
    }
}

/// Reads a value and checks it with `check`, whose message becomes the error of its key.
fn checked<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, D::Error> {
    let value = T::deserialize(d)?;
    check(&value).map_err(serde::de::Error::custom)?;
    Ok(value)
}

/// A count that cannot be zero, refused in words (serde's own message names Rust types).
fn positive<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<NonZeroU64>,
{
    let n = NonZeroU64::new(u64::deserialize(d)?)
        .ok_or_else(|| serde::de::Error::custom("must be greater than 0"))?;
    T::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is too large")))
}

fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    checked(d, |n: &usize| {
        if *n > MAX_THREADS {
            return Err(format!("must be at most {MAX_THREADS}"));
        }
        Ok(())
    })
}

fn question<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |q: &String| check_question(q))
}

fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |u: &String| check_public_url(u))
}

/// A Redis key name: not empty.
fn redis_key<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |name: &String| {
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(())
    })
}

impl Config {
    /// The built-in defaults for `service`.
    pub fn defaults(service: Program) -> Config {
        Config::defaults_on(service, DEFAULT_REDIS_PORT, DEFAULT_POSTGRES_PORT)
    }

    /// The built-in defaults, with the default URLs on these loopback ports.
    fn defaults_on(service: Program, redis_port: u16, postgres_port: u16) -> Config {
        Config {
            listen: service.default_listen(),
            threads: 0,
            redis: RedisConfig {
                url: RedisUrl(SecretUrl::new(format!("redis://127.0.0.1:{redis_port}"))),
                pool_size: const { NonZeroU32::new(4).unwrap() },
                password_file: None,
            },
            postgres: PostgresConfig {
                url: PostgresUrl(SecretUrl::new(format!(
                    "postgres://postgres@127.0.0.1:{postgres_port}/postgres"
                ))),
                pool_size: const { NonZeroU32::new(4).unwrap() },
                password_file: None,
            },
            question: String::new(),
            public_url: String::new(),
            options: Options::default(),
            option_a: None,
            option_b: None,
            queue: QueueConfig {
                stream: "ballots".into(),
                group: "workers".into(),
                dead_letter: "ballots:dead".into(),
                legacy_list: "votes".into(),
                max_backlog: const { NonZeroU64::new(1_000_000).unwrap() },
            },
            http: HttpConfig {
                max_connections: const { nonzero(10_000) },
                header_timeout_ms: const { Millis::ms(10_000) },
                body_timeout_ms: const { Millis::ms(10_000) },
                write_timeout_ms: const { Millis::ms(20_000) },
                max_body_bytes: const { nonzero(4096) },
                shutdown_grace_ms: const { Millis::ms(10_000) },
                trust_proxy: false,
            },
            log: LogConfig {
                format: LogFormat::Text,
            },
            vote: VoteConfig {
                secure_cookie: false,
            },
            worker: WorkerConfig {
                batch_size: const { nonzero(4000) },
                block_ms: const { Millis::ms(1000) },
                linger_ms: const { Millis::ms(10) },
                claim_idle_ms: const { Millis::ms(10_000) },
                claim_interval_ms: const { Millis::ms(5_000) },
                consumer: String::new(),
            },
            result: ResultConfig {
                max_sockets: const { nonzero(20_000) },
                poll_interval_ms: const { Millis::ms(5_000) },
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
    /// process environment ([`Environment`]). Tests build their own figment on top of
    /// [`Config::defaults`].
    ///
    /// `REDIS_PORT` and `POSTGRES_PORT` (the variables docker-compose.yml and the native run
    /// publish the servers' ports with) set the ports of the default URLs.
    pub fn figment(service: Program, file: Option<&Path>) -> Result<Figment, ConfigError> {
        let redis_port = default_port("REDIS_PORT", DEFAULT_REDIS_PORT)?;
        let postgres_port = default_port("POSTGRES_PORT", DEFAULT_POSTGRES_PORT)?;
        let defaults = Config::defaults_on(service, redis_port, postgres_port);
        let mut figment = Figment::from(Serialized::defaults(defaults));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        Ok(figment
            .merge(Environment::prefixed())
            .merge(Environment::option_labels()))
    }

    /// Reads the configuration from `figment`: every value parsed into its type, the options
    /// resolved, the password files read.
    pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::from_figment(figment, e))?;
        let mut config = config.with_labels(figment)?.with_password_files(figment)?;
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
    pub fn load(service: Program, file: Option<PathBuf>) -> Result<Config, ConfigError> {
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

    /// Applies `option_a` / `option_b` as the labels of options `a` / `b` (then `None`); the
    /// error names the key at fault.
    fn with_labels(mut self, figment: &Figment) -> Result<Config, ConfigError> {
        let labels = [
            ("a", "option_a", self.option_a.take()),
            ("b", "option_b", self.option_b.take()),
        ];
        for (key, name, label) in labels {
            if let Some(label) = label {
                self.options
                    .relabel(key, label)
                    .map_err(|message| ConfigError {
                        key: name.to_string(),
                        origin: describe_source(figment, name),
                        message,
                    })?;
            }
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
            let url = url.and_then(|url| RedisUrl::try_from(url.expose().to_string()));
            self.redis.url = url.map_err(|m| fail("redis.url", m))?;
        }
        if let Some(path) = set(&self.postgres.password_file) {
            let password =
                read_password_file(&path).map_err(|m| fail("postgres.password_file", m))?;
            let url = self.postgres.url.0.with_password(&password);
            let url = url.and_then(|url| PostgresUrl::try_from(url.expose().to_string()));
            self.postgres.url = url.map_err(|m| fail("postgres.url", m))?;
        }
        Ok(self)
    }

    /// The poll's options, as checked and resolved when the configuration was read.
    pub fn options(&self) -> &Options {
        &self.options
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

/// The environment as a configuration source: the `VOTING_…` variables (`__` separates
/// nesting; `VOTING_CONFIG` names the file instead), or `OPTION_A` and `OPTION_B`.
///
/// A value is read as its key's type in the built-in defaults: a number or `true`/`false`
/// as such, a value in quotes, brackets or braces as TOML (`"Tea"`,
/// `[{key="tea",label="Tea"}]`), anything else as the text itself, trimmed. A value that is
/// not of the key's type is then refused by the key's type, naming the key and the variable.
/// (figment's own `Env` parses every value leniently, and that parser panics on some quoted
/// strings.)
pub struct Environment {
    /// `Some(ENV_PREFIX)`, or `None` for the original app's `OPTION_A` / `OPTION_B`.
    prefix: Option<&'static str>,
}

impl Environment {
    /// The `VOTING_…` variables.
    pub fn prefixed() -> Environment {
        Environment {
            prefix: Some(ENV_PREFIX),
        }
    }

    /// `OPTION_A` and `OPTION_B`, as `option_a` and `option_b`.
    pub fn option_labels() -> Environment {
        Environment { prefix: None }
    }

    /// The dotted key a variable sets, if it is one of this source's.
    fn key_of(&self, name: &str) -> Option<String> {
        let key = match self.prefix {
            Some(prefix) => {
                let rest = name.get(prefix.len()..)?;
                name[..prefix.len()]
                    .eq_ignore_ascii_case(prefix)
                    .then_some(rest)?
            }
            None => ["option_a", "option_b"]
                .into_iter()
                .find(|key| key.eq_ignore_ascii_case(name))?,
        };
        let key = key.to_ascii_lowercase().replace("__", ".");
        let usable = key != "config" && !key.split('.').any(str::is_empty);
        usable.then_some(key)
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        match self.prefix {
            Some(prefix) => Metadata::named(format!("`{prefix}` environment variable(s)")),
            None => Metadata::named("environment variable(s)"),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let types = Value::serialize(Config::defaults(Program::Voting))?;
        let mut values = Dict::new();
        for (name, text) in std::env::vars_os() {
            let Some(key) = self.key_of(name.to_string_lossy().trim()) else {
                continue;
            };
            let value = read_env_value(&text.to_string_lossy(), types.find_ref(&key))
                .map_err(|message| figment::Error::from(message).with_path(&key))?;
            insert(&mut values, &key, value);
        }
        Ok(Profile::Default.collect(values))
    }
}

/// Puts `value` at the dotted `key` of `dict`, making the tables on the way.
fn insert(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_string(), value);
        }
        Some((first, rest)) => {
            let entry = dict
                .entry(first.to_string())
                .or_insert_with(|| Dict::new().into());
            if !matches!(entry, Value::Dict(..)) {
                *entry = Dict::new().into();
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// One variable's value, read as the type of `like` (the key's default), if any.
fn read_env_value(text: &str, like: Option<&Value>) -> Result<Value, String> {
    let text = text.trim();
    match like {
        Some(Value::Num(..)) => {
            if let Ok(num) = text.parse::<Num>() {
                return Ok(num.into());
            }
        }
        Some(Value::Bool(..)) if text == "true" || text == "false" => {
            return Ok(Value::from(text == "true"));
        }
        _ => {}
    }
    let enclosed = [('"', '"'), ('\'', '\''), ('[', ']'), ('{', '}')]
        .into_iter()
        .any(|(open, close)| text.len() >= 2 && text.starts_with(open) && text.ends_with(close));
    if !enclosed {
        return Ok(Value::from(text.to_string()));
    }
    Toml::string(&format!("v = {text}"))
        .data()
        .ok()
        .and_then(|mut data| data.remove(&Profile::Default))
        .filter(|dict| dict.len() == 1)
        .and_then(|mut dict| dict.remove("v"))
        .ok_or_else(|| {
            "the value cannot be read: check its quotes, backslashes and brackets (TOML syntax)"
                .to_string()
        })
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
    use domain::options::{OptionKey, VoteOption};
    use figment::Jail;

    fn load(jail_file: Option<&str>) -> Result<Config, ConfigError> {
        Config::from_figment(&Config::figment(Program::Vote, jail_file.map(Path::new))?)
    }

    /// Loads (with `jail_file`, if any) expecting an error on `key` whose origin names
    /// `origin` (a variable or the file).
    fn refused(jail_file: Option<&str>, key: &str, origin: &str) -> ConfigError {
        let e = load(jail_file).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.origin.contains(origin), "{e}");
        e
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
            Program::Voting,
            Program::Vote,
            Program::Result,
            Program::Worker,
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
            assert_eq!(c.worker.batch_size.get(), 50);
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
            refused(None, "worker.consumer", "VOTING_WORKER__CONSUMER");
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
            assert_eq!(
                (c.option_a, c.option_b),
                (None, None),
                "applied once, at load"
            );
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
            refused(Some("v.toml"), "option_a", "OPTION_A");
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
            refused(None, "listn", "VOTING_LISTN");
            Ok(())
        });
    }

    #[test]
    fn bad_value_names_key_and_env_var() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_LISTEN", "not-an-address");
            refused(None, "listen", "VOTING_LISTEN");
            Ok(())
        });
    }

    #[test]
    fn wrong_type_in_file() {
        Jail::expect_with(|jail| {
            jail.create_file("v.toml", "[worker]\nbatch_size = \"many\"\n")?;
            refused(Some("v.toml"), "worker.batch_size", "v.toml");
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
    fn urls_the_clients_refuse_are_refused_at_load() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_REDIS__URL", "unix:///run/redis/redis.sock");
            jail.set_env(
                "VOTING_POSTGRES__URL",
                "postgresql:///votes?host=/run/postgresql",
            );
            load(None).unwrap();
            jail.set_env("VOTING_REDIS__URL", "redis://:s3cret@cache:6380/2");
            jail.set_env(
                "VOTING_POSTGRES__URL",
                "postgres://app@db:5433/votes?sslmode=require",
            );
            load(None).unwrap();
            Ok(())
        });
        for (variable, url, key) in [
            (
                "VOTING_POSTGRES__URL",
                "postgres://app:hunter2@db/x?sslmode=sometimes",
                "postgres.url",
            ),
            (
                "VOTING_REDIS__URL",
                "redis://:hunter2@cache:6379/not-a-db",
                "redis.url",
            ),
            (
                "VOTING_REDIS__URL",
                "rediss://:hunter2@cache:6380",
                "redis.url",
            ),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(variable, url);
                let e = refused(None, key, variable);
                assert!(!e.to_string().contains("hunter2"), "{e}");
                Ok(())
            });
        }
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
            let e = refused(
                None,
                "postgres.password_file",
                "VOTING_POSTGRES__PASSWORD_FILE",
            );
            assert!(e.message.contains("/nonexistent/pg-password"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("empty", " \n")?;
            jail.create_file("v.toml", "[redis]\npassword_file = \"empty\"\n")?;
            let e = refused(Some("v.toml"), "redis.password_file", "v.toml");
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
            let e = refused(None, "worker.batch_size", "VOTING_WORKER__BATCH_SIZE");
            assert_eq!(e.message, "must be greater than 0");
            jail.create_file("v.toml", "[redis]\npool_size = 4294967296\n")?;
            let e = load(Some("v.toml")).unwrap_err();
            assert_eq!(e.key, "redis.pool_size");
            assert_eq!(e.message, "4294967296 is too large");
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
            refused(None, "http.trust_proxy", "VOTING_HTTP__TRUST_PROXY");
            Ok(())
        });
    }

    #[test]
    fn result_settings_are_checked() {
        Jail::expect_with(|jail| {
            assert_eq!(load(None).unwrap().result.max_sockets.get(), 20_000);
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
            assert_eq!(Program::Vote.default_threads(), 1);
            // The one-process binary takes every core: it runs three services at once.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            assert_eq!(Program::Voting.default_threads(), cores);
            jail.set_env("VOTING_THREADS", "4");
            assert_eq!(load(None).unwrap().threads, 4);
            jail.set_env("VOTING_THREADS", "1000");
            assert_eq!(load(None).unwrap_err().key, "threads");
            Ok(())
        });
    }

    #[test]
    fn milliseconds_are_durations_within_their_range() {
        Jail::expect_with(|jail| {
            let c = load(None).unwrap();
            assert_eq!(c.http.header_timeout_ms.get(), Duration::from_secs(10));
            assert_eq!(c.worker.block_ms.get(), Duration::from_secs(1));
            jail.set_env("VOTING_HTTP__HEADER_TIMEOUT_MS", "500");
            jail.set_env("VOTING_WORKER__BLOCK_MS", "60000");
            let c = load(None).unwrap();
            assert_eq!(c.http.header_timeout_ms.get(), Duration::from_millis(500));
            assert_eq!(c.worker.block_ms.get(), Duration::from_secs(60));
            jail.set_env("VOTING_WORKER__BLOCK_MS", "60001");
            let e = refused(None, "worker.block_ms", "VOTING_WORKER__BLOCK_MS");
            assert!(e.message.contains("1 to 60000"), "{e}");
            jail.create_file("v.toml", "[http]\nbody_timeout_ms = 0\n")?;
            let e = refused(Some("v.toml"), "http.body_timeout_ms", "v.toml");
            assert!(e.message.contains("greater than 0"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn environment_values_are_read_as_their_keys_types() {
        Jail::expect_with(|jail| {
            jail.set_env("VOTING_QUESTION", "\"Tea, or coffee?\"");
            jail.set_env("VOTING_WORKER__CONSUMER", " 42 ");
            jail.set_env("VOTING_QUEUE__STREAM", "'ballots:{eu}'");
            jail.set_env("VOTING_REDIS__POOL_SIZE", " 8");
            let c = load(None).unwrap();
            assert_eq!(c.question, "Tea, or coffee?");
            assert_eq!(c.worker.consumer, "42", "digits for a string key stay text");
            assert_eq!(c.queue.stream, "ballots:{eu}");
            assert_eq!(c.redis.pool_size.get(), 8);
            jail.set_env("VOTING_OPTIONS", "[{key=\"a\",label=\"A\"}, {key=\"b\"]");
            let e = load(None).unwrap_err();
            assert!(e.key.starts_with("options"), "{e}");
            assert!(e.origin.contains("VOTING_OPTIONS"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn worker_linger_is_bounded() {
        Jail::expect_with(|jail| {
            assert_eq!(
                load(None).unwrap().worker.linger_ms.get(),
                Duration::from_millis(10)
            );
            jail.set_env("VOTING_WORKER__LINGER_MS", "0");
            assert_eq!(load(None).unwrap().worker.linger_ms.get(), Duration::ZERO);
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
                    Ok(c) => assert_eq!(value.trim().trim_start_matches('+').parse::<usize>(), Ok(c.worker.batch_size.get()), "{value:?}"),
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
