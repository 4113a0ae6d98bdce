//! The cluster's data in Redis, and the one task that writes this replica's part of it.
//!
//! Keys (all under [`PREFIX`]; a standalone Redis, or one database of it):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `nodes` | set | every replica that registered and has not left or been swept |
//! | `node:{node}` | string, expiring | a replica's presence, refreshed by its heartbeat |
//! | `clients` | sorted set, all scores 0 | `"{id} {node}"` for every client: listed by id with `ZRANGEBYLEX` |
//! | `key:{key}` | sorted set | the same members, for the clients of one key (`*` for `/*`) |
//! | `owned:{node}` | hash | id → key of a replica's clients, so they can be removed without it |
//!
//! A member carries its node, so a page of ids says where each client is without another
//! lookup. Ids are UUIDs and node ids have no space, so `"{id} {node}"` sorts as the ids
//! do. The scripts below run whole inside Redis: a replica found dead is swept only if its
//! presence is still missing at that instant, so a replica coming back and re-registering
//! is never undone by a sweep that started before it.
//!
//! This replica's entries are written by one task ([`Writer`]), in the order its clients
//! came and went, batched; when a write fails, the task stops writing single changes and
//! waits to replace all of this replica's entries at once (a resync) when Redis is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::RedisResult;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::link::{Link, PREFIX};
use super::PRESENCE_TTL;
use crate::metrics::Metrics;
use crate::registry::{Change, Filter, Registry};

/// Members per command when registering many clients at once.
const CHUNK: usize = 1000;
/// Changes written in one pipeline at most (a mass reconnect arrives as one burst).
const BATCH: usize = 4096;

/// Removes replicas' entries. `ARGV`: prefix, operation, node.
/// - `reset NODE`: NODE's client entries (before it writes them all again);
/// - `leave NODE`: its entries, presence and membership (a replica stopping);
/// - `sweep`: every replica whose presence has expired, as `leave`. Returns the number of
///   replicas alive, then each swept replica and how many clients it had.
const FORGET: &str = r"
local p, op = ARGV[1], ARGV[2]
local function forget(node)
  local owned = p .. 'owned:' .. node
  local entries = redis.call('HGETALL', owned)
  for i = 1, #entries, 2 do
    local member = entries[i] .. ' ' .. node
    redis.call('ZREM', p .. 'clients', member)
    redis.call('ZREM', p .. 'key:' .. entries[i + 1], member)
  end
  redis.call('DEL', owned)
  return #entries / 2
end
if op == 'reset' then
  return forget(ARGV[3])
end
if op == 'leave' then
  local n = forget(ARGV[3])
  redis.call('SREM', p .. 'nodes', ARGV[3])
  redis.call('DEL', p .. 'node:' .. ARGV[3])
  return n
end
local live = 0
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if redis.call('EXISTS', p .. 'node:' .. node) == 1 then
    live = live + 1
  else
    local n = forget(node)
    redis.call('SREM', p .. 'nodes', node)
    out[#out + 1] = node
    out[#out + 1] = tostring(n)
  end
end
table.insert(out, 1, tostring(live))
return out
";

/// The live replicas (presence not expired). `ARGV`: prefix.
const LIVE: &str = r"
local p = ARGV[1]
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if redis.call('EXISTS', p .. 'node:' .. node) == 1 then out[#out + 1] = node end
end
return out
";

/// Up to `want` members of a sorted set from a lexical bound on, skipping those of replicas
/// whose presence expired (not swept yet). `ARGV`: prefix, set (without prefix), bound, want.
const PAGE: &str = r"
local p, set, from, want = ARGV[1], ARGV[1] .. ARGV[2], ARGV[3], tonumber(ARGV[4])
local live = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if redis.call('EXISTS', p .. 'node:' .. node) == 1 then live[node] = true end
end
local out = {}
while #out < want do
  local need = want - #out
  local batch = redis.call('ZRANGEBYLEX', set, from, '+', 'LIMIT', 0, need)
  for _, m in ipairs(batch) do
    local space = string.find(m, ' ', 1, true)
    if space and live[string.sub(m, space + 1)] then out[#out + 1] = m end
  end
  if #batch < need then break end
  from = '(' .. batch[#batch]
end
return out
";

/// The replica holding a client, if it is alive. `ARGV`: prefix, id.
const OWNER: &str = r"
local p, id = ARGV[1], ARGV[2]
local m = redis.call('ZRANGEBYLEX', p .. 'clients', '[' .. id .. ' ', '(' .. id .. '!', 'LIMIT', 0, 1)
if #m == 0 then return false end
local node = string.sub(m[1], #id + 2)
if redis.call('EXISTS', p .. 'node:' .. node) == 0 then return false end
return node
";

/// One client in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub node: String,
}

impl Entry {
    fn parse(member: &str) -> Option<Entry> {
        let (id, node) = member.split_once(' ')?;
        Some(Entry { id: id.to_owned(), node: node.to_owned() })
    }
}

fn member(id: &str, node: &str) -> String {
    format!("{id} {node}")
}

/// The lexical bound of the members after `cursor`: `"{id} {node}"` for an id equal to the
/// cursor sorts below `"{cursor} \x7f"` (node ids are printable ASCII), and every greater
/// id sorts above it.
fn after(cursor: Option<&str>) -> String {
    match cursor {
        None => "-".to_owned(),
        Some(c) => format!("({c} \x7f"),
    }
}

fn eval(script: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(0).arg(PREFIX);
    cmd
}

/// What a heartbeat found where this replica's presence is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// Nothing: a new replica, or Redis lost it (a restart, or an absence longer than the
    /// presence TTL).
    Missing,
    /// This process's own mark.
    Ours,
    /// Another process's: this one's previous life, or another replica given the same
    /// `--node-id`.
    Other,
}

/// Reads and writes of the cluster's data; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    node: Arc<str>,
    /// Written as this replica's presence: tells its heartbeats from another process's
    /// under the same node id.
    instance: Arc<str>,
    link: Arc<Link>,
    /// This replica's entries may be wrong (a write failed, or none was made yet): only a
    /// resync makes them right again.
    dirty: Arc<AtomicBool>,
}

impl Directory {
    pub fn new(node: Arc<str>, link: Arc<Link>) -> Directory {
        let instance = uuid::Uuid::new_v4().to_string().into();
        Directory { node, instance, link, dirty: Arc::new(AtomicBool::new(true)) }
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Up to `want` clients matching `filter`, ordered by id, on live replicas.
    pub async fn page(&self, filter: &Filter, want: usize) -> RedisResult<Vec<Entry>> {
        let set = match &filter.key {
            Some(key) => format!("key:{key}"),
            None => "clients".to_owned(),
        };
        let members: Vec<String> = eval(PAGE)
            .arg(set)
            .arg(after(filter.cursor.as_deref()))
            .arg(want)
            .query_async(&mut self.link.con())
            .await?;
        Ok(members.iter().filter_map(|m| Entry::parse(m)).collect())
    }

    /// The live replica holding client `id`, if any.
    pub async fn owner(&self, id: &str) -> RedisResult<Option<String>> {
        eval(OWNER).arg(id).query_async(&mut self.link.con()).await
    }

    pub async fn live_nodes(&self) -> RedisResult<Vec<String>> {
        eval(LIVE).query_async(&mut self.link.con()).await
    }

    /// Refreshes this replica's presence; what was there before.
    pub async fn beat(&self) -> RedisResult<Presence> {
        let (_, previous): (i64, Option<String>) = redis::pipe()
            .atomic()
            .cmd("SADD")
            .arg(format!("{PREFIX}nodes"))
            .arg(&*self.node)
            .cmd("SET")
            .arg(format!("{PREFIX}node:{}", self.node))
            .arg(&*self.instance)
            .arg("PX")
            .arg(PRESENCE_TTL.as_millis() as u64)
            .arg("GET")
            .query_async(&mut self.link.con())
            .await?;
        Ok(match previous {
            None => Presence::Missing,
            Some(p) if *p == *self.instance => Presence::Ours,
            Some(_) => Presence::Other,
        })
    }

    /// Removes the replicas whose presence expired; the number alive, and each replica
    /// removed with how many clients it had.
    pub async fn sweep(&self) -> RedisResult<(usize, Vec<(String, u64)>)> {
        let out: Vec<String> = eval(FORGET).arg("sweep").query_async(&mut self.link.con()).await?;
        let live = out.first().and_then(|n| n.parse().ok()).unwrap_or(0);
        let swept = out[1.min(out.len())..]
            .chunks(2)
            .filter_map(|pair| match pair {
                [node, n] => Some((node.clone(), n.parse().unwrap_or(0))),
                _ => None,
            })
            .collect();
        Ok((live, swept))
    }

    /// Writes clients that came and went, in order.
    async fn apply(&self, changes: &[Change]) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        let owned = format!("{PREFIX}owned:{}", self.node);
        let clients = format!("{PREFIX}clients");
        for change in changes {
            match change {
                Change::Joined { id, key } => {
                    let m = member(id, &self.node);
                    pipe.cmd("HSET").arg(&owned).arg(&**id).arg(key).ignore();
                    pipe.cmd("ZADD").arg(&clients).arg(0).arg(&m).ignore();
                    pipe.cmd("ZADD").arg(format!("{PREFIX}key:{key}")).arg(0).arg(&m).ignore();
                }
                Change::Left { id, key } => {
                    let m = member(id, &self.node);
                    pipe.cmd("HDEL").arg(&owned).arg(&**id).ignore();
                    pipe.cmd("ZREM").arg(&clients).arg(&m).ignore();
                    pipe.cmd("ZREM").arg(format!("{PREFIX}key:{key}")).arg(&m).ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut self.link.con()).await
    }

    /// Replaces this replica's entries with `clients` (id, key), in one transaction: no
    /// list sees them half written.
    async fn replace(&self, clients: &[(Arc<str>, String)]) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.add_command(eval(FORGET).arg("reset").arg(&*self.node).clone()).ignore();
        let owned = format!("{PREFIX}owned:{}", self.node);
        let mut by_key: HashMap<&str, Vec<String>> = HashMap::new();
        for chunk in clients.chunks(CHUNK) {
            let hset = pipe.cmd("HSET").arg(&owned);
            for (id, key) in chunk {
                hset.arg(&**id).arg(key);
            }
            hset.ignore();
            let zadd = pipe.cmd("ZADD").arg(format!("{PREFIX}clients"));
            for (id, key) in chunk {
                let m = member(id, &self.node);
                zadd.arg(0).arg(&m);
                by_key.entry(key).or_default().push(m);
            }
            zadd.ignore();
        }
        for (key, members) in by_key {
            for chunk in members.chunks(CHUNK) {
                let zadd = pipe.cmd("ZADD").arg(format!("{PREFIX}key:{key}"));
                for m in chunk {
                    zadd.arg(0).arg(m);
                }
                zadd.ignore();
            }
        }
        pipe.query_async::<()>(&mut self.link.con()).await
    }

    /// Removes this replica from the cluster: entries, presence, membership.
    async fn leave(&self) -> RedisResult<u64> {
        eval(FORGET).arg("leave").arg(&*self.node).query_async(&mut self.link.con()).await
    }
}

enum Job {
    Resync(oneshot::Sender<RedisResult<usize>>),
    Leave(oneshot::Sender<RedisResult<u64>>),
}

/// The task that writes this replica's entries; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    pub fn spawn(
        directory: Directory,
        registry: Registry,
        changes: mpsc::UnboundedReceiver<Change>,
        metrics: Metrics,
        tasks: &TaskTracker,
    ) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(write(directory, registry, changes, rx, metrics));
        Writer { jobs: tx }
    }

    /// Writes every client of this replica again; how many.
    pub async fn resync(&self) -> RedisResult<usize> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Resync(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Removes this replica from the cluster, then stops writing; how many clients it had.
    pub async fn leave(&self) -> RedisResult<u64> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Leave(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "the cluster's writer has stopped"))
}

async fn write(
    directory: Directory,
    registry: Registry,
    mut changes: mpsc::UnboundedReceiver<Change>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    metrics: Metrics,
) {
    let dirty = |e: &redis::RedisError| {
        directory.dirty.store(true, Ordering::Release);
        directory.link.down(e);
    };
    loop {
        tokio::select! {
            biased;
            job = jobs.recv() => match job {
                None => return,
                Some(Job::Resync(answer)) => {
                    // Everything that happened so far is in the snapshot taken after this.
                    while changes.try_recv().is_ok() {}
                    let clients: Vec<(Arc<str>, String)> =
                        registry.all().iter().map(|c| (c.id.clone(), crate::registry::directory_key(c))).collect();
                    let result = directory.replace(&clients).await;
                    match &result {
                        Ok(()) => {
                            directory.dirty.store(false, Ordering::Release);
                            metrics.cluster_resyncs.inc();
                        }
                        Err(e) => dirty(e),
                    }
                    let _ = answer.send(result.map(|()| clients.len()));
                }
                Some(Job::Leave(answer)) => {
                    let _ = answer.send(directory.leave().await);
                    return;
                }
            },
            Some(change) = changes.recv() => {
                let mut batch = vec![change];
                while batch.len() < BATCH {
                    match changes.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                // A resync will write what is true then; single changes would be partial.
                if directory.is_dirty() {
                    continue;
                }
                if let Err(e) = directory.apply(&batch).await {
                    dirty(&e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_as_their_ids_and_the_cursor_bound_splits_them() {
        let (a, b) = ("0000aaaa-0000-4000-8000-000000000001", "0000aaaa-0000-4000-8000-000000000002");
        let (ma, mb) = (member(a, "zz-node"), member(b, "a"));
        assert!(ma < mb);
        let bound = after(Some(a));
        let bound = bound.strip_prefix('(').unwrap();
        assert!(ma.as_str() < bound && bound < mb.as_str());
        assert_eq!(Entry::parse(&mb), Some(Entry { id: b.into(), node: "a".into() }));
        assert_eq!(after(None), "-");
    }
}
