//! What every scenario shares: the options, and the rig — a broker, a fresh topic, the
//! gateway reading it, and the load clients — with one way to run a phase of records
//! through it and measure what arrived.

pub mod accept;
pub mod fanout;
pub mod latency;
pub mod memory;
pub mod multiplexed;
pub mod reconnect;
pub mod slow;
pub mod stalled;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use sluice_support::registry::{SchemaRegistry, Subject};
use tokio::sync::watch;

use crate::avro::{self, Framing};
use crate::broker::{self, Broker};
use crate::connect::{self, Conn, Target};
use crate::gateway::{self, Gateway, Metrics};
use crate::produce::{self, Plan, Produced};
use crate::report::Report;
use crate::tally::{Sequences, Tally, Total};
use crate::usage::{self, OwnThreads};

/// Options of every scenario.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The gateway binary to measure (build it with `cargo build --release -p sluice`).
    #[arg(long, env = "SLUICE_BIN", default_value = "target/release/sluice")]
    pub sluice_bin: PathBuf,
    /// The Tansu broker binary [default: $TANSU_BIN, else tansu in cargo's bin directory].
    #[arg(long)]
    pub tansu_bin: Option<PathBuf>,
    /// Client connections are spread over source addresses 127.0.0.1 to 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    /// Handshakes in flight at once while connecting clients.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Another argument for the gateway (repeatable), e.g. `--gateway-arg=--queue-capacity=4096`.
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
    /// Append each result as a JSON line to this file (see the `summary` command).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit non-zero when the harness itself misbehaves (records lost or duplicated where
    /// no client is slow, connections refused); for smoke runs.
    #[arg(long)]
    pub strict: bool,
}

/// Options of the scenarios that stream records.
#[derive(Args, Debug, Clone)]
pub struct Load {
    /// Client connections.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Keys the records cycle over; client `i` subscribes to key `i mod keys`.
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
    /// Subscribe every client to `/*` (all keys) instead.
    #[arg(long)]
    pub all: bool,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// The gateway consumer's fetch.wait.max.ms. Tansu holds every fetch for this long
    /// even when records are waiting (a Kafka broker answers as soon as they arrive), so
    /// on Tansu it is a floor under every latency figure.
    #[arg(long, default_value_t = 1)]
    pub fetch_wait_ms: u32,
    /// The gateway's per-client queue (frames); the gateway's own default.
    #[arg(long, default_value_t = 16384)]
    pub queue_capacity: usize,
    /// The producer's linger.ms.
    #[arg(long)]
    pub linger_ms: Option<u32>,
    /// Seconds to wait for delivery to finish after the last record is produced.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
}

impl Load {
    pub fn path(&self, client: usize) -> String {
        if self.all {
            "/*".into()
        } else {
            format!("/k{}", client % self.keys.max(1))
        }
    }

    /// Clients receiving each record.
    pub fn fan_out(&self) -> f64 {
        if self.all {
            self.clients as f64
        } else {
            self.clients as f64 / self.keys.max(1) as f64
        }
    }

    /// The consumer settings stated beside every figure.
    pub fn fetch_settings(&self) -> String {
        format!("consumer fetch.wait.max.ms={} (fetch.min.bytes=1, librdkafka default)", self.fetch_wait_ms)
    }
}

/// One client of the rig.
pub struct Client {
    pub conn: Option<Conn>,
    pub next: Sequences,
    /// The key indexes it receives, or `None` for all keys.
    pub keys: Option<Vec<usize>>,
    /// Still connected after the last phase.
    pub alive: bool,
}

/// A broker, a fresh topic, the gateway reading it, and the clients.
pub struct Rig {
    pub common: Common,
    pub broker: Broker,
    pub topic: String,
    pub gateway: Gateway,
    pub target: Target,
    pub keys: Vec<String>,
    pub clients: Vec<Client>,
    /// Records produced so far per key (the next sequence number).
    pub produced: Vec<u64>,
    /// When the gateway decodes the topic's values as Avro: the registry it reads the
    /// schema from, and how the producer frames values.
    pub registry: Option<SchemaRegistry>,
    pub avro: Option<Arc<Framing>>,
}

/// CPU seconds per process over a phase, and the phase's wall time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub wall: f64,
    pub clients: f64,
    pub producer: f64,
    pub gateway: f64,
    pub broker: f64,
    /// Every process on the machine.
    pub machine: f64,
}

impl Cpu {
    fn percent(cpu: f64, wall: f64) -> f64 {
        if wall > 0.0 {
            100.0 * cpu / wall
        } else {
            f64::NAN
        }
    }

    /// Adds the CPU figures to a report, as % of one core.
    pub fn report(&self, r: &mut Report, prefix: &str, client_threads: usize) {
        r.metric(&format!("{prefix}client_cpu_pct"), Self::percent(self.clients, self.wall));
        r.metric(&format!("{prefix}producer_cpu_pct"), Self::percent(self.producer, self.wall));
        r.metric(&format!("{prefix}gateway_cpu_pct"), Self::percent(self.gateway, self.wall));
        r.metric(&format!("{prefix}broker_cpu_pct"), Self::percent(self.broker, self.wall));
        if self.clients >= 0.9 * self.wall * client_threads as f64 {
            r.note(format!(
                "{prefix}client-bound: the load client's {client_threads} thread(s) were busy {:.0}% of the time",
                Self::percent(self.clients, self.wall * client_threads as f64)
            ));
        }
        let ours = self.clients + self.producer + self.gateway + self.broker;
        let others = (self.machine - ours).max(0.0);
        r.metric(&format!("{prefix}other_processes_cpu_pct"), Self::percent(others, self.wall));
        let cores = crate::cores() as f64;
        if self.machine >= 0.9 * self.wall * cores {
            r.note(format!(
                "{prefix}machine-bound: the {cores} cores were {:.0}% busy ({:.0}% of one core by processes outside this benchmark)",
                Self::percent(self.machine, self.wall * cores),
                Self::percent(others, self.wall)
            ));
        }
    }
}

struct Snapshot {
    at: Instant,
    own: OwnThreads,
    gateway: f64,
    broker: f64,
    machine: f64,
    metrics: Metrics,
}

/// What a phase measured.
pub struct Phase {
    /// Every reading client.
    pub all: Total,
    /// Reading clients in the caller's measured set.
    pub measured: Total,
    /// Records the measured clients should have received.
    pub measured_expected: u64,
    pub produced: Produced,
    pub cpu: Cpu,
    /// Gateway counters over the phase.
    pub frames_sent: f64,
    pub records_consumed: f64,
    pub slow_disconnects: f64,
    /// Frames the gateway dropped for full queues (drop policy).
    pub frames_dropped: f64,
    /// Payload bytes written to sockets.
    pub bytes_sent: f64,
    /// Values decoded from their wire format, and values that could not be.
    pub values_decoded: f64,
    pub decode_failures: f64,
}

impl Phase {
    /// The figures every streaming scenario reports. `prefix` names the phase.
    pub fn report(&self, r: &mut Report, prefix: &str, client_threads: usize) {
        let t = &self.measured;
        r.metric(&format!("{prefix}delivered_msg_per_s"), t.rate());
        let window = self.all.window_s();
        r.metric(
            &format!("{prefix}gateway_frames_per_s"),
            if window > 0.0 { self.frames_sent / window } else { f64::NAN },
        );
        r.metric(&format!("{prefix}produced_rec_per_s"), self.produced.rate());
        r.metric(&format!("{prefix}gateway_records_consumed"), self.records_consumed);
        r.metric(&format!("{prefix}expected"), self.measured_expected as f64);
        r.metric(&format!("{prefix}delivered"), t.unique as f64);
        r.metric(&format!("{prefix}missing"), self.measured_expected.saturating_sub(t.unique) as f64);
        r.metric(&format!("{prefix}duplicates"), t.duplicates as f64);
        r.metric(&format!("{prefix}gaps"), t.gaps as f64);
        r.metric(&format!("{prefix}p50_ms"), t.latency_ms(0.5));
        r.metric(&format!("{prefix}p99_ms"), t.latency_ms(0.99));
        r.metric(&format!("{prefix}p99_9_ms"), t.latency_ms(0.999));
        r.metric(&format!("{prefix}max_ms"), t.max_latency_ms());
        if let Some(ack) = self.produced.ack_us.as_ref().filter(|h| !h.is_empty()) {
            r.metric(&format!("{prefix}produce_ack_p50_ms"), ack.value_at_quantile(0.5) as f64 / 1000.0);
            r.metric(&format!("{prefix}produce_ack_p99_ms"), ack.value_at_quantile(0.99) as f64 / 1000.0);
        }
        r.metric(&format!("{prefix}window_s"), window);
        self.cpu.report(r, prefix, client_threads);
        r.metric(&format!("{prefix}gateway_frames_dropped"), self.frames_dropped);
        if self.slow_disconnects > 0.0 {
            r.metric(&format!("{prefix}slow_consumer_disconnects"), self.slow_disconnects);
        }
        if !t.closed.is_empty() || t.lost > 0 {
            r.note(format!(
                "{prefix}measured clients closed by the gateway {:?} (code: count), lost {}",
                t.closed, t.lost
            ));
        }
        if self.produced.failed > 0 {
            r.note(format!("{prefix}{} records failed to produce", self.produced.failed));
        }
    }

    /// Harness checks for a phase where no client was slow.
    pub fn check_complete(&self, r: &mut Report, prefix: &str) {
        let t = &self.measured;
        r.check(self.measured_expected != t.unique, || {
            format!("{prefix}delivered {} of {} expected records", t.unique, self.measured_expected)
        });
        r.check(t.duplicates > 0, || format!("{prefix}{} duplicates", t.duplicates));
        r.check(!t.closed.is_empty() || t.lost > 0, || {
            format!("{prefix}clients closed {:?}, lost {}", t.closed, t.lost)
        });
        r.check(self.produced.failed > 0, || format!("{prefix}{} records failed to produce", self.produced.failed));
        r.check(t.received == 0, || format!("{prefix}nothing received"));
    }
}

impl Rig {
    /// Starts a broker, creates a fresh topic, starts the gateway with `args` and waits
    /// until it is ready.
    pub async fn start(common: &Common, name: &str, partitions: i32, keys: usize, args: Vec<String>) -> Result<Rig> {
        Self::start_with(common, name, partitions, keys, args, false).await
    }

    /// [`Rig::start`], with the topic's values Avro records in the Confluent wire format
    /// when `avro`: a Schema Registry stand-in (on this runtime) holds the schema, the
    /// gateway decodes them with it, and every phase's producer frames them.
    pub async fn start_with(
        common: &Common,
        name: &str,
        partitions: i32,
        keys: usize,
        args: Vec<String>,
        avro: bool,
    ) -> Result<Rig> {
        let tansu = common.tansu_bin.clone().unwrap_or_else(broker::default_binary);
        let broker = Broker::start(&tansu)?;
        let topic = broker::fresh_topic(&format!("bench-{name}"));
        broker.create_topic(&topic, partitions).await?;
        let mut all_args = args;
        let (registry, framing) = if avro {
            let registry = SchemaRegistry::start().await;
            let id = registry.register(&format!("{topic}-value"), Subject::avro(avro::SCHEMA));
            all_args.extend(["--schema-registry".into(), registry.url()]);
            all_args.extend(["--value-format".into(), format!("{topic}=avro")]);
            (Some(registry), Some(Arc::new(Framing::new(id)?)))
        } else {
            (None, None)
        };
        all_args.extend(common.gateway_args.iter().cloned());
        let gateway = Gateway::start(&common.sluice_bin, &broker.address(), &topic, &all_args)?;
        gateway.wait_ready(Duration::from_secs(30)).await?;
        let target = Target::basic(gateway.addr, gateway::USER, gateway::PASSWORD, true, common.sources);
        Ok(Rig {
            common: common.clone(),
            broker,
            topic,
            gateway,
            target,
            keys: (0..keys.max(1)).map(|k| format!("k{k}")).collect(),
            clients: Vec::new(),
            produced: vec![0; keys.max(1)],
            registry,
            avro: framing,
        })
    }

    /// The gateway arguments a streaming scenario needs.
    pub fn load_args(load: &Load, policy: &str) -> Vec<String> {
        vec![
            "--queue-capacity".into(),
            load.queue_capacity.to_string(),
            "--slow-consumer".into(),
            policy.into(),
            "--kafka-property".into(),
            format!("fetch.wait.max.ms={}", load.fetch_wait_ms),
        ]
    }

    /// Connects every client of `load`; any refusal is an error. Clients numbered below
    /// `tiny_window_below` get a minimal receive buffer (they are to stop reading).
    pub async fn connect_load(&mut self, load: &Load, tiny_window_below: usize) -> Result<()> {
        self.target.tiny_window_below = tiny_window_below;
        let paths: Vec<String> = (0..load.clients).map(|i| load.path(i)).collect();
        let opened = connect::open_many(&self.target, &paths, 0, self.common.connect_concurrency).await;
        if opened.failed() > 0 {
            bail!("{} of {} clients failed to connect: {}", opened.failed(), paths.len(), opened.describe_failures());
        }
        self.gateway.wait_connections(load.clients, Duration::from_secs(30)).await?;
        let keys = self.keys.len();
        for conn in opened.conns {
            let key = (!load.all).then(|| vec![conn.index % keys]);
            self.clients.push(Client { conn: Some(conn), next: Sequences::new(keys), keys: key, alive: true });
        }
        Ok(())
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            own: OwnThreads::now(),
            gateway: self.gateway.cpu(),
            broker: usage::process_cpu(self.broker.pid()),
            machine: usage::machine_busy(),
            metrics: self.gateway.metrics().await?,
        })
    }

    fn expected_for(&self, client: &Client, acked: &[u64]) -> u64 {
        match &client.keys {
            Some(keys) => keys.iter().map(|&k| acked[k]).sum(),
            None => acked.iter().sum(),
        }
    }

    /// Produces `plan` (its topic, keys and sequence starts are filled in here) while the
    /// clients for which `reading` is true read; the others hold their sockets unread.
    /// Figures of clients for which `measured` is true are reported apart.
    pub async fn phase(
        &mut self,
        mut plan: Plan,
        reading: &dyn Fn(usize) -> bool,
        measured: &dyn Fn(usize) -> bool,
        drain: Duration,
    ) -> Result<Phase> {
        plan.topic = self.topic.clone();
        plan.keys = self.keys.clone();
        plan.first_seq = self.produced.clone();
        plan.avro = self.avro.clone();

        let progress = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (i, client) in self.clients.iter_mut().enumerate() {
            if !client.alive || !reading(i) {
                continue;
            }
            let conn = client.conn.take().expect("connection present between phases");
            let tally = Tally::new(client.next.clone());
            tasks.push((i, tokio::spawn(crate::receive::run(conn, tally, progress.clone(), stop_rx.clone()))));
        }

        let before = self.snapshot().await?;
        let producer = produce::spawn(self.broker.address(), plan.clone());
        while !producer.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let produced = producer.join().map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
        let acked_in_phase: Vec<u64> = produced.acked.clone();

        let expected: u64 = tasks.iter().map(|(i, _)| self.expected_for(&self.clients[*i], &acked_in_phase)).sum();
        // Wait for delivery: until every expected frame arrived, nothing arrived for a
        // while, or the drain time is up.
        let drain_until = Instant::now() + drain;
        let idle_limit = Duration::from_secs(2).min(drain);
        let mut last = progress.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        loop {
            let now_count = progress.load(Ordering::Relaxed);
            if now_count >= expected || Instant::now() >= drain_until {
                break;
            }
            if now_count != last {
                last = now_count;
                last_change = Instant::now();
            } else if last_change.elapsed() >= idle_limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let after = self.snapshot().await?;
        let _ = stop_tx.send(true);

        let mut tallies = Vec::new();
        for (i, task) in tasks {
            let (conn, tally) = task.await?;
            let client = &mut self.clients[i];
            client.next = tally.next.clone();
            client.alive = tally.closed.is_none() && tally.lost.is_none();
            client.conn = Some(conn);
            tallies.push((i, tally));
        }
        self.produced = produced.next_seq.clone();

        let measured_expected: u64 = tallies
            .iter()
            .filter(|(i, _)| measured(*i))
            .map(|(i, _)| self.expected_for(&self.clients[*i], &acked_in_phase))
            .sum();
        let own = after.own.since(before.own);
        let metric = |name: &str| after.metrics.get(name) - before.metrics.get(name);
        Ok(Phase {
            all: Total::of(tallies.iter().map(|(_, t)| t)),
            measured: Total::of(tallies.iter().filter(|(i, _)| measured(*i)).map(|(_, t)| t)),
            measured_expected,
            cpu: Cpu {
                wall: after.at.duration_since(before.at).as_secs_f64(),
                clients: own.clients,
                producer: produced.cpu,
                gateway: after.gateway - before.gateway,
                broker: after.broker - before.broker,
                machine: after.machine - before.machine,
            },
            produced,
            frames_sent: metric("sluice_frames_sent_total"),
            records_consumed: metric("sluice_records_consumed_total"),
            slow_disconnects: metric("sluice_slow_consumer_disconnects_total"),
            frames_dropped: metric("sluice_frames_dropped_total"),
            bytes_sent: metric("sluice_bytes_sent_total"),
            values_decoded: after.metrics.sum("sluice_values_decoded_total")
                - before.metrics.sum("sluice_values_decoded_total"),
            decode_failures: after.metrics.sum("sluice_decode_failures_total")
                - before.metrics.sum("sluice_decode_failures_total"),
        })
    }
}
