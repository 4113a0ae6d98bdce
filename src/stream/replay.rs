//! What a subscriber gets before the live stream: the records after its cursor (resume),
//! or the last N records of its subscription (`?last=N`).
//!
//! The hub keeps the most recent records in [`Recent`], bounded in bytes, in dispatch
//! order, with the frames already built for them; [`plan`] decides, under the hub's lock
//! (so no record slips between replay and live), which of them a subscriber gets, which
//! older ranges must come from Kafka first, and where its delivery starts. That function is
//! the seam between replay and live.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::record::budget::Budget;
use crate::record::position::Position;
use crate::record::Stamped;
use crate::selector::Selector;

/// Recent records, oldest first, bounded in bytes.
pub struct Recent {
    entries: VecDeque<Entry>,
    bytes: usize,
    limit: usize,
    /// The frames held here are charged to it; what they hold is pinned there.
    budget: Budget,
    /// Per partition: every record of it at or after this offset (up to the live position)
    /// is held here.
    covered_from: Position,
    /// Records held, per partition (indexed by partition id): a replay walking back from
    /// the newest stops once it is past the cursor in every partition, instead of walking
    /// the whole buffer.
    counts: Vec<usize>,
}

struct Entry {
    stamped: Arc<Stamped>,
    /// What this entry counts against the bound: the record's value, key and headers.
    size: usize,
    /// Bytes of its frames pinned in the budget when it was taken.
    pinned: usize,
}

impl Recent {
    pub fn new(limit: usize, budget: Budget) -> Recent {
        Recent {
            entries: VecDeque::new(),
            bytes: 0,
            limit,
            budget,
            covered_from: Position::default(),
            counts: Vec::new(),
        }
    }

    /// Consuming `partition` starts at `next`: everything from there on will be held.
    pub fn watch(&mut self, partition: i32, next: i64) {
        self.covered_from.insert(partition, next);
    }

    /// The live stream of `partition` jumped to `offset`: what lies before it is not held
    /// (there may be nothing there, or the broker skipped it; Kafka will tell).
    pub fn jumped(&mut self, partition: i32, offset: i64) {
        self.covered_from.raise(partition, offset);
    }

    /// Holds a record just dispatched, letting the oldest go past the bound.
    pub fn push(&mut self, stamped: Arc<Stamped>) {
        let r = &stamped.record;
        let size = r.value.as_ref().map_or(0, |v| v.len())
            + r.key.as_ref().map_or(0, |k| k.len())
            + r.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len())).sum::<usize>()
            // The entry itself, its frames' bookkeeping and the record's fields.
            + 256;
        if r.value.is_none() {
            // Tombstones go to nobody: nothing to replay, but the coverage moves on.
            return;
        }
        self.bytes += size;
        // The frames built for the live fan-out are held as long as the entry is.
        let pinned = stamped.built_bytes();
        self.budget.pin(pinned as i64);
        let p = stamped.record.partition.max(0) as usize;
        if p >= self.counts.len() {
            self.counts.resize(p + 1, 0);
        }
        self.counts[p] += 1;
        self.entries.push_back(Entry { stamped, size, pinned });
        while self.bytes > self.limit {
            let Some(old) = self.entries.pop_front() else { break };
            self.bytes -= old.size;
            self.budget.pin(-(old.pinned as i64));
            let r = &old.stamped.record;
            if let Some(n) = self.counts.get_mut(r.partition.max(0) as usize) {
                *n -= 1;
            }
            // Records of that partition before and at this one are no longer all here.
            self.covered_from.advance(r.partition, r.offset);
        }
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Where a subscription from time `ms` starts, as far as memory knows: per partition,
    /// the first record held with a timestamp at or after it; the live position where every
    /// record held is older. Whether memory reaches back far enough for every partition
    /// (its oldest record held is older than `ms`, or it holds the partition from its start).
    pub fn position_at(&self, ms: i64, live: &Position) -> (Position, bool) {
        let mut at = live.clone();
        let mut found: BTreeMap<i32, ()> = BTreeMap::new();
        let mut reaches: BTreeMap<i32, bool> = BTreeMap::new();
        for e in &self.entries {
            let r = &e.stamped.record;
            let stamp = r.timestamp.unwrap_or(i64::MIN);
            reaches.entry(r.partition).or_insert(stamp < ms || self.covered_from.get(r.partition) == Some(0));
            if stamp >= ms && found.insert(r.partition, ()).is_none() {
                at.set(r.partition, r.offset);
            }
        }
        let complete = live.iter().all(|(p, next)| {
            reaches.get(&p).copied().unwrap_or(self.covered_from.get(p).is_none_or(|from| from >= next))
        });
        (at, complete)
    }
}

/// What a subscriber asked to get before the live stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Live only.
    Live,
    /// Every record after this position (a client's cursor), then live.
    After(Position),
    /// The last N records of the subscription, then live.
    Last(usize),
    /// A cursor of another stream: everything held, then live (not a resume: it cannot
    /// say what was missed).
    Oldest,
    /// The records from this time on (ms since the epoch), then live. The embedded stream
    /// finds where in memory; for Kafka the session asks Kafka's offsets for times first
    /// and subscribes from there ([`Start::After`]).
    Since(i64),
}

/// A record to replay, with the position after it: the stream's own (the same for every
/// subscriber, and cached with the record's frames), or one of this subscriber's (see
/// [`plan`]).
pub struct Replayed {
    pub stamped: Arc<Stamped>,
    pub after: Position,
    /// `after` is this subscriber's, not the stream's.
    pub own: bool,
}

/// The seam between replay and live, decided at subscription.
pub struct Plan {
    /// From memory, in order, before any live record.
    pub replay: Vec<Replayed>,
    /// Older records to read from Kafka first, per partition `[from, to)`.
    pub fetch: Vec<(i32, i64, i64)>,
    /// Where delivery starts, as far as memory goes (the welcome frame's cursor; fetching
    /// may move it when Kafka no longer has the start).
    pub start: Position,
    /// Everything after the cursor will be delivered (before the fetch says otherwise).
    pub complete: bool,
    /// The cursor is ahead of this gateway in some partitions (it came from a replica
    /// further along): live records below it are not sent again.
    pub floor: Option<Position>,
    /// For `?last=N` when memory holds fewer than N: how many of the newest matching
    /// records of `fetch` go first (memory does not reach back far enough, as right after a
    /// start).
    pub older: Option<usize>,
}

/// Limits on what a subscriber may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whether older records can be read from Kafka (not with the embedded stream).
    pub kafka: bool,
    /// Records behind the oldest one in memory beyond which Kafka is not asked.
    pub max_fetch: u64,
}

/// Decides what a subscriber gets before live records, given where the stream is (`live`,
/// the position after the last record dispatched) and what memory holds.
///
/// For a cursor, per partition: records from memory at or after the cursor; older ones
/// from Kafka when memory does not reach back (within `limits.max_fetch`), else delivery
/// starts at the oldest record held and the plan is not complete. Each replayed frame
/// carries the stream's cursor, unless that would move this subscriber's cursor backwards
/// in some partition (it resumed a cursor of another replica, whose order of partitions
/// differed): then the greater of the two.
pub fn plan(start: &Start, subscription: &Selector, live: &Position, recent: &Recent, limits: Limits) -> Plan {
    match start {
        Start::Live => {
            Plan { replay: vec![], fetch: vec![], start: live.clone(), complete: true, floor: None, older: None }
        }
        Start::Oldest => {
            let from = recent.covered_from.clone();
            let replay = replay_after(&from, live, subscription, recent, usize::MAX);
            Plan { replay, fetch: vec![], start: from, complete: false, floor: None, older: None }
        }
        Start::Since(ms) => {
            let (from, _) = recent.position_at(*ms, live);
            let replay = replay_after(&from, live, subscription, recent, usize::MAX);
            Plan { replay, fetch: vec![], start: from, complete: true, floor: None, older: None }
        }
        Start::Last(n) => {
            let replay = replay_after(&Position::default(), live, subscription, recent, *n);
            let (fetch, older) = if replay.len() < *n && limits.kafka {
                let fetch = last_from_kafka(*n, subscription, live, recent, limits);
                let older = (!fetch.is_empty()).then_some(*n - replay.len());
                (fetch, older)
            } else {
                (vec![], None)
            };
            Plan { replay, fetch, start: live.clone(), complete: true, floor: None, older }
        }
        Start::After(cursor) => {
            let mut complete = true;
            let mut fetch = Vec::new();
            let mut from = Position::default();
            let mut floor = None::<Position>;
            for (partition, next) in live.iter() {
                // A partition the cursor does not name was added after it: all of it is new.
                let wanted = cursor.get(partition).unwrap_or(0);
                let held_from = recent.covered_from.get(partition).unwrap_or(next);
                if wanted > next {
                    floor.get_or_insert_with(Position::default).insert(partition, wanted);
                    from.insert(partition, wanted);
                } else if wanted >= held_from {
                    from.insert(partition, wanted);
                } else {
                    fetch.push((partition, wanted, held_from));
                    from.insert(partition, wanted);
                }
            }
            // A partition the cursor names that this gateway does not consume yet (added to
            // the topic, seen by the replica that made the cursor first): when it is
            // watched here, from its beginning, what the cursor already had is not sent
            // again.
            for (partition, wanted) in cursor.iter() {
                if live.get(partition).is_none() {
                    floor.get_or_insert_with(Position::default).insert(partition, wanted);
                    from.insert(partition, wanted);
                }
            }
            let behind: u64 = fetch.iter().map(|(_, a, b)| (b - a) as u64).sum();
            if !fetch.is_empty() && (!limits.kafka || behind > limits.max_fetch) {
                // Memory is all there is: start at the oldest record it holds.
                for &(partition, _, held_from) in &fetch {
                    from.set(partition, held_from);
                }
                fetch.clear();
                complete = false;
            }
            // Memory takes over where Kafka's part ends: for a partition read from Kafka,
            // from where memory holds it contiguously (it may hold older records, before a
            // jump, that the fetch delivers already), and no replayed frame's cursor goes
            // back before what the fetch delivered.
            let mut replay_from = from.clone();
            for &(partition, _, held_from) in &fetch {
                replay_from.set(partition, held_from);
            }
            let replay = replay_after(&replay_from, live, subscription, recent, usize::MAX);
            Plan { replay, fetch, start: from, complete, floor, older: None }
        }
    }
}

/// What to read from Kafka for `?last=n` when memory holds fewer matching records: the
/// records of each partition just before the oldest one memory holds. Every key's `n`
/// newest could all be in one partition, so `n` from each for every key; a single key's
/// records may be sparse, so a share of `limits.max_fetch` from each, to bound the read.
fn last_from_kafka(
    n: usize,
    subscription: &Selector,
    live: &Position,
    recent: &Recent,
    limits: Limits,
) -> Vec<(i32, i64, i64)> {
    let partitions = live.iter().count().max(1) as u64;
    let window = if subscription.is_sparse() { (limits.max_fetch / partitions).max(n as u64) } else { n as u64 } as i64;
    live.iter()
        .filter_map(|(p, next)| {
            let held_from = recent.covered_from.get(p).unwrap_or(next);
            (held_from > 0).then(|| (p, (held_from - window).max(0), held_from))
        })
        .collect()
}

fn matches(subscription: &Selector, stamped: &Stamped) -> bool {
    subscription.matches(stamped)
}

/// The newest `most` records held after `from` that match, oldest first, each with the
/// position after it.
fn replay_after(
    from: &Position,
    live: &Position,
    subscription: &Selector,
    recent: &Recent,
    most: usize,
) -> Vec<Replayed> {
    // The position after each held record, walking back from the newest: after the newest
    // it is the live position; before a record of partition p, p's part is that record's
    // offset.
    let mut after = live.clone();
    let mut out = Vec::new();
    // Partitions with records still to look at: each one's count of records left, until a
    // record of it older than the cursor is met (all older ones are older still).
    let mut left: BTreeMap<i32, usize> =
        recent.counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(p, n)| (p as i32, *n)).collect();
    for e in recent.entries.iter().rev() {
        if out.len() == most || left.is_empty() {
            break;
        }
        let r = &e.stamped.record;
        if r.offset < from.get(r.partition).unwrap_or(0) {
            left.remove(&r.partition);
        } else if let Some(n) = left.get_mut(&r.partition) {
            *n -= 1;
            if *n == 0 {
                left.remove(&r.partition);
            }
        }
        if r.offset >= from.get(r.partition).unwrap_or(0) && matches(subscription, &e.stamped) {
            let behind = after.iter().any(|(p, next)| next < from.get(p).unwrap_or(0));
            let (position, own) = if behind {
                (Position::new(after.iter().map(|(p, next)| (p, next.max(from.get(p).unwrap_or(0)))).collect()), true)
            } else {
                (after.clone(), false)
            };
            out.push(Replayed { stamped: e.stamped.clone(), after: position, own });
        }
        after.set(r.partition, r.offset);
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use bytes::Bytes;

    fn stamped(partition: i32, offset: i64, key: &str) -> Arc<Stamped> {
        Arc::new(Stamped::new(Record {
            topic: Arc::from("t"),
            partition,
            offset,
            timestamp: None,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::from(format!("{partition}:{offset}"))),
            headers: vec![],
            decoded: None,
        }))
    }

    /// Three partitions starting at 0; records dispatched interleaved: p0 0..4, p1 0..4,
    /// p2 0..4 as (0,0) (1,0) (2,0) (0,1) (1,1) ...; keys "a" on p0, "b" on p1, "c" on p2.
    fn stream(limit: usize) -> (Recent, Position) {
        let mut recent = Recent::new(limit, Budget::new(usize::MAX, Default::default()));
        let mut live = Position::default();
        for p in 0..3 {
            recent.watch(p, 0);
            live.insert(p, 0);
        }
        for o in 0..4 {
            for (p, k) in [(0, "a"), (1, "b"), (2, "c")] {
                recent.push(stamped(p, o, k));
                live.advance(p, o);
            }
        }
        (recent, live)
    }

    const KAFKA: Limits = Limits { kafka: true, max_fetch: 1000 };

    fn values(plan: &Plan) -> Vec<String> {
        plan.replay
            .iter()
            .map(|r| String::from_utf8_lossy(r.stamped.record.value.as_ref().unwrap()).into_owned())
            .collect()
    }

    #[test]
    fn a_cursor_held_in_memory_replays_exactly_what_follows_it() {
        let (recent, live) = stream(1 << 20);
        let cursor = Position::new(vec![(0, 2), (1, 2), (2, 1)]);
        let plan = plan(&Start::After(cursor.clone()), &Selector::default(), &live, &recent, KAFKA);
        assert_eq!(values(&plan), ["2:1", "0:2", "1:2", "2:2", "0:3", "1:3", "2:3"]);
        assert!(plan.complete && plan.fetch.is_empty() && plan.floor.is_none());
        assert_eq!(plan.start, cursor);
        // The stream's own cursors are used: none moves this subscriber backwards.
        assert!(plan.replay.iter().all(|r| !r.own));
        assert_eq!(plan.replay[0].after.iter().collect::<Vec<_>>(), [(0, 2), (1, 2), (2, 2)]);
        assert_eq!(plan.replay[6].after, live);
    }

    #[test]
    fn a_keyed_subscriber_gets_its_key_only() {
        let (recent, live) = stream(1 << 20);
        let plan = plan(
            &Start::After(Position::new(vec![(0, 1), (1, 0), (2, 0)])),
            &Selector::key(Bytes::from_static(b"a")),
            &live,
            &recent,
            KAFKA,
        );
        assert_eq!(values(&plan), ["0:1", "0:2", "0:3"]);
    }

    #[test]
    fn what_memory_no_longer_holds_is_fetched_from_kafka_or_reported_missing() {
        // Room for about six records: the oldest six are gone from memory.
        let (recent, live) = stream(6 * 262);
        let cursor = Position::new(vec![(0, 0), (1, 0), (2, 0)]);
        let plan_k = plan(&Start::After(cursor.clone()), &Selector::default(), &live, &recent, KAFKA);
        assert_eq!(plan_k.fetch, [(0, 0, 2), (1, 0, 2), (2, 0, 2)]);
        assert_eq!(values(&plan_k), ["0:2", "1:2", "2:2", "0:3", "1:3", "2:3"]);
        assert!(plan_k.complete);

        let memory_only = Limits { kafka: false, max_fetch: 1000 };
        let plan_m = plan(&Start::After(cursor.clone()), &Selector::default(), &live, &recent, memory_only);
        assert!(plan_m.fetch.is_empty() && !plan_m.complete);
        assert_eq!(plan_m.start, Position::new(vec![(0, 2), (1, 2), (2, 2)]));
        assert_eq!(values(&plan_m), values(&plan_k));

        let too_far = Limits { kafka: true, max_fetch: 5 };
        let plan_f = plan(&Start::After(cursor), &Selector::default(), &live, &recent, too_far);
        assert!(plan_f.fetch.is_empty() && !plan_f.complete);
    }

    #[test]
    fn a_cursor_ahead_of_this_gateway_sets_a_floor_and_replays_nothing_below_it() {
        let (recent, live) = stream(1 << 20);
        let cursor = Position::new(vec![(0, 6), (1, 4), (2, 4)]);
        let plan = plan(&Start::After(cursor), &Selector::default(), &live, &recent, KAFKA);
        assert!(plan.replay.is_empty());
        assert_eq!(plan.floor, Some(Position::new(vec![(0, 6)])));
    }

    #[test]
    fn a_cursor_from_another_order_of_partitions_never_moves_backwards() {
        let (recent, live) = stream(1 << 20);
        // Another replica had dispatched partition 2 further before partition 0's record 2.
        let cursor = Position::new(vec![(0, 2), (1, 4), (2, 4)]);
        let plan = plan(&Start::After(cursor), &Selector::default(), &live, &recent, KAFKA);
        assert_eq!(values(&plan), ["0:2", "0:3"]);
        assert!(plan.replay[0].own);
        assert_eq!(plan.replay[0].after.iter().collect::<Vec<_>>(), [(0, 3), (1, 4), (2, 4)]);
    }

    #[test]
    fn a_partition_the_cursor_names_that_is_not_consumed_here_yet_gets_a_floor() {
        let (recent, live) = stream(1 << 20);
        let cursor = Position::new(vec![(0, 4), (1, 4), (2, 4), (3, 9)]);
        let plan = plan(&Start::After(cursor), &Selector::default(), &live, &recent, KAFKA);
        assert!(plan.replay.is_empty() && plan.complete);
        assert_eq!(plan.floor, Some(Position::new(vec![(3, 9)])));
        assert_eq!(plan.start.get(3), Some(9));
    }

    #[test]
    fn a_jump_of_the_live_stream_is_read_from_kafka_not_claimed_from_memory() {
        // Partition 1 jumps from 4 to 10 (a batch the broker skipped, or a reset).
        let (mut recent, mut live) = stream(1 << 20);
        recent.jumped(1, 10);
        live.set(1, 10);
        recent.push(stamped(1, 10, "b"));
        live.advance(1, 10);
        let cursor = Position::new(vec![(0, 4), (1, 2), (2, 4)]);
        let plan = plan(&Start::After(cursor), &Selector::default(), &live, &recent, KAFKA);
        assert_eq!(plan.fetch, [(1, 2, 10)], "what lies before the jump comes from Kafka");
        assert_eq!(values(&plan), ["1:10"], "memory only from the jump on");
        assert!(plan.complete);

        // With memory only, it is no resume.
        let memory_only = Limits { kafka: false, max_fetch: 1000 };
        let cursor = Position::new(vec![(0, 4), (1, 2), (2, 4)]);
        let plan = plan_with(&cursor, &live, &recent, memory_only);
        assert!(!plan.complete && plan.fetch.is_empty());
        assert_eq!(plan.start.get(1), Some(10));
    }

    fn plan_with(cursor: &Position, live: &Position, recent: &Recent, limits: Limits) -> Plan {
        plan(&Start::After(cursor.clone()), &Selector::default(), live, recent, limits)
    }

    #[test]
    fn last_n_reads_from_kafka_what_memory_does_not_hold() {
        // Room for about six records: the oldest six are gone from memory.
        let (recent, live) = stream(6 * 262);
        let got = plan(&Start::Last(8), &Selector::default(), &live, &recent, KAFKA);
        assert_eq!(values(&got).len(), 6);
        assert_eq!(got.older, Some(2));
        assert_eq!(got.fetch, [(0, 0, 2), (1, 0, 2), (2, 0, 2)]);
        // A key: a share of the fetch limit from each partition.
        let got = plan_for_key(8, "a", &live, &recent);
        assert_eq!(values(&got), ["0:2", "0:3"]);
        assert_eq!(got.older, Some(6));
        assert_eq!(got.fetch, [(0, 0, 2), (1, 0, 2), (2, 0, 2)]);
        // Memory holds enough: nothing read.
        let got = plan(&Start::Last(2), &Selector::default(), &live, &recent, KAFKA);
        assert!(got.fetch.is_empty() && got.older.is_none());
    }

    fn plan_for_key(n: usize, key: &'static str, live: &Position, recent: &Recent) -> Plan {
        plan(&Start::Last(n), &Selector::key(Bytes::from_static(key.as_bytes())), live, recent, KAFKA)
    }

    #[test]
    fn last_n_is_the_newest_matching_records_oldest_first() {
        let (recent, live) = stream(1 << 20);
        let plan = plan(&Start::Last(2), &Selector::key(Bytes::from_static(b"b")), &live, &recent, KAFKA);
        assert_eq!(values(&plan), ["1:2", "1:3"]);
        assert_eq!(plan.start, live);
    }
}
