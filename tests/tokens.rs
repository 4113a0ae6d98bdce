//! Token expiry and renewal, through the real binary: a token-authenticated connection is
//! closed with 4001 `token expired` at its `exp`; a multiplexed one that presents a later
//! token of the same user first stays; `--token-expiry ignore` keeps today's behaviour;
//! Basic credentials never expire.

mod common;

use std::time::{Duration, Instant};

use common::futures_util::SinkExt;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn embedded(args: &[&str]) -> Sluice {
    Sluice::start(args, &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)])
}

async fn token(sluice: &Sluice, sub: &str, ttl: u64) -> String {
    let body = json!({ "sub": sub, "ttl": ttl }).to_string();
    let (status, answer) = sluice.api("POST", "/api/tokens", Some(&body)).await;
    assert_eq!(status, 201, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}

async fn open(sluice: &Sluice, path: &str, headers: &[(&str, &str)]) -> (Ws, Value) {
    let (mut ws, _) = try_connect(&sluice.url(path), headers).await.expect("connect");
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    (ws, welcome)
}

/// Publishes `value` to key `k` and reads until it arrives (as a plain frame or as a
/// multiplexed record's value).
async fn receives(sluice: &Sluice, ws: &mut Ws, value: &str) {
    assert_eq!(sluice.api("POST", "/api/publish/k", Some(value)).await.0, 202);
    loop {
        let text = next_text(ws).await;
        let got = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["value"].as_str().map(str::to_owned));
        if text == value || got.as_deref() == Some(value) {
            return;
        }
    }
}

#[tokio::test]
async fn a_token_connection_is_closed_with_4001_at_its_expiry_and_basic_ones_are_not() {
    let sluice = embedded(&[]);
    let short = token(&sluice, "dash", 2).await;
    let started = Instant::now();
    let (mut ws, _) = open(&sluice, &format!("/k?token={short}"), &[]).await;
    let (mut basic_ws, _) = open(&sluice, "/k", &[("authorization", &basic(USER, PASSWORD))]).await;
    let (_, close) = read_until_close(&mut ws, Duration::from_secs(15)).await;
    let close = close.expect("a close frame at the expiry");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (4001, "token expired"));
    // Not before the token's `exp` (whole seconds), and not long after it.
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(6), "{took:?}");
    sluice.wait_metric("sluice_tokens_expired_total", 1.0, Duration::from_secs(5)).await;
    receives(&sluice, &mut basic_ws, "still here").await;
}

async fn mux(sluice: &Sluice, token: &str) -> Ws {
    let (mut ws, _) = open(sluice, &format!("/?token={token}"), &[("sec-websocket-protocol", "sluice.v1")]).await;
    ws.send(Message::Text(json!({ "type": "subscribe", "id": "s", "keys": ["k"] }).to_string().into())).await.unwrap();
    let answer: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(answer["type"], "subscribed", "{answer}");
    ws
}

async fn send(ws: &mut Ws, frame: Value) -> Value {
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    serde_json::from_str(&next_text(ws).await).unwrap()
}

#[tokio::test]
async fn a_multiplexed_connection_that_refreshes_its_token_stays_past_the_first_expiry() {
    let sluice = embedded(&[]);
    let mut ws = mux(&sluice, &token(&sluice, "dash", 2).await).await;
    // Refused: another user's token, and something that is not a token.
    let other = send(&mut ws, json!({ "type": "refresh", "token": token(&sluice, "eve", 60).await })).await;
    assert_eq!((other["type"].as_str(), other["status"].as_u64()), (Some("error"), Some(403)), "{other}");
    let bad = send(&mut ws, json!({ "type": "refresh", "token": "not.a.token" })).await;
    assert_eq!(bad["status"], 401, "{bad}");
    let later = send(&mut ws, json!({ "type": "refresh", "token": token(&sluice, "dash", 60).await })).await;
    assert_eq!(later["type"], "refreshed", "{later}");
    assert!(later["expiresAt"].as_str().unwrap().ends_with('Z'));
    tokio::time::sleep(Duration::from_secs(4)).await;
    receives(&sluice, &mut ws, "after the first expiry").await;
    assert_eq!(sluice.metric("sluice_tokens_expired_total").await, 0.0);

    // One that does not refresh is closed like any other.
    let mut lapsed = mux(&sluice, &token(&sluice, "dash", 1).await).await;
    let (_, close) = read_until_close(&mut lapsed, Duration::from_secs(15)).await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(4001));
}

#[tokio::test]
async fn with_token_expiry_ignore_an_expired_token_keeps_its_connection() {
    let sluice = embedded(&["--token-expiry", "ignore"]);
    let (mut ws, _) = open(&sluice, &format!("/k?token={}", token(&sluice, "dash", 1).await), &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    receives(&sluice, &mut ws, "kept").await;
}
