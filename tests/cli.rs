//! The binary as a user meets it without Kafka: settings, start-up errors, the embedded
//! stream with demo data, authentication before the upgrade, and TLS.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use tokio_tungstenite::tungstenite::Error as WsError;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = sluice_command(args);
    cmd.envs(env.iter().copied());
    cmd.output().expect("run sluice")
}

#[test]
fn help_lists_every_setting_with_its_environment_name() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for name in [
        "--port",
        "PORT",
        "--input",
        "[env: input=]",
        "Quix__Broker__Address",
        "KAFKA_BROKERS",
        "WS_USERNAME",
        "WS_PASSWORD",
        "--allow-anonymous",
        "--demo",
        "--no-welcome",
        "--from",
        "--queue-capacity",
        "--slow-consumer",
        "--tls-cert",
        "--tls-key",
        "SLUICE_JWT_SECRET",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CA_LOCATION",
        "--kafka-property",
        "--config",
    ] {
        assert!(help.contains(name), "--help does not mention {name}");
    }
}

/// Options with no default: a value given or not (a file, a topic, a credential, a
/// pass-through property), and --help and --version. Every other option says its default.
const WITHOUT_DEFAULT: &[&str] = &[
    "--config",
    "--input",
    "--quix-sdk-token",
    "--tls-cert",
    "--tls-key",
    "--kafka-sasl-mechanism",
    "--kafka-sasl-username",
    "--kafka-sasl-password",
    "--kafka-ca-file",
    "--kafka-property",
    "--kafka-consumer-property",
    "--kafka-producer-property",
    "--jwks-url",
    "--connect-url",
    "--subscribe-url",
    "--events-url",
    "--webhook-secret",
    "--schema-registry",
    "--schema-registry-user",
    "--schema-registry-password",
    "--value-schema",
    "--key-schema",
    "--output",
    "--events",
    "--replies",
    "--admin-addr",
    "--cluster",
    "--cluster-ca-file",
    "--help",
    "--version",
];

#[test]
fn help_shows_the_default_of_every_option_that_has_one() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let options = &help[help.find("\nOptions:").expect("an Options section")..];
    // Each option's entry starts on a line indented less than its description.
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in options.lines().skip(1) {
        let text = line.trim_start();
        if text.starts_with('-') && line.len() - text.len() < 8 {
            let long = text.split([' ', ',', '=']).find(|w| w.starts_with("--")).expect("a long flag");
            entries.push((long.to_owned(), String::new()));
        } else if let Some((_, entry)) = entries.last_mut() {
            entry.push_str(text);
            entry.push(' ');
        }
    }
    assert!(entries.len() > 40, "{entries:?}");
    for (flag, entry) in &entries {
        let shows_default = entry.contains("[default:");
        if WITHOUT_DEFAULT.contains(&flag.as_str()) {
            assert!(!shows_default, "{flag} shows a default but is listed as having none: {entry}");
        } else {
            assert!(shows_default, "{flag} shows no default (give one, or list it in WITHOUT_DEFAULT): {entry}");
        }
    }
    for flag in WITHOUT_DEFAULT {
        assert!(entries.iter().any(|(f, _)| f == flag), "{flag} is not an option any more");
    }
}

/// Arguments, environment, and the setting the error line must name.
type BadValue = (&'static [&'static str], &'static [(&'static str, &'static str)], &'static str);

#[test]
fn a_value_the_command_line_cannot_take_is_one_config_error_line_and_exit_64() {
    let cases: [BadValue; 7] = [
        (&["--port", "99999"], &[], "--port / PORT"),
        (&["--port", "abc"], &[], "--port / PORT"),
        (&[], &[("PORT", "x")], "--port / PORT"),
        (&["--queue-capacity=-1"], &[], "--queue-capacity / SLUICE_QUEUE_CAPACITY"),
        (&["--admin-addr", "nowhere"], &[], "--admin-addr / SLUICE_ADMIN_ADDR"),
        (&["--prot", "80"], &[], "--prot"),
        (&["token", "--sub", "x", "--ttl", "soon"], &[("SLUICE_JWT_SECRET", JWT_SECRET)], "--ttl"),
    ];
    for (args, env, setting) in cases {
        let out = run(args, env);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line for {args:?} {env:?}:\n{stderr}");
        assert!(lines[0].starts_with(&format!("config error: {setting}: ")), "{args:?} {env:?}: {stderr}");
    }
    let out = run(&["--port", "99999"], &[]);
    assert!(String::from_utf8(out.stderr).unwrap().contains("\"99999\""));
    // Asking for help or the version is no error.
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("sluice "));
}

#[tokio::test]
async fn on_every_interface_the_start_up_lines_name_urls_that_work_here() {
    use std::io::BufRead;
    let mut child = sluice_command(&["--host", "0.0.0.0", "--port", "0", "--allow-anonymous"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        let last = line.starts_with("sluice listening on ");
        banner.push(line);
        if last {
            break;
        }
    }
    let listening = banner.last().cloned().unwrap_or_default();
    let url = listening.strip_prefix("sluice listening on ").and_then(|r| r.split_whitespace().next());
    let url = url.unwrap_or_else(|| panic!("no listening line: {banner:?}")).to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{listening}");
    assert!(listening.contains(&format!("subscribe at {url}/{{key}} or /*")), "{listening}");
    let port = url.rsplit(':').next().unwrap();
    assert!(banner.contains(&format!("console: http://127.0.0.1:{port}/")), "{banner:?}");
    let connected = try_connect(&format!("{url}/k"), &[]).await;
    let _ = child.kill();
    let _ = child.wait();
    connected.expect("the printed URL accepts a subscription");
}

#[test]
fn bad_configuration_reports_every_problem_at_once_and_binds_nothing() {
    let out = run(
        &["--queue-capacity", "0", "--slow-consumer", "sometimes", "--from", "yesterday"],
        &[("WS_USERNAME", "someone"), ("input", "orders")],
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 5, "one line per problem:\n{stderr}");
    for setting in
        ["SLUICE_QUEUE_CAPACITY", "SLUICE_SLOW_CONSUMER", "SLUICE_FROM", "WS_PASSWORD", "Quix__Broker__Address"]
    {
        assert!(
            lines.iter().any(|l| l.starts_with("config error:") && l.contains(setting)),
            "no line names {setting}:\n{stderr}"
        );
    }
    assert!(!String::from_utf8(out.stdout).unwrap().contains("listening"));
}

#[test]
fn an_unreachable_broker_is_one_clear_line_and_a_nonzero_exit() {
    let port = free_port().to_string();
    let brokers = format!("127.0.0.1:{port}");
    let out = run(
        &["--port", "0"],
        &[("KAFKA_BROKERS", &brokers), ("input", "t"), ("WS_USERNAME", "u"), ("WS_PASSWORD", "p")],
    );
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("Quix__Broker__Address") && errors[0].contains(&brokers), "{stderr}");
}

#[tokio::test]
async fn generated_password_is_printed_once_and_is_the_only_way_in() {
    let sluice = Sluice::start(&["--demo"], &[]);
    let line = sluice.banner.iter().find(|l| l.contains("generated credentials")).expect("password printed");
    let password = line.rsplit("password ").next().unwrap().trim_matches('"');
    assert!(password.len() >= 20);
    assert_eq!(sluice.banner.iter().filter(|l| l.contains(password)).count(), 1);
    assert!(!sluice.stderr().contains(password), "the password reached the log");

    let refused = try_connect(&sluice.url("/*"), &[]).await.unwrap_err();
    assert!(matches!(refused, WsError::Http(r) if r.status() == 401));
    let (mut ws, _) = try_connect(&sluice.url("/*"), &[("authorization", &basic("sluice", password))])
        .await
        .expect("generated credentials work");
    assert!(next_text(&mut ws).await.contains("replyId"));
}

#[tokio::test]
async fn demo_data_flows_within_seconds_and_keys_filter_it() {
    let sluice = Sluice::start(&["--demo"], &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD)]);
    let (mut all, _) = connect(&sluice, "/*").await;
    let (mut one, _) = connect(&sluice, "/sensor-2").await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 3 {
        let v: serde_json::Value = serde_json::from_str(&next_text(&mut all).await).unwrap();
        seen.insert(v["sensor"].as_str().unwrap().to_owned());
    }
    for _ in 0..3 {
        let v: serde_json::Value = serde_json::from_str(&next_text(&mut one).await).unwrap();
        assert_eq!(v["sensor"], "sensor-2");
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn jwt(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn refused_with(sluice: &Sluice, path: &str, headers: &[(&str, &str)]) -> u16 {
    match try_connect(&sluice.url(path), headers).await {
        Ok(_) => panic!("{path} with {headers:?} was let in"),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            if status == 401 {
                let challenges: Vec<_> = response
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect();
                assert!(challenges.iter().any(|c| c.starts_with("Basic realm=")), "{challenges:?}");
                assert!(challenges.iter().any(|c| c.starts_with("Bearer realm=")), "{challenges:?}");
            }
            status
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn credentials_are_checked_before_the_upgrade() {
    let sluice = Sluice::start(
        &["--demo"],
        &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("SLUICE_JWT_SECRET", JWT_SECRET)],
    );
    let expired = jwt(serde_json::json!({"sub": "dash", "exp": now() - 600}));
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "dash", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-!!"),
    )
    .unwrap();
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        ("/*".into(), vec![]),
        ("/*".into(), vec![("authorization", basic(USER, "wrong"))]),
        ("/*".into(), vec![("authorization", basic("nobody", PASSWORD))]),
        ("/*".into(), vec![("authorization", "Basic %%%".into())]),
        ("/*".into(), vec![("authorization", "Token abc".into())]),
        (format!("/*?token={expired}"), vec![]),
        (format!("/*?token={forged}"), vec![]),
        ("/*".into(), vec![("authorization", format!("Bearer {expired}"))]),
    ];
    for (path, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(refused_with(&sluice, path, &headers).await, 401, "{path} {headers:?}");
    }
    sluice.wait_metric("sluice_upgrades_refused_total{reason=\"bad_credentials\"}", 2.0, Duration::from_secs(5)).await;
    sluice.wait_metric("sluice_upgrades_refused_total{reason=\"bad_token\"}", 3.0, Duration::from_secs(5)).await;

    // A token limited to sensor-1 may read sensor-1 and nothing else.
    let limited = jwt(serde_json::json!({"sub": "dash", "exp": now() + 600, "keys": ["sensor-1"]}));
    assert_eq!(refused_with(&sluice, &format!("/sensor-2?token={limited}"), &[]).await, 403);
    assert_eq!(refused_with(&sluice, &format!("/*?token={limited}"), &[]).await, 403);
    let (mut ws, _) =
        try_connect(&sluice.url(&format!("/sensor-1?token={limited}")), &[]).await.expect("token for its key");
    assert!(next_text(&mut ws).await.contains("replyId"));
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(v["sensor"], "sensor-1");

    let bearer = format!("Bearer {}", jwt(serde_json::json!({"sub": "dash", "exp": now() + 600})));
    try_connect(&sluice.url("/*"), &[("authorization", &bearer)]).await.expect("bearer token");
    // The password holds ':' and a space.
    connect(&sluice, "/*").await;
    assert!(!sluice.stderr().contains(&limited), "a token reached the log");
}

#[tokio::test]
async fn anonymous_access_needs_the_flag() {
    let sluice = Sluice::start(&["--demo", "--allow-anonymous", "--no-welcome"], &[]);
    assert!(sluice.banner.iter().any(|l| l.contains("--allow-anonymous")));
    let (mut ws, response) = try_connect(&sluice.url("/sensor-3"), &[]).await.expect("anonymous");
    assert!(response.headers().get("sluice-connection-id").is_some());
    // --no-welcome: the first frame is data.
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(v["sensor"], "sensor-3");
}

#[tokio::test]
async fn settings_come_from_a_toml_file_under_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "ws_username = \"file-user\"\nws_password = \"file-pass\"\ndemo = true\nport = 1").unwrap();
    let path = path.to_str().unwrap();
    // --port 0 from the harness wins over the file's port 1.
    let sluice = Sluice::start(&["--config", path], &[]);
    let (mut ws, _) = try_connect(&sluice.url("/*"), &[("authorization", &basic("file-user", "file-pass"))])
        .await
        .expect("file credentials");
    assert!(next_text(&mut ws).await.contains("replyId"));
    // The environment wins over the file.
    let sluice = Sluice::start(&["--config", path], &[("WS_PASSWORD", "env-pass")]);
    try_connect(&sluice.url("/*"), &[("authorization", &basic("file-user", "env-pass"))]).await.expect("env password");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "prot = 80\n").unwrap();
    let out = run(&["--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8(out.stderr).unwrap().contains("prot"));
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_over_plain_http() {
    let sluice = Sluice::start(&["--demo"], &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD)]);
    sluice.wait_status("/healthz", 200, Duration::from_secs(5)).await;
    sluice.wait_status("/readyz", 200, Duration::from_secs(5)).await;
    let (mut ws, _) = connect(&sluice, "/*").await;
    next_text(&mut ws).await;
    sluice.wait_metric("sluice_connections ", 1.0, Duration::from_secs(5)).await;
    sluice.wait_metric("sluice_frames_sent_total", 2.0, Duration::from_secs(5)).await;
    // Build and process metrics, the process ones read from /proc at the scrape.
    let metrics = reqwest::get(sluice.http("/metrics")).await.unwrap().text().await.unwrap();
    let build = format!("sluice_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(metrics.lines().any(|l| l.starts_with(&build) && l.ends_with(" 1")), "{metrics}");
    assert!(sluice.metric("process_resident_memory_bytes").await > 1e6);
    assert!(sluice.metric("process_open_fds").await >= 3.0);
    assert!(sluice.metric("process_max_fds").await >= sluice.metric("process_open_fds").await);
    let started = sluice.metric("process_start_time_seconds").await;
    assert!((now() as f64 - started).abs() < 120.0, "started at {started}");
    assert!(metrics.contains("process_cpu_seconds_total "), "{metrics}");
    assert!(metrics.contains("process_virtual_memory_bytes "), "{metrics}");
    let console = reqwest::get(sluice.http("/")).await.unwrap().text().await.unwrap();
    assert!(console.contains("<title>Sluice</title>"));
    // An upgrade on an admin path is still a subscription to that key.
    let (_ws, _) = connect(&sluice, "/metrics").await;
}

#[tokio::test]
async fn wss_serves_websockets_over_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let sluice = Sluice::start(
        &["--demo", "--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()],
        &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD)],
    );

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(sluice.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://localhost:{}/sensor-1", sluice.addr.port()).into_client_request().unwrap();
    request.headers_mut().insert("authorization", basic(USER, PASSWORD).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.expect("wss upgrade");
    use futures_util::StreamExt;
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("replyId"));
    let data = ws.next().await.unwrap().unwrap();
    assert!(data.to_text().unwrap().contains("sensor-1"));
    assert!(sluice.banner.iter().any(|l| l.contains("wss://")));
}

/// Sends `request` on a fresh connection and returns everything the gateway answered
/// until it stopped talking for a moment, with the connection, still open.
async fn raw_exchange(sluice: &Sluice, request: &[u8]) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(sluice.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    (String::from_utf8_lossy(&answer).into_owned(), stream)
}

fn upgrade_request(method: &str, version: &str, key: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "{method} /sensor-1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: {version}\r\n"
    );
    if let Some(key) = key {
        r.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[tokio::test]
async fn the_opening_handshake_follows_rfc_6455_and_keeps_bytes_sent_right_behind_it() {
    let sluice = Sluice::start(&["--allow-anonymous"], &[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    // The key and accept value of RFC 6455 §1.3.
    let key = "dGhlIHNhbXBsZSBub25jZQ==";

    let (answer, _) = raw_exchange(&sluice, &upgrade_request("GET", "13", None)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let (answer, _) = raw_exchange(&sluice, &upgrade_request("GET", "8", Some(key))).await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{answer}");
    let (answer, _) = raw_exchange(&sluice, &upgrade_request("POST", "13", Some(key))).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    // A client that sends its first message in the same write as the request: the bytes
    // hyper read past the request must reach the WebSocket.
    let mut request = upgrade_request("GET", "13", Some(key));
    let payload = b"early";
    let mask = [1u8, 2, 3, 4];
    request.extend_from_slice(&[0x81, 0x80 | payload.len() as u8]);
    request.extend_from_slice(&mask);
    request.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let (answer, _open) = raw_exchange(&sluice, &request).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{answer}");
    let id = answer
        .lines()
        .find_map(|l| l.strip_prefix("sluice-connection-id: "))
        .expect("connection id header")
        .trim()
        .to_owned();
    assert!(answer.contains(&format!("\"replyId\":\"{id}\"")), "welcome frame: {answer}");
    sluice.wait_metric("sluice_client_messages_total", 1.0, Duration::from_secs(5)).await;
    let (status, client) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(client["messagesIn"], 1, "{client}");
    assert_eq!(client["lastMessageIn"]["data"], "early", "{client}");
}
