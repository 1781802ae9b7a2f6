//! What a test's services run against: its own Redis, a fresh database on the PostgreSQL
//! server this test process shares, and the configuration that points a service at them.
//!
//! The shared server starts with the first test that needs it and is stopped by a watchdog
//! when the test process exits (statics are never dropped): `sh` waits on a pipe only this
//! process holds, and the pipe's end at exit is its cue to stop the server and remove its
//! files. Tests that stop or reconfigure PostgreSQL on purpose take a server of their own
//! ([`Infra::own_postgres`]). Redis stays per test: tests read whole streams.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use common::config::{Config, Program};
use figment::Figment;
use figment::providers::Serialized;

use crate::{Postgres, Redis, pg_client};

/// Stops the server whose data directory is `$1` once stdin ends, then removes its temp dir.
const WATCHDOG: &str = "trap '' INT TERM HUP; read -r _; pid=$(head -n 1 \"$1/postmaster.pid\"); \
     kill -QUIT \"$pid\"; i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; \
     do sleep 0.1; i=$((i + 1)); done; rm -rf \"$(dirname \"$1\")\"";

/// The process's PostgreSQL server and its watchdog, whose stdin pipe stays open while held.
struct Shared {
    server: Postgres,
    _watchdog: Child,
}

/// The server shared by this test process, started on first use.
fn shared() -> &'static Postgres {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    &SHARED
        .get_or_init(|| {
            let server = Postgres::start().expect("PostgreSQL starts");
            let watchdog = Command::new("sh")
                .args(["-c", WATCHDOG, "watchdog"])
                .arg(server.data_dir())
                .stdin(Stdio::piped())
                .spawn()
                .expect("sh starts the PostgreSQL watchdog");
            Shared {
                server,
                _watchdog: watchdog,
            }
        })
        .server
}

/// A test's Redis and PostgreSQL database, each when asked for.
#[derive(Default)]
pub struct Infra {
    redis: Option<Redis>,
    own: Option<Postgres>,
    db_url: Option<String>,
}

impl Infra {
    /// Redis only.
    #[must_use]
    pub fn redis_only() -> Infra {
        Infra::default().with_redis()
    }

    /// A fresh database (no schema yet) on the shared server.
    pub async fn database() -> Infra {
        crate::init_logging();
        let db_url = shared().create_database().await;
        Infra {
            db_url: Some(db_url.expect("a fresh database")),
            ..Infra::default()
        }
    }

    /// A fresh database on a server of the test's own, which it may stop or reconfigure
    /// ([`Infra::server`]).
    pub async fn own_postgres() -> Infra {
        crate::init_logging();
        let server = Postgres::start().expect("PostgreSQL starts");
        let db_url = server.create_database().await.expect("a fresh database");
        Infra {
            own: Some(server),
            db_url: Some(db_url),
            ..Infra::default()
        }
    }

    /// Adds a Redis of the test's own.
    #[must_use]
    pub fn with_redis(mut self) -> Infra {
        crate::init_logging();
        self.redis = Some(Redis::start().expect("redis-server starts"));
        self
    }

    /// Applies the schema, as a service would on start.
    pub async fn with_schema(self) -> Infra {
        common::schema::migrate(&mut self.pg().await)
            .await
            .expect("the schema applies");
        self
    }

    /// The test's Redis.
    #[must_use]
    pub fn redis(&self) -> &Redis {
        self.redis.as_ref().expect("this test started Redis")
    }

    /// The test's Redis, to kill, pause or restart it.
    pub fn redis_mut(&mut self) -> &mut Redis {
        self.redis.as_mut().expect("this test started Redis")
    }

    /// The PostgreSQL server of the test's own, to stop or reconfigure it.
    pub fn server(&mut self) -> &mut Postgres {
        self.own
            .as_mut()
            .expect("this test has a PostgreSQL of its own")
    }

    /// The URL of the test's database.
    #[must_use]
    pub fn db_url(&self) -> &str {
        self.db_url.as_deref().expect("this test has a database")
    }

    /// A new client of the test's database.
    pub async fn pg(&self) -> tokio_postgres::Client {
        pg_client(self.db_url())
            .await
            .expect("connects to PostgreSQL")
    }

    /// A new connection to the test's Redis.
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis().url())
            .expect("a valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connects to Redis")
    }

    /// Appends a ballot to the stream, as the vote service does; returns its entry id.
    pub async fn xadd(&self, voter: &str, vote: &str) -> String {
        redis::cmd("XADD")
            .arg("ballots")
            .arg("*")
            .arg("voter_id")
            .arg(voter)
            .arg("vote")
            .arg(vote)
            .query_async(&mut self.redis_conn().await)
            .await
            .expect("XADD")
    }

    /// `SELECT vote, count(*) FROM votes GROUP BY vote`.
    pub async fn counted(&self) -> BTreeMap<String, u64> {
        self.pg()
            .await
            .query("SELECT vote, count(*) FROM votes GROUP BY vote", &[])
            .await
            .expect("votes can be counted")
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).unsigned_abs()))
            .collect()
    }

    /// The configuration of `service` from the built-in defaults (nothing read from the
    /// environment), on `127.0.0.1:0`, pointed at this Redis and database, the worker blocking
    /// 50 ms per read; `tweak` may merge more keys.
    pub fn config(&self, service: Program, tweak: impl FnOnce(Figment) -> Figment) -> Config {
        let mut figment = Figment::from(Serialized::defaults(Config::defaults(service)))
            .merge(("listen", "127.0.0.1:0"))
            .merge(("worker.block_ms", 50));
        if let Some(redis) = &self.redis {
            figment = figment.merge(("redis.url", redis.url()));
        }
        if let Some(db_url) = &self.db_url {
            figment = figment.merge(("postgres.url", db_url.as_str()));
        }
        Config::from_figment(&tweak(figment)).expect("the test configuration is valid")
    }
}

/// A voter id, distinct per `n`.
#[must_use]
pub fn voter(n: u64) -> String {
    format!("{n:032x}")
}
