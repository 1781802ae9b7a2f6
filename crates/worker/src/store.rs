//! Applying a batch of ballots to PostgreSQL: one transaction, one upsert statement.
//!
//! The upsert only replaces a row whose version (the stream ID of the ballot that wrote it)
//! is older, so replaying a batch after a crash changes nothing. The tallies follow through the
//! schema's triggers in the same transaction, and `NOTIFY tallies` is delivered at commit.

use common::pools::PgPool;
use common::schema::NOTIFY_CHANNEL;
use tokio_postgres::error::SqlState;

use crate::ballot::Ballot;

const UPSERT: &str = "\
INSERT INTO votes (id, vote, version_ms, version_seq, updated_at)
SELECT id, vote, ms, seq, now()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS b(id, vote, ms, seq)
ON CONFLICT (id) DO UPDATE
SET vote = EXCLUDED.vote, version_ms = EXCLUDED.version_ms,
    version_seq = EXCLUDED.version_seq, updated_at = EXCLUDED.updated_at
WHERE (votes.version_ms, votes.version_seq) < (EXCLUDED.version_ms, EXCLUDED.version_seq)";

/// How often a transaction that lost a deadlock or serialization race is tried again.
const RACE_RETRIES: u32 = 5;

/// Applies `ballots` (already one per voter, sorted by voter) and returns the rows written
/// (inserted or changed; an older or replayed ballot writes none).
pub async fn apply(pool: &PgPool, ballots: &[Ballot]) -> anyhow::Result<u64> {
    if ballots.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = ballots.iter().map(|b| b.voter.as_str()).collect();
    let votes: Vec<&str> = ballots.iter().map(|b| b.vote.as_str()).collect();
    // Stream IDs are u64 pairs; millisecond clocks and per-ms counters fit in i64.
    let ms: Vec<i64> = ballots.iter().map(|b| b.version.ms as i64).collect();
    let seq: Vec<i64> = ballots.iter().map(|b| b.version.seq as i64).collect();
    let notify = format!("NOTIFY {NOTIFY_CHANNEL}");

    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let mut conn = pool
                .get()
                .await
                .map_err(|e| anyhow::anyhow!("no PostgreSQL connection: {e}"))?;
            let tx = conn.transaction().await?;
            let rows = tx.execute(UPSERT, &[&ids, &votes, &ms, &seq]).await?;
            tx.batch_execute(&notify).await?;
            tx.commit().await?;
            Ok::<u64, anyhow::Error>(rows)
        }
        .await;
        match result {
            Ok(rows) => return Ok(rows),
            Err(e) if attempt <= RACE_RETRIES && lost_a_race(&e) => {
                tracing::debug!(attempt, error = %e, "batch lost a race, retrying");
            }
            Err(e) => return Err(e.context("applying a batch to PostgreSQL")),
        }
    }
}

/// A deadlock or serialization failure: the transaction was rolled back and may be retried.
fn lost_a_race(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}
