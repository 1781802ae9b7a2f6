//! Connection pools. Building a pool never connects, so a service starts (and answers 503 or
//! retries) while Redis or PostgreSQL is still down.
//!
//! bb8 retries a failed connect until the checkout's time-out and then says only "Timed out in
//! bb8"; each pool here keeps the last connect error ([`LastError`]), so that a checkout that
//! times out says why: "no connection to Redis within 2 s: Connection refused (os error 111)".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bb8_postgres::PostgresConnectionManager;
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use tokio_postgres::NoTls;

use crate::config::{PostgresConfig, RedisConfig};

pub type RedisPool = bb8::Pool<RedisManager>;

/// The last error of a pool's connection attempts (bb8's error sink), in words.
#[derive(Clone, Debug, Default)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    /// The last connect error, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<E: std::error::Error + 'static> bb8::ErrorSink<E> for LastError {
    fn sink(&self, error: E) {
        let text = crate::error::describe_error(&error);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(self.clone())
    }
}

/// A pool of PostgreSQL connections that says why it has none ([`PgPool::get`]).
#[derive(Clone)]
pub struct PgPool {
    pub pool: bb8::Pool<PostgresConnectionManager<NoTls>>,
    last_error: LastError,
}

impl PgPool {
    /// A pooled connection, or why there is none (see [`checkout_error`]).
    pub async fn get(
        &self,
    ) -> anyhow::Result<bb8::PooledConnection<'_, PostgresConnectionManager<NoTls>>> {
        self.pool
            .get()
            .await
            .map_err(|e| checkout_error("PostgreSQL", e, &self.last_error))
    }
}

/// How long a request waits for a pooled connection before it is answered with an error.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness ping (`/readyz`) may take. A checkout alone may wait
/// [`CHECKOUT_TIMEOUT`] while a server is down; the ping answers sooner, so that a container
/// health check or a Kubernetes probe (2 s) gets a clear 503 rather than no answer.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// bb8-redis' manager, plus a flag that marks a connection dead.
///
/// A multiplexed connection serves many requests at once, so callers do not hold it for the
/// length of a request: [`Redis::conn`] clones it out of the pool (a clone shares the same
/// socket and pipeline) and gives the slot back at once. Holding the pooled connection instead
/// would allow only `pool_size` requests in flight. bb8-redis cannot tell a dead multiplexed
/// connection from a live one without a PING per checkout; here a caller that sees a
/// connection error marks it ([`RedisConn::failed`]) and the pool replaces it on the next
/// checkout, with no extra round trip.
#[derive(Debug)]
pub struct RedisManager(RedisConnectionManager);

/// A shared multiplexed connection and its "dead" flag.
#[derive(Clone)]
pub struct RedisConn {
    pub conn: MultiplexedConnection,
    dead: Arc<AtomicBool>,
}

impl RedisConn {
    /// Records `error`; returns `true` when it means the connection is gone (it is then
    /// replaced on the next checkout, and the caller may retry once on a new one).
    pub fn failed(&self, error: &redis::RedisError) -> bool {
        let gone = is_connection_error(error);
        if gone {
            self.dead.store(true, Ordering::Relaxed);
        }
        gone
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = RedisConn;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<RedisConn, redis::RedisError> {
        let conn = self.0.connect().await?;
        Ok(RedisConn {
            conn,
            dead: Arc::default(),
        })
    }

    async fn is_valid(&self, conn: &mut RedisConn) -> Result<(), redis::RedisError> {
        if conn.dead.load(Ordering::Relaxed) {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "connection marked dead",
            )))
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut RedisConn) -> bool {
        conn.dead.load(Ordering::Relaxed)
    }
}

/// Redis through a small pool of shared multiplexed connections.
#[derive(Clone)]
pub struct Redis {
    pub pool: RedisPool,
    client: redis::Client,
    last_error: LastError,
}

impl Redis {
    pub fn new(config: &RedisConfig) -> anyhow::Result<Redis> {
        let url = config.url.0.expose();
        let bad = || format!("bad Redis URL {}", config.url);
        let manager = RedisConnectionManager::new(url).with_context(bad)?;
        let client = redis::Client::open(url).with_context(bad)?;
        let last_error = LastError::default();
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size.get())
            .connection_timeout(CHECKOUT_TIMEOUT)
            .error_sink(Box::new(last_error.clone()))
            // Checks only the dead flag: no round trip.
            .test_on_check_out(true)
            .build_unchecked(RedisManager(manager));
        Ok(Redis {
            pool,
            client,
            last_error,
        })
    }

    /// A client for connections of one's own (e.g. blocking reads).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A shared connection: the pool slot is given back at once, the clone stays usable.
    pub async fn conn(&self) -> anyhow::Result<RedisConn> {
        let pooled = self
            .pool
            .get()
            .await
            .map_err(|e| checkout_error("Redis", e, &self.last_error))?;
        Ok(pooled.clone())
    }

    /// PING, for `/readyz`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        within_ping_timeout("Redis", &self.last_error, async {
            let mut c = self.conn().await?;
            let result: redis::RedisResult<String> =
                redis::cmd("PING").query_async(&mut c.conn).await;
            if let Err(e) = &result {
                c.failed(e);
            }
            result.map(|_| ()).context("Redis PING")
        })
        .await
    }
}

/// Whether a Redis error means the connection is unusable (as opposed to a refused command).
pub fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// A pool of PostgreSQL connections. With `idle_in_transaction`, each session is started
/// with that `idle_in_transaction_session_timeout`: a process that stops in the middle of a
/// transaction (paused, frozen, cut off) has its session ended by the server after that long,
/// so the row locks it holds (the tally rows every batch updates) do not stall the others.
pub fn pg_pool(
    config: &PostgresConfig,
    idle_in_transaction: Option<Duration>,
) -> anyhow::Result<PgPool> {
    let mut pg: tokio_postgres::Config = config
        .url
        .0
        .expose()
        .parse()
        .with_context(|| format!("bad PostgreSQL URL {}", config.url))?;
    if let Some(limit) = idle_in_transaction {
        let setting = format!(
            "-c idle_in_transaction_session_timeout={}",
            limit.as_millis().max(1)
        );
        let options = match pg.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {setting}"),
            _ => setting,
        };
        pg.options(&options);
    }
    let manager = PostgresConnectionManager::new(pg, NoTls);
    let last_error = LastError::default();
    let pool = bb8::Pool::builder()
        .max_size(config.pool_size.get())
        .connection_timeout(CHECKOUT_TIMEOUT)
        .error_sink(Box::new(last_error.clone()))
        .test_on_check_out(false)
        .build_unchecked(manager);
    Ok(PgPool { pool, last_error })
}

/// Opens one PostgreSQL connection outside any pool (for LISTEN or long transactions); the
/// connection's driver task is spawned and ends when the client is dropped.
pub async fn pg_connect(config: &PostgresConfig) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(config.url.0.expose(), NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", config.url))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// `SELECT 1` through the pool, for `/readyz`.
pub async fn pg_ping(pool: &PgPool) -> anyhow::Result<()> {
    within_ping_timeout("PostgreSQL", &pool.last_error, async {
        let conn = pool.get().await?;
        conn.simple_query("SELECT 1")
            .await
            .context("PostgreSQL SELECT 1")?;
        Ok(())
    })
    .await
}

/// A pool that gave no connection, in words: it could not connect (the server's answer), or
/// no connection came within `CHECKOUT_TIMEOUT` (bb8's "Timed out in bb8"), with the last
/// connect error when there was one.
pub fn checkout_error<E>(server: &str, error: bb8::RunError<E>, last: &LastError) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    match error {
        bb8::RunError::User(e) => {
            anyhow::Error::new(e).context(format!("cannot connect to {server}"))
        }
        bb8::RunError::TimedOut => {
            let within = format!(
                "no connection to {server} within {} s",
                CHECKOUT_TIMEOUT.as_secs()
            );
            match last.get() {
                Some(why) => anyhow::anyhow!("{within}: {why}"),
                None => anyhow::anyhow!("{within}"),
            }
        }
    }
}

/// Runs a readiness ping, or fails once [`PING_TIMEOUT`] has passed.
/// The time-out names the pool's last connect error, when there was one.
async fn within_ping_timeout(
    server: &str,
    last: &LastError,
    ping: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    match tokio::time::timeout(PING_TIMEOUT, ping).await {
        Ok(result) => result,
        Err(_) => match last.get() {
            Some(why) => anyhow::bail!("no answer within {PING_TIMEOUT:?}: {why}"),
            None => anyhow::bail!("{server} gave no answer within {PING_TIMEOUT:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Program};

    /// Nothing listens on port 1: a checkout times out, and says why, once.
    #[tokio::test]
    async fn a_pool_without_a_server_says_why_it_has_no_connection() {
        let mut config = Config::defaults(Program::Vote);
        config.redis.url =
            crate::config::RedisUrl(crate::secret::SecretUrl::new("redis://127.0.0.1:1"));
        config.postgres.url = crate::config::PostgresUrl(crate::secret::SecretUrl::new(
            "postgres://postgres@127.0.0.1:1/postgres",
        ));
        let redis = Redis::new(&config.redis).unwrap();
        let e = crate::error::describe(&redis.conn().await.err().unwrap());
        assert!(e.starts_with("no connection to Redis within 2 s: "), "{e}");
        assert_eq!(e.matches("refused").count(), 1, "{e}");
        let e = crate::error::describe(&redis.ping().await.unwrap_err());
        assert!(e.contains("refused"), "{e}");

        let pg = pg_pool(&config.postgres, None).unwrap();
        let e = crate::error::describe(&pg.get().await.err().unwrap());
        assert!(
            e.starts_with("no connection to PostgreSQL within 2 s: "),
            "{e}"
        );
        assert_eq!(e.matches("refused").count(), 1, "{e}");
        assert!(!e.contains("bb8"), "{e}");
    }
}
