//! The database schema, embedded and applied idempotently by whichever service starts first.
//!
//! `votes(id, vote, version_ms, version_seq, updated_at)` holds one row per voter;
//! `tallies(vote, count)` is kept equal to `SELECT vote, count(*) FROM votes GROUP BY vote` by
//! triggers (see `schema.sql`), so every writer, even a hand-typed `DELETE`, keeps it right.

use anyhow::Context;

/// The SQL applied at start.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// The channel notified after each committed batch (payload empty, so notifications coalesce).
pub const NOTIFY_CHANNEL: &str = "tallies";

/// Key of the advisory lock taken while the schema is applied ("voting" in ASCII).
const SCHEMA_LOCK: i64 = 0x766f_7469_6e67;

/// Creates or updates the schema inside one transaction, under an advisory lock, so services
/// starting at once neither race nor fail.
pub async fn migrate(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let tx = client
        .transaction()
        .await
        .context("starting the schema transaction")?;
    // `CREATE … IF NOT EXISTS` of what exists is a NOTICE, which the driver would log at
    // every start: keep the server's messages to warnings and errors here.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .context("quieting the schema's notices")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .context("taking the schema lock")?;
    tx.batch_execute(SCHEMA_SQL)
        .await
        .context("applying the schema")?;
    tx.commit().await.context("committing the schema")?;
    Ok(())
}
