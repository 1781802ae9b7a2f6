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

pub fn redis_pool(config: &RedisConfig) -> anyhow::Result<RedisPool> {
    let manager = RedisConnectionManager::new(config.url.0.expose())
        .with_context(|| format!("bad Redis URL {}", config.url))?;
    Ok(bb8::Pool::builder()
        .max_size(config.pool_size)
        .connection_timeout(CHECKOUT_TIMEOUT)
        .build_unchecked(manager))
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
