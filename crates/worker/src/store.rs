//! Applying a batch of ballots to PostgreSQL: one statement, in one round trip.
//!
//! The upsert only replaces a row whose version (the stream ID of the ballot that wrote it)
//! is older, so replaying a batch after a crash changes nothing. The tallies follow through the
//! schema's triggers in the same statement, and the notification on `tallies` is delivered at
//! its commit. A single statement is its own transaction, so the batch is applied whole or not
//! at all, as with an explicit `BEGIN … COMMIT`, at a fifth of the round trips.

use common::pools::PgPool;
use common::schema::NOTIFY_CHANNEL;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::ballot::Ballot;

/// The upsert, and `pg_notify` once per batch. A data-modifying `WITH` runs to completion
/// whether or not it is read, and its statement-level triggers fire before the statement ends.
const APPLY: &str = "\
WITH written AS (
    INSERT INTO votes (id, vote, version_ms, version_seq, updated_at)
    SELECT id, vote, ms, seq, now()
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS b(id, vote, ms, seq)
    ON CONFLICT (id) DO UPDATE
    SET vote = EXCLUDED.vote, version_ms = EXCLUDED.version_ms,
        version_seq = EXCLUDED.version_seq, updated_at = EXCLUDED.updated_at
    WHERE (votes.version_ms, votes.version_seq) < (EXCLUDED.version_ms, EXCLUDED.version_seq)
    RETURNING 1
)
SELECT count(*) AS rows, pg_notify($5, '') FROM written";

/// The parameters' types, given up front: the statement then needs no separate prepare
/// round trip.
const TYPES: [Type; 5] = [
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT,
];

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

    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let conn = pool.get().await?;
            let rows = conn
                .query_typed(
                    APPLY,
                    &[
                        (&ids, TYPES[0].clone()),
                        (&votes, TYPES[1].clone()),
                        (&ms, TYPES[2].clone()),
                        (&seq, TYPES[3].clone()),
                        (&NOTIFY_CHANNEL, TYPES[4].clone()),
                    ],
                )
                .await?;
            let written: i64 = rows
                .first()
                .ok_or_else(|| anyhow::anyhow!("the upsert returned no row"))?
                .try_get("rows")?;
            Ok::<u64, anyhow::Error>(written as u64)
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
