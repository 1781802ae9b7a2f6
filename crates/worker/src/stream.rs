//! The worker's Redis side: the consumer group on the ballot stream, the dead-letter stream,
//! and the original app's `votes` list.
//!
//! Everything runs on one dedicated multiplexed connection whose response timeout is longer
//! than the blocking read (a pooled connection times out after 500 ms).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use common::config::QueueConfig;
use domain::queue::FIELD_LEGACY;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

/// One stream entry as Redis returned it. `fields` is `None` for an entry that was deleted
/// while still pending (it only needs acknowledging).
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: String,
    pub fields: Option<HashMap<String, Vec<u8>>>,
}

/// An entry that can never be applied, and why.
#[derive(Clone, Debug)]
pub struct Dead {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
    pub reason: String,
}

/// Moves up to ARGV[1] entries from the head of the original app's list (KEYS[1]) to the
/// end of the stream (KEYS[2]), each as it was in field ARGV[2], and returns how many. One
/// script, so atomic: an entry is in the list or in the stream, never both or neither, and
/// the stream IDs it gets follow the list's order, so a voter's later list entry always has
/// the later version, across batches, workers and restarts.
const LEGACY_MOVE: &str = r"
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
for _, item in ipairs(items) do
    redis.call('XADD', KEYS[2], '*', ARGV[2], item)
end
if #items > 0 then redis.call('LTRIM', KEYS[1], #items, -1) end
return #items
";

/// Removes from the stream (KEYS[1]) every entry that group ARGV[1] has acknowledged: those
/// below both its oldest pending entry and the first entry it has not delivered yet. Entries
/// at or above that point are kept whatever their state, so nothing unapplied is removed.
/// (`XTRIM MINID` drops whole blocks of entries; `XDEL` of each acknowledged ID costs several
/// times more server time than reading and acknowledging it, see docs/benchmarks.md.)
const TRIM_ACKED: &str = r"
local floor = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last = nil, nil
    for i = 1, #group, 2 do
        if group[i] == 'name' then name = group[i + 1] end
        if group[i] == 'last-delivered-id' then last = group[i + 1] end
    end
    if name == ARGV[1] then
        local ms, seq = string.match(last, '^(%d+)-(%d+)$')
        floor = ms .. '-' .. string.format('%.0f', tonumber(seq) + 1)
    end
end
if floor == nil then return 0 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[1] > 0 then floor = pending[2] end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
";

pub struct StreamConn {
    conn: MultiplexedConnection,
    queue: QueueConfig,
    consumer: String,
}

impl StreamConn {
    /// Connects, and creates the consumer group (from the stream's first entry, so votes
    /// queued before any worker ran are applied) when it does not exist yet.
    pub async fn connect(
        client: &redis::Client,
        queue: &QueueConfig,
        consumer: &str,
        block: Duration,
    ) -> anyhow::Result<StreamConn> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(block + Duration::from_secs(10)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connecting to Redis")?;
        let mut this = StreamConn {
            conn,
            queue: queue.clone(),
            consumer: consumer.to_owned(),
        };
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&this.queue.stream)
            .arg(&this.queue.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut this.conn)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(stream = %this.queue.stream, group = %this.queue.group, "consumer group created")
            }
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e).context("creating the consumer group"),
        }
        Ok(this)
    }

    /// This consumer's own pending entries (delivered before a restart, never acknowledged).
    pub async fn read_own_pending(&mut self, count: usize) -> anyhow::Result<Vec<Entry>> {
        self.read_group(count, None, "0")
            .await
            .context("reading own pending entries")
    }

    /// New entries; waits up to `block` when there are none, and returns as soon as any
    /// arrive (never waits to fill a batch).
    /// `None` does not wait at all.
    pub async fn read_new(
        &mut self,
        count: usize,
        block: Option<Duration>,
    ) -> anyhow::Result<Vec<Entry>> {
        self.read_group(count, block.filter(|b| !b.is_zero()), ">")
            .await
            .context("reading new entries")
    }

    async fn read_group(
        &mut self,
        count: usize,
        block: Option<Duration>,
        from: &str,
    ) -> redis::RedisResult<Vec<Entry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.queue.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.queue.stream).arg(from);
        let reply: Value = cmd.query_async(&mut self.conn).await?;
        Ok(read_reply_entries(reply))
    }

    /// Claims entries pending for longer than `min_idle` on other consumers (presumed dead),
    /// scanning from `cursor`; returns the next cursor (`0-0` when the scan is complete).
    pub async fn autoclaim(
        &mut self,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> anyhow::Result<(String, Vec<Entry>)> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.queue.stream)
            .arg(&self.queue.group)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn)
            .await
            .context("claiming idle entries")?;
        let Value::Array(parts) = reply else {
            anyhow::bail!("unexpected XAUTOCLAIM reply");
        };
        let mut parts = parts.into_iter();
        let next = parts
            .next()
            .and_then(|v| text(&v))
            .unwrap_or_else(|| "0-0".into());
        let entries = parts.next().map(entry_list).unwrap_or_default();
        Ok((next, entries))
    }

    /// After the batch's transaction committed: dead-letters `dead` and acknowledges every
    /// entry of the batch, atomically (MULTI/EXEC); then removes acknowledged entries from the
    /// stream.
    pub async fn finish(&mut self, done: &[String], dead: &[Dead]) -> anyhow::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for d in dead {
            let cmd = pipe.cmd("XADD").arg(&self.queue.dead_letter).arg("*");
            cmd.arg("source_id").arg(&d.id).arg("reason").arg(&d.reason);
            for (name, value) in &d.fields {
                cmd.arg(name).arg(value.as_slice());
            }
            cmd.ignore();
        }
        pipe.cmd("XACK")
            .arg(&self.queue.stream)
            .arg(&self.queue.group)
            .arg(done)
            .ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .context("acknowledging a batch")?;
        self.trim_acknowledged().await
    }

    /// Removes the entries the group has acknowledged (see `TRIM_ACKED`).
    pub async fn trim_acknowledged(&mut self) -> anyhow::Result<()> {
        let _: u64 = redis::Script::new(TRIM_ACKED)
            .key(&self.queue.stream)
            .arg(&self.queue.group)
            .invoke_async(&mut self.conn)
            .await
            .context("removing acknowledged entries")?;
        Ok(())
    }

    /// Entries in the stream (not yet applied or not yet acknowledged).
    pub async fn backlog(&mut self) -> anyhow::Result<u64> {
        redis::cmd("XLEN")
            .arg(&self.queue.stream)
            .query_async(&mut self.conn)
            .await
            .context("XLEN")
    }

    /// Moves up to `count` entries of the original app's list into the stream (see
    /// `LEGACY_MOVE`); they are then read, applied and acknowledged like any vote.
    pub async fn legacy_move(&mut self, count: usize) -> anyhow::Result<u64> {
        redis::Script::new(LEGACY_MOVE)
            .key(&self.queue.legacy_list)
            .key(&self.queue.stream)
            .arg(count)
            .arg(FIELD_LEGACY)
            .invoke_async(&mut self.conn)
            .await
            .context("moving entries of the original app's list into the stream")
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an XREADGROUP reply (one stream), RESP2 or RESP3.
fn read_reply_entries(reply: Value) -> Vec<Entry> {
    match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => Some(pair.remove(1)),
                _ => None,
            })
            .flat_map(entry_list)
            .collect(),
        Value::Map(streams) => streams
            .into_iter()
            .flat_map(|(_, v)| entry_list(v))
            .collect(),
        _ => Vec::new(),
    }
}

/// `[[id, [field, value, ...] | nil], ...]`
fn entry_list(v: Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = text(&parts.pop()?)?;
            let fields = match fields {
                Value::Array(flat) => {
                    let mut map = HashMap::new();
                    let mut flat = flat.into_iter();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        if let (Some(k), Value::BulkString(v)) = (text(&k), v) {
                            map.insert(k, v);
                        }
                    }
                    Some(map)
                }
                Value::Map(pairs) => Some(
                    pairs
                        .into_iter()
                        .filter_map(|(k, v)| match (text(&k), v) {
                            (Some(k), Value::BulkString(v)) => Some((k, v)),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            };
            Some(Entry { id, fields })
        })
        .collect()
}
