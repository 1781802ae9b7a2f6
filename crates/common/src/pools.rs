//! Connection pools. Building a pool never connects, so a service starts (and answers 503 or
//! retries) while Redis or PostgreSQL is still down.

use std::time::Duration;

use anyhow::Context;
use bb8_postgres::PostgresConnectionManager;
use bb8_redis::RedisConnectionManager;
use tokio_postgres::NoTls;

use crate::config::{PostgresConfig, RedisConfig};

pub type RedisPool = bb8::Pool<RedisConnectionManager>;
pub type PgPool = bb8::Pool<PostgresConnectionManager<NoTls>>;

/// How long a request waits for a pooled connection before it is answered with an error.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// Redis through a pool of multiplexed connections (each pipelines concurrent requests).
///
/// Connections are not PINGed on every checkout (that would double the round trips of a vote);
/// instead a connection that failed is replaced in its pool slot by [`Redis::heal`].
#[derive(Clone)]
pub struct Redis {
    pub pool: RedisPool,
    client: redis::Client,
}

pub type RedisConn<'a> = bb8::PooledConnection<'a, RedisConnectionManager>;

impl Redis {
    pub fn new(config: &RedisConfig) -> anyhow::Result<Redis> {
        let url = config.url.0.expose();
        let bad = || format!("bad Redis URL {}", config.url);
        let manager = RedisConnectionManager::new(url).with_context(bad)?;
        let client = redis::Client::open(url).with_context(bad)?;
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(CHECKOUT_TIMEOUT)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(Redis { pool, client })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub async fn get(&self) -> anyhow::Result<RedisConn<'_>> {
        self.pool.get().await.context("no Redis connection")
    }

    /// After `error` on `conn`: when the connection itself is gone, put a fresh one in its
    /// place and return `true` (the caller may retry once); otherwise `false`.
    pub async fn heal(&self, conn: &mut RedisConn<'_>, error: &redis::RedisError) -> bool {
        if !is_connection_error(error) {
            return false;
        }
        match self.client.get_multiplexed_async_connection().await {
            Ok(fresh) => {
                **conn = fresh;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "Redis reconnect failed");
                false
            }
        }
    }

    /// PING, for `/readyz`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.get().await?;
        let result: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut *conn).await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                self.heal(&mut conn, &e).await;
                Err(e).context("Redis PING")
            }
        }
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

pub fn pg_pool(config: &PostgresConfig) -> anyhow::Result<PgPool> {
    let pg: tokio_postgres::Config = config
        .url
        .0
        .expose()
        .parse()
        .with_context(|| format!("bad PostgreSQL URL {}", config.url))?;
    let manager = PostgresConnectionManager::new(pg, NoTls);
    Ok(bb8::Pool::builder()
        .max_size(config.pool_size)
        .connection_timeout(CHECKOUT_TIMEOUT)
        .test_on_check_out(false)
        .build_unchecked(manager))
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

/// PING through the pool, for `/readyz`.
pub async fn redis_ping(pool: &RedisPool) -> anyhow::Result<()> {
    let mut conn = pool.get().await.context("no Redis connection")?;
    let _: String = redis::cmd("PING")
        .query_async(&mut *conn)
        .await
        .context("Redis PING")?;
    Ok(())
}

/// `SELECT 1` through the pool, for `/readyz`.
pub async fn pg_ping(pool: &PgPool) -> anyhow::Result<()> {
    let conn = pool.get().await.context("no PostgreSQL connection")?;
    conn.simple_query("SELECT 1")
        .await
        .context("PostgreSQL SELECT 1")?;
    Ok(())
}
