//! `sluice-bench-cluster`: the admin API of a cluster under load. Starts a Redis and N
//! replicas (`--cluster`, embedded streams: no broker is involved in what is measured),
//! spreads idle WebSocket clients over them, then measures
//!
//! 1. listing: every page of `GET /api/clients?limit=1000` and the whole walk, entered
//!    through each replica in turn;
//! 2. send-to-one: from the start of `POST /api/clients/{id}/messages` to the frame arriving
//!    on the client's socket, sent through the replica holding the client and through the
//!    others, alternately.
//!
//! Live fan-out with and without `--cluster` is `sluice-bench fanout` with
//! `--gateway-arg=--cluster=…` (see `scripts/bench-cluster.sh`).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use sluice_support::futures_util::{stream, StreamExt};
use sluice_support::process::{launch, scrubbed_command, Stderr};
use sluice_support::tokio_tungstenite::tungstenite::Message;
use sluice_support::{basic, reqwest, try_connect, Redis, Ws, ADMIN_TOKEN, PASSWORD, USER};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "Listing and send-to-one latency of a Sluice cluster on one Redis")]
struct Opts {
    /// The gateway binary to measure (build it with `cargo build --release -p sluice`).
    #[arg(long, env = "SLUICE_BIN", default_value = "target/release/sluice")]
    sluice_bin: PathBuf,
    /// Replicas sharing the Redis.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Idle clients, spread evenly over the replicas.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Whole walks of the list through each replica.
    #[arg(long, default_value_t = 5)]
    walks: usize,
    /// Messages sent to one client (half through the replica holding it), after 50 unmeasured.
    #[arg(long, default_value_t = 1000)]
    sends: usize,
    /// The baseline instead: one gateway without `--cluster` holding every client (no Redis).
    #[arg(long)]
    alone: bool,
    /// Handshakes in flight at once while connecting clients.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
}

/// A replica, killed when dropped.
struct Replica {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// A replica of the cluster on `redis`, or a gateway alone when `None`.
    fn start(binary: &Path, redis: Option<&str>, node: &str) -> Result<Replica> {
        let mut cmd = scrubbed_command(binary);
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--ping-interval", "0", "--node-id", node]);
        if let Some(redis) = redis {
            cmd.args(["--cluster", redis]);
        }
        cmd.env("WS_USERNAME", USER)
            .env("WS_PASSWORD", PASSWORD)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn");
        let launched = launch(cmd, Stderr { keep: Some(40), echo: false }, Duration::from_secs(30))?;
        Ok(Replica { child: launched.child, addr: launched.addr })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

/// p50 / p99 / max in milliseconds.
fn quantiles(h: &Histogram<u64>) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len()
    )
}

fn raise_open_files() -> Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit");
        }
    }
    Ok(limit.rlim_cur)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One walk of the whole list through `replica`: each page's latency (µs), the walk's, and
/// how many clients it listed.
async fn walk(
    http: &reqwest::Client,
    replica: &Replica,
    pages: &mut Histogram<u64>,
) -> Result<(Duration, usize, bool)> {
    let started = Instant::now();
    let (mut cursor, mut listed, mut partial) = (None::<String>, 0, false);
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/clients?limit=1000&cursor={c}"),
            None => "/api/clients?limit=1000".to_owned(),
        };
        let t = Instant::now();
        let response = http.get(replica.url(&path)).bearer_auth(ADMIN_TOKEN).send().await?;
        if !response.status().is_success() {
            bail!("{path}: {}", response.status());
        }
        let body: serde_json::Value = response.json().await?;
        pages.record(t.elapsed().as_micros() as u64)?;
        listed += body["clients"].as_array().map_or(0, Vec::len);
        partial |= body["partial"] == true;
        match body["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok((started.elapsed(), listed, partial)),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut opts = Opts::parse();
    let files = raise_open_files()?;
    if opts.alone {
        opts.replicas = 1;
    }
    let what = if opts.alone {
        "one gateway without --cluster".to_owned()
    } else {
        format!("a cluster of {} replicas", opts.replicas)
    };
    println!("== {what}: {} clients, open-file limit {files}, load {}", opts.clients, loadavg());
    let redis = if opts.alone { None } else { Some(Redis::launch(sluice_support::redis::default_binary())?) };
    let url = redis.as_ref().map(Redis::url);
    let replicas: Vec<Replica> = (0..opts.replicas)
        .map(|i| Replica::start(&opts.sluice_bin, url.as_deref(), &format!("r{i}")))
        .collect::<Result<_>>()?;
    let http = reqwest::Client::builder().no_proxy().build()?;

    // Idle clients, round-robin over the replicas; their sockets are held, never read.
    let auth = basic(USER, PASSWORD);
    let started = Instant::now();
    let sockets: Vec<Ws> = stream::iter(0..opts.clients)
        .map(|i| {
            let url = format!("ws://{}/k{}", replicas[i % replicas.len()].addr, i % 100);
            let auth = auth.clone();
            async move { try_connect(&url, &[("authorization", &auth)]).await.map(|(ws, _)| ws) }
        })
        .buffer_unordered(opts.connect_concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("connect a client")?;
    println!("  connected {} clients in {:.1} s", sockets.len(), started.elapsed().as_secs_f64());

    // Listed whole by every replica before anything is measured.
    let deadline = Instant::now() + Duration::from_secs(120);
    for r in &replicas {
        loop {
            let (_, listed, partial) = walk(&http, r, &mut histogram()).await?;
            if listed == opts.clients && !partial {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} lists {listed} clients (partial {partial}), not {}", r.addr, opts.clients);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // 1. Listing.
    let mut pages = histogram();
    let mut walks = histogram();
    for _ in 0..opts.walks {
        for r in &replicas {
            let (took, listed, partial) = walk(&http, r, &mut pages).await?;
            if listed != opts.clients || partial {
                bail!("a walk listed {listed} clients (partial {partial})");
            }
            walks.record(took.as_micros() as u64)?;
        }
    }
    println!("  list page (limit=1000, {} clients): {}", opts.clients, quantiles(&pages));
    println!("  whole walk ({} pages):              {}", opts.clients.div_ceil(1000), quantiles(&walks));

    // 2. Send-to-one: a client of replica 1, read as frames arrive.
    let holder = &replicas[1 % replicas.len()];
    let (mut ws, _) = try_connect(&format!("ws://{}/solo", holder.addr), &[("authorization", &auth)]).await?;
    let welcome = match ws.next().await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => bail!("no welcome frame: {other:?}"),
    };
    let welcome: serde_json::Value = serde_json::from_str(&welcome)?;
    let id = welcome["replyId"].as_str().context("replyId")?.to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let _ = tx.send((t.to_string(), Instant::now()));
            }
        }
    });
    // Listed (so reachable) through every replica first.
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(10);
        while http.get(r.url(&format!("/api/clients/{id}"))).bearer_auth(ADMIN_TOKEN).send().await?.status() != 200 {
            if Instant::now() > deadline {
                bail!("{id} not found through {}", r.addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let others: Vec<&Replica> = replicas.iter().filter(|r| r.addr != holder.addr).collect();
    let (mut local, mut remote, mut local_api, mut remote_api) = (histogram(), histogram(), histogram(), histogram());
    for i in 0..opts.sends + 50 {
        let through_holder = i % 2 == 0 || others.is_empty();
        let entry = if through_holder { holder } else { others[(i / 2) % others.len()] };
        let body = format!("m{i}");
        let t = Instant::now();
        let response = http
            .post(entry.url(&format!("/api/clients/{id}/messages")))
            .bearer_auth(ADMIN_TOKEN)
            .body(body.clone())
            .send()
            .await?;
        let answered = t.elapsed();
        if response.status() != 202 {
            bail!("send through {}: {}", entry.addr, response.status());
        }
        let arrived = loop {
            let (text, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .context("the message never arrived")?
                .context("the client's socket closed")?;
            if text == body {
                break at.duration_since(t);
            }
        };
        if i < 50 {
            continue;
        }
        let (socket, api) = if through_holder { (&mut local, &mut local_api) } else { (&mut remote, &mut remote_api) };
        socket.record(arrived.as_micros() as u64)?;
        api.record(answered.as_micros() as u64)?;
    }
    println!("  send-to-one, API call to socket, through the holding replica: {}", quantiles(&local));
    if others.is_empty() {
        println!("  (the API's 202 itself: {})", quantiles(&local_api));
    } else {
        println!("  send-to-one, API call to socket, through another replica:     {}", quantiles(&remote));
        println!("  (the API's 202 itself: holding {}; other {})", quantiles(&local_api), quantiles(&remote_api));
    }
    println!("  load after: {}", loadavg());
    drop(sockets);
    Ok(())
}
