//! A Tansu (Kafka-protocol) broker with in-memory storage, started for one scenario run
//! and stopped with it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

pub struct Broker {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

/// The Tansu binary: `$TANSU_BIN`, else `tansu` in cargo's bin directory, else on `PATH`.
pub fn default_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let candidate = cargo_home.join("bin").join("tansu");
    if candidate.is_file() {
        candidate
    } else {
        PathBuf::from("tansu")
    }
}

/// A port nobody listens on now (the broker cannot report the port it bound).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Broker {
    pub fn start(binary: &std::path::Path) -> Result<Broker> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("sluice-bench-tansu-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).context("broker working directory")?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log"))?;
        let child = Command::new(binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(&dir)
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start the Tansu broker {}", binary.display()))?;
        let broker = Broker { child, port, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("Tansu is not listening on {port} after 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.address()).create()?;
        let results = admin
            .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await?;
        for r in results {
            r.map_err(|(topic, code)| anyhow::anyhow!("create topic {topic}: {code}"))?;
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A topic name never used before: Tansu may replay a reused topic's records.
pub fn fresh_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
