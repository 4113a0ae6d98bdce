//! Fan-out of one topic: each record goes to the subscribers of its key (a map lookup), of
//! the patterns it matches (each pattern matched once per record), and of every key; the
//! conditions beyond the key (headers, `where`) are evaluated once per record for all the
//! subscribers that share them.
//!
//! The hub also knows where the stream is (the position after the last record
//! dispatched, which each record's cursor is made of) and holds the most recent records
//! ([`crate::stream::replay::Recent`]), so a client can subscribe with what it missed or the last
//! few records first: planned and queued under the same lock as the fan-out, so nothing
//! falls between replay and live.
//!
//! A record is encoded once per form (see [`crate::record::Stamped`]) and each subscriber
//! gets a reference to the same bytes. Delivery never waits on a client: a full queue is a
//! decision under the slow-consumer policy, taken here and counted, and so is the
//! gateway-wide bound on bytes held ([`crate::record::budget`]): past it, the clients holding the
//! most are shed, never the ones that keep up.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tungstenite::Message;

use crate::client::subscriber::Subscriber;
use crate::client::{Client, Offer, SlowConsumerPolicy, CLOSE_POLICY_VIOLATION, NO_STAMP, SLOW_CONSUMER};
use crate::metrics::Metrics;
use crate::record::budget::Budget;
use crate::record::position::{Cursor, Position};
use crate::record::{Form, Record, Stamped};
use crate::selector::{Glob, Index, Residual};
use crate::source::{Dispatch, Watch};
use crate::stream::replay::{self, Limits, Recent, Start};

/// A cheap-to-clone handle on one topic's subscription table.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    /// Taken for every record and every subscription: one source task dispatches, so it
    /// is contended only by clients connecting and leaving.
    table: Mutex<Table>,
    /// Tags this stream's cursors (see [`crate::record::position`]).
    tag: u32,
    /// Records dispatched: numbers each record for the shared conditions' memo, and
    /// samples the fan-out's timing.
    sequence: AtomicU64,
    limits: Limits,
    policy: SlowConsumerPolicy,
    metrics: Metrics,
    budget: Budget,
    /// Held while shedding: one shed at a time is enough, and the others' records need
    /// not wait for it.
    shedding: Mutex<()>,
    /// True once every watched partition is joined: subscriptions wait for it.
    joined: tokio::sync::watch::Sender<bool>,
}

/// A subscriber as the fan-out walks it: what every delivery reads, side by side, so that a
/// plain subscriber costs what a client did before subscriptions had selectors.
#[derive(Clone)]
struct Entry {
    client: Arc<Client>,
    /// Conditions its index does not decide, shared by every subscriber with the same.
    residual: Option<Arc<SharedResidual>>,
    subscriber: Arc<Subscriber>,
}

/// One set of conditions and the answer for the record being dispatched: evaluated once
/// per record however many subscribers share it.
struct SharedResidual {
    residual: Residual,
    /// `(sequence + 1) << 1 | matched` of the last record evaluated.
    memo: AtomicU64,
}

impl SharedResidual {
    fn check(&self, sequence: u64, stamped: &Stamped) -> bool {
        let tag = (sequence + 1) << 1;
        let memo = self.memo.load(Ordering::Relaxed);
        if memo & !1 == tag {
            return memo & 1 == 1;
        }
        let matched = self.residual.matches(stamped);
        self.memo.store(tag | u64::from(matched), Ordering::Relaxed);
        matched
    }
}

/// The subscribers sharing one key pattern: it is matched once per record for all of them.
struct PatternGroup {
    glob: Glob,
    entries: Vec<Entry>,
}

struct Table {
    by_key: HashMap<Bytes, Vec<Entry>>,
    patterns: Vec<PatternGroup>,
    all: Vec<Entry>,
    /// The shared conditions in use, with how many subscribers use each.
    residuals: HashMap<String, (Arc<SharedResidual>, usize)>,
    /// The position after the last record dispatched.
    live: Position,
    recent: Recent,
    /// Subscribers with a floor (they resumed a cursor ahead of this gateway): while there
    /// are none, the fan-out does not look at each one's, a field every delivery would
    /// otherwise read (a cache line per subscriber per record).
    floored: usize,
    /// Partitions watched whose stream is not yet confirmed to start where they were
    /// watched ([`crate::source::join`]): nothing may be planned against them.
    pending: BTreeSet<i32>,
    /// What this hub adds to the gauges every topic's hub shares.
    gauged: [i64; 4],
}

/// One record in this many has its fan-out timed (and the replay buffer's gauges set).
const SAMPLE: u64 = 16;

/// The stream a hub serves, for its cursors and replay.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// See [`crate::record::position::topic_tag`].
    pub tag: u32,
    /// Bytes of recent records held for resume and `?last=`.
    pub recent_bytes: usize,
    pub limits: Limits,
}

/// Where a new subscriber's delivery starts, decided at subscription.
pub struct Begin {
    /// The position its delivery starts at (the welcome frame's cursor).
    pub start: Position,
    /// Everything after its cursor will be delivered (so far: see `fetch`).
    pub complete: bool,
    /// Older records its session reads from Kafka first, per partition `[from, to)`.
    pub fetch: Vec<(i32, i64, i64)>,
    /// For `?last=N`: how many of the newest matching fetched records go first.
    pub older: Option<usize>,
    /// Records queued from memory before live ones.
    pub replayed: usize,
}

impl Hub {
    pub fn new(policy: SlowConsumerPolicy, metrics: Metrics, budget: Budget, stream: StreamSettings) -> Self {
        let table = Table {
            by_key: HashMap::new(),
            patterns: Vec::new(),
            all: Vec::new(),
            residuals: HashMap::new(),
            live: Position::default(),
            recent: Recent::new(stream.recent_bytes, budget.clone()),
            floored: 0,
            pending: BTreeSet::new(),
            gauged: [0; 4],
        };
        Hub {
            shared: Arc::new(Shared {
                table: Mutex::new(table),
                tag: stream.tag,
                sequence: AtomicU64::new(0),
                limits: stream.limits,
                policy,
                metrics,
                budget,
                shedding: Mutex::new(()),
                joined: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// The gateway-wide bound every frame for clients is charged to.
    pub fn budget(&self) -> &Budget {
        &self.shared.budget
    }

    /// The slow-consumer policy every delivery of this hub follows.
    pub fn policy(&self) -> SlowConsumerPolicy {
        self.shared.policy
    }

    /// The text form of a position of this stream.
    pub fn cursor(&self, position: &Position) -> String {
        Cursor { tag: self.shared.tag, position: position.clone() }.encode()
    }

    /// The position after the last record dispatched.
    pub fn live(&self) -> Position {
        self.shared.table.lock().live.clone()
    }

    /// Whether a cursor belongs to this stream (a cursor of another topic, or of an
    /// embedded stream that has since restarted, names offsets of something else).
    pub fn is_ours(&self, cursor: &Cursor) -> bool {
        cursor.tag == self.shared.tag
    }

    /// Starts delivering records to `subscriber`, until [`Hub::unsubscribe`] (which the
    /// session calls on every way out, so no path leaves a stale subscriber). What `start`
    /// asks for is queued first (or held, for a subscriber that holds its frames), from
    /// memory, under the same lock as the fan-out: every record dispatched before is in the
    /// replay or not wanted, every one after is live.
    pub fn subscribe(&self, subscriber: Arc<Subscriber>, start: &Start) -> Begin {
        let shared = &self.shared;
        let mut table = shared.table.lock();
        let plan = replay::plan(start, &subscriber.selector, &table.live, &table.recent, shared.limits);
        if let Some(floor) = plan.floor {
            if subscriber.set_floor(floor) {
                table.floored += 1;
            }
        }
        let client = &subscriber.client;
        for r in &plan.replay {
            let frame = match (&subscriber.id, r.own) {
                (Some(id), true) => r.stamped.mux_frame_with_cursor(id, &self.cursor(&r.after), &shared.budget),
                (Some(id), false) => r.stamped.mux_frame(id, &shared.budget, || self.cursor(&r.after)),
                (None, true) => r.stamped.frame_with_cursor(client.form, &self.cursor(&r.after), &shared.budget),
                (None, false) => r.stamped.frame(client.form, &shared.budget, || self.cursor(&r.after)).cloned(),
            };
            if let Some(frame) = frame {
                if let Err((frame, _)) = subscriber.hold(frame, NO_STAMP) {
                    client.offer_replay(frame);
                }
            }
        }
        let residual = subscriber.selector.residual().map(|residual| {
            let identity = residual.identity();
            let slot = table
                .residuals
                .entry(identity)
                .or_insert_with(|| (Arc::new(SharedResidual { residual, memo: AtomicU64::new(0) }), 0));
            slot.1 += 1;
            slot.0.clone()
        });
        let entry = Entry { client: client.clone(), residual, subscriber: subscriber.clone() };
        match subscriber.selector.index() {
            Index::Keys(keys) => {
                for key in keys {
                    table.by_key.entry(key.clone()).or_default().push(entry.clone());
                }
            }
            Index::Pattern(glob) => match table.patterns.iter_mut().find(|g| g.glob == *glob) {
                Some(group) => group.entries.push(entry),
                None => table.patterns.push(PatternGroup { glob: glob.clone(), entries: vec![entry] }),
            },
            Index::All => table.all.push(entry),
        }
        self.gauge(&mut table);
        Begin {
            start: plan.start,
            complete: plan.complete,
            fetch: plan.fetch,
            older: plan.older,
            replayed: plan.replay.len(),
        }
    }

    pub fn unsubscribe(&self, subscriber: &Arc<Subscriber>) {
        let mut table = self.shared.table.lock();
        let remove = |list: &mut Vec<Entry>| match list.iter().position(|e| Arc::ptr_eq(&e.subscriber, subscriber)) {
            Some(i) => {
                list.swap_remove(i);
                true
            }
            None => false,
        };
        let removed = match subscriber.selector.index() {
            Index::Keys(keys) => {
                let mut removed = false;
                for key in keys {
                    if let Some(list) = table.by_key.get_mut(key) {
                        removed |= remove(list);
                        // Keys nobody listens to any more must not accumulate.
                        if list.is_empty() {
                            table.by_key.remove(key);
                        }
                    }
                }
                removed
            }
            Index::Pattern(glob) => match table.patterns.iter().position(|g| g.glob == *glob) {
                Some(i) => {
                    let removed = remove(&mut table.patterns[i].entries);
                    if table.patterns[i].entries.is_empty() {
                        table.patterns.swap_remove(i);
                    }
                    removed
                }
                None => false,
            },
            Index::All => remove(&mut table.all),
        };
        if removed {
            if subscriber.has_floor() {
                table.floored -= 1;
            }
            if let Some(residual) = subscriber.selector.residual() {
                let identity = residual.identity();
                if let Some(slot) = table.residuals.get_mut(&identity) {
                    slot.1 -= 1;
                    if slot.1 == 0 {
                        table.residuals.remove(&identity);
                    }
                }
            }
        }
        self.gauge(&mut table);
    }

    /// Moves the gauges every topic's hub shares by what changed in this one.
    fn gauge(&self, table: &mut Table) {
        let m = &self.shared.metrics;
        let now =
            [table.by_key.len() as i64, table.all.len() as i64, table.recent.len() as i64, table.recent.bytes() as i64];
        let [keys, all, records, bytes] = std::array::from_fn(|i| now[i] - table.gauged[i]);
        m.subscribed_keys.inc_by(keys);
        m.wildcard_clients.inc_by(all);
        m.replay_buffer_records.inc_by(records);
        m.replay_buffer_bytes.inc_by(bytes);
        table.gauged = now;
    }

    /// Subscribers now: (keys with at least one subscriber, subscribers of every key,
    /// distinct patterns, shared conditions).
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let table = self.shared.table.lock();
        (table.by_key.len(), table.all.len(), table.patterns.len(), table.residuals.len())
    }

    /// Consuming these partitions starts (at start-up, or partitions added later): memory
    /// holds each from its `next` on, once it is joined.
    pub fn watch(&self, partitions: &[Watch]) {
        let mut table = self.shared.table.lock();
        for w in partitions {
            table.live.set(w.partition, w.next);
            table.recent.watch(w.partition, w.next);
            if w.joined {
                table.pending.remove(&w.partition);
            } else {
                table.pending.insert(w.partition);
            }
        }
        self.shared.joined.send_replace(table.pending.is_empty());
    }

    /// The stream of `partition` is confirmed to start where it was watched.
    pub fn joined(&self, partition: i32) {
        let mut table = self.shared.table.lock();
        table.pending.remove(&partition);
        if table.pending.is_empty() {
            self.shared.joined.send_replace(true);
            tracing::info!("every partition joined: the live stream starts where it was watched");
        }
    }

    /// Waits until every partition is joined (so a subscription can be planned against
    /// where the stream really is), at most `within`; whether it is.
    pub async fn wait_joined(&self, within: std::time::Duration) -> bool {
        let mut joined = self.shared.joined.subscribe();
        let waited = tokio::time::timeout(within, joined.wait_for(|j| *j)).await;
        matches!(waited, Ok(Ok(_)))
    }

    fn deliver(&self, record: Record) {
        let shared = &*self.shared;
        let metrics = &shared.metrics;
        metrics.records_consumed.inc();
        let tombstone = record.value.is_none();
        if tombstone {
            metrics.record_skipped("tombstone");
        }
        let (partition, offset) = (record.partition, record.offset);
        let stamp = record.timestamp.unwrap_or(NO_STAMP);
        let stamped = Arc::new(Stamped::new(record));
        let sequence = shared.sequence.fetch_add(1, Ordering::Relaxed);
        // A sample of the records is timed: with a hundred subscribers a record's fan-out
        // takes a few microseconds, and a clock read, a histogram's lock and two gauges on
        // every one were a tenth of it (BENCHMARKS.md).
        let sampled = sequence % SAMPLE == 0;
        let started = sampled.then(Instant::now);
        {
            let mut table = shared.table.lock();
            let Table { by_key, patterns, all, live, recent, floored, .. } = &mut *table;
            let floored = *floored > 0;
            // The stream moves past a tombstone too: cursors name positions, not records.
            match live.next_mut(partition) {
                Some(next) if offset == *next => *next = offset + 1,
                // Below where the stream is: dispatched already (a broker serving a batch
                // again, a reset backwards). Never twice.
                Some(next) if offset < *next => {
                    metrics.record_skipped("behind");
                    return;
                }
                // A jump: whatever lay between is not held (see Recent::jumped).
                Some(next) => {
                    metrics.offset_jump(partition, *next, offset);
                    *next = offset + 1;
                    recent.jumped(partition, offset);
                }
                // A partition nobody said was watched: held from this record on.
                None => {
                    live.set(partition, offset + 1);
                    recent.watch(partition, offset);
                }
            }
            if !tombstone {
                let key = stamped.record.key.as_deref();
                let keyed = key.and_then(|k| by_key.get(k)).into_iter().flatten();
                // Each pattern is matched once, for every subscriber sharing it.
                let patterned = key
                    .into_iter()
                    .flat_map(|k| patterns.iter().filter(move |g| g.glob.matches(k)))
                    .flat_map(|g| g.entries.iter());
                let cursor = || Cursor { tag: shared.tag, position: live.clone() }.encode();
                for e in keyed.chain(patterned).chain(all.iter()) {
                    if let Some(residual) = &e.residual {
                        if !residual.check(sequence, &stamped) {
                            continue;
                        }
                    }
                    if floored && e.subscriber.has_already(partition, offset) {
                        continue;
                    }
                    let form = e.client.form;
                    if form != Form::Mux {
                        if let Some(frame) = stamped.frame(form, &shared.budget, cursor) {
                            offer(&e.client, frame.clone(), stamp, shared.policy, metrics);
                        }
                    } else if let Some(id) = &e.subscriber.id {
                        // A multiplexed subscription's frames carry its id, and may be held.
                        if let Some(frame) = stamped.mux_frame(id, &shared.budget, cursor) {
                            if let Err((frame, stamp)) = e.subscriber.hold(frame, stamp) {
                                offer(&e.client, frame, stamp, shared.policy, metrics);
                            }
                        }
                    }
                }
                recent.push(stamped.clone());
            }
            if sampled {
                self.gauge(&mut table);
            }
        }
        if let Some(started) = started {
            metrics.fanout_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.enforce_budget();
    }

    /// Past the gateway-wide bound: sheds clients until what they hold would bring it back
    /// under (closed under `disconnect`, their queues dropped under `drop`): first those
    /// whose socket is full (they are not reading), holding the most first, then, only if
    /// that is not enough, the others by what they hold. A client that keeps up has room
    /// in its socket and next to nothing queued, so it is never shed while a stalled one
    /// holds anything.
    pub fn enforce_budget(&self) {
        let excess = self.shared.budget.excess();
        if excess == 0 {
            return;
        }
        let Some(_shedding) = self.shared.shedding.try_lock() else { return };
        let mut holders: Vec<(bool, usize, Arc<Client>)> = {
            let table = self.shared.table.lock();
            let mut clients: Vec<&Arc<Client>> = table
                .by_key
                .values()
                .flatten()
                .chain(table.patterns.iter().flat_map(|g| g.entries.iter()))
                .chain(table.all.iter())
                .map(|e| &e.client)
                .collect();
            // A client with several subscriptions is one holder.
            clients.sort_unstable_by_key(|c| Arc::as_ptr(c));
            clients.dedup_by_key(|c| Arc::as_ptr(c));
            clients
                .into_iter()
                .filter(|c| !c.is_closing())
                .map(|c| (c.is_blocked(), c.queued_bytes(), c.clone()))
                .filter(|(_, bytes, _)| *bytes > 0)
                .collect()
        };
        holders.sort_unstable_by_key(|(blocked, bytes, _)| std::cmp::Reverse((*blocked, *bytes)));
        let metrics = &self.shared.metrics;
        let mut freed = 0;
        for (blocked, bytes, client) in holders {
            if freed >= excess {
                break;
            }
            freed += bytes;
            metrics.queue_bound_sheds.inc();
            match self.shared.policy {
                SlowConsumerPolicy::Disconnect => {
                    if client.close(CLOSE_POLICY_VIOLATION, SLOW_CONSUMER) {
                        metrics.slow_consumer_disconnects.inc();
                    }
                }
                SlowConsumerPolicy::DropNewest => {
                    metrics.frames_dropped.inc_by(client.drop_queued() as u64);
                }
            }
            tracing::info!(
                client = %client.id,
                key = %client.key_display(),
                held = bytes,
                socket_full = blocked,
                policy = ?self.shared.policy,
                "gateway-wide queue bound reached: shedding a client that is behind"
            );
        }
    }
}

/// Offers a frame to a client; a full queue is decided here, under the slow-consumer
/// policy, for every path that delivers to clients (records and replies alike).
pub fn offer(client: &Client, frame: Message, stamp: i64, policy: SlowConsumerPolicy, metrics: &Metrics) -> Offer {
    let offer = client.offer_record(frame, stamp);
    if offer == Offer::Full {
        match policy {
            SlowConsumerPolicy::Disconnect => {
                if client.close(CLOSE_POLICY_VIOLATION, SLOW_CONSUMER) {
                    metrics.slow_consumer_disconnects.inc();
                    tracing::info!(client = %client.id, key = %client.key_display(), queued = client.queued(), "closing slow consumer");
                }
            }
            SlowConsumerPolicy::DropNewest => {
                client.count_dropped();
                metrics.frames_dropped.inc();
            }
        }
    }
    offer
}

impl Dispatch for Hub {
    fn dispatch(&self, record: Record) {
        self.deliver(record);
    }

    fn watch(&self, partitions: &[Watch]) {
        Hub::watch(self, partitions);
    }

    fn joined(&self, partition: i32) {
        Hub::joined(self, partition);
    }
}

#[cfg(test)]
mod tests;
