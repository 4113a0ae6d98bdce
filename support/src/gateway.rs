//! The `sluice` binary as the tests drive it: started on 127.0.0.1 and a free port, its
//! admin API, metrics, log, signals and exit.

use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::{launch, scrubbed_command, sluice_binary, Launched, Stderr};
use crate::tansu::Tansu;
use crate::{ADMIN_TOKEN, PASSWORD, USER};

/// A command running the gateway binary under test, with a clean environment.
pub fn sluice_command(args: &[&str]) -> Command {
    let mut cmd = scrubbed_command(&sluice_binary());
    cmd.args(args).env("RUST_LOG", "info,librdkafka=warn");
    cmd
}

/// The `sluice` binary, running.
pub struct Sluice {
    child: std::process::Child,
    pub addr: SocketAddr,
    /// Lines the binary printed on stdout before it listened.
    pub banner: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Sluice {
    /// Starts sluice on 127.0.0.1 and a free port with these extra arguments and
    /// environment, and waits until it listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Sluice {
        let mut all = vec!["--host", "127.0.0.1", "--port", "0"];
        all.extend_from_slice(args);
        let mut cmd = sluice_command(&all);
        cmd.envs(env.iter().copied());
        let echo = std::env::var_os("SLUICE_TEST_LOG").is_some();
        let Launched { child, addr, banner, stderr } =
            launch(cmd, Stderr { keep: None, echo }, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("sluice did not start: {e:#}"));
        Sluice { child, addr, banner, stderr }
    }

    /// With Basic credentials USER / PASSWORD.
    pub fn with_kafka(tansu: &Tansu, topic: &str, args: &[&str]) -> Sluice {
        let brokers = tansu.brokers();
        let env = [
            ("Quix__Broker__Address", brokers.as_str()),
            ("input", topic),
            ("WS_USERNAME", USER),
            ("WS_PASSWORD", PASSWORD),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let mut all = vec!["--kafka-check-interval", "1", "--kafka-property", "fetch.wait.max.ms=10"];
        all.extend_from_slice(args);
        Sluice::start(&all, &env)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until the gateway's log holds `needle`.
    pub async fn wait_for_log(&self, needle: &str, within: Duration) {
        let start = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(start.elapsed() < within, "{needle:?} not logged within {within:?}:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < within, "sluice still running after {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls an HTTP endpoint until it answers with `status`.
    pub async fn wait_status(&self, path: &str, status: u16, within: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(self.http(path)).await {
                if r.status().as_u16() == status {
                    return;
                }
            }
            assert!(start.elapsed() < within, "{path} did not answer {status} within {within:?}\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An admin API call with the test token; the status and the JSON body (null if none).
    pub async fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        self.api_with(method, path, body, Some(ADMIN_TOKEN)).await
    }

    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().unwrap(), self.http(path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.body(b.to_owned());
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// The value of a metric line (first sample whose name and labels start with `prefix`).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = reqwest::get(self.http("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until a metric reaches at least `value`.
    pub async fn wait_metric(&self, prefix: &str, value: f64, within: Duration) {
        let start = Instant::now();
        loop {
            if self.metric(prefix).await >= value {
                return;
            }
            assert!(start.elapsed() < within, "{prefix} did not reach {value} within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin event feed (`GET /api/events`), read as it comes.
pub struct Events {
    response: reqwest::Response,
    pending: String,
}

impl Events {
    pub async fn open(sluice: &Sluice) -> Events {
        let response = reqwest::Client::new()
            .get(sluice.http("/api/events"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("event feed");
        assert_eq!(response.status(), 200);
        Events { response, pending: String::new() }
    }

    /// The next event (the JSON of a `data:` line); panics after `within`.
    pub async fn next(&mut self, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=end).collect();
                if let Some(data) = line.trim_end().strip_prefix("data:") {
                    return serde_json::from_str(data.trim()).expect("event JSON");
                }
            }
            let chunk = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), self.response.chunk())
                .await
                .expect("an event in time")
                .expect("event feed open")
                .expect("event feed not ended");
            self.pending.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event matching `pick`, skipping others.
    pub async fn find(&mut self, within: Duration, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let event = self.next(deadline.saturating_duration_since(Instant::now())).await;
            if pick(&event) {
                return event;
            }
        }
    }
}
