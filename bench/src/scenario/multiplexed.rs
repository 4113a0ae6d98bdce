//! Many subscriptions per connection: clients on `/` with the `sluice.v1` subprotocol, each
//! holding `--subscriptions` subscriptions, a mix of one key pattern and exact keys, over
//! 100 keys; records produced as fast as the producer and broker allow. The figure to set
//! beside scenario 1's single-key fan-out of the same build.
//!
//! Client `i` takes decade `d = 1 + i mod 9` of the keys `k10`..`k99`: the pattern `k{d}?`
//! (ten keys) and `subscriptions - 1` exact keys of the next decade, so no record matches
//! two of one client's subscriptions and every frame it receives is one record once.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{Client, Common, Load, Rig};
use crate::connect;
use crate::produce::Plan;
use crate::report::Report;
use crate::tally::Sequences;

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Multiplexed connections.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Subscriptions per connection: one pattern, the rest exact keys (2 to 11).
    #[arg(long, default_value_t = 10)]
    pub subscriptions: usize,
    /// Records to produce at most.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Seconds to produce for at most.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait for delivery to finish after the last record is produced.
    #[arg(long, default_value_t = 20.0)]
    pub drain: f64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

/// Keys `k0`..`k99`: the rig numbers its keys from 0, and the decades 1–9 are the ones
/// subscribed (`k0`..`k9` go to nobody: a tenth of the records).
const KEYS: usize = 100;

/// The subscribe frames of client `i`, and the key indexes they select.
pub fn subscriptions(i: usize, n: usize) -> (Vec<String>, Vec<usize>) {
    let decade = 1 + i % 9;
    let next = 1 + decade % 9;
    let mut frames = vec![format!(r#"{{"type":"subscribe","id":"p","pattern":"k{decade}?"}}"#)];
    let mut keys: Vec<usize> = (0..10).map(|j| decade * 10 + j).collect();
    for j in 0..n.saturating_sub(1).min(10) {
        frames.push(format!(r#"{{"type":"subscribe","id":"s{j}","keys":["k{next}{j}"]}}"#));
        keys.push(next * 10 + j);
    }
    (frames, keys)
}

pub async fn run(common: &Common, opts: &Opts, client_threads: usize) -> Result<Report> {
    let load = Load {
        clients: opts.clients,
        keys: KEYS,
        all: false,
        size: opts.size,
        partitions: 1,
        fetch_wait_ms: 1,
        queue_capacity: 16384,
        linger_ms: None,
        drain: opts.drain,
    };
    let mut rig = Rig::start(common, "multiplexed", 1, KEYS, Rig::load_args(&load, "drop")).await?;
    rig.target.protocol = Some("sluice.v1".into());
    let paths = vec!["/".to_owned(); opts.clients];
    let opened = connect::open_many(&rig.target, &paths, 0, common.connect_concurrency).await;
    anyhow::ensure!(
        opened.failed() == 0,
        "{} clients failed to connect: {}",
        opened.failed(),
        opened.describe_failures()
    );
    let n = opts.subscriptions;
    let conns = connect::subscribe_all(opened.conns, &|i| subscriptions(i, n).0, common.connect_concurrency).await?;
    rig.gateway.wait_connections(opts.clients, Duration::from_secs(30)).await?;
    for conn in conns {
        let keys = subscriptions(conn.index, n).1;
        rig.clients.push(Client { conn: Some(conn), next: Sequences::new(KEYS), keys: Some(keys), alive: true });
    }
    let plan = Plan {
        topic: String::new(),
        keys: Vec::new(),
        size: opts.size,
        max_records: opts.records,
        max_time: Duration::from_secs_f64(opts.duration),
        rate: None,
        linger_ms: 5,
        first_seq: Vec::new(),
        avro: None,
    };
    let phase = rig.phase(plan, &|_| true, &|_| true, Duration::from_secs_f64(opts.drain)).await?;

    let mut r = Report::new(format!("multiplexed-{}c-{}s", opts.clients, n));
    phase.report(&mut r, "", client_threads);
    // Each record of decades 1–9 reaches the 1/9 of the clients whose pattern is its decade
    // and, for the exact keys, those of the decade before whose keys include its digit.
    let exact = n.saturating_sub(1).min(10) as f64 / 10.0;
    let fan_out = 0.9 * (opts.clients as f64 / 9.0) * (1.0 + exact);
    r.note(format!(
        "{} multiplexed connections × {n} subscriptions (1 pattern of 10 keys + {} exact keys), 100 keys, mean fan-out {fan_out:.0} per record, {}-byte values, {}",
        opts.clients,
        n.saturating_sub(1).min(10),
        opts.size,
        load.fetch_settings()
    ));
    phase.check_complete(&mut r, "");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_subscriptions_are_disjoint() {
        for i in 0..18 {
            let (frames, keys) = subscriptions(i, 10);
            assert_eq!(frames.len(), 10);
            let unique: std::collections::BTreeSet<usize> = keys.iter().copied().collect();
            assert_eq!(unique.len(), keys.len(), "client {i}: {keys:?}");
            assert!(frames.iter().all(|f| f.len() < 126));
        }
    }
}
