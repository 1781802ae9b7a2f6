//! Before anything is logged or bound: which of Redis and PostgreSQL this process must start
//! itself, and everything needed for that (programs, data directory, system user). A missing
//! program ends the binary here, with one line naming what to install.
//!
//! `voting` never uses a server it did not start unless the user names it. With supervision on
//! (`voting.supervise`), a server is started for each of `redis.url` and `postgres.url` that is
//! not named ([`common::config::Named`]: the key is in no file and no `VOTING_…` variable), and
//! never for one that is. The servers it starts listen on Unix sockets in the data directory
//! and on no TCP port, so nothing collides with them (the system's own servers on 6379 and
//! 5432 included) and nothing but this user (and root) reaches them:
//!
//! - Redis: `DATA/redis/redis.sock` (mode 0700, in a 0700 directory).
//! - PostgreSQL: `DATA/postgres/.s.PGSQL.5432`, in the cluster's own 0700 directory (owned
//!   by the `postgres` user when this process is root).
//!
//! The services then connect through those sockets ([`Plan::apply`]).

use std::path::{Path, PathBuf};

use common::config::{Config, PostgresUrl, RedisUrl};
use common::secret::SecretUrl;

use common::system;
pub use servers::postgres::SOCKET_PORT as POSTGRES_SOCKET_PORT;
use servers::postgres::USER as POSTGRES_USER;

/// The data directory of root, whose home the `postgres` user cannot enter.
const ROOT_DATA_DIR: &str = "/var/lib/voting";
/// The longest path of a Unix socket (`sun_path` holds 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The servers to start, and where their data lives.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub redis: Option<RedisPlan>,
    pub postgres: Option<PostgresPlan>,
    /// Parent of `redis/` and `postgres/`; set when either is to be started.
    pub data_dir: PathBuf,
}

impl Plan {
    /// Whether there is anything to start.
    pub fn is_empty(&self) -> bool {
        self.redis.is_none() && self.postgres.is_none()
    }

    /// `config` with the URLs of the servers this plan starts: their Unix sockets.
    pub fn apply(&self, mut config: Config) -> Config {
        if let Some(redis) = &self.redis {
            config.redis.url = RedisUrl(SecretUrl::new(redis.url()));
        }
        if let Some(pg) = &self.postgres {
            config.postgres.url = PostgresUrl(SecretUrl::new(pg.url()));
        }
        config
    }
}

#[derive(Clone, Debug)]
pub struct RedisPlan {
    /// `DATA/redis`: the append-only file and the socket.
    pub dir: PathBuf,
    pub server: PathBuf,
}

impl RedisPlan {
    pub fn new(data_dir: &Path, server: PathBuf) -> RedisPlan {
        RedisPlan {
            dir: data_dir.join("redis"),
            server,
        }
    }

    /// `DATA/redis/redis.sock`.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// `redis+unix:///…/redis.sock`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", encode_path(&self.socket()))
    }
}

#[derive(Clone, Debug)]
pub struct PostgresPlan {
    /// `DATA/postgres`: the cluster, and the directory of its socket.
    pub cluster: PathBuf,
    /// `initdb` and `postgres` of one installation.
    pub initdb: PathBuf,
    pub postgres: PathBuf,
    /// `(uid, gid)` to run them as: the `postgres` user when this process is root.
    pub run_as: Option<(u32, u32)>,
}

impl PostgresPlan {
    /// `DATA/postgres`.
    pub fn cluster_in(data_dir: &Path) -> PathBuf {
        data_dir.join("postgres")
    }

    /// The socket file, `DATA/postgres/.s.PGSQL.5432`.
    pub fn socket(&self) -> PathBuf {
        self.cluster
            .join(format!(".s.PGSQL.{POSTGRES_SOCKET_PORT}"))
    }

    /// `postgres:///postgres?user=postgres&host=/…/postgres`: the superuser's database
    /// `postgres` through the socket (tokio-postgres takes a `host` that is a path as the
    /// directory of the socket).
    pub fn url(&self) -> String {
        format!(
            "postgres:///postgres?user=postgres&host={}&port={POSTGRES_SOCKET_PORT}",
            encode_path(&self.cluster)
        )
    }
}

/// A path percent-encoded for a URL (everything but unreserved characters and `/`).
fn encode_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decides what to start for `config`; the error is one line for the user.
pub fn plan(config: &Config) -> Result<Plan, String> {
    if !config.voting.supervise {
        return Ok(Plan::default());
    }
    let own_redis = !config.named.redis_url;
    let own_postgres = !config.named.postgres_url;
    if !own_redis && !own_postgres {
        return Ok(Plan::default());
    }
    let data_dir = data_dir(&config.voting.data_dir, system::is_root(), |name| {
        std::env::var_os(name)
    })?;

    let redis_server = own_redis.then(servers::redis::find);
    let cluster = PostgresPlan::cluster_in(&data_dir);
    let postgres_programs = own_postgres.then(|| servers::postgres::find(Some(&cluster)));
    let mut missing = Vec::new();
    if let Some(None) = redis_server {
        missing.push("redis-server");
    }
    if let Some(None) = postgres_programs {
        missing.push("PostgreSQL (initdb and postgres)");
    }
    if !missing.is_empty() {
        return Err(servers::not_found(&missing));
    }

    let mut plan = Plan {
        data_dir,
        ..Plan::default()
    };
    if let Some(Some(server)) = redis_server {
        plan.redis = Some(RedisPlan::new(&plan.data_dir, server));
    }
    if let Some(Some((initdb, postgres))) = postgres_programs {
        let run_as = servers::postgres::run_as()?;
        if let Some((uid, gid)) = run_as
            && let Some(blocked) = system::untraversable_ancestor(&plan.data_dir, uid, gid)
        {
            return Err(format!(
                "the {POSTGRES_USER} user cannot enter {}, which holds the data directory \
                 {}: set voting.data_dir (VOTING_VOTING__DATA_DIR) to a directory it can \
                 reach, such as {ROOT_DATA_DIR}",
                blocked.display(),
                plan.data_dir.display()
            ));
        }
        plan.postgres = Some(PostgresPlan {
            cluster,
            initdb,
            postgres,
            run_as,
        });
    }
    if plan.postgres.is_some() && plan.data_dir.as_os_str().as_encoded_bytes().contains(&b',') {
        // psql (libpq) takes a comma in a host as a separator, with no way to escape it.
        return Err(format!(
            "the data directory {} has a comma in its path, where psql cannot reach a socket: \
             set voting.data_dir (VOTING_VOTING__DATA_DIR) to a path without one",
            plan.data_dir.display()
        ));
    }
    let sockets = [
        plan.redis.as_ref().map(RedisPlan::socket),
        plan.postgres.as_ref().map(PostgresPlan::socket),
    ];
    if let Some(long) = sockets
        .iter()
        .flatten()
        .find(|s| s.as_os_str().len() > MAX_SOCKET_PATH)
    {
        return Err(format!(
            "the data directory {} is too deep for the servers' Unix sockets ({} is longer \
             than {MAX_SOCKET_PATH} bytes): set voting.data_dir (VOTING_VOTING__DATA_DIR) to a \
             shorter path",
            plan.data_dir.display(),
            long.display()
        ));
    }
    Ok(plan)
}

/// The data directory: `configured` when set, else `$XDG_DATA_HOME/voting`, else (as root)
/// `/var/lib/voting`, else `~/.local/share/voting`.
pub fn data_dir(
    configured: &str,
    root: bool,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    let absolute = |p: PathBuf| {
        std::path::absolute(&p).map_err(|e| format!("voting.data_dir {}: {e}", p.display()))
    };
    if !configured.is_empty() {
        return absolute(PathBuf::from(configured));
    }
    let set = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = set("XDG_DATA_HOME") {
        return Ok(xdg.join("voting"));
    }
    if root {
        return Ok(PathBuf::from(ROOT_DATA_DIR));
    }
    match set("HOME") {
        Some(home) => Ok(home.join(".local").join("share").join("voting")),
        None => Err(
            "no data directory (neither XDG_DATA_HOME nor HOME is set): set voting.data_dir \
             (VOTING_VOTING__DATA_DIR)"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_services_reach_the_own_servers_through_their_sockets() {
        let dir = Path::new("/srv/my votes&co");
        let redis = RedisPlan::new(dir, PathBuf::from("/usr/bin/redis-server"));
        let url = redis.url();
        assert_eq!(url, "redis+unix:///srv/my%20votes%26co/redis/redis.sock");
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).unwrap();
        assert_eq!(info.addr().to_string(), "/srv/my votes&co/redis/redis.sock");
        let pg = PostgresPlan {
            cluster: dir.join("postgres"),
            initdb: PathBuf::new(),
            postgres: PathBuf::new(),
            run_as: None,
        };
        let config: tokio_postgres::Config = pg.url().parse().unwrap();
        assert_eq!(
            config.get_hosts(),
            [tokio_postgres::config::Host::Unix(dir.join("postgres"))]
        );
        assert_eq!(config.get_ports(), [POSTGRES_SOCKET_PORT]);
        assert_eq!(config.get_user(), Some("postgres"));
        assert_eq!(config.get_dbname(), Some("postgres"));
        assert_eq!(
            pg.socket(),
            Path::new("/srv/my votes&co/postgres/.s.PGSQL.5432")
        );
        // The URLs pass the configuration's checks and print as they are.
        let mut config = Config::defaults(common::config::Program::Voting);
        config = Plan {
            redis: Some(redis),
            postgres: Some(pg),
            data_dir: dir.to_path_buf(),
        }
        .apply(config);
        assert!(
            config
                .redis
                .url
                .to_string()
                .starts_with("redis+unix:///srv/")
        );
        assert!(config.postgres.url.to_string().contains("host=/srv/"));
    }

    #[test]
    fn a_named_url_is_never_started() {
        let mut config = Config::defaults(common::config::Program::Voting);
        config.named.redis_url = true;
        config.named.postgres_url = true;
        assert!(plan(&config).unwrap().is_empty());
    }

    #[test]
    fn data_dir_rules() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let home = env(&[("HOME", "/home/ann")]);
        assert_eq!(
            data_dir("", false, home).unwrap(),
            Path::new("/home/ann/.local/share/voting")
        );
        let both = env(&[("HOME", "/home/ann"), ("XDG_DATA_HOME", "/data")]);
        assert_eq!(
            data_dir("", false, both).unwrap(),
            Path::new("/data/voting")
        );
        let relative_xdg = env(&[("HOME", "/home/ann"), ("XDG_DATA_HOME", "data")]);
        assert_eq!(
            data_dir("", false, relative_xdg).unwrap(),
            Path::new("/home/ann/.local/share/voting")
        );
        assert_eq!(
            data_dir("", true, env(&[("HOME", "/root")])).unwrap(),
            Path::new(ROOT_DATA_DIR)
        );
        assert_eq!(
            data_dir("/srv/v", true, env(&[])).unwrap(),
            Path::new("/srv/v")
        );
        assert!(data_dir("rel", false, env(&[])).unwrap().is_absolute());
        let e = data_dir("", false, env(&[])).unwrap_err();
        assert!(e.contains("voting.data_dir"), "{e}");
    }

    #[test]
    fn nothing_to_start_without_supervision() {
        let mut config = Config::defaults(common::config::Program::Voting);
        config.voting.supervise = false;
        assert!(plan(&config).unwrap().is_empty());
    }
}
