//! Scenario 3, memory per idle connection: the gateway's resident memory before and
//! after holding N idle authenticated connections, divided by N.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::{Common, Rig};
use crate::connect::{self, Conn};
use crate::report::Report;
use crate::usage::OwnThreads;

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Connection counts to measure at, ascending, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,19000")]
    pub connections: Vec<usize>,
    /// Keys the idle clients subscribe to (client `i` to key `i mod keys`).
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
    /// Seconds to let the gateway settle before each reading.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Multiplexed connections (`sluice.v1`) holding this many subscriptions each (see the
    /// multiplexed scenario), instead of plain `/{key}` ones.
    #[arg(long, default_value_t = 0)]
    pub subscriptions: usize,
}

/// The gateway's default `--ping-interval`, in seconds.
const PING_INTERVAL_S: u64 = 30;

pub async fn run(common: &Common, opts: &Opts) -> Result<Report> {
    let most = opts.connections.iter().copied().max().unwrap_or(0);
    // Pings at the gateway's default interval: an idle connection in production has its
    // ping timer, and it is part of what the connection costs.
    let args = vec![
        "--max-connections".into(),
        (most + 1000).to_string(),
        "--ping-interval".into(),
        PING_INTERVAL_S.to_string(),
    ];
    let mut rig = Rig::start(common, "memory", 1, opts.keys.max(100), args).await?;
    if opts.subscriptions > 0 {
        rig.target.protocol = Some("sluice.v1".into());
    }
    let settle = Duration::from_secs_f64(opts.settle);
    tokio::time::sleep(settle).await;
    let baseline = rig.gateway.rss_kib()?;

    let mut r = if opts.subscriptions > 0 {
        Report::new(format!("memory-idle-{most}-{}subs", opts.subscriptions))
    } else {
        Report::new(format!("memory-idle-{most}"))
    };
    r.metric("rss_baseline_kib", baseline as f64);
    let mut held: Vec<Conn> = Vec::new();
    let cpu_before = OwnThreads::now();
    for &n in &opts.connections {
        if n < held.len() {
            bail!("connection counts must ascend");
        }
        let paths: Vec<String> = (held.len()..n)
            .map(|i| if opts.subscriptions > 0 { "/".to_owned() } else { format!("/k{}", i % opts.keys.max(1)) })
            .collect();
        let opened = connect::open_many(&rig.target, &paths, held.len(), common.connect_concurrency).await;
        r.check(opened.failed() > 0, || {
            format!("{} of {} connections failed: {}", opened.failed(), paths.len(), opened.describe_failures())
        });
        let conns = if opts.subscriptions > 0 {
            let n = opts.subscriptions;
            let requests = |i: usize| super::multiplexed::subscriptions(i, n).0;
            connect::subscribe_all(opened.conns, &requests, common.connect_concurrency).await?
        } else {
            opened.conns
        };
        held.extend(conns);
        rig.gateway.wait_connections(held.len(), Duration::from_secs(30)).await?;
        tokio::time::sleep(settle).await;
        let rss = rig.gateway.rss_kib()?;
        let per = (rss.saturating_sub(baseline)) as f64 / held.len().max(1) as f64;
        r.metric(&format!("rss_at_{n}_kib"), rss as f64);
        r.metric(&format!("kib_per_conn_at_{n}"), per);
        r.metric(&format!("bytes_per_conn_at_{n}"), per * 1024.0);
    }
    r.metric("client_cpu_s", OwnThreads::now().since(cpu_before).total);
    let what = if opts.subscriptions > 0 {
        format!("multiplexed, {} subscriptions each (1 pattern, the rest exact keys)", opts.subscriptions)
    } else {
        format!("over {} keys", opts.keys)
    };
    r.note(format!(
        "idle authenticated connections (welcome read, nothing streamed, pings every {PING_INTERVAL_S} s), {what}; gateway VmRSS from /proc"
    ));
    // The gateway goes first, so the closes start on its side, not in the clients' ports.
    drop(rig);
    drop(held);
    Ok(r)
}
