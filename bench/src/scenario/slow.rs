//! Scenario 5, slow clients: a share of the clients stops reading; the others' flat-out
//! throughput and paced latency are compared with the same run where everyone reads.
//!
//! Both runs use the same clients, keys and phases; only whether the slow share reads
//! differs, so the comparison does not depend on figures taken at another time.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{Common, Load, Phase, Rig};
use crate::produce::Plan;
use crate::report::Report;

#[derive(Args, Debug, Clone)]
pub struct Opts {
    #[command(flatten)]
    pub load: Load,
    /// Share of each key's clients that stop reading.
    #[arg(long, default_value_t = 0.1)]
    pub slow_fraction: f64,
    /// Offered rate of the latency phase, delivered msg/s over all clients.
    #[arg(long, default_value_t = 50_000.0)]
    pub rate: f64,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 6.0)]
    pub duration: f64,
    /// Records to produce at most in the flat-out phase.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// The gateway's slow-consumer policy.
    #[arg(long, default_value = "drop")]
    pub slow_consumer: String,
}

struct Run {
    paced: Phase,
    flat: Phase,
}

/// One run: `reading` clients read, the measured ones are always the fast set.
async fn one(
    common: &Common,
    opts: &Opts,
    reading: &dyn Fn(usize) -> bool,
    fast: &dyn Fn(usize) -> bool,
    tiny_window_below: usize,
) -> Result<(Run, f64)> {
    let load = &opts.load;
    let mut rig =
        Rig::start(common, "slow", load.partitions, load.keys, Rig::load_args(load, &opts.slow_consumer)).await?;
    rig.connect_load(load, tiny_window_below).await?;
    let drain = Duration::from_secs_f64(load.drain);
    // Warm-up, not measured.
    rig.phase(super::latency::paced(load, opts.rate, 1.0), reading, fast, drain).await?;
    let flat_plan = Plan {
        topic: String::new(),
        keys: Vec::new(),
        size: load.size,
        max_records: opts.records,
        max_time: Duration::from_secs_f64(opts.duration),
        rate: None,
        linger_ms: load.linger_ms.unwrap_or(5),
        first_seq: Vec::new(),
        avro: None,
    };
    // Flat out first: it fills the slow clients' socket buffers and queues, so the paced
    // phase meets them already stuck, as a long-lived slow client would be.
    let flat = rig.phase(flat_plan, reading, fast, drain).await?;
    let paced = rig.phase(super::latency::paced(load, opts.rate, opts.duration), reading, fast, drain).await?;
    let disconnects = rig.gateway.metrics().await?.get("sluice_slow_consumer_disconnects_total");
    Ok((Run { paced, flat }, disconnects))
}

pub async fn run(common: &Common, opts: &Opts, client_threads: usize) -> Result<Report> {
    let load = &opts.load;
    let keys = load.keys.max(1);
    // Within each key's clients, the first `slow_fraction` of them are slow.
    // Client i subscribes to key i mod keys and is that key's (i / keys)th client, so the
    // first `slow_per_key` clients of every key are the clients numbered below `slow_below`.
    let per_key = (load.clients / keys).max(1);
    let slow_per_key = ((per_key as f64) * opts.slow_fraction).round() as usize;
    let slow_below = slow_per_key * keys;
    let is_slow = move |i: usize| i < slow_below;
    let fast = move |i: usize| !is_slow(i);

    let (base, _) = one(common, opts, &|_| true, &fast, 0).await?;
    let (with, disconnects) = one(common, opts, &fast, &fast, slow_below).await?;
    let slow_count = (0..load.clients).filter(|&i| is_slow(i)).count();

    let mut r = Report::new(format!("slow-{}pct-{}c", (opts.slow_fraction * 100.0).round(), load.clients));
    // Both runs measure the same fast set.
    r.metric("slow_clients", slow_count as f64);
    r.metric("baseline_fast_msg_per_s", base.flat.measured.rate());
    r.metric("slow_run_fast_msg_per_s", with.flat.measured.rate());
    r.metric("throughput_ratio", with.flat.measured.rate() / base.flat.measured.rate());
    r.metric("baseline_paced_p99_ms", base.paced.measured.latency_ms(0.99));
    r.metric("slow_paced_p99_ms", with.paced.measured.latency_ms(0.99));
    r.metric("p99_ratio", with.paced.measured.latency_ms(0.99) / base.paced.measured.latency_ms(0.99));
    r.metric("slow_consumer_disconnects", disconnects);
    r.metric("gateway_frames_dropped", with.flat.frames_dropped + with.paced.frames_dropped);
    with.paced.report(&mut r, "slow_paced_", client_threads);
    with.flat.report(&mut r, "slow_flat_", client_threads);
    base.paced.report(&mut r, "baseline_paced_", client_threads);
    base.flat.report(&mut r, "baseline_flat_", client_threads);
    r.note(format!(
        "{} clients over {} keys, {} slow (stop reading after the welcome; minimal receive buffer), gateway --slow-consumer {} --queue-capacity {}; paced phase {:.0} msg/s offered, flat-out phase up to {} records; {}",
        load.clients, keys, slow_count, opts.slow_consumer, load.queue_capacity, opts.rate, opts.records, load.fetch_settings()
    ));
    with.paced.check_complete(&mut r, "slow_paced_");
    base.paced.check_complete(&mut r, "baseline_paced_");
    Ok(r)
}
