//! Mass reconnect, as after a load balancer's reload: N clients read records with
//! `?envelope=true`, each keeping the cursor of the last frame it read; all of them close;
//! records are produced while they are away; then all reconnect at once with
//! `?cursor=<theirs>`. Measured: the time from the first reconnect attempt until every
//! client has every record it missed (each client checks its own: none missing, none twice,
//! `"resumed":true` in its welcome), the gateway's peak resident memory meanwhile, refused
//! or failed handshakes, how resumes were served (`sluice_resumes_total{outcome}`), and the
//! TCP connections the gateway holds to the broker, which must not depend on N: older
//! records come through one shared Kafka reader, never a consumer per client.
//!
//! By default the missed records are still in the gateway's replay buffer (served from
//! memory); `--replay-buffer-bytes` small makes it too short, so they come from Kafka.
//!
//! Clients are spread over keys rather than all on `/*` by default: a keyed resume must
//! pick its key's records out of everything the gateway holds or reads back after the
//! cursor (with 10 keys, 10,000 records for the 1,000 it gets), which `/*` skips. The frames
//! sent are the same 1,000 per client either way.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{Common, Rig};
use crate::connect::{self, Conn, Target};
use crate::gateway::{Metrics, Probe};
use crate::produce::{self, Plan, Produced};
use crate::report::Report;
use crate::usage::{self, OwnThreads};
use crate::wire::{self, Frame};
use crate::{envelope, payload};

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Clients that disconnect and resume.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Keys the records cycle over; client `i` subscribes to key `i mod keys`.
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
    /// Subscribe every client to `/*` instead.
    #[arg(long)]
    pub all: bool,
    /// Records of its subscription each client misses while it is away.
    #[arg(long, default_value_t = 1000)]
    pub behind: u64,
    /// Records per key each client reads before it disconnects (its cursor is the last
    /// one's).
    #[arg(long, default_value_t = 10)]
    pub live: u64,
    /// Records per key produced before the clients first connect: older history that fills
    /// the replay buffer without being part of anyone's resume.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// The gateway's `--replay-buffer-bytes`; small, the records missed are read back
    /// from Kafka. Unset: the gateway's default (a quarter of its queued-bytes bound, at
    /// most 64 MiB), which holds them all.
    #[arg(long)]
    pub replay_buffer_bytes: Option<usize>,
    /// The gateway consumer's fetch.wait.max.ms (see the other scenarios).
    #[arg(long, default_value_t = 1)]
    pub fetch_wait_ms: u32,
    /// Seconds a reconnecting client may take from its connect to the upgrade's answer.
    #[arg(long, default_value_t = 30.0)]
    pub handshake_timeout: f64,
    /// Seconds the whole reconnect may take.
    #[arg(long, default_value_t = 180.0)]
    pub drain: f64,
    /// Seconds without a frame arriving anywhere after which the clients still short of
    /// their records are given up on.
    #[arg(long, default_value_t = 30.0)]
    pub idle: f64,
    /// Seconds the clients keep reading after the last one has everything, so a record
    /// sent twice late is still seen.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// End what is produced while the clients are away with a tombstone in a batch of its
    /// own, which no client receives. Tansu 0.6.0 answers a partition's high watermark as
    /// the first offset of its last batch plus one, and the gateway's Kafka reader ends
    /// each range there, so without it the records of the last batch are not read back.
    #[arg(long)]
    pub end_with_tombstone: bool,
    /// Milliseconds between two readings of the gateway's resident memory.
    #[arg(long, default_value_t = 50)]
    pub sample_ms: u64,
    /// Milliseconds between two counts of the gateway's connections to the broker (each
    /// reads the namespace's TCP table and the gateway's descriptors: not free).
    #[arg(long, default_value_t = 250)]
    pub broker_sample_ms: u64,
}

impl Opts {
    fn path(&self, client: usize) -> String {
        if self.all {
            "/*".into()
        } else {
            format!("/k{}", client % self.keys.max(1))
        }
    }

    /// The key client `i` receives, `None` for every key.
    fn key_of(&self, client: usize) -> Option<usize> {
        (!self.all).then(|| client % self.keys.max(1))
    }
}

/// The gateway's own default `--max-resume-records`.
const GATEWAY_MAX_RESUME_RECORDS: u64 = 10_000;
const MIB: f64 = 1024.0 * 1024.0;

/// What one client saw of its records: per key, the next sequence number it expects.
#[derive(Debug, Clone)]
struct Seen {
    next: Vec<u64>,
    /// Stamped records received.
    received: u64,
    /// Records received again (a sequence number below the next expected).
    duplicates: u64,
    /// Records skipped between two received ones of the same key.
    gaps: u64,
    /// Frames that were neither the welcome nor a stamped envelope.
    other: u64,
    /// The first gap: key, the sequence number expected, the one received.
    first_gap: Option<(u32, u64, u64)>,
}

impl Seen {
    /// Expecting each key's records from `next` on.
    fn expecting(next: &[u64]) -> Seen {
        Seen { next: next.to_vec(), received: 0, duplicates: 0, gaps: 0, other: 0, first_gap: None }
    }

    /// Accounts for one envelope frame; its cursor is kept in `cursor` when given.
    fn frame(&mut self, frame: &[u8], cursor: Option<&mut Vec<u8>>) {
        let Some(stamp) = envelope::value(frame).and_then(payload::parse) else {
            self.other += 1;
            return;
        };
        let Some(next) = self.next.get_mut(stamp.key as usize) else {
            self.other += 1;
            return;
        };
        self.received += 1;
        if stamp.seq > *next {
            self.first_gap.get_or_insert((stamp.key, *next, stamp.seq));
        }
        if stamp.seq >= *next {
            self.gaps += stamp.seq - *next;
            *next = stamp.seq + 1;
        } else {
            self.duplicates += 1;
        }
        if let (Some(cursor), Some(c)) = (cursor, envelope::cursor(frame)) {
            cursor.clear();
            cursor.extend_from_slice(c);
        }
    }

    fn unique(&self) -> u64 {
        self.received - self.duplicates
    }

    /// The same expectations, with counts starting over for the next connection.
    fn starting_over(self) -> Seen {
        Seen { next: self.next, ..Seen::expecting(&[]) }
    }
}

/// A client between the two connections: its check and the cursor it will resume from.
struct Away {
    seen: Seen,
    cursor: String,
}

/// The welcome frame's `cursor` and `resumed`.
fn welcome(frame: &[u8]) -> Result<(String, Option<bool>)> {
    let v: serde_json::Value = serde_json::from_slice(frame).context("the welcome frame is not JSON")?;
    if v["type"] != "connected" {
        bail!("the first frame is not the welcome: {}", String::from_utf8_lossy(frame));
    }
    let cursor = v["cursor"].as_str().context("the welcome frame has no cursor")?.to_owned();
    Ok((cursor, v["resumed"].as_bool()))
}

/// Reads the welcome, then frames until `seen` has `want` records, keeping the last
/// cursor. Nothing else is produced meanwhile, so the connection is then quiet.
async fn read_live(mut conn: Conn, mut seen: Seen, want: u64) -> Result<(Conn, Away)> {
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        while let Some(frame) = conn.reader.next_frame()? {
            match frame {
                Frame::Data(data) => match cursor.as_mut() {
                    None => cursor = Some(welcome(data)?.0.into_bytes()),
                    Some(c) => seen.frame(data, Some(c)),
                },
                Frame::Ping(payload) => conn.stream.write_all(&wire::pong(payload)).await?,
                Frame::Pong => {}
                Frame::Close(code) => bail!("closed by the gateway ({code:?}) before it read its records"),
            }
        }
        if let Some(c) = &cursor {
            if seen.unique() >= want {
                let cursor = String::from_utf8(c.clone()).context("cursor")?;
                return Ok((conn, Away { seen, cursor }));
            }
        }
        let n = conn.stream.read(conn.reader.spare()).await?;
        if n == 0 {
            bail!("closed before it read its records");
        }
        conn.reader.filled(n);
    }
}

/// Closes a connection the way a client leaving does: a close frame, then reading until
/// the gateway's close frame or the end of the stream.
async fn close(mut conn: Conn) -> Result<()> {
    conn.stream.write_all(&wire::close(1000)).await?;
    loop {
        while let Some(frame) = conn.reader.next_frame()? {
            if let Frame::Close(_) = frame {
                return Ok(());
            }
        }
        let n = conn.stream.read(conn.reader.spare()).await?;
        if n == 0 {
            return Ok(());
        }
        conn.reader.filled(n);
    }
}

/// Counts shared by every reconnecting client, for the wait to know when it is over.
#[derive(Default)]
struct Progress {
    /// Stamped frames received by all clients.
    frames: AtomicU64,
    /// Clients that have every record they missed, or have given up (refused, closed).
    done: AtomicUsize,
}

/// One client's reconnect.
struct Resumed {
    index: usize,
    /// Connect to the upgrade's 101.
    handshake: Option<Duration>,
    failure: Option<String>,
    /// Since the storm's start.
    welcome_at: Option<Duration>,
    resumed: Option<bool>,
    complete_at: Option<Duration>,
    /// When its last record arrived, since the storm's start.
    last_at: Option<Duration>,
    seen: Seen,
    want: u64,
    /// Closed by the gateway (code) or lost.
    closed: Option<u16>,
    lost: Option<String>,
    /// Kept open until the gateway has gone, so the closes start on its side.
    conn: Option<Conn>,
}

struct Storm {
    target: Target,
    permits: Arc<Semaphore>,
    started: Instant,
    progress: Arc<Progress>,
    handshake_timeout: Duration,
}

/// Reconnects client `index` to `path` and reads until told to stop: the welcome first,
/// then every record it missed, then whatever else comes (a record sent twice late).
async fn resume(
    storm: Arc<Storm>,
    index: usize,
    path: String,
    seen: Seen,
    want: u64,
    stop: watch::Receiver<bool>,
) -> Resumed {
    let mut r = Resumed {
        index,
        handshake: None,
        failure: None,
        welcome_at: None,
        resumed: None,
        complete_at: None,
        last_at: None,
        seen,
        want,
        closed: None,
        lost: None,
        conn: None,
    };
    let opened = {
        // Only the handshake waits for a permit: a client reads its records without one.
        let _permit = storm.permits.acquire().await.expect("semaphore open");
        let began = Instant::now();
        let opened = tokio::time::timeout(storm.handshake_timeout, connect::open(&storm.target, &path, index)).await;
        r.handshake = Some(began.elapsed());
        opened
    };
    let mut conn = match opened {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            r.failure = Some(match e.source() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            });
            storm.progress.done.fetch_add(1, Ordering::Relaxed);
            return r;
        }
        Err(_) => {
            r.failure = Some("timeout".into());
            storm.progress.done.fetch_add(1, Ordering::Relaxed);
            return r;
        }
    };
    if let Err(e) = read_resumed(&storm, &mut conn, &mut r, stop).await {
        r.lost = Some(e.to_string());
    }
    if r.complete_at.is_none() {
        storm.progress.done.fetch_add(1, Ordering::Relaxed);
    }
    r.conn = Some(conn);
    r
}

async fn read_resumed(storm: &Storm, conn: &mut Conn, r: &mut Resumed, mut stop: watch::Receiver<bool>) -> Result<()> {
    loop {
        let before = r.seen.received;
        let mut reply = None;
        while let Some(frame) = conn.reader.next_frame()? {
            match frame {
                Frame::Data(data) if r.welcome_at.is_none() => {
                    r.welcome_at = Some(storm.started.elapsed());
                    r.resumed = welcome(data)?.1;
                }
                Frame::Data(data) => r.seen.frame(data, None),
                Frame::Ping(payload) => reply = Some(wire::pong(payload)),
                Frame::Pong => {}
                Frame::Close(code) => {
                    r.closed = Some(code.unwrap_or(1005));
                    reply = Some(wire::close(code.unwrap_or(1000)));
                    break;
                }
            }
        }
        if r.seen.received > before {
            storm.progress.frames.fetch_add(r.seen.received - before, Ordering::Relaxed);
            r.last_at = Some(storm.started.elapsed());
        }
        if r.complete_at.is_none() && r.seen.unique() >= r.want {
            r.complete_at = Some(storm.started.elapsed());
            storm.progress.done.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(reply) = reply {
            conn.stream.write_all(&reply).await?;
        }
        if r.closed.is_some() {
            return Ok(());
        }
        let n = tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            n = conn.stream.read(conn.reader.spare()) => n?,
        };
        if n == 0 {
            bail!("closed without a close frame");
        }
        conn.reader.filled(n);
    }
}

/// The highest of a sampled value.
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

/// Samples the gateway's VmRSS until `stop`.
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

/// Counts the gateway's connections to the broker until `stop`, on a thread of its own:
/// reading the TCP table of a namespace with tens of thousands of sockets blocks for
/// milliseconds, which the clients' runtime thread cannot spare.
fn sample_broker_connections(
    pid: u32,
    port: u16,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Peak> {
    std::thread::spawn(move || {
        let mut peak = Peak::default();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = usage::established_to(pid, port) {
                peak.see(n as f64);
            }
            std::thread::sleep(every);
        }
        peak
    })
}

async fn produce(rig: &Rig, keys: usize, per_key: u64, size: usize, first_seq: Vec<u64>) -> Result<Produced> {
    let plan = Plan {
        topic: rig.topic.clone(),
        keys: rig.keys.clone(),
        size,
        max_records: per_key * keys as u64,
        max_time: Duration::from_secs(120),
        rate: None,
        linger_ms: 5,
        first_seq,
        avro: rig.avro.clone(),
    };
    let producer = produce::spawn(rig.broker.address(), plan);
    let produced = tokio::task::spawn_blocking(move || producer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    if produced.total_acked() < per_key * keys as u64 || produced.failed > 0 {
        bail!("produced {} of {} records ({} failed)", produced.total_acked(), per_key * keys as u64, produced.failed);
    }
    Ok(produced)
}

/// Produces a tombstone (a record without a value) in a batch of its own: the gateway
/// sends it to nobody, but it is the partition's last batch.
async fn tombstone(rig: &Rig) -> Result<()> {
    let (brokers, topic) = (rig.broker.address(), rig.topic.clone());
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        producer.send(BaseRecord::<str, [u8]>::to(&topic).key("end")).map_err(|(e, _)| e)?;
        producer.flush(Duration::from_secs(30))?;
        Ok(())
    })
    .await?
}

/// Waits until the gateway has consumed `records` in all, so everything produced is behind
/// the stream's position (in its replay buffer, or behind it) before the clients return.
async fn wait_consumed(rig: &Rig, records: u64, within: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let consumed = rig.gateway.metrics().await?.get("sluice_records_consumed_total");
        if consumed >= records as f64 {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("the gateway consumed {consumed} of {records} records within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gateway's connections to the broker once the count has not changed for 2 s (at
/// most 20 s).
async fn settled_broker_connections(pid: u32, port: u16) -> Result<usize> {
    let started = Instant::now();
    let mut last = usage::established_to(pid, port)?;
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = usage::established_to(pid, port)?;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Ok(last)
}

/// Waits until the gateway counts at most `n` connections.
async fn wait_connections_down_to(rig: &Rig, n: usize, within: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let now = rig.gateway.metrics().await?.get("sluice_connections");
        if now <= n as f64 {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("the gateway still counts {now} connections after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const OUTCOMES: [&str; 3] = ["memory", "kafka", "incomplete"];

fn resumes(m: &Metrics, outcome: &str) -> f64 {
    m.labelled("sluice_resumes_total", "outcome", outcome)
}

pub async fn run(common: &Common, opts: &Opts, client_threads: usize) -> Result<Report> {
    if opts.clients == 0 || opts.behind == 0 || opts.live == 0 {
        bail!("--clients, --behind and --live must be at least 1");
    }
    let keys = opts.keys.max(1);
    // Records of each key produced while the clients are away: a keyed client misses its
    // key's, a `/*` client all of them.
    let away_per_key = if opts.all { opts.behind.div_ceil(keys as u64) } else { opts.behind };
    let away = away_per_key * keys as u64;
    // The settings that shape the resume, stated in the report.
    let mut resume_args: Vec<String> = Vec::new();
    if let Some(bytes) = opts.replay_buffer_bytes {
        resume_args.extend(["--replay-buffer-bytes".into(), bytes.to_string()]);
    }
    // A resume further behind the replay buffer than this, in records of every key, is not
    // read back: raise it when the scenario asks for more, so what is measured is the
    // reading back rather than the refusal.
    if away > GATEWAY_MAX_RESUME_RECORDS {
        resume_args.extend(["--max-resume-records".into(), away.to_string()]);
    }
    let mut args = vec![
        "--max-connections".into(),
        (opts.clients + 1000).to_string(),
        "--kafka-property".into(),
        format!("fetch.wait.max.ms={}", opts.fetch_wait_ms),
    ];
    args.extend(resume_args.iter().cloned());
    let rig = Rig::start(common, "reconnect", 1, keys, args).await?;
    let probe = rig.gateway.probe();
    let broker_port = rig.broker.port();
    // librdkafka opens its connections over the first second or two (bootstrap, then the
    // broker the metadata names, for each of the gateway's clients): counts taken before
    // they are all open would read as growth during the storm.
    let broker_conns_idle = settled_broker_connections(probe.pid, broker_port).await?;
    // Clients connect after it, so they start at the stream's end: the prefill is only
    // in the replay buffer.
    let prefilled = if opts.prefill > 0 {
        let p = produce(&rig, keys, opts.prefill, opts.size, vec![0; keys]).await?;
        wait_consumed(&rig, p.total_acked(), Duration::from_secs(120)).await?;
        p.next_seq
    } else {
        vec![0; keys]
    };
    let rss_start = probe.rss_kib()?;

    // Connect, read the live records, remember the cursor.
    let paths: Vec<String> = (0..opts.clients).map(|i| format!("{}?envelope=true", opts.path(i))).collect();
    // The welcome is read below with the records, for its cursor.
    let target = Target { welcome: false, ..rig.target.clone() };
    let opened = connect::open_many(&target, &paths, 0, common.connect_concurrency).await;
    if opened.failed() > 0 {
        bail!("{} of {} clients failed to connect: {}", opened.failed(), paths.len(), opened.describe_failures());
    }
    rig.gateway.wait_connections(opts.clients, Duration::from_secs(60)).await?;
    let rss_connected = probe.rss_kib()?;
    let broker_conns_connected = usage::established_to(probe.pid, broker_port)?;
    let want_live = if opts.all { opts.live * keys as u64 } else { opts.live };
    let readers: Vec<_> = opened
        .conns
        .into_iter()
        .map(|conn| tokio::spawn(read_live(conn, Seen::expecting(&prefilled), want_live)))
        .collect();
    let live = produce(&rig, keys, opts.live, opts.size, prefilled.clone()).await?;
    let mut conns = Vec::with_capacity(opts.clients);
    let mut away_clients = Vec::with_capacity(opts.clients);
    for reader in readers {
        let (conn, a) = tokio::time::timeout(Duration::from_secs_f64(opts.drain), reader)
            .await
            .context("a client did not get its live records in time")???;
        if a.seen.duplicates > 0 || a.seen.gaps > 0 {
            bail!("a client got its live records with {} duplicates and {} gaps", a.seen.duplicates, a.seen.gaps);
        }
        conns.push(conn);
        away_clients.push(a);
    }

    // Everyone leaves, and records arrive while they are away.
    let closes: Vec<_> = conns.into_iter().map(|c| tokio::spawn(close(c))).collect();
    for c in closes {
        c.await?.context("closing a client")?;
    }
    wait_connections_down_to(&rig, 0, Duration::from_secs(60)).await?;
    let missed = produce(&rig, keys, away_per_key, opts.size, live.next_seq.clone()).await?;
    wait_consumed(&rig, live.total_acked() + missed.total_acked(), Duration::from_secs(120)).await?;

    if opts.end_with_tombstone {
        tombstone(&rig).await?;
    }
    let prefill = opts.prefill * keys as u64;
    let consumed = prefill + live.total_acked() + missed.total_acked() + u64::from(opts.end_with_tombstone);
    wait_consumed(&rig, consumed, Duration::from_secs(120)).await?;

    let before = rig.gateway.metrics().await?;
    let rss_before = probe.rss_kib()?;
    let broker_conns_before = usage::established_to(probe.pid, broker_port)?;

    // The storm.
    let (stop_tx, stop_rx) = watch::channel(false);
    let every = Duration::from_millis(opts.sample_ms.max(1));
    let rss_task = sample_rss(probe, every, stop_rx.clone());
    let conns_stop = Arc::new(AtomicBool::new(false));
    let conns_task = sample_broker_connections(
        probe.pid,
        broker_port,
        Duration::from_millis(opts.broker_sample_ms.max(1)),
        conns_stop.clone(),
    );
    let storm = Arc::new(Storm {
        target: target.clone(),
        permits: Arc::new(Semaphore::new(common.connect_concurrency.max(1))),
        started: Instant::now(),
        progress: Arc::new(Progress::default()),
        handshake_timeout: Duration::from_secs_f64(opts.handshake_timeout),
    });
    let own_before = OwnThreads::now();
    let (gateway_before, broker_before, machine_before) =
        (rig.gateway.cpu(), usage::process_cpu(rig.broker.pid()), usage::machine_busy());
    let mut tasks = Vec::with_capacity(opts.clients);
    for (i, a) in away_clients.into_iter().enumerate() {
        let path = format!("{}?envelope=true&cursor={}", opts.path(i), a.cursor);
        let want = match opts.key_of(i) {
            Some(k) => missed.acked[k],
            None => missed.total_acked(),
        };
        tasks.push(tokio::spawn(resume(storm.clone(), i, path, a.seen.starting_over(), want, stop_rx.clone())));
    }
    // Until every client has its records or has given up, nothing arrives for a while, or
    // the time is up.
    let deadline = storm.started + Duration::from_secs_f64(opts.drain);
    let idle = Duration::from_secs_f64(opts.idle);
    let (mut last, mut last_change) = (0, Instant::now());
    while storm.progress.done.load(Ordering::Relaxed) < opts.clients && Instant::now() < deadline {
        let frames = storm.progress.frames.load(Ordering::Relaxed);
        if frames != last {
            (last, last_change) = (frames, Instant::now());
        } else if last_change.elapsed() > idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = storm.started.elapsed().as_secs_f64();
    let own = OwnThreads::now().since(own_before);
    let cpu = super::Cpu {
        wall,
        clients: own.clients,
        producer: 0.0,
        gateway: rig.gateway.cpu() - gateway_before,
        broker: usage::process_cpu(rig.broker.pid()) - broker_before,
        machine: usage::machine_busy() - machine_before,
    };
    tokio::time::sleep(Duration::from_secs_f64(opts.settle)).await;
    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(opts.clients);
    for t in tasks {
        results.push(t.await?);
    }
    conns_stop.store(true, Ordering::Relaxed);
    let rss_peak = rss_task.await?;
    let conns_peak = conns_task.join().map_err(|_| anyhow::anyhow!("the connection sampler panicked"))?;
    let after = rig.gateway.metrics().await?;
    let broker_conns_after = usage::established_to(probe.pid, broker_port)?;

    // Figures.
    let mut variant = match opts.replay_buffer_bytes {
        Some(b) => format!(" replay-buffer-bytes={b}"),
        None => String::new(),
    };
    if opts.prefill > 0 {
        variant.push_str(&format!(" prefill={}", opts.prefill));
    }
    if opts.end_with_tombstone {
        variant.push_str(" end-with-tombstone");
    }
    let label =
        if common.gateway_args.is_empty() { String::new() } else { format!(" {}", common.gateway_args.join(" ")) };
    let shape = if opts.all { "all".to_string() } else { format!("{keys}k") };
    let mut r = Report::new(format!("reconnect-{}c-{shape}{variant}{label}", opts.clients));
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    let quantile = |mut v: Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() - 1) as f64 * q).round() as usize]
        }
    };
    let failed: Vec<&Resumed> = results.iter().filter(|x| x.failure.is_some()).collect();
    let complete: Vec<&Resumed> = results.iter().filter(|x| x.complete_at.is_some()).collect();
    let all_complete = complete.len() == opts.clients;
    let storm_s = if all_complete { results.iter().map(|x| secs(x.complete_at)).fold(0.0, f64::max) } else { f64::NAN };
    let expected: u64 = results.iter().map(|x| x.want).sum();
    let delivered: u64 = results.iter().map(|x| x.seen.unique().min(x.want)).sum();
    let received: u64 = results.iter().map(|x| x.seen.received).sum();
    let duplicates: u64 = results.iter().map(|x| x.seen.duplicates).sum();
    let gaps: u64 = results.iter().map(|x| x.seen.gaps).sum();
    let extra: u64 = results.iter().map(|x| x.seen.unique().saturating_sub(x.want)).sum();
    let other: u64 = results.iter().map(|x| x.seen.other).sum();
    let resumed_true = results.iter().filter(|x| x.resumed == Some(true)).count();
    let resumed_false = results.iter().filter(|x| x.resumed == Some(false)).count();
    let welcomed = results.iter().filter(|x| x.welcome_at.is_some()).count();
    let closed = results.iter().filter(|x| x.closed.is_some()).count();
    let lost = results.iter().filter(|x| x.lost.is_some()).count();
    let short: Vec<&Resumed> = results.iter().filter(|x| x.failure.is_none() && x.seen.unique() < x.want).collect();
    let handshakes: Vec<f64> =
        results.iter().filter(|x| x.failure.is_none()).filter_map(|x| x.handshake).map(|d| d.as_secs_f64()).collect();
    let welcomed_s = results
        .iter()
        .filter(|x| x.failure.is_none())
        .filter_map(|x| x.welcome_at)
        .map(|d| d.as_secs_f64())
        .fold(0.0, f64::max);
    let completions: Vec<f64> = complete.iter().map(|x| secs(x.complete_at)).collect();
    let delta = |name: &str| after.get(name) - before.get(name);

    r.metric("clients", opts.clients as f64);
    r.metric("keys", if opts.all { f64::NAN } else { keys as f64 });
    r.metric("records_prefilled", prefill as f64);
    r.metric("records_produced_away", missed.total_acked() as f64);
    r.metric("missed_per_client", quantile(results.iter().map(|x| x.want as f64).collect(), 0.5));
    r.metric("replay_buffer_records", before.get("sluice_replay_buffer_records"));
    r.metric("replay_buffer_mib", before.get("sluice_replay_buffer_bytes") / MIB);
    r.metric("storm_s", storm_s);
    // Beside storm_s, and instead of it when records went missing: when delivery ended.
    r.metric(
        "last_record_s",
        results.iter().filter_map(|x| x.last_at).map(|d| d.as_secs_f64()).fold(f64::NAN, f64::max),
    );
    r.metric("all_welcomed_s", if welcomed == opts.clients { welcomed_s } else { f64::NAN });
    r.metric("client_done_p50_s", quantile(completions.clone(), 0.5));
    r.metric("client_done_p99_s", quantile(completions, 0.99));
    r.metric("handshake_p50_ms", quantile(handshakes.clone(), 0.5) * 1000.0);
    r.metric("handshake_p99_ms", quantile(handshakes, 0.99) * 1000.0);
    r.metric("handshake_failures", failed.len() as f64);
    r.metric(
        "upgrades_refused",
        after.sum("sluice_upgrades_refused_total") - before.sum("sluice_upgrades_refused_total"),
    );
    r.metric("resumed_true", resumed_true as f64);
    r.metric("resumed_false", resumed_false as f64);
    for outcome in OUTCOMES {
        r.metric(&format!("resumes_{outcome}"), resumes(&after, outcome) - resumes(&before, outcome));
    }
    r.metric("expected", expected as f64);
    r.metric("delivered", delivered as f64);
    r.metric("missing", expected.saturating_sub(delivered) as f64);
    r.metric("duplicates", duplicates as f64);
    r.metric("gaps", gaps as f64);
    r.metric("clients_complete", complete.len() as f64);
    r.metric("clients_closed_or_lost", (closed + lost) as f64);
    r.metric("replayed_msg_per_s", if all_complete { received as f64 / storm_s } else { f64::NAN });
    r.metric("gateway_frames_sent", delta("sluice_frames_sent_total"));
    r.metric("rss_start_mib", rss_start as f64 / 1024.0);
    r.metric("rss_connected_mib", rss_connected as f64 / 1024.0);
    r.metric("rss_before_storm_mib", rss_before as f64 / 1024.0);
    let peak_kib = rss_peak.value.unwrap_or(f64::NAN).max(rss_before as f64);
    r.metric("rss_peak_mib", peak_kib / 1024.0);
    r.metric("rss_growth_mib", (peak_kib - rss_before as f64) / 1024.0);
    r.metric("rss_samples", rss_peak.samples as f64);
    r.metric("broker_conns_idle", broker_conns_idle as f64);
    r.metric("broker_conns_connected", broker_conns_connected as f64);
    r.metric("broker_conns_before_storm", broker_conns_before as f64);
    r.metric("broker_conns_storm_max", conns_peak.value.unwrap_or(f64::NAN));
    r.metric("broker_conns_after", broker_conns_after as f64);
    r.metric("broker_conn_samples", conns_peak.samples as f64);
    r.metric("slow_consumer_disconnects", delta("sluice_slow_consumer_disconnects_total"));
    r.metric("queue_bound_sheds", delta("sluice_queue_bound_sheds_total"));
    r.metric("session_errors", delta("sluice_session_errors_total"));
    cpu.report(&mut r, "", client_threads);
    r.note(format!(
        "{} clients {}, envelope frames; each read {} live record(s) per key, closed, missed {} of its subscription, then all reconnected with ?cursor= ({} handshakes in flight); gateway{}{}; consumer fetch.wait.max.ms={}; VmRSS sampled every {} ms, broker connections every {} ms",
        opts.clients,
        if opts.all { "on /*".to_string() } else { format!("over {keys} keys") },
        opts.live,
        if opts.all { missed.total_acked() } else { away_per_key },
        common.connect_concurrency,
        if resume_args.is_empty() { " defaults".into() } else { format!(" {}", resume_args.join(" ")) },
        if opts.end_with_tombstone { ", a tombstone after the missed records" } else { "" },
        opts.fetch_wait_ms,
        opts.sample_ms,
        opts.broker_sample_ms,
    ));
    if !failed.is_empty() {
        let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
        for f in &failed {
            *kinds.entry(f.failure.as_deref().unwrap_or_default()).or_default() += 1;
        }
        r.note(format!("handshake failures: {kinds:?}"));
    }
    if let Some(x) = short.first() {
        r.note(format!(
            "{} clients short of their records; client {} got {} of {} (resumed {:?}, closed {:?}, lost {:?})",
            short.len(),
            x.index,
            x.seen.unique(),
            x.want,
            x.resumed,
            x.closed,
            x.lost
        ));
    }
    let gapped: Vec<&Resumed> = results.iter().filter(|x| x.seen.first_gap.is_some()).collect();
    if let Some((x, (key, expected, got))) = gapped.first().and_then(|x| Some((x, x.seen.first_gap?))) {
        r.note(format!(
            "{} clients skipped records; client {} first expected record {expected} of key k{key} and got {got}",
            gapped.len(),
            x.index
        ));
    }
    if other > 0 {
        r.note(format!("{other} frames were neither a welcome nor a stamped envelope"));
    }
    r.check(!failed.is_empty(), || format!("{} reconnects failed", failed.len()));
    r.check(resumed_true != opts.clients, || {
        format!("{resumed_true} of {} welcomes said \"resumed\":true ({resumed_false} false)", opts.clients)
    });
    r.check(delivered != expected, || format!("delivered {delivered} of {expected} missed records"));
    r.check(duplicates > 0 || extra > 0, || {
        format!("{duplicates} records received twice, {extra} beyond those missed")
    });
    r.check(gaps > 0, || format!("{gaps} records skipped"));
    r.check(closed + lost > 0, || format!("{closed} clients closed by the gateway, {lost} lost"));
    // Kept open until now: the gateway goes first, so the closes start on its side.
    drop(rig);
    drop(results);
    Ok(r)
}
