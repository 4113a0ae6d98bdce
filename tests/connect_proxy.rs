//! The connect proxy (`--connect-url`), through the real binary and an HTTP backend: the
//! backend's allow carries the user, the keys and the data the registry shows; its deny's
//! status is the upgrade's answer; a backend that is slow, failing or down refuses with
//! 503, never allows; a storm of upgrades reuses a bounded number of connections to it.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Error as WsError;

#[derive(Default)]
struct Seen {
    /// Every request's body.
    requests: Mutex<Vec<Value>>,
    /// The backend's peers: one per connection the gateway opened to it.
    peers: Mutex<HashSet<SocketAddr>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// Decides by the `?token=` the gateway forwards.
async fn decide(
    State(seen): State<Arc<Seen>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    seen.peers.lock().unwrap().insert(peer);
    seen.requests.lock().unwrap().push(body.clone());
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let answer = match body["token"].as_str().unwrap_or("") {
        "good" => (
            StatusCode::OK,
            json!({ "allow": true, "user": "ann", "keys": ["sensor-*"], "data": { "plan": "pro", "seats": 3 } }),
        ),
        "storm" => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            (StatusCode::OK, json!({ "allow": true, "user": "storm" }))
        }
        "bad" => (StatusCode::OK, json!({ "allow": false, "status": 401, "error": "log in first" })),
        "teapot" => (StatusCode::IM_A_TEAPOT, json!({ "error": "short and stout" })),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(8)).await;
            (StatusCode::OK, json!({ "allow": true }))
        }
        "boom" => (StatusCode::INTERNAL_SERVER_ERROR, json!({})),
        _ => (StatusCode::OK, json!({ "allow": "maybe" })),
    };
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    (answer.0, Json(answer.1))
}

async fn backend() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new().route("/connect", post(decide)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/connect", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
    (url, seen)
}

fn gateway(url: &str) -> Sluice {
    Sluice::start(&["--connect-url", url], &[("ADMIN_TOKEN", ADMIN_TOKEN)])
}

/// The upgrade's answer: 101 and the welcome, or the refusal's status and body.
async fn upgrade(sluice: &Sluice, path: &str) -> (u16, Value) {
    match try_connect(&sluice.url(path), &[("origin", &sluice.http(""))]).await {
        Ok((mut ws, _)) => (101, serde_json::from_str(&next_text(&mut ws).await).unwrap()),
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            (response.status().as_u16(), serde_json::from_slice(body).unwrap_or(Value::Null))
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn the_backend_decides_who_connects_and_what_the_registry_shows() {
    let (url, seen) = backend().await;
    let sluice = gateway(&url);
    let origin = [("origin", sluice.http(""))];
    let origin: Vec<(&str, &str)> = origin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Kept open while the registry is asked about it.
    let (mut ws, _) = try_connect(&sluice.url("/sensor-1?token=good&envelope=true"), &origin).await.expect("allowed");
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let id = welcome["replyId"].as_str().unwrap();
    let (status, client) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(client["user"], "ann");
    assert_eq!(client["data"], json!({ "plan": "pro", "seats": 3 }));
    // What the backend sent: the request as the gateway saw it.
    let asked = seen.requests.lock().unwrap()[0].clone();
    assert_eq!(asked["path"], "/sensor-1");
    assert_eq!(asked["query"], "token=good&envelope=true");
    assert_eq!(asked["transport"], "websocket");
    assert_eq!(asked["headers"]["origin"], sluice.http("").trim_end_matches('/'));
    assert!(asked["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"), "{asked}");

    // The keys the backend allowed, and no others.
    assert_eq!(upgrade(&sluice, "/other?token=good").await.0, 403);
    // Its refusals, with their status.
    let (status, body) = upgrade(&sluice, "/sensor-1?token=bad").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("log in first")));
    assert_eq!(upgrade(&sluice, "/sensor-1?token=teapot").await.0, 418);
    // A backend that cannot decide: 503, never an allow.
    for token in ["boom", "nonsense"] {
        assert_eq!(upgrade(&sluice, &format!("/sensor-1?token={token}")).await.0, 503, "{token}");
    }
    let started = Instant::now();
    assert_eq!(upgrade(&sluice, "/sensor-1?token=slow").await.0, 503);
    assert!(started.elapsed() < Duration::from_secs(7), "{:?}", started.elapsed());
    sluice.wait_for_log("proxy cannot decide", Duration::from_secs(5)).await;
    let decisions = |outcome: &str| format!("sluice_proxy_decisions_total{{proxy=\"connect\",outcome=\"{outcome}\"}}");
    assert!(sluice.metric(&decisions("allow")).await >= 2.0);
    assert!(sluice.metric(&decisions("unavailable")).await >= 3.0);
}

#[tokio::test]
async fn a_backend_that_is_down_refuses_everyone() {
    let sluice = gateway(&format!("http://127.0.0.1:{}/connect", free_port()));
    assert_eq!(upgrade(&sluice, "/k?token=good").await.0, 503);
    assert_eq!(upgrade(&sluice, "/k").await.0, 503);
}

#[tokio::test]
async fn a_storm_of_upgrades_shares_a_bounded_pool_of_connections_to_the_backend() {
    let (url, seen) = backend().await;
    let sluice = Arc::new(gateway(&url));
    let upgrades: Vec<_> = (0..400)
        .map(|_| {
            let sluice = sluice.clone();
            tokio::spawn(async move { upgrade(&sluice, "/k?token=storm").await.0 })
        })
        .collect();
    for u in upgrades {
        assert_eq!(u.await.unwrap(), 101);
    }
    let peers = seen.peers.lock().unwrap().len();
    let most = seen.most_in_flight.load(Ordering::SeqCst);
    assert!(most <= 64, "{most} decisions in flight at once");
    // Pooled: a connection is back in the pool a moment after its answer, so a request may
    // now and then open one more; never one per upgrade.
    assert!(peers <= 100, "{peers} connections to the backend for 400 upgrades");
    assert_eq!(seen.requests.lock().unwrap().len(), 400);
}

/// The subscribe proxy's backend: decides by the subscription's first key.
async fn decide_subscription(State(seen): State<Arc<Seen>>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    seen.requests.lock().unwrap().push(body.clone());
    match body["subscription"]["keys"][0].as_str().unwrap_or("") {
        "a" => (StatusCode::OK, Json(json!({ "allow": true }))),
        "secret" => (StatusCode::OK, Json(json!({ "allow": false, "status": 403, "error": "not yours" }))),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
    }
}

#[tokio::test]
async fn the_subscribe_proxy_decides_each_subscription_of_a_multiplexed_connection() {
    use common::futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let seen = Arc::new(Seen::default());
    let app = Router::new().route("/subscribe", post(decide_subscription)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/subscribe", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sluice = Sluice::start(
        &["--subscribe-url", &url],
        &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let headers = [("authorization", basic(USER, PASSWORD)), ("sec-websocket-protocol", "sluice.v1".into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut ws, _) = try_connect(&sluice.url("/"), &headers).await.unwrap();
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let mut answers = Vec::new();
    for (id, key) in [("s-ok", "a"), ("s-no", "secret"), ("s-down", "z")] {
        let frame = json!({ "type": "subscribe", "id": id, "keys": [key] }).to_string();
        ws.send(Message::Text(frame.into())).await.unwrap();
    }
    while answers.len() < 3 {
        let answer: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        answers.push(answer);
    }
    let by_id = |id: &str| answers.iter().find(|a| a["id"] == id).cloned().unwrap_or_default();
    assert_eq!(by_id("s-ok")["type"], "subscribed", "{answers:?}");
    assert_eq!((by_id("s-no")["status"].as_u64(), by_id("s-no")["error"].as_str()), (Some(403), Some("not yours")));
    assert_eq!(by_id("s-down")["status"], 503, "{answers:?}");
    // Only the allowed subscription is open, and its records flow.
    let (_, client) = sluice.api("GET", &format!("/api/clients/{}", welcome["replyId"].as_str().unwrap()), None).await;
    let ids: Vec<&str> = client["subscriptions"].as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, ["s-ok"]);
    assert_eq!(sluice.api("POST", "/api/publish/a", Some("\"hello\"")).await.0, 202);
    let record: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!((record["sub"].as_str(), &record["value"]), (Some("s-ok"), &json!("hello")));
    // What the backend was shown.
    let asked = seen.requests.lock().unwrap()[0].clone();
    assert_eq!(asked["replyId"], welcome["replyId"]);
    assert_eq!(asked["user"], USER);
    assert_eq!(asked["subscription"], json!({ "id": "s-ok", "keys": ["a"] }));
    assert!(sluice.metric("sluice_subscribes_refused_total{reason=\"proxy_denied\"}").await >= 1.0);
}
