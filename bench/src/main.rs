//! `sluice-bench`: the load generator for Sluice. Each scenario starts its own Tansu
//! broker and gateway, drives them with WebSocket clients and a Kafka producer, and
//! prints what it measured, with the CPU each process used beside every figure.

mod avro;
mod broker;
mod clock;
mod connect;
mod decode;
mod envelope;
mod gateway;
mod payload;
mod produce;
mod receive;
mod report;
mod scenario;
mod summary;
mod tally;
mod usage;
mod wire;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use scenario::Common;

#[derive(Parser, Debug)]
#[command(about = "Load generator and benchmark scenarios for Sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Runtime threads reading the clients' sockets.
    #[arg(long, global = true, default_value_t = 1)]
    client_threads: usize,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Scenario 1: fan-out throughput, records produced as fast as possible.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenario::fanout::Opts,
    },
    /// Scenario 2: produce→receive latency at fixed offered rates.
    Latency {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenario::latency::Opts,
    },
    /// Scenario 3: gateway memory per idle connection.
    Memory {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenario::memory::Opts,
    },
    /// Many subscriptions per connection (`sluice.v1`): patterns and exact keys, fan-out
    /// throughput; set beside scenario 1.
    Multiplexed {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenario::multiplexed::Opts,
    },
    /// Scenario 4: authenticated connections accepted per second.
    Accept {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenario::accept::Opts,
    },
    /// Scenario 5: fast clients' throughput and latency while some stop reading.
    Slow {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenario::slow::Opts,
    },
    /// Gateway memory while clients on distinct keys stop reading; the fast clients' delivery.
    Stalled {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenario::stalled::Opts,
    },
    /// Mass reconnect: every client closes, records arrive, every client resumes from its
    /// cursor at once; time until all have what they missed, memory, broker connections.
    Reconnect {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenario::reconnect::Opts,
    },
    /// Single-core decode throughput of a 20-field Avro record and Protobuf message, through
    /// the gateway's decoder; no broker, no gateway.
    Decode {
        #[command(flatten)]
        opts: decode::Opts,
    },
    /// Medians, minima and maxima of results appended with --json, as Markdown.
    Summary { file: PathBuf },
}

/// Cores of the machine, for saying when everything together ran out of CPU.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Summary { file } = &cli.command {
        return summary::print(file);
    }
    if let Command::Decode { opts } = &cli.command {
        let reports = decode::run(opts)?;
        for r in &reports {
            r.print();
            if let Some(path) = &opts.json {
                r.append_json(path)?;
            }
        }
        let problems: usize = reports.iter().map(|r| r.problems.len()).sum();
        anyhow::ensure!(problems == 0, "{problems} harness problem(s), see above");
        return Ok(());
    }
    clock::start();
    let limit = usage::raise_open_files()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .thread_name(usage::CLIENT_THREAD)
        .enable_all()
        .build()?;
    let threads = cli.client_threads.max(1);
    let (common, reports) = runtime.block_on(async {
        Ok::<_, anyhow::Error>(match &cli.command {
            Command::Fanout { common, opts } => (common, vec![scenario::fanout::run(common, opts, threads).await?]),
            Command::Latency { common, opts } => (common, scenario::latency::run(common, opts, threads).await?),
            Command::Memory { common, opts } => (common, vec![scenario::memory::run(common, opts).await?]),
            Command::Multiplexed { common, opts } => {
                (common, vec![scenario::multiplexed::run(common, opts, threads).await?])
            }
            Command::Accept { common, opts } => (common, vec![scenario::accept::run(common, opts, threads).await?]),
            Command::Slow { common, opts } => (common, vec![scenario::slow::run(common, opts, threads).await?]),
            Command::Stalled { common, opts } => (common, vec![scenario::stalled::run(common, opts, threads).await?]),
            Command::Reconnect { common, opts } => {
                (common, vec![scenario::reconnect::run(common, opts, threads).await?])
            }
            Command::Summary { .. } | Command::Decode { .. } => unreachable!("handled above"),
        })
    })?;
    // Sockets and tasks go before the figures are final; nothing below waits on them.
    runtime.shutdown_background();
    let mut problems = 0;
    for r in &reports {
        r.print();
        if let Some(path) = &common.json {
            r.append_json(path)?;
        }
        problems += r.problems.len();
    }
    println!("  (client: {threads} runtime thread(s), open-file limit {limit}, {} cores)", cores());
    if common.strict && problems > 0 {
        anyhow::bail!("{problems} harness problem(s), see above");
    }
    Ok(())
}
