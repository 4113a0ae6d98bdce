//! Browsers and hostile connections, through the real binary: connections that never
//! finish their request, a full house, cross-site pages, tokens from `sluice token`,
//! clients behind proxies, SIGHUP, and what the log says about all of it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;

fn credentials() -> [(&'static str, &'static str); 3] {
    [("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)]
}

/// Waits until the server closes `stream` (EOF or reset); the time it took.
async fn closed_by_server(mut stream: TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was still open after {within:?}"),
        }
    }
}

/// The HTTP status a refused upgrade got.
async fn refused_status(url: &str, headers: &[(&str, &str)]) -> (u16, http_headers::Headers) {
    match try_connect(url, headers).await {
        Ok(_) => panic!("{url} with {headers:?} was let in"),
        Err(WsError::Http(response)) => (response.status().as_u16(), http_headers::Headers::from(response.headers())),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

mod http_headers {
    /// Response headers, lower-cased, for assertions.
    pub struct Headers(pub Vec<(String, String)>);
    impl From<&tokio_tungstenite::tungstenite::http::HeaderMap> for Headers {
        fn from(h: &tokio_tungstenite::tungstenite::http::HeaderMap) -> Self {
            Headers(h.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect())
        }
    }
    impl Headers {
        pub fn get(&self, name: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
        }
    }
}

#[tokio::test]
async fn silent_and_slowloris_connections_are_closed_while_clients_are_served() {
    // Fifty session slots, as in the fault report: fifty sockets that never finish a
    // request used to hold them all.
    let sluice = Sluice::start(&["--demo", "--max-connections", "50", "--header-timeout", "2"], &credentials());
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(sluice.addr).await.unwrap());
    }
    let mut loris = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(sluice.addr).await.unwrap();
        s.write_all(b"GET /sensor-1 HTTP/1.1\r\n").await.unwrap();
        loris.push(s);
    }
    // One header byte every 300 ms, forever: never a complete head.
    let dripping = tokio::spawn(async move {
        for i in 0.. {
            for s in loris.iter_mut() {
                if s.write_all(b"X").await.is_err() {
                    return (i, loris);
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        unreachable!()
    });

    // Meanwhile a real client gets in at once and receives data, and health answers.
    let (mut ws, _) = connect(&sluice, "/sensor-1").await;
    assert!(next_text(&mut ws).await.contains("sensor-1"));
    sluice.wait_status("/healthz", 200, Duration::from_secs(1)).await;

    // Every silent socket is closed within the header timeout (plus scheduling slack).
    for s in silent {
        let took = closed_by_server(s, Duration::from_secs(6)).await;
        assert!(took <= Duration::from_secs(6), "{took:?}");
    }
    let (drips, _loris) =
        tokio::time::timeout(Duration::from_secs(6), dripping).await.expect("slowloris closed").unwrap();
    assert!(drips < 15, "slowloris kept dripping {drips} times");
    sluice.wait_metric("sluice_request_timeouts_total", 80.0, Duration::from_secs(5)).await;
    // The real client is still served.
    assert!(next_text(&mut ws).await.contains("sensor-1"));
}

#[tokio::test]
async fn connections_waiting_beyond_the_pending_bound_are_served_once_the_silent_ones_time_out() {
    let sluice = Sluice::start(&["--demo", "--max-pending-connections", "5", "--header-timeout", "2"], &credentials());
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(sluice.addr).await.unwrap());
    }
    // Give the accept loop time to hand all five slots to the silent sockets.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let (mut ws, _) = connect(&sluice, "/sensor-1").await;
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1000), "served after {waited:?}: the bound did not hold");
    assert!(waited < Duration::from_secs(6), "served only after {waited:?}");
    assert!(next_text(&mut ws).await.contains("sensor-1"));
}

#[tokio::test]
async fn at_the_connection_limit_upgrades_get_503_and_health_still_answers() {
    let sluice = Sluice::start(&["--demo", "--max-connections", "2"], &credentials());
    let (mut a, _) = connect(&sluice, "/sensor-1").await;
    let (_b, _) = connect(&sluice, "/sensor-2").await;
    let (status, headers) =
        refused_status(&sluice.url("/sensor-3"), &[("authorization", &basic(USER, PASSWORD))]).await;
    assert_eq!(status, 503);
    assert_eq!(headers.get("retry-after"), Some("5"));
    sluice.wait_status("/healthz", 200, Duration::from_secs(1)).await;
    sluice.wait_status("/readyz", 200, Duration::from_secs(1)).await;
    let (status, _) = sluice.api("GET", "/api/clients", None).await;
    assert_eq!(status, 200);
    sluice.wait_metric("sluice_upgrades_refused_total{reason=\"connection_limit\"}", 1.0, Duration::from_secs(5)).await;

    // A slot freed is a slot taken.
    close(&mut a).await;
    let start = Instant::now();
    loop {
        match try_connect(&sluice.url("/sensor-3"), &[("authorization", &basic(USER, PASSWORD))]).await {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(5), "no slot after a client left: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cross_site_pages_are_refused_and_listed_origins_let_in() {
    let sluice = Sluice::start(&["--demo"], &credentials());
    let auth = basic(USER, PASSWORD);
    let own = format!("http://{}", sluice.addr);
    // Valid credentials do not help a page from another site.
    let (status, _) =
        refused_status(&sluice.url("/sensor-1"), &[("authorization", &auth), ("origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    let (status, _) = refused_status(&sluice.url("/sensor-1"), &[("authorization", &auth), ("origin", "null")]).await;
    assert_eq!(status, 403);
    // The gateway's own pages, and clients that send no Origin, are unaffected.
    try_connect(&sluice.url("/sensor-1"), &[("authorization", &auth), ("origin", &own)]).await.expect("same origin");
    try_connect(&sluice.url("/sensor-1"), &[("authorization", &auth)]).await.expect("no origin");
    sluice.wait_metric("sluice_upgrades_refused_total{reason=\"origin\"}", 2.0, Duration::from_secs(5)).await;
    // The refusal is logged once, with its reason, without the credentials.
    let log = sluice.stderr();
    assert!(log.contains("upgrade refused") && log.contains("origin"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains(&auth), "credentials in the log");
    assert!(!log.contains('\u{1b}'), "colour codes in a log written to a pipe");

    let listed =
        Sluice::start(&["--demo", "--allowed-origins", "https://app.example,https://*.corp.example"], &credentials());
    for origin in ["https://app.example", "https://dash.corp.example"] {
        try_connect(&listed.url("/sensor-1"), &[("authorization", &auth), ("origin", origin)]).await.expect(origin);
    }
    for origin in ["https://evil.example", "http://app.example", "https://corp.example"] {
        let (status, _) =
            refused_status(&listed.url("/sensor-1"), &[("authorization", &auth), ("origin", origin)]).await;
        assert_eq!(status, 403, "{origin}");
    }
    let any = Sluice::start(&["--demo", "--allowed-origins", "*"], &credentials());
    try_connect(&any.url("/sensor-1"), &[("authorization", &auth), ("origin", "https://evil.example")])
        .await
        .expect("*");
}

#[tokio::test]
async fn a_token_printed_by_sluice_token_opens_its_keys_only() {
    let out = sluice_command(&["token", "--sub", "dashboard", "--keys", "sensor-1,sensor-2", "--ttl", "10m"])
        .env("SLUICE_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let sluice = Sluice::start(&["--demo"], &[("SLUICE_JWT_SECRET", JWT_SECRET), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let (mut ws, _) = try_connect(&sluice.url(&format!("/sensor-2?token={token}")), &[]).await.expect("token accepted");
    let welcome = next_text(&mut ws).await;
    let id = serde_json::from_str::<serde_json::Value>(&welcome).unwrap()["replyId"].as_str().unwrap().to_owned();
    let (_, client) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
    assert_eq!(client["user"], "dashboard");
    let (status, _) = refused_status(&sluice.url(&format!("/sensor-3?token={token}")), &[]).await;
    assert_eq!(status, 403);
    // Signed with another secret: not a token of this gateway.
    let other = Sluice::start(&["--demo"], &[("SLUICE_JWT_SECRET", "another-secret-that-is-32-bytes-long!")]);
    let (status, _) = refused_status(&other.url(&format!("/sensor-2?token={token}")), &[]).await;
    assert_eq!(status, 401);

    let out = sluice_command(&["token", "--sub", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLUICE_JWT_SECRET"));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_clients() {
    let auth = basic(USER, PASSWORD);
    let forwarded = [("authorization", auth.as_str()), ("x-forwarded-for", "198.51.100.9, 203.0.113.7")];
    let trusting = Sluice::start(&["--demo", "--trusted-proxies", "127.0.0.0/8"], &credentials());
    let (mut ws, _) = try_connect(&trusting.url("/sensor-1"), &forwarded).await.unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&next_text(&mut ws).await).unwrap()["replyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, client) = trusting.api("GET", &format!("/api/clients/{id}"), None).await;
    assert_eq!(client["remoteAddr"], "203.0.113.7");

    // Anyone else's forwarding headers are their own invention.
    let wary = Sluice::start(&["--demo"], &credentials());
    let (mut ws, _) = try_connect(&wary.url("/sensor-1"), &forwarded).await.unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&next_text(&mut ws).await).unwrap()["replyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, client) = wary.api("GET", &format!("/api/clients/{id}"), None).await;
    assert!(client["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"), "{client}");
}

/// A TLS client that trusts exactly `cert`; returns the certificate the server presented.
async fn served_certificate(addr: std::net::SocketAddr, trusted: &[rcgen::CertifiedKey<rcgen::KeyPair>]) -> Vec<u8> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.cert.der().clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn sighup_reloads_the_tls_certificate_and_never_stops_the_gateway() {
    let plain = Sluice::start(&["--demo"], &credentials());
    plain.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    plain.wait_status("/healthz", 200, Duration::from_secs(2)).await;

    let first = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let second = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, first.cert.pem()).unwrap();
    std::fs::write(&key, first.signing_key.serialize_pem()).unwrap();
    let tls = Sluice::start(
        &["--demo", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        &credentials(),
    );
    let trusted = [first, second];
    assert_eq!(served_certificate(tls.addr, &trusted).await, trusted[0].cert.der().to_vec());

    // A broken file: the reload fails, the old certificate stays in service.
    std::fs::write(&cert, "not a certificate").unwrap();
    tls.signal("HUP");
    tls.wait_for_log("TLS reload failed", Duration::from_secs(5)).await;
    assert_eq!(served_certificate(tls.addr, &trusted).await, trusted[0].cert.der().to_vec());

    // The renewed certificate is served to new connections after the next SIGHUP.
    std::fs::write(&cert, trusted[1].cert.pem()).unwrap();
    std::fs::write(&key, trusted[1].signing_key.serialize_pem()).unwrap();
    tls.signal("HUP");
    tls.wait_for_log("TLS certificate and key reloaded", Duration::from_secs(5)).await;
    assert_eq!(served_certificate(tls.addr, &trusted).await, trusted[1].cert.der().to_vec());
}

/// A WebSocket spoken by hand, to send what no well-behaved client library would.
struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    async fn open(sluice: &Sluice, path: &str) -> RawWs {
        let mut stream = TcpStream::connect(sluice.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: {}\r\n\r\n",
            sluice.addr,
            basic(USER, PASSWORD)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = RawWs { stream, buf: Vec::new() };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(raw.fill().await, "connection closed during the handshake");
        };
        let head: Vec<u8> = raw.buf.drain(..end).collect();
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        raw
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("the gateway said nothing for 10 s"),
        }
    }

    /// Sends a frame whose first byte (FIN, RSV bits, opcode) is given as is.
    async fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        if payload.len() < 126 {
            frame.push(mask_bit | payload.len() as u8);
        } else {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads server frames until a close frame: its code, or `None` when the connection
    /// ended without one.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            while self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0f;
                let (len, header) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => break,
                };
                if self.buf.len() < header + len {
                    break;
                }
                let frame: Vec<u8> = self.buf.drain(..header + len).collect();
                if opcode == 0x8 {
                    return (len >= 2).then(|| u16::from_be_bytes([frame[header], frame[header + 1]]));
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }
}

#[tokio::test]
async fn protocol_violations_get_a_1002_close_frame_and_are_recorded_as_such() {
    let sluice = Sluice::start(&["--demo"], &credentials());
    let mut events = Events::open(&sluice).await;
    let violations: [(&str, u8, Vec<u8>, bool); 6] = [
        ("reserved opcode", 0x83, b"x".to_vec(), true),
        ("RSV1 without an extension", 0xC1, b"x".to_vec(), true),
        ("unmasked client frame", 0x81, b"hello".to_vec(), false),
        ("continuation without a start", 0x80, b"x".to_vec(), true),
        ("200-byte ping", 0x89, vec![0u8; 200], true),
        ("close code 999", 0x88, 999u16.to_be_bytes().to_vec(), true),
    ];
    for (what, first, payload, masked) in violations {
        let mut ws = RawWs::open(&sluice, "/sensor-1").await;
        ws.send(first, &payload, masked).await;
        assert_eq!(ws.close_code().await, Some(1002), "{what}: no 1002 close frame");
        let event = events.find(Duration::from_secs(10), |e| e["type"] == "disconnect").await;
        assert_eq!(event["code"], 1002, "{what}: {event}");
    }
    let log = sluice.stderr();
    assert!(!log.contains("code=1002 reason=\"Protocol violation\" by_client=true"), "{log}");
}

#[tokio::test]
async fn a_client_whose_socket_stays_full_is_closed_by_the_ping_timeout() {
    let sluice = Sluice::start(
        &["--allow-anonymous", "--ping-interval", "1", "--queue-bytes", "268435456", "--queue-capacity", "100000"],
        &credentials(),
    );
    let mut events = Events::open(&sluice).await;
    // A tiny receive window, and never another read after the welcome.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(sluice.addr).await.unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request = sluice.url("/stalled").into_client_request().unwrap();
    let (mut stalled, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    let welcome = next_text(&mut stalled).await;
    let id = serde_json::from_str::<serde_json::Value>(&welcome).unwrap()["replyId"].as_str().unwrap().to_owned();
    events.find(Duration::from_secs(5), |e| e["type"] == "connect" && e["replyId"] == id.as_str()).await;

    // Far more than the socket buffers hold, far less than the queue bounds: only the
    // idle timeout can close this client.
    let body = "x".repeat(64 * 1024);
    for _ in 0..200 {
        assert_eq!(sluice.api("POST", "/api/publish/stalled", Some(&body)).await.0, 202);
    }
    let started = Instant::now();
    let event =
        events.find(Duration::from_secs(15), |e| e["type"] == "disconnect" && e["replyId"] == id.as_str()).await;
    assert!(started.elapsed() < Duration::from_secs(10), "closed only after {:?}", started.elapsed());
    assert!(event["reason"].as_str().unwrap().starts_with("ping timeout"), "{event}");
    // Its socket was full: it never got a close frame, and the record says so.
    assert_eq!(event["code"], 1006, "{event}");
    assert_eq!(sluice.api("GET", &format!("/api/clients/{id}"), None).await.0, 404);
}

async fn readyz(sluice: &Sluice) -> serde_json::Value {
    reqwest::get(sluice.http("/readyz")).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn consumer_lag_is_the_high_watermark_minus_the_position_and_a_stalled_partition_is_reported() {
    let tansu = Tansu::memory();
    let topic = topic("lag");
    tansu.create_topic(&topic, 2).await;
    let p = tansu.producer();
    for i in 0..5 {
        p.send(&topic, Some(0), Some(b"k"), Some(format!("old{i}").as_bytes()), &[]).await;
    }
    // Tansu holds each fetch for its full wait: with a 15 s wait the consumer sits on its
    // position while the records produced below wait in partition 1, as it would on a
    // partition the broker cannot serve.
    let sluice = Sluice::with_kafka(
        &tansu,
        &topic,
        &["--kafka-consumer-property", "fetch.wait.max.ms=15000", "--stuck-partition-timeout", "2"],
    );
    // Ready once partition 0's start is confirmed by a record the broker serves, which the
    // first held fetch brings back only after its 15 s.
    sluice.wait_status("/readyz", 200, Duration::from_secs(40)).await;
    let (mut ws, _) = connect(&sluice, "/*").await;
    for i in 0..7 {
        p.send(&topic, Some(1), Some(b"k"), Some(format!("new{i}").as_bytes()), &[]).await;
    }
    // Started at the end: partition 0 has nothing waiting; partition 1 has the 7.
    let start = Instant::now();
    loop {
        let text = reqwest::get(sluice.http("/metrics")).await.unwrap().text().await.unwrap();
        if text.contains(&format!("sluice_consumer_lag{{topic=\"{topic}\",partition=\"1\"}} 7")) {
            assert!(text.contains(&format!("sluice_consumer_lag{{topic=\"{topic}\",partition=\"0\"}} 0")), "{text}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no lag of 7 reported:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sluice.wait_for_log("partition stuck", Duration::from_secs(8)).await;
    let detail = readyz(&sluice).await;
    assert_eq!(detail["ready"], true, "{detail}");
    let p1 = &detail["partitions"][1];
    assert_eq!(
        (p1["partition"].as_i64(), p1["lag"].as_i64(), p1["stuck"].as_bool()),
        (Some(1), Some(7), Some(true)),
        "{detail}"
    );
    assert_eq!(p1["highWatermark"].as_i64(), Some(7), "{detail}");
    assert_eq!(detail["partitions"][0]["position"].as_i64(), Some(5), "{detail}");
    assert_eq!(sluice.metric("sluice_stuck_partitions ").await, 1.0);
    assert_eq!(sluice.metric("sluice_partition_stalls_total").await, 1.0);

    // The held fetch returns: the records arrive, the lag is gone, the partition moves.
    // Tansu answers a fetch with what it read when the fetch came in, once its wait is
    // over: a fetch sent just before the records were produced comes back empty after 15 s,
    // and the next brings them 15 s later. Hence up to two waits here.
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0..7 {
        let within = deadline.saturating_duration_since(Instant::now());
        assert_eq!(next_text_within(&mut ws, within).await, format!("new{i}"));
    }
    sluice.wait_for_log("partition moving again", Duration::from_secs(10)).await;
    let detail = readyz(&sluice).await;
    assert_eq!(detail["partitions"][1]["lag"].as_i64(), Some(0), "{detail}");
    assert_eq!(detail["partitions"][1]["position"].as_i64(), Some(7), "{detail}");
    assert_eq!(sluice.metric("sluice_stuck_partitions ").await, 0.0, "{detail}\n{}", sluice.stderr());
    // Logged once, not at every check.
    assert_eq!(sluice.stderr().matches("partition stuck").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_on_many_keys_stay_under_the_gateway_bound_and_fast_clients_keep_up() {
    const BOUND: usize = 8 << 20;
    const STALLED: usize = 50;
    // 6 MiB for each stalled client: more than the kernel's socket buffers take (up to
    // 4 MiB each here), so the rest waits in the gateway. Records small next to the bound:
    // what every client holds for a moment while its writes go out stays well under it.
    const ROUNDS: usize = 200;
    const RECORD: usize = 32 * 1024;
    let tansu = Tansu::memory();
    let topic = topic("bound");
    tansu.create_topic(&topic, 4).await;
    // Each client may hold 16 MiB: fifty of them could hold 800 MiB without the bound.
    let bound = BOUND.to_string();
    let sluice = Sluice::with_kafka(
        &tansu,
        &topic,
        &[
            "--max-queued-bytes",
            &bound,
            "--queue-bytes",
            "16777216",
            "--queue-capacity",
            "100000",
            "--ping-interval",
            "0",
        ],
    );
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        stalled.push(connect_small_window(&sluice, &format!("/s{i}")).await.0);
    }
    let (mut fast, _) = connect(&sluice, "/fast").await;
    let reader = tokio::spawn(async move {
        for round in 0..ROUNDS {
            let text = next_text(&mut fast).await;
            assert!(text.starts_with(&format!("{round:04}")), "{round}: {}", &text[..8]);
        }
        fast
    });
    // Watch the gauge while the records flow.
    let highest = Arc::new(std::sync::Mutex::new(0f64));
    let watch = {
        let url = sluice.http("/metrics");
        let highest = highest.clone();
        tokio::spawn(async move {
            loop {
                let Ok(response) = reqwest::get(&url).await else { return };
                let text = response.text().await.unwrap_or_default();
                let held = text
                    .lines()
                    .find_map(|l| l.strip_prefix("sluice_queued_bytes "))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                {
                    let mut h = highest.lock().unwrap();
                    *h = h.max(held);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let p = tansu.producer();
    let filler = "x".repeat(RECORD);
    for round in 0..ROUNDS {
        for i in 0..STALLED {
            p.0.send_result(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(&format!("s{i}"))
                    .payload(&format!("{round:04}{filler}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        }
        p.text(&topic, "fast", &format!("{round:04}{filler}")).await;
    }
    let _fast = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("the fast client kept up").unwrap();
    sluice.wait_metric("sluice_records_consumed_total", (ROUNDS * (STALLED + 1)) as f64, Duration::from_secs(60)).await;
    let held = sluice.metric("sluice_queued_bytes ").await;
    assert!(held <= BOUND as f64, "{held} bytes held past the bound");
    // Checked after each record: it may pass the bound by that record, no more.
    watch.abort();
    let highest = *highest.lock().unwrap();
    assert!(highest > 0.0);
    assert!(highest <= (BOUND + 2 * RECORD) as f64, "{highest} bytes held at the peak");
    // Some stalled clients were shed to stay under it, and only stalled ones.
    assert!(sluice.metric("sluice_queue_bound_sheds_total").await >= 1.0);
    let (_, clients) = sluice.api("GET", "/api/clients?key=fast", None).await;
    assert_eq!(clients["clients"].as_array().unwrap().len(), 1, "the fast client was shed: {clients}");
    assert!(clients["clients"][0]["closing"].is_null(), "{clients}");
    drop(stalled);
}

#[tokio::test]
async fn a_broker_outage_is_a_few_log_lines_with_counts_not_one_per_attempt() {
    let mut tansu = Tansu::durable();
    let topic = topic("outage-log");
    tansu.create_topic(&topic, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    sluice.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    let (_ws, _) = connect(&sluice, "/k").await;
    let before = sluice.stderr().lines().count();
    tansu.stop();
    // Twenty seconds of outage: librdkafka retries its connection many times a second.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let log = sluice.stderr();
    let during: Vec<&str> = log.lines().skip(before).filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    tansu.restart();
    sluice.wait_status("/readyz", 200, Duration::from_secs(40)).await;
    println!("{} warning lines:\n{}", during.len(), during.join("\n"));
    // Each kind of failure at most once per 15 s: a handful of kinds, two periods.
    assert!(during.len() <= 12, "{} warning lines during a 20 s outage:\n{}", during.len(), during.join("\n"));
    assert!(during.iter().any(|l| l.contains("not ready")), "the outage was not reported at all");
    assert!(sluice.metric("sluice_kafka_errors_total").await >= 1.0, "every failure is still counted");
}
