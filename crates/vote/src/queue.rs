//! Appending ballots to the Redis stream.
//!
//! The queue is bounded: when the stream holds `max_backlog` entries or more, nothing is
//! appended and the vote is refused. Near that bound, or when the stream's length was not
//! seen lately, one Lua script checks the length and appends, atomically and in one round
//! trip, and tells the length it saw. Far from it (more than [`SLACK`] entries below, seen
//! within [`FRESH`]), a vote is a plain `XADD`: Redis runs a script at several times the cost
//! of the `XADD` inside it, and no burst can add `SLACK` entries within `FRESH`. The stream is
//! never trimmed (trimming could drop votes not yet applied).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::config::Config;
use common::pools::Redis;
use domain::options::OptionKey;
use domain::queue::{EntryId, FIELD_VOTE, FIELD_VOTER};
use domain::voter::VoterId;

const APPEND: &str = r"
local len = redis.call('XLEN', KEYS[1])
if len >= tonumber(ARGV[1]) then
    return false
end
return {redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3], ARGV[4], ARGV[5]), len + 1}
";

/// How far below `max_backlog` the last length seen must be for a plain `XADD`.
pub const SLACK: u64 = 50_000;
/// How recent that length must be: 50,000 votes in 100 ms would be 500,000 votes/s.
pub const FRESH: Duration = Duration::from_millis(100);

/// Why a ballot was not confirmed (answered 503). The first two are known not to be queued;
/// the last may be.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis answered that the stream holds `max_backlog` entries or more.
    #[error("too many votes are waiting to be counted")]
    Full,
    /// Nothing was sent: no connection, or Redis answered with an error.
    #[error("the vote store is unreachable")]
    Unavailable(#[source] anyhow::Error),
    /// The command was (or may have been) sent, and no answer came: a timeout, or a connection
    /// that broke meanwhile. Redis may still apply it (a stalled Redis runs what it had
    /// received when it resumes), so the vote may be counted.
    #[error("no confirmation came from the vote store")]
    Unconfirmed(#[source] anyhow::Error),
}

impl QueueError {
    /// Whether the vote is known not to be queued.
    pub fn not_recorded(&self) -> bool {
        !matches!(self, QueueError::Unconfirmed(_))
    }
}

/// Whether a failed command may have reached Redis. Only a refused connection or an error
/// that Redis itself answered says for sure that nothing was applied.
fn maybe_sent(e: &redis::RedisError) -> bool {
    !(e.is_connection_refusal() || e.code().is_some())
}

pub struct Queue {
    redis: Redis,
    stream: String,
    max_backlog: u64,
    script: redis::Script,
    /// The stream's length as the script last saw it, and when.
    seen: Mutex<Option<(u64, Instant)>>,
}

impl Queue {
    pub fn new(config: &Config) -> anyhow::Result<Queue> {
        Ok(Queue {
            redis: Redis::new(&config.redis)?,
            stream: config.queue.stream.clone(),
            max_backlog: config.queue.max_backlog.get(),
            script: redis::Script::new(APPEND),
            seen: Mutex::new(None),
        })
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Appends one ballot; the stream entry ID is the ballot's id and version.
    ///
    /// A connection that fails gets one retry on a fresh one (Redis restarted, say). The
    /// first attempt may have been applied all the same; the two entries name the same voter
    /// and choice, and the worker keeps one row per voter, so the vote still counts once.
    pub async fn append(&self, voter: &VoterId, vote: &OptionKey) -> Result<EntryId, QueueError> {
        let checked = !self.far_from_full();
        let mut c = self.redis.conn().await.map_err(QueueError::Unavailable)?;
        let mut result = self.send(&mut c.conn, checked, voter, vote).await;
        let mut sent = matches!(&result, Err(e) if maybe_sent(e));
        if let Err(e) = &result
            && c.failed(e)
        {
            result = match self.redis.conn().await {
                Ok(fresh) => {
                    c = fresh;
                    let retry = self.send(&mut c.conn, checked, voter, vote).await;
                    if let Err(e) = &retry {
                        c.failed(e);
                        sent |= maybe_sent(e);
                    }
                    retry
                }
                Err(e) if sent => return Err(QueueError::Unconfirmed(e)),
                Err(e) => return Err(QueueError::Unavailable(e)),
            };
        }
        match result {
            Ok(Some(id)) => EntryId::parse(&id).ok_or_else(|| {
                QueueError::Unconfirmed(anyhow::anyhow!("Redis returned entry id {id:?}"))
            }),
            Ok(None) => Err(QueueError::Full),
            Err(e) if sent => Err(QueueError::Unconfirmed(e.into())),
            Err(e) => Err(QueueError::Unavailable(e.into())),
        }
    }

    /// Whether the stream was seen lately far enough below the bound for a plain `XADD`.
    fn far_from_full(&self) -> bool {
        let Some(room) = self.max_backlog.checked_sub(SLACK) else {
            return false;
        };
        let seen = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.is_some_and(|(len, at)| len < room && at.elapsed() < FRESH)
    }

    /// Appends with the checking script (`checked`) or a plain `XADD`; `None`: the queue is
    /// full.
    async fn send(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        checked: bool,
        voter: &VoterId,
        vote: &OptionKey,
    ) -> redis::RedisResult<Option<String>> {
        if !checked {
            return redis::cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg(FIELD_VOTER)
                .arg(voter.as_str())
                .arg(FIELD_VOTE)
                .arg(vote.as_str())
                .query_async(conn)
                .await
                .map(Some);
        }
        let mut invocation = self.script.key(&self.stream);
        invocation
            .arg(self.max_backlog)
            .arg(FIELD_VOTER)
            .arg(voter.as_str())
            .arg(FIELD_VOTE)
            .arg(vote.as_str());
        let reply: Option<(String, u64)> = invocation.invoke_async(conn).await?;
        let len = reply.as_ref().map_or(self.max_backlog, |(_, len)| *len);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some((len, Instant::now()));
        Ok(reply.map(|(id, _)| id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::Program;

    fn queue(max_backlog: u64) -> Queue {
        let mut config = Config::defaults(Program::Vote);
        config.queue.max_backlog = max_backlog.try_into().expect("a test backlog is not zero");
        Queue::new(&config).expect("a queue builds without connecting")
    }

    fn saw(q: &Queue, len: u64, at: Instant) {
        *q.seen.lock().unwrap() = Some((len, at));
    }

    #[tokio::test]
    async fn plain_appends_only_far_below_the_bound_and_lately() {
        let q = queue(1_000_000);
        assert!(!q.far_from_full(), "never seen: check");
        saw(&q, 0, Instant::now());
        assert!(q.far_from_full());
        saw(&q, 1_000_000 - SLACK - 1, Instant::now());
        assert!(q.far_from_full());
        saw(&q, 1_000_000 - SLACK, Instant::now());
        assert!(!q.far_from_full(), "within the slack: check");
        saw(&q, 0, Instant::now() - FRESH);
        assert!(!q.far_from_full(), "seen too long ago: check");
    }

    #[tokio::test]
    async fn a_small_bound_is_always_checked() {
        let q = queue(SLACK);
        saw(&q, 0, Instant::now());
        assert!(!q.far_from_full());
    }
}
