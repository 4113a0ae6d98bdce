//! Stalled clients: N clients on N distinct keys read their welcome frame and then never
//! read again, while F clients on one more key read everything. Records go round-robin to
//! all those keys until each got M bytes. The figures are about memory: the gateway's
//! resident memory and `sluice_queued_bytes` at their peak, what the gateway shed to stay
//! within its bounds, and whether the fast clients still received every record, in order.
//!
//! Distinct keys are the worst case for the gateway: a record on one key is held for one
//! client only, so nothing is shared between the stalled clients' queues.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Client, Common, Rig};
use crate::connect;
use crate::gateway::Probe;
use crate::produce::Plan;
use crate::report::Report;
use crate::tally::Sequences;

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Clients that stop reading after their welcome frame, each on a key of its own.
    #[arg(long, default_value_t = 20)]
    pub stalled: usize,
    /// Clients that read everything, all on one more key.
    #[arg(long, default_value_t = 4)]
    pub fast: usize,
    /// Bytes per record value. Above 1 KiB a client's 16 MiB byte bound fills before its
    /// 16384-frame bound, as it would with the review's records.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// MiB produced to each key. Past what the kernel's socket buffers take (at most
    /// tcp_wmem's maximum, 4 MiB by default, and far less with the stalled clients' tiny
    /// receive windows) everything else waits in the gateway.
    #[arg(long, default_value_t = 24.0)]
    pub mib_per_key: f64,
    /// The gateway's slow-consumer policy (the gateway's own default).
    #[arg(long, default_value = "disconnect")]
    pub slow_consumer: String,
    /// The gateway consumer's fetch.wait.max.ms (see the other scenarios).
    #[arg(long, default_value_t = 1)]
    pub fetch_wait_ms: u32,
    /// Seconds to produce for at most.
    #[arg(long, default_value_t = 120.0)]
    pub duration: f64,
    /// Seconds to wait for the fast clients' delivery to finish after the last record.
    #[arg(long, default_value_t = 30.0)]
    pub drain: f64,
    /// Milliseconds between two readings of the gateway's resident memory and metrics.
    #[arg(long, default_value_t = 50)]
    pub sample_ms: u64,
    /// Seconds the gateway's connection count must stay unchanged at the end before the
    /// stalled clients still connected are counted: a client it closes while its socket is
    /// full is held until its close frame times out (5 s).
    #[arg(long, default_value_t = 6.0)]
    pub settle: f64,
}

/// The highest readings of a sampling task.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    value: Option<f64>,
    samples: u64,
}

impl Peak {
    fn see(&mut self, v: f64) {
        self.value = Some(self.value.map_or(v, |p| p.max(v)));
        self.samples += 1;
    }
}

/// Samples the gateway's VmRSS until `stop`. Apart from the metrics scrape, so a slow
/// `/metrics` answer while the gateway is busy does not thin out the memory readings.
fn sample_rss(probe: Probe, every: Duration, mut stop: watch::Receiver<bool>) -> JoinHandle<Peak> {
    tokio::spawn(async move {
        let mut peak = Peak::default();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = tick.tick() => {}
            }
            if let Ok(kib) = probe.rss_kib() {
                peak.see(kib as f64);
            }
        }
        peak
    })
}

/// Samples one gauge of `/metrics` until `stop`; no value at all when the build does not
/// export it.
fn sample_gauge(
    probe: Probe,
    name: &'static str,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Peak> {
    tokio::spawn(async move {
        let mut peak = Peak::default();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = tick.tick() => {}
            }
            if let Some(v) = probe.metrics().await.ok().and_then(|m| m.find(name)) {
                peak.see(v);
            }
        }
        peak
    })
}

const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(common: &Common, opts: &Opts, client_threads: usize) -> Result<Report> {
    if opts.stalled == 0 || opts.fast == 0 {
        bail!("--stalled and --fast must be at least 1");
    }
    let stalled = opts.stalled;
    let keys = stalled + 1;
    let fast_key = stalled;
    let args = vec![
        "--slow-consumer".into(),
        opts.slow_consumer.clone(),
        "--kafka-property".into(),
        format!("fetch.wait.max.ms={}", opts.fetch_wait_ms),
    ];
    let mut rig = Rig::start(common, "stalled", 1, keys, args).await?;
    let probe = rig.gateway.probe();
    let rss_start = probe.rss_kib()?;

    // Client i < N is stalled on key k{i} with the smallest receive buffer (so the
    // gateway meets a full socket at once); the others read key k{N}.
    let total = stalled + opts.fast;
    let paths: Vec<String> = (0..total).map(|i| format!("/k{}", i.min(fast_key))).collect();
    rig.target.tiny_window_below = stalled;
    let opened = connect::open_many(&rig.target, &paths, 0, common.connect_concurrency).await;
    if opened.failed() > 0 {
        bail!("{} of {total} clients failed to connect: {}", opened.failed(), opened.describe_failures());
    }
    rig.gateway.wait_connections(total, Duration::from_secs(30)).await?;
    for conn in opened.conns {
        let key = Some(vec![conn.index.min(fast_key)]);
        rig.clients.push(Client { conn: Some(conn), next: Sequences::new(keys), keys: key, alive: true });
    }
    let rss_baseline = probe.rss_kib()?;
    let before = rig.gateway.metrics().await?;

    let records_per_key = ((opts.mib_per_key * MIB) / opts.size.max(1) as f64).ceil() as u64;
    let plan = Plan {
        topic: String::new(),
        keys: Vec::new(),
        size: opts.size,
        max_records: records_per_key * keys as u64,
        max_time: Duration::from_secs_f64(opts.duration),
        rate: None,
        linger_ms: 5,
        first_seq: Vec::new(),
        avro: None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let every = Duration::from_millis(opts.sample_ms.max(1));
    let rss_task = sample_rss(probe, every, stop_rx.clone());
    let queued_task = sample_gauge(probe, "sluice_queued_bytes", every, stop_rx);

    let is_fast = move |i: usize| i >= stalled;
    let phase = rig.phase(plan, &is_fast, &is_fast, Duration::from_secs_f64(opts.drain)).await?;

    // Let the clients the gateway closed while their socket was full go: it holds each
    // until its close frame times out. Then the rest of the connections are the fast
    // clients still reading and the stalled clients never closed.
    let settle = Duration::from_secs_f64(opts.settle);
    let deadline = Instant::now() + settle * 4;
    let mut last = rig.gateway.metrics().await?.get("sluice_connections");
    let mut since = Instant::now();
    while since.elapsed() < settle && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rig.gateway.metrics().await?.get("sluice_connections");
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    let _ = stop_tx.send(true);
    let rss_peak = rss_task.await?;
    let queued_peak = queued_task.await?;
    let hwm = crate::usage::peak_rss_kib(probe.pid)?;
    let rss_end = probe.rss_kib()?;
    let after = rig.gateway.metrics().await?;

    let fast_alive = rig.clients.iter().enumerate().filter(|(i, c)| is_fast(*i) && c.alive).count();
    let stalled_connected = (last - fast_alive as f64).max(0.0);
    let peak_kib = rss_peak.value.unwrap_or(f64::NAN).max(rss_baseline as f64);

    let label =
        if common.gateway_args.is_empty() { String::new() } else { format!(" {}", common.gateway_args.join(" ")) };
    let mut r = Report::new(format!("stalled-{stalled}x{}MiB{label}", opts.mib_per_key));
    r.metric("stalled_clients", stalled as f64);
    r.metric("fast_clients", opts.fast as f64);
    r.metric("record_bytes", opts.size as f64);
    r.metric(
        "produced_mib_per_key",
        phase.produced.acked.first().copied().unwrap_or(0) as f64 * opts.size as f64 / MIB,
    );
    r.metric("rss_start_kib", rss_start as f64);
    r.metric("rss_baseline_kib", rss_baseline as f64);
    r.metric("rss_peak_kib", peak_kib);
    r.metric("rss_hwm_kib", hwm as f64);
    // Beside the queued bytes at the end: what the allocator keeps after queues are freed.
    r.metric("rss_end_kib", rss_end as f64);
    r.metric("rss_growth_mib", (peak_kib - rss_baseline as f64) / 1024.0);
    r.metric("rss_growth_per_stalled_mib", (peak_kib - rss_baseline as f64) / 1024.0 / stalled as f64);
    // Absent on builds before the gateway-wide bound: NaN, printed as "-", and said below.
    r.metric("queued_bytes_peak_mib", queued_peak.value.map_or(f64::NAN, |b| b / MIB));
    r.metric("queued_bytes_end_mib", after.find("sluice_queued_bytes").map_or(f64::NAN, |b| b / MIB));
    let sheds = after.find("sluice_queue_bound_sheds_total").map(|a| a - before.get("sluice_queue_bound_sheds_total"));
    r.metric("queue_bound_sheds", sheds.unwrap_or(f64::NAN));
    r.metric(
        "slow_consumer_disconnects",
        after.get("sluice_slow_consumer_disconnects_total") - before.get("sluice_slow_consumer_disconnects_total"),
    );
    r.metric("stalled_still_connected", stalled_connected);
    let fast = &phase.measured;
    let in_order = fast.unique == phase.measured_expected && fast.gaps == 0 && fast.duplicates == 0;
    r.metric("fast_expected", phase.measured_expected as f64);
    r.metric("fast_delivered", fast.unique as f64);
    r.metric("fast_gaps", fast.gaps as f64);
    r.metric("fast_duplicates", fast.duplicates as f64);
    r.metric("fast_all_in_order", if in_order { 1.0 } else { 0.0 });
    r.metric("fast_msg_per_s", fast.rate());
    r.metric("fast_mib_per_s", fast.rate() * opts.size as f64 / MIB);
    r.metric("produced_rec_per_s", phase.produced.rate());
    r.metric("rss_samples", rss_peak.samples as f64);
    phase.cpu.report(&mut r, "", client_threads);
    if queued_peak.value.is_none() {
        r.note("sluice_queued_bytes: n/a (this build does not export it)");
    }
    if sheds.is_none() {
        r.note("sluice_queue_bound_sheds_total: n/a (this build does not export it)");
    }
    r.note(format!(
        "{stalled} stalled clients on {stalled} keys (welcome read, then never; minimal receive buffer), {} fast clients on one more key; {} records of {} bytes per key, round-robin, produced flat out; gateway --slow-consumer {}{label}; VmRSS sampled every {} ms; consumer fetch.wait.max.ms={}",
        opts.fast, records_per_key, opts.size, opts.slow_consumer, opts.sample_ms, opts.fetch_wait_ms
    ));
    r.check(phase.produced.total_acked() < records_per_key * keys as u64, || {
        format!(
            "produced {} of {} records within {} s",
            phase.produced.total_acked(),
            records_per_key * keys as u64,
            opts.duration
        )
    });
    phase.check_complete(&mut r, "fast_");
    r.check(!in_order, || format!("fast clients: {} gaps, {} duplicates", fast.gaps, fast.duplicates));
    Ok(r)
}
