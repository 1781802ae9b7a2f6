//! Appending ballots to the Redis stream.
//!
//! One Lua script checks the backlog and appends, atomically and in one round trip:
//! when the stream holds `max_backlog` entries or more, nothing is appended and the vote is
//! refused. The stream is never trimmed (trimming could drop votes not yet applied).

use common::config::Config;
use common::options::OptionKey;
use common::pools::Redis;
use common::queue::{EntryId, FIELD_VOTE, FIELD_VOTER};
use common::voter::VoterId;

const APPEND: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
    return false
end
return redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3], ARGV[4], ARGV[5])
";

/// Why a ballot was not queued (answered 503: the vote was not recorded).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the vote queue is full")]
    Full,
    #[error("the vote queue is unreachable")]
    Unavailable(#[source] anyhow::Error),
}

pub struct Queue {
    redis: Redis,
    stream: String,
    max_backlog: u64,
    script: redis::Script,
}

impl Queue {
    pub fn new(config: &Config) -> anyhow::Result<Queue> {
        Ok(Queue {
            redis: Redis::new(&config.redis)?,
            stream: config.queue.stream.clone(),
            max_backlog: config.queue.max_backlog,
            script: redis::Script::new(APPEND),
        })
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Appends one ballot; the stream entry ID is the ballot's id and version.
    pub async fn append(&self, voter: &VoterId, vote: &OptionKey) -> Result<EntryId, QueueError> {
        let mut invocation = self.script.key(&self.stream);
        invocation
            .arg(self.max_backlog)
            .arg(FIELD_VOTER)
            .arg(voter.as_str())
            .arg(FIELD_VOTE)
            .arg(vote.as_str());
        let mut c = self.redis.conn().await.map_err(QueueError::Unavailable)?;
        let mut result: redis::RedisResult<Option<String>> =
            invocation.invoke_async(&mut c.conn).await;
        if let Err(e) = &result
            && c.failed(e)
        {
            // The connection had died (Redis restarted, say): one retry on a fresh one. A
            // duplicate entry is harmless, since the newer entry of a voter wins.
            c = self.redis.conn().await.map_err(QueueError::Unavailable)?;
            result = invocation.invoke_async(&mut c.conn).await;
            if let Err(e) = &result {
                c.failed(e);
            }
        }
        match result {
            Ok(Some(id)) => EntryId::parse(&id).ok_or_else(|| {
                QueueError::Unavailable(anyhow::anyhow!("Redis returned entry id {id:?}"))
            }),
            Ok(None) => Err(QueueError::Full),
            Err(e) => Err(QueueError::Unavailable(e.into())),
        }
    }
}
