//! Scenario 4, accept rate: authenticated connections opened as fast as the gateway takes
//! them, up to N held at once; a connection counts once its welcome frame arrived.

use anyhow::Result;
use clap::Args;

use super::{Common, Rig};
use crate::connect;
use crate::report::Report;
use crate::usage::{self, OwnThreads};

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Keys the clients subscribe to.
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
}

pub async fn run(common: &Common, opts: &Opts, client_threads: usize) -> Result<Report> {
    let args = vec!["--max-connections".into(), (opts.connections + 1000).to_string()];
    let rig = Rig::start(common, "accept", 1, opts.keys, args).await?;
    let paths: Vec<String> = (0..opts.connections).map(|i| format!("/k{}", i % opts.keys.max(1))).collect();

    let own = OwnThreads::now();
    let gateway_cpu = rig.gateway.cpu();
    let broker_cpu = usage::process_cpu(rig.broker.pid());
    let machine = usage::machine_busy();
    let opened = connect::open_many(&rig.target, &paths, 0, common.connect_concurrency).await;
    let wall = opened.elapsed.as_secs_f64();
    let own = OwnThreads::now().since(own);

    let mut r = Report::new(format!("accept-{}", opts.connections));
    r.metric("accepted_per_s", opened.conns.len() as f64 / wall);
    r.metric("accepted", opened.conns.len() as f64);
    r.metric("failed", opened.failed() as f64);
    r.metric("elapsed_s", wall);
    let h = &opened.handshake_us;
    let ms = |q: f64| if h.is_empty() { f64::NAN } else { h.value_at_quantile(q) as f64 / 1000.0 };
    r.metric("handshake_p50_ms", ms(0.5));
    r.metric("handshake_p99_ms", ms(0.99));
    r.metric("handshake_max_ms", if h.is_empty() { f64::NAN } else { h.max() as f64 / 1000.0 });
    let cpu = super::Cpu {
        wall,
        clients: own.clients,
        producer: 0.0,
        gateway: rig.gateway.cpu() - gateway_cpu,
        broker: usage::process_cpu(rig.broker.pid()) - broker_cpu,
        machine: usage::machine_busy() - machine,
    };
    cpu.report(&mut r, "", client_threads);
    r.note(format!(
        "TCP connect + upgrade with Basic auth + welcome frame, {} handshakes in flight, over {} source addresses",
        common.connect_concurrency, common.sources
    ));
    if opened.failed() > 0 {
        r.note(format!("failures: {}", opened.describe_failures()));
    }
    r.check(opened.failed() > 0, || format!("{} connections failed: {}", opened.failed(), opened.describe_failures()));
    drop(rig);
    drop(opened);
    Ok(r)
}
