//! Scenario 1, fan-out throughput: records produced as fast as the producer and broker
//! allow, every client reading; delivered messages per second.
//!
//! With `--avro` the topic carries Avro records in the Confluent wire format (20 fields,
//! the stamp the first, see `avro`) and the gateway decodes each once, through a Schema
//! Registry, before its fan-out: every client receives the record as JSON. Run beside the
//! same command without it, it says what decoding costs the fan-out.

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
    /// Records to produce at most.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Seconds to produce for at most.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The gateway's slow-consumer policy. `drop` keeps a client that falls behind
    /// connected (its missing frames are counted) so it stays measured to the end.
    #[arg(long, default_value = "drop")]
    pub slow_consumer: String,
    /// Values as Avro records through a Schema Registry, decoded by the gateway
    /// (`--value-format TOPIC=avro`); `--size` is then not used.
    #[arg(long)]
    pub avro: bool,
}

pub async fn run(common: &Common, opts: &Opts, client_threads: usize) -> Result<Report> {
    let load = &opts.load;
    let avro = if opts.avro { "-avro" } else { "" };
    let name = if load.all {
        format!("fanout{avro}-all-{}c", load.clients)
    } else {
        format!("fanout{avro}-{}c-{}k", load.clients, load.keys)
    };
    let args = Rig::load_args(load, &opts.slow_consumer);
    let mut rig = Rig::start_with(common, "fanout", load.partitions, load.keys, args, opts.avro).await?;
    rig.connect_load(load, 0).await?;
    let plan = Plan {
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
    let phase = rig.phase(plan, &|_| true, &|_| true, Duration::from_secs_f64(load.drain)).await?;

    let mut r = Report::new(name);
    phase.report(&mut r, "", client_threads);
    r.metric("gateway_bytes_per_frame", phase.bytes_sent / phase.frames_sent.max(1.0));
    if opts.avro {
        r.metric("gateway_values_decoded", phase.values_decoded);
        r.metric("gateway_decode_failures", phase.decode_failures);
        // The schema is fetched once, whatever the number of records.
        r.metric("registry_requests", rig.registry.as_ref().map_or(0, |reg| reg.requests()) as f64);
    }
    r.note(format!(
        "{} clients, {}, fan-out {} per record, {}, producer linger.ms={}, {} partition(s), gateway --slow-consumer {} --queue-capacity {}, {}",
        load.clients,
        if load.all { "all on /*".to_string() } else { format!("over {} keys", load.keys) },
        load.fan_out(),
        if opts.avro {
            "20-field Avro values through a Schema Registry, decoded to JSON by the gateway".to_string()
        } else {
            format!("{}-byte values", load.size)
        },
        load.linger_ms.unwrap_or(5),
        load.partitions,
        opts.slow_consumer,
        load.queue_capacity,
        load.fetch_settings()
    ));
    let needed = load.fan_out() * phase.produced.rate();
    if phase.all.rate() >= 0.8 * needed {
        r.note(format!(
            "broker/producer-bound: delivery kept up with production ({:.0} rec/s × {} = {:.0} msg/s offered)",
            phase.produced.rate(),
            load.fan_out(),
            needed
        ));
    }
    if opts.avro {
        r.check(phase.decode_failures > 0.0, || format!("{} values not decoded", phase.decode_failures));
        r.check(phase.values_decoded == 0.0, || "the gateway decoded no value".to_owned());
    }
    if opts.slow_consumer != "drop" || phase.measured.gaps == 0 {
        phase.check_complete(&mut r, "");
    } else {
        r.note("frames dropped by the gateway for clients that fell behind count as missing");
    }
    Ok(r)
}
