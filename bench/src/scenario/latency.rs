//! Scenario 2, latency: records produced open-loop at fixed rates; produce→receive
//! percentiles measured from each record's intended send time.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{Common, Load, Rig};
use crate::produce::Plan;
use crate::report::Report;

#[derive(Args, Debug, Clone)]
pub struct Opts {
    #[command(flatten)]
    pub load: Load,
    /// Offered rates in delivered messages per second (records/s × fan-out), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    pub rates: Vec<f64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// Seconds at the first rate before measuring (connections and consumer warm up).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// The gateway's slow-consumer policy.
    #[arg(long, default_value = "disconnect")]
    pub slow_consumer: String,
}

pub fn paced(load: &Load, delivered_rate: f64, seconds: f64) -> Plan {
    let record_rate = delivered_rate / load.fan_out();
    Plan {
        topic: String::new(),
        keys: Vec::new(),
        size: load.size,
        max_records: (record_rate * seconds).ceil() as u64,
        // Room to finish a schedule that ran late: open-loop means catching up, not skipping.
        max_time: Duration::from_secs_f64(seconds * 2.0 + 1.0),
        rate: Some(record_rate),
        linger_ms: load.linger_ms.unwrap_or(0),
        first_seq: Vec::new(),
        avro: None,
    }
}

pub async fn run(common: &Common, opts: &Opts, client_threads: usize) -> Result<Vec<Report>> {
    let load = &opts.load;
    let mut rig =
        Rig::start(common, "latency", load.partitions, load.keys, Rig::load_args(load, &opts.slow_consumer)).await?;
    rig.connect_load(load, 0).await?;
    let drain = Duration::from_secs_f64(load.drain);
    if opts.warmup > 0.0 {
        let first = opts.rates.first().copied().unwrap_or(10_000.0);
        rig.phase(paced(load, first, opts.warmup), &|_| true, &|_| true, drain).await?;
    }
    let mut reports = Vec::new();
    for &rate in &opts.rates {
        let phase = rig.phase(paced(load, rate, opts.duration), &|_| true, &|_| true, drain).await?;
        let mut r = Report::new(format!("latency-{}k-fanout{}", (rate / 1000.0).round(), load.fan_out()));
        r.metric("offered_msg_per_s", rate);
        phase.report(&mut r, "", client_threads);
        r.metric("producer_max_behind_ms", phase.produced.max_behind.as_secs_f64() * 1000.0);
        r.note(format!(
            "{} clients, {}, fan-out {}, {:.0} records/s, producer linger.ms={}, {}",
            load.clients,
            if load.all { "all on /*".to_string() } else { format!("over {} keys", load.keys) },
            load.fan_out(),
            rate / load.fan_out(),
            load.linger_ms.unwrap_or(0),
            load.fetch_settings()
        ));
        phase.check_complete(&mut r, "");
        reports.push(r);
    }
    Ok(reports)
}
