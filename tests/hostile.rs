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
