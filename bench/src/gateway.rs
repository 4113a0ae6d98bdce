//! The `sluice` binary under test: started in Kafka mode with Basic authentication,
//! its port read from the line it prints, its metrics and resources read while it runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sluice_support::process::{launch, scrubbed_command, Launched, Stderr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const USER: &str = "bench";
pub const PASSWORD: &str = "bench-password";

/// Lines of the gateway's stderr kept for error messages.
const KEPT_LINES: usize = 40;

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts the gateway on 127.0.0.1 and a free port, reading `topic` from its start
    /// (the topic is fresh, so nothing produced during the run is missed).
    pub fn start(binary: &Path, brokers: &str, topic: &str, args: &[String]) -> Result<Gateway> {
        // The settings of whoever runs the bench are scrubbed from its environment.
        let mut cmd = scrubbed_command(binary);
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--from", "earliest"]);
        // Pings off unless a scenario asks for them: ping traffic is not part of a
        // streaming figure.
        if !args.iter().any(|a| a.starts_with("--ping-interval")) {
            cmd.args(["--ping-interval", "0"]);
        }
        cmd.args(args)
            .env("Quix__Broker__Address", brokers)
            .env("input", topic)
            .env("WS_USERNAME", USER)
            .env("WS_PASSWORD", PASSWORD)
            // Per-connection info lines would make the gateway's logging part of every figure.
            .env("RUST_LOG", "warn");
        let Launched { child, addr, stderr, .. } =
            launch(cmd, Stderr { keep: Some(KEPT_LINES), echo: false }, Duration::from_secs(30))?;
        Ok(Gateway { child, addr, stderr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().expect("not poisoned").join("\n")
    }

    async fn get(&self, path: &str) -> Result<(u16, String)> {
        get(self.addr, path).await
    }

    /// A handle for reading the gateway's memory and metrics from another task while a
    /// phase holds the rig.
    pub fn probe(&self) -> Probe {
        Probe { addr: self.addr, pid: self.pid() }
    }

    /// Waits until `/readyz` answers 200: the consumer has its partitions.
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(());
            }
            if started.elapsed() > within {
                bail!("the gateway was not ready within {within:?}:\n{}", self.stderr_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every sample of `/metrics`, by name (labelled ones by name and labels).
    pub async fn metrics(&self) -> Result<Metrics> {
        metrics(self.addr).await
    }

    /// Waits until the gateway counts at least `n` open connections.
    pub async fn wait_connections(&self, n: usize, within: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let m = self.metrics().await?;
            if m.get("sluice_connections") >= n as f64 {
                return Ok(());
            }
            if started.elapsed() > within {
                bail!("the gateway counts {} connections, not {n}, after {within:?}", m.get("sluice_connections"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn rss_kib(&self) -> Result<u64> {
        crate::usage::rss_kib(self.pid())
    }

    pub fn cpu(&self) -> f64 {
        crate::usage::process_cpu(self.pid())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway's address and process, cheap to copy into a sampling task.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub addr: SocketAddr,
    pub pid: u32,
}

impl Probe {
    pub async fn metrics(&self) -> Result<Metrics> {
        metrics(self.addr).await
    }

    pub fn rss_kib(&self) -> Result<u64> {
        crate::usage::rss_kib(self.pid)
    }
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut body)).await??;
    let text = String::from_utf8_lossy(&body).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

async fn metrics(addr: SocketAddr) -> Result<Metrics> {
    let (status, text) = get(addr, "/metrics").await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let mut values = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        // A labelled sample is kept under its whole series name, `name{label="value"}`.
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.parse::<f64>() {
                values.insert(name.to_owned(), v);
            }
        }
    }
    Ok(Metrics(values))
}

pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    /// A sample's value, 0 when absent.
    pub fn get(&self, name: &str) -> f64 {
        self.find(name).unwrap_or(0.0)
    }

    /// A sample's value, `None` when this build does not export it (older builds lack
    /// some metrics, and 0 would read as a measurement).
    pub fn find(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }

    /// A labelled sample, `name{label="value"}`, 0 when absent (a counter family shows a
    /// label only once it has counted something).
    pub fn labelled(&self, name: &str, label: &str, value: &str) -> f64 {
        self.get(&format!("{name}{{{label}=\"{value}\"}}"))
    }

    /// The sum of every sample of a family, labelled or not.
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.strip_prefix(name).is_some_and(|rest| rest.is_empty() || rest.starts_with('{')))
            .map(|(_, v)| v)
            .sum()
    }
}
