//! A Tansu (Kafka-protocol) broker on a free port, with in-memory or SQLite storage; topics,
//! producers and readers against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::process::{free_port, wait_for_port};

/// A fresh topic name: Tansu's "latest" can replay records of a used topic.
pub fn topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The Tansu binary: `$TANSU_BIN`, else `tansu` in cargo's bin directory, else on `PATH`.
pub fn default_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let candidate = home.join("bin").join("tansu");
    if candidate.is_file() {
        candidate
    } else {
        PathBuf::from("tansu")
    }
}

/// Where a broker keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Gone when the broker stops.
    Memory,
    /// SQLite in the broker's temporary directory: survives a restart.
    Durable,
}

impl Storage {
    fn url(self) -> &'static str {
        match self {
            Storage::Memory => "memory://tansu/",
            Storage::Durable => "sqlite://tansu.db",
        }
    }
}

/// A Tansu broker on a free port, stopped when dropped.
pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
    binary: PathBuf,
    storage: Storage,
    dir: tempfile::TempDir,
}

impl Tansu {
    /// In-memory storage: gone when the broker stops.
    pub fn memory() -> Tansu {
        Self::test(Storage::Memory)
    }

    /// SQLite storage in a temporary directory: survives a restart.
    pub fn durable() -> Tansu {
        Self::test(Storage::Durable)
    }

    fn test(storage: Storage) -> Tansu {
        let binary = default_binary();
        // Fail loudly: a Kafka test never skips itself.
        let found = if binary == Path::new("tansu") { on_path("tansu") } else { binary.is_file() };
        assert!(found, "the Tansu broker is required: install it with `cargo install tansu --locked --features dynostore,libsql,postgres` or set TANSU_BIN");
        Self::launch(&binary, storage).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts `binary` on a free port and waits until it listens.
    pub fn launch(binary: &Path, storage: Storage) -> Result<Tansu> {
        let mut t = Tansu {
            child: None,
            port: free_port(),
            binary: binary.to_path_buf(),
            storage,
            dir: tempfile::tempdir().context("the broker's working directory")?,
        };
        t.spawn()?;
        Ok(t)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn spawn(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("tansu.log"))?;
        let child = Command::new(&self.binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", self.storage.url()])
            .current_dir(self.dir.path())
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start the Tansu broker {}", self.binary.display()))?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(30)).context("Tansu")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|e| panic!("{e:#}"));
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.try_create_topic(name, partitions).await.expect("topic created");
    }

    pub async fn try_create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.brokers()).create()?;
        let results = admin
            .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await?;
        for r in results {
            r.map_err(|(topic, code)| anyhow::anyhow!("create topic {topic}: {code}"))?;
        }
        Ok(())
    }

    pub fn producer(&self) -> Producer {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("message.max.bytes", "4000000")
            .set("linger.ms", "0")
            .create()
            .unwrap();
        Producer(p)
    }

    /// A producer that holds records for `linger` before sending, so records enqueued
    /// together reach the broker as one batch per partition (see [`Producer::flush_all`]).
    pub fn batching_producer(&self, linger: Duration) -> Producer {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("linger.ms", linger.as_millis().to_string())
            .set("batch.num.messages", "10000")
            .create()
            .unwrap();
        Producer(p)
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a topic from the beginning of every partition, for checking what Sluice produced.
pub fn reader(tansu: &Tansu, topic: &str, partitions: i32) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::Consumer;
    let c: rdkafka::consumer::StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.brokers())
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

/// The next record of a reader, detached; panics after 20 s.
pub async fn next_record(c: &rdkafka::consumer::StreamConsumer) -> rdkafka::message::OwnedMessage {
    tokio::time::timeout(Duration::from_secs(20), c.recv())
        .await
        .expect("a record within 20 s")
        .expect("record")
        .detach()
}

pub struct Producer(pub FutureProducer);

impl Producer {
    /// Produces one record and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(rdkafka::message::Header { key: k, value: Some(v.as_bytes()) });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.0.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
    }

    /// Produces many records under one key without waiting between them, then waits for
    /// every acknowledgement (order is kept: one key, one partition, one producer).
    pub async fn many(&self, topic: &str, key: &str, values: &[String]) {
        let mut pending = Vec::with_capacity(values.len());
        for v in values {
            let record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(key).payload(v);
            pending.push(self.0.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
        }
        for p in pending {
            p.await.expect("delivery report").map_err(|(e, _)| e).expect("produce");
        }
    }

    /// Enqueues every `(key, value)` at once (the partitioner picks each partition by key),
    /// then waits for every acknowledgement: with a lingering producer, one flush.
    pub async fn flush_all(&self, topic: &str, records: &[(String, String)]) {
        let mut pending = Vec::with_capacity(records.len());
        for (k, v) in records {
            let record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(k.as_str()).payload(v.as_str());
            pending.push(self.0.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
        }
        for p in pending {
            p.await.expect("delivery report").map_err(|(e, _)| e).expect("produce");
        }
    }

    pub async fn text(&self, topic: &str, key: &str, value: &str) {
        self.send(topic, None, Some(key.as_bytes()), Some(value.as_bytes()), &[]).await
    }
}
