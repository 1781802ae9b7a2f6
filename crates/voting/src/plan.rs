//! Before anything is logged or bound: which of Redis and PostgreSQL this process must start
//! itself, and everything needed for that (programs, data directory, system user). A missing
//! program ends the binary here, with one line naming what to install.
//!
//! A server is started only when supervision is on (`voting.supervise`), its URL names this
//! machine over TCP (`127.0.0.1` or another loopback address, `localhost`, `::1`), and
//! nothing accepts a connection on that port now.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::Config;

use common::system;

/// What to install when a program is missing.
pub const INSTALL_HINT: &str = "apt-get install redis-server postgresql, or nix develop";
/// The system user PostgreSQL runs as when this process runs as root (PostgreSQL refuses root).
pub const POSTGRES_USER: &str = "postgres";
/// The data directory of root, whose home the `postgres` user cannot enter.
const ROOT_DATA_DIR: &str = "/var/lib/voting";

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
}

#[derive(Clone, Debug)]
pub struct RedisPlan {
    pub addr: SocketAddr,
    pub server: PathBuf,
}

#[derive(Clone, Debug)]
pub struct PostgresPlan {
    pub addr: SocketAddr,
    /// `initdb` and `postgres` of one installation.
    pub initdb: PathBuf,
    pub postgres: PathBuf,
    /// `(uid, gid)` to run them as: the `postgres` user when this process is root.
    pub run_as: Option<(u32, u32)>,
}

/// Decides what to start for `config`; the error is one line for the user.
pub fn plan(config: &Config) -> Result<Plan, String> {
    if !config.voting.supervise {
        return Ok(Plan::default());
    }
    let redis_at =
        local_addr(config.redis.url.0.expose(), &["redis"], 6379).filter(|addr| !answers(*addr));
    let postgres_at = local_addr(
        config.postgres.url.0.expose(),
        &["postgres", "postgresql"],
        5432,
    )
    .filter(|addr| !answers(*addr));
    if redis_at.is_none() && postgres_at.is_none() {
        return Ok(Plan::default());
    }
    let root = system::is_root();
    let data_dir = data_dir(&config.voting.data_dir, root, |name| std::env::var_os(name))?;

    let redis_server = redis_at.map(|_| system::find_on_path("redis-server"));
    let postgres_programs = postgres_at.map(|_| find_postgres(&data_dir.join("postgres")));
    let mut missing = Vec::new();
    if let Some(None) = redis_server {
        missing.push("redis-server");
    }
    if let Some(None) = postgres_programs {
        missing.push("PostgreSQL (initdb and postgres)");
    }
    if !missing.is_empty() {
        let them = if missing.len() == 1 { "it" } else { "them" };
        return Err(format!(
            "{} not found: install {them} ({INSTALL_HINT})",
            missing.join(" and ")
        ));
    }

    let mut plan = Plan {
        data_dir,
        ..Plan::default()
    };
    if let (Some(addr), Some(Some(server))) = (redis_at, redis_server) {
        plan.redis = Some(RedisPlan { addr, server });
    }
    if let (Some(addr), Some(Some((initdb, postgres)))) = (postgres_at, postgres_programs) {
        let run_as = if root {
            let ids = system::lookup_user(POSTGRES_USER).ok_or_else(|| {
                format!(
                    "running as root, but PostgreSQL refuses to run as root and there is no \
                     `{POSTGRES_USER}` system user to run it as: create it (useradd --system \
                     {POSTGRES_USER}) or install PostgreSQL ({INSTALL_HINT})"
                )
            })?;
            if let Some(blocked) = system::untraversable_ancestor(&plan.data_dir, ids.0, ids.1) {
                return Err(format!(
                    "the {POSTGRES_USER} user cannot enter {}, which holds the data directory \
                     {}: set voting.data_dir (VOTING_VOTING__DATA_DIR) to a directory it can \
                     reach, such as {ROOT_DATA_DIR}",
                    blocked.display(),
                    plan.data_dir.display()
                ));
            }
            Some(ids)
        } else {
            None
        };
        plan.postgres = Some(PostgresPlan {
            addr,
            initdb,
            postgres,
            run_as,
        });
    }
    Ok(plan)
}

/// The loopback address and port a TCP URL with one of `schemes` names, if it names this
/// machine (`localhost` is taken as 127.0.0.1).
pub fn local_addr(url: &str, schemes: &[&str], default_port: u16) -> Option<SocketAddr> {
    let url = url::Url::parse(url).ok()?;
    if !schemes.contains(&url.scheme()) {
        return None;
    }
    // In a URL of a scheme the url crate does not know (`redis`, `postgres`), an IPv4 address
    // is an opaque domain name.
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(name) if name.eq_ignore_ascii_case("localhost") => {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        url::Host::Domain(name) => name.parse().ok()?,
    };
    if !ip.is_loopback() {
        return None;
    }
    Some(SocketAddr::new(ip, url.port().unwrap_or(default_port)))
}

/// Whether anything accepts a TCP connection at `addr`.
pub fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
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

/// `initdb` and `postgres` from one installation: the first directory of `PATH` that has
/// both, then Debian's `/usr/lib/postgresql/<version>/bin`, highest version first. An existing
/// cluster in `cluster` prefers the Debian installation of its own major version.
pub fn find_postgres(cluster: &Path) -> Option<(PathBuf, PathBuf)> {
    let pair = |dir: &Path| {
        let (initdb, postgres) = (dir.join("initdb"), dir.join("postgres"));
        (system::is_executable(&initdb) && system::is_executable(&postgres))
            .then_some((initdb, postgres))
    };
    if let Ok(version) = std::fs::read_to_string(cluster.join("PG_VERSION"))
        && let Some(found) = pair(
            &Path::new(system::DEBIAN_POSTGRES)
                .join(version.trim())
                .join("bin"),
        )
    {
        return Some(found);
    }
    if let Some(initdb) = system::find_on_path("initdb") {
        let dir = initdb.parent().unwrap_or(Path::new("/"));
        if let Some(found) = pair(dir) {
            return Some(found);
        }
        if let Some(postgres) = system::find_on_path("postgres") {
            return Some((initdb, postgres));
        }
    }
    system::postgres_bin_dirs().iter().find_map(|dir| pair(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn local_urls() {
        let redis = |u: &str| local_addr(u, &["redis"], 6379).map(|a| a.to_string());
        assert_eq!(
            redis("redis://127.0.0.1:6380").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            redis("redis://localhost").as_deref(),
            Some("127.0.0.1:6379")
        );
        assert_eq!(redis("redis://[::1]:7000/2").as_deref(), Some("[::1]:7000"));
        assert_eq!(redis("redis://cache:6379"), None);
        assert_eq!(redis("redis://10.0.0.1:6379"), None);
        assert_eq!(redis("rediss://127.0.0.1:6379"), None);
        assert_eq!(redis("unix:///run/redis.sock"), None);
        let pg = |u: &str| local_addr(u, &["postgres", "postgresql"], 5432).map(|a| a.port());
        assert_eq!(pg("postgres://postgres@127.0.0.1/postgres"), Some(5432));
        assert_eq!(pg("postgresql://app:pw@localhost:5433/votes"), Some(5433));
        assert_eq!(pg("postgres://app@db:5432/votes"), None);
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
        let mut config = Config::defaults(common::config::Service::Voting);
        config.voting.supervise = false;
        assert!(plan(&config).unwrap().is_empty());
    }
}
