//! The event webhook (`--events-url`), through the real binary and an HTTP backend: events
//! arrive signed, in order per client, in JSON-array batches; the backend's answer replies
//! to a message's client; a backend that fails gets the same events again, in order, while
//! delivery to clients goes on; one that refuses them has them counted as dropped.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::futures_util::SinkExt;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a webhook secret of 32 bytes ok!";

/// What the backend does with a request.
#[derive(Clone, Copy)]
enum Mode {
    /// Takes the events; answers `ping` messages with `{"reply":"pong:ID"}`.
    Take,
    /// 503 for the first N requests, then as `Take`.
    FailFirst(usize),
    /// 400, always.
    Refuse,
}

#[derive(Default)]
struct Seen {
    /// Every event taken, in the order of the requests.
    events: Vec<Value>,
    requests: usize,
    bad_signatures: usize,
}

struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Backend {
    async fn start(mode: Mode) -> Backend {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new().route("/events", post(receive)).with_state((seen.clone(), mode));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Backend { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// The events of client `id` taken so far.
    fn events_of(&self, id: &str) -> Vec<Value> {
        self.seen.lock().unwrap().events.iter().filter(|e| e["replyId"] == id).cloned().collect()
    }

    async fn wait_for(&self, id: &str, kind: &str, within: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let events = self.events_of(id);
            if events.iter().any(|e| e["type"] == kind) {
                return events;
            }
            assert!(started.elapsed() < within, "no {kind} event for {id}: {events:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks `Sluice-Signature` as a backend would: HMAC-SHA256 of `t.body`, `t` recent.
fn signed(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers.get("sluice-signature").and_then(|v| v.to_str().ok()) else { return false };
    let Some((t, v1)) = header.strip_prefix("t=").and_then(|rest| rest.split_once(",v1=")) else { return false };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    if t.parse::<u64>().map_or(true, |t| now.abs_diff(t) > 60) {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == v1
}

async fn receive(
    State((seen, mode)): State<(Arc<Mutex<Seen>>, Mode)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut seen = seen.lock().unwrap();
    seen.requests += 1;
    if !signed(&headers, &body) {
        seen.bad_signatures += 1;
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    match mode {
        Mode::Refuse => return (StatusCode::BAD_REQUEST, String::new()),
        Mode::FailFirst(n) if seen.requests <= n => return (StatusCode::SERVICE_UNAVAILABLE, String::new()),
        _ => {}
    }
    let batch: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    let answers: Vec<Value> = batch
        .iter()
        .map(|e| match (e["type"].as_str(), e["data"].as_str()) {
            (Some("message"), Some("ping")) => json!({ "reply": format!("pong:{}", e["replyId"].as_str().unwrap()) }),
            _ => Value::Null,
        })
        .collect();
    seen.events.extend(batch);
    (StatusCode::OK, Value::Array(answers).to_string())
}

fn gateway(backend: &Backend) -> Sluice {
    Sluice::start(
        &["--events-url", &backend.url()],
        &[
            ("WS_USERNAME", USER),
            ("WS_PASSWORD", PASSWORD),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("SLUICE_WEBHOOK_SECRET", SECRET),
        ],
    )
}

async fn open(sluice: &Sluice) -> (Ws, String) {
    let (mut ws, _) = try_connect(&sluice.url("/k"), &[("authorization", &basic(USER, PASSWORD))]).await.unwrap();
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    (ws, welcome["replyId"].as_str().unwrap().to_owned())
}

fn types_and_data(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| format!("{}{}", e["type"].as_str().unwrap(), e["data"].as_str().unwrap_or(""))).collect()
}

#[tokio::test]
async fn events_arrive_signed_and_in_order_and_the_answer_replies_to_the_client() {
    let backend = Backend::start(Mode::Take).await;
    let sluice = gateway(&backend);
    let (mut ws, id) = open(&sluice).await;
    ws.send(Message::Text("ping".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, format!("pong:{id}"));
    for data in ["a", "b", "c"] {
        ws.send(Message::Text(data.into())).await.unwrap();
    }
    close(&mut ws).await;
    let events = backend.wait_for(&id, "disconnect", Duration::from_secs(10)).await;
    assert_eq!(types_and_data(&events), ["connect", "messageping", "messagea", "messageb", "messagec", "disconnect"]);
    assert_eq!(events[0]["key"], "k");
    assert_eq!(backend.seen.lock().unwrap().bad_signatures, 0);
    sluice.wait_metric("sluice_webhook_events_total", 6.0, Duration::from_secs(5)).await;
    assert!(sluice.metric("sluice_replies_delivered_total").await >= 1.0);
}

#[tokio::test]
async fn a_failing_backend_gets_the_events_again_in_order_while_delivery_goes_on() {
    let backend = Backend::start(Mode::FailFirst(3)).await;
    let sluice = gateway(&backend);
    let (mut ws, id) = open(&sluice).await;
    for i in 0..20 {
        ws.send(Message::Text(format!("m{i}").into())).await.unwrap();
    }
    // Records reach the client while its events wait for the backend.
    assert_eq!(sluice.api("POST", "/api/publish/k", Some("live")).await.0, 202);
    assert_eq!(next_text(&mut ws).await, "live");
    close(&mut ws).await;
    let events = backend.wait_for(&id, "disconnect", Duration::from_secs(20)).await;
    let mut expected = vec!["connect".to_owned()];
    expected.extend((0..20).map(|i| format!("messagem{i}")));
    expected.push("disconnect".into());
    assert_eq!(types_and_data(&events), expected);
    assert!(sluice.metric("sluice_webhook_retries_total").await >= 3.0);
    sluice.wait_for_log("webhook POST failed", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn events_the_backend_refuses_are_dropped_counted_and_logged() {
    let backend = Backend::start(Mode::Refuse).await;
    let sluice = gateway(&backend);
    let (mut ws, _) = open(&sluice).await;
    ws.send(Message::Text("x".into())).await.unwrap();
    sluice.wait_metric("sluice_webhook_dropped_total{reason=\"refused\"}", 2.0, Duration::from_secs(10)).await;
    sluice.wait_for_log("webhook events dropped", Duration::from_secs(5)).await;
    // The connection is none the worse for it.
    assert_eq!(sluice.api("POST", "/api/publish/k", Some("still")).await.0, 202);
    assert_eq!(next_text(&mut ws).await, "still");
}

#[test]
fn the_webhook_needs_a_secret_long_enough() {
    let cases: [(&[&str], &str); 3] = [
        (&["--events-url", "http://127.0.0.1:1/e"], "required with SLUICE_EVENTS_URL"),
        (&["--events-url", "http://127.0.0.1:1/e", "--webhook-secret", "short"], "at least 16 bytes"),
        (&["--webhook-secret", SECRET], "given without SLUICE_EVENTS_URL"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--port", "0", "--allow-anonymous"];
        all.extend_from_slice(args);
        let out = sluice_command(&all).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains("--webhook-secret / SLUICE_WEBHOOK_SECRET") && stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test]
async fn a_multiplexed_connection_s_subscribes_and_unsubscribes_are_events_too() {
    let backend = Backend::start(Mode::Take).await;
    let sluice = gateway(&backend);
    let headers = [("authorization", basic(USER, PASSWORD)), ("sec-websocket-protocol", "sluice.v1".into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut ws, _) = try_connect(&sluice.url("/"), &headers).await.unwrap();
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let id = welcome["replyId"].as_str().unwrap().to_owned();
    let subscribe = json!({ "type": "subscribe", "id": "s1", "keys": ["a", "b"] });
    ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    assert!(next_text(&mut ws).await.contains("\"subscribed\""));
    ws.send(Message::Text(json!({ "type": "unsubscribe", "id": "s1" }).to_string().into())).await.unwrap();
    assert!(next_text(&mut ws).await.contains("\"unsubscribed\""));
    close(&mut ws).await;
    let events = backend.wait_for(&id, "disconnect", Duration::from_secs(10)).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["connect", "subscribe", "unsubscribe", "disconnect"]);
    assert_eq!(events[1]["subscription"]["id"], "s1");
    assert_eq!(events[1]["subscription"]["keys"], json!(["a", "b"]));
    assert_eq!(events[1]["key"], Value::Null);
    assert_eq!(events[2]["id"], "s1");
}
