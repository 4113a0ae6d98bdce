//! Test harness: a real Tansu broker and the real `sluice` binary, each on a free port,
//! stopped when dropped; real Kafka producers and real WebSocket clients.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const USER: &str = "tester";
/// Holds a colon and a space, as RFC 7617 allows.
pub const PASSWORD: &str = "s3cret: with space";
pub const JWT_SECRET: &str = "a-test-signing-secret-of-32-bytes!!";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// A port nobody listens on right now. The broker cannot report the port it bound, so
/// this is the one place a port is chosen outside the process that uses it.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh topic name: Tansu's "latest" can replay records of a used topic.
pub fn topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let candidate = home.join("bin").join("tansu");
    if candidate.is_file() {
        return candidate;
    }
    // Fail loudly: a Kafka test never skips itself.
    panic!("the Tansu broker is required: install it with `cargo install tansu --locked --features dynostore,libsql,postgres` or set TANSU_BIN");
}

/// A Tansu broker on a free port.
pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
    storage: String,
    dir: tempfile::TempDir,
}

impl Tansu {
    /// In-memory storage: gone when the broker stops.
    pub fn memory() -> Tansu {
        Self::start("memory://tansu/".to_owned())
    }

    /// SQLite storage in a temporary directory: survives a restart.
    pub fn durable() -> Tansu {
        Self::start("sqlite://tansu.db".to_owned())
    }

    fn start(storage: String) -> Tansu {
        let mut t = Tansu { child: None, port: free_port(), storage, dir: tempfile::tempdir().unwrap() };
        t.spawn();
        t
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).unwrap();
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &self.storage,
            ])
            .current_dir(self.dir.path())
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(30));
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
        self.spawn();
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.brokers()).create().unwrap();
        let results = admin
            .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await
            .expect("create topic");
        for r in results {
            r.expect("topic created");
        }
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
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_port(port: u16, within: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < within, "nothing listening on {port} after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
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

    pub async fn text(&self, topic: &str, key: &str, value: &str) {
        self.send(topic, None, Some(key.as_bytes()), Some(value.as_bytes()), &[]).await
    }
}

/// The `sluice` binary, running.
pub struct Sluice {
    child: Child,
    pub addr: SocketAddr,
    /// Lines the binary printed on stdout before it listened.
    pub banner: Vec<String>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Settings that would leak from the environment of whoever runs the tests.
const SCRUBBED: &[&str] = &[
    "input",
    "Quix__Broker__Address",
    "KAFKA_BROKERS",
    "WS_USERNAME",
    "WS_PASSWORD",
    "PORT",
    "SLUICE_CONFIG",
    "SLUICE_JWT_SECRET",
    "SLUICE_ALLOW_ANONYMOUS",
    "SLUICE_DEMO",
    "SLUICE_NO_WELCOME",
    "SLUICE_FROM",
    "ADMIN_TOKEN",
    "output",
    "events",
    "replies",
    "SLUICE_ADMIN_ADDR",
    "SLUICE_HOST",
    "KAFKA_PROPERTIES",
    "KAFKA_CONSUMER_PROPERTIES",
    "KAFKA_PRODUCER_PROPERTIES",
    "SLUICE_ALLOWED_ORIGINS",
    "SLUICE_TRUSTED_PROXIES",
    "SLUICE_MAX_QUEUED_BYTES",
    "SLUICE_QUEUE_BYTES",
    "SLUICE_HEADER_TIMEOUT",
    "Quix__Sdk__Token",
    "Quix__Portal__Api",
    "Quix__Workspace__Id",
];

pub fn sluice_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for name in SCRUBBED {
        cmd.env_remove(name);
    }
    cmd.args(args).env("RUST_LOG", "info,librdkafka=warn").stdin(Stdio::null());
    cmd
}

impl Sluice {
    /// Starts sluice on 127.0.0.1 and a free port with these extra arguments and
    /// environment, and waits until it listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Sluice {
        let mut all = vec!["--host", "127.0.0.1", "--port", "0"];
        all.extend_from_slice(args);
        let mut cmd = sluice_command(&all);
        cmd.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start sluice");

        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err_lines = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if std::env::var("SLUICE_TEST_LOG").is_ok() {
                    eprintln!("[sluice] {line}");
                }
                err_lines.lock().unwrap().push(line);
            }
        });

        let (tx, rx) = std_mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("sluice did not start: stderr:\n{}", stderr.lock().unwrap().join("\n"));
                }
            };
            banner.push(line.clone());
            if let Some(rest) = line.strip_prefix("sluice listening on ") {
                let url = rest.split_whitespace().next().unwrap();
                let hostport = url.split("://").nth(1).unwrap();
                break hostport.parse().unwrap();
            }
        };
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

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Opens a WebSocket with these request headers; the handshake error as is.
pub async fn try_connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, tokio_tungstenite::tungstenite::handshake::client::Response), tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request).await
}

/// A WebSocket client whose socket has a tiny receive buffer, so that when it stops
/// reading the server's writes block soon.
pub async fn connect_small_window(sluice: &Sluice, path: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(sluice.addr).await.unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = sluice.url(path).into_client_request().unwrap();
    request.headers_mut().insert("authorization", basic(USER, PASSWORD).parse().unwrap());
    let (mut ws, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    next_text(&mut ws).await;
    ws
}

/// Connects with USER / PASSWORD and reads the welcome frame; returns the socket and the
/// replyId it announced.
pub async fn connect(sluice: &Sluice, path: &str) -> (Ws, String) {
    let (mut ws, response) =
        try_connect(&sluice.url(path), &[("authorization", &basic(USER, PASSWORD))]).await.expect("connect");
    let welcome = next_text(&mut ws).await;
    let v: serde_json::Value = serde_json::from_str(&welcome).unwrap();
    assert_eq!(v["type"], "connected");
    let id = v["replyId"].as_str().unwrap().to_owned();
    assert_eq!(response.headers().get("sluice-connection-id").unwrap().to_str().unwrap(), id);
    (ws, id)
}

/// The next data frame (text or binary), skipping pings; panics after 15 s.
pub async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a frame within 15 s")
            .expect("socket open")
            .expect("frame");
        match m {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the close frame, returning it; data frames before it are returned too.
pub async fn read_until_close(ws: &mut Ws, within: Duration) -> (Vec<Message>, Option<CloseFrame>) {
    let mut data = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let next = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.next())
            .await
            .expect("close within the deadline");
        match next {
            Some(Ok(Message::Close(frame))) => return (data, frame),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => data.push(m),
            Some(Err(e)) => panic!("socket error before a close frame: {e}"),
            None => return (data, None),
        }
    }
}

/// No data frame arrives within `wait` (used after a later frame proved delivery moved on).
pub async fn assert_silent(ws: &mut Ws, wait: Duration) {
    if let Ok(Some(Ok(m))) = tokio::time::timeout(wait, ws.next()).await {
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            panic!("unexpected frame {m:?}");
        }
    }
}

pub async fn close(ws: &mut Ws) {
    let _ = ws.close(None).await;
}
