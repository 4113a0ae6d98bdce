//! Resume across a gateway restart, with records produced the way real producers send them:
//! many to a batch. A new process must deliver every record after a client's cursor (by
//! WebSocket `?cursor=`, by SSE `Last-Event-ID`, and by a multiplexed connection's
//! `subscribe` with a `cursor`), in each partition's order, with no
//! duplicate, and say `"resumed":true` only when it did — whatever the broker reports as a
//! partition's end (Tansu's high watermark after a multi-record batch is the batch's first
//! offset + 1, not its end).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;

const KEYS: [&str; 6] = ["A", "B", "C", "D", "E", "F"];

/// `{prefix}{i}` for each i, keys cycling over A–F.
fn batch(prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range.map(|i| (KEYS[i % KEYS.len()].to_owned(), format!("{prefix}{i}"))).collect()
}

/// One record as a client saw it: (partition, offset, value, cursor, subscription id on a
/// multiplexed connection).
type Seen = (i64, i64, String, String, Option<String>);

fn envelope(text: &str) -> Seen {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (
        v["partition"].as_i64().unwrap(),
        v["offset"].as_i64().unwrap(),
        v["value"].as_str().map(str::to_owned).unwrap_or_else(|| v["value"].to_string()),
        v["cursor"].as_str().expect("a cursor in every envelope").to_owned(),
        v["sub"].as_str().map(str::to_owned),
    )
}

/// Up to `n` records, or fewer when none comes for 10 s (the assertions then say which
/// are missing).
async fn ws_records(ws: &mut Ws, n: usize) -> Vec<Seen> {
    use futures_util::StreamExt;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => out.push(envelope(&t)),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the socket ended: {other:?}"),
            Err(_) => break,
        }
    }
    out
}

async fn sse_records(events: &mut EventStream, n: usize) -> Vec<Seen> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (event, id, data) = events.next().await;
        assert_eq!(event, "message", "{data}");
        let seen = envelope(&data);
        assert_eq!(id.as_deref(), Some(seen.3.as_str()), "an event's id is its cursor");
        out.push(seen);
    }
    out
}

/// Every value once, and each partition's offsets rising.
fn assert_once_in_order(got: &[Seen], expected: &BTreeSet<String>, what: &str) {
    let values: Vec<&String> = got.iter().map(|r| &r.2).collect();
    let unique: BTreeSet<&String> = values.iter().copied().collect();
    assert_eq!(unique.len(), values.len(), "{what}: a record arrived twice");
    let missing: Vec<&String> = expected.iter().filter(|v| !unique.contains(v)).collect();
    let extra: Vec<&&String> = unique.iter().filter(|v| !expected.contains(**v)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, unexpected {extra:?}");
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for (p, o, v, _, _) in got {
        if let Some(prev) = last.insert(*p, *o) {
            assert!(prev < *o, "{what}: partition {p} went from offset {prev} to {o} ({v})");
        }
    }
}

async fn open_ws(sluice: &Sluice, path: &str) -> (Ws, Value) {
    let (mut ws, _) =
        try_connect(&sluice.url(path), &[("authorization", &basic(USER, PASSWORD))]).await.expect("connect");
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    (ws, welcome)
}

async fn open_sse(sluice: &Sluice, last_event_id: Option<&str>) -> (EventStream, Value) {
    let (mut events, head) = EventStream::open(sluice, "/*?envelope=true", last_event_id).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (event, _, welcome) = events.next().await;
    assert_eq!(event, "connected");
    (events, serde_json::from_str(&welcome).unwrap())
}

/// Keeps producing flushes of six records (`c0`, `c1`, …) until told to stop; the values
/// produced, in order.
fn keep_producing(tansu: &Tansu, topic: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    let producer = tansu.batching_producer(Duration::from_millis(20));
    let topic = topic.to_owned();
    tokio::spawn(async move {
        let mut produced = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let records = batch("c", i..i + 6);
            producer.flush_all(&topic, &records).await;
            produced.extend(records.into_iter().map(|(_, v)| v));
            i += 6;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        produced
    })
}

/// The scenario: a first gateway serves 220 records (four flushes), its clients keep the
/// cursor of record `cursor_at` (of 220), it stops, 24 records come in one flush, a new
/// process starts (with a producer still going, when `producing`), and the clients resume
/// there by cursor and by `Last-Event-ID`.
async fn resume_after_restart(tansu: Tansu, producing: bool, cursor_at: usize) {
    let topic = topic("restart-batches");
    tansu.create_topic(&topic, 3).await;
    let producer = tansu.batching_producer(Duration::from_millis(50));
    let args = ["--kafka-property", "fetch.wait.max.ms=5"];

    let mut first = Sluice::with_kafka(&tansu, &topic, &args);
    let (mut ws, _) = open_ws(&first, "/*?envelope=true").await;
    let (mut sse, _) = open_sse(&first, None).await;
    for chunk in 0..4 {
        producer.flush_all(&topic, &batch("a", chunk * 55..(chunk + 1) * 55)).await;
    }
    let before = ws_records(&mut ws, 220).await;
    assert_once_in_order(&before, &batch("a", 0..220).into_iter().map(|(_, v)| v).collect(), "first gateway");
    let sse_before = sse_records(&mut sse, 220).await;
    let cursor = before[cursor_at].3.clone();
    let last_event_id = sse_before[cursor_at].3.clone();
    assert_eq!(cursor, last_event_id, "both transports name the same positions");
    first.signal("TERM");
    assert!(first.wait(Duration::from_secs(15)).success());
    drop((ws, sse));

    // While no gateway runs: 24 records in one flush, several to a batch per partition.
    producer.flush_all(&topic, &batch("b", 0..24)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let background = producing.then(|| keep_producing(&tansu, &topic, stop.clone()));

    let second = Sluice::with_kafka(&tansu, &topic, &args);
    second.wait_status("/readyz", 200, Duration::from_secs(20)).await;
    let (mut ws, welcome) = open_ws(&second, &format!("/*?envelope=true&cursor={cursor}")).await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    let (mut sse, sse_welcome) = open_sse(&second, Some(&last_event_id)).await;
    assert_eq!(sse_welcome["resumed"], true, "{sse_welcome}");
    let mut mux = open_mux(&second, &cursor).await;

    let mut expected: BTreeSet<String> = before[cursor_at + 1..].iter().map(|r| r.2.clone()).collect();
    expected.extend(batch("b", 0..24).into_iter().map(|(_, v)| v));
    if let Some(background) = background {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        expected.extend(background.await.unwrap());
    }
    // Then live records, exactly once after the replayed ones.
    producer.flush_all(&topic, &batch("d", 0..6)).await;
    expected.extend(batch("d", 0..6).into_iter().map(|(_, v)| v));

    let got = ws_records(&mut ws, expected.len()).await;
    assert_once_in_order(&got, &expected, "WebSocket resume");
    assert_silent(&mut ws, Duration::from_millis(500)).await;
    let got = sse_records(&mut sse, expected.len()).await;
    assert_once_in_order(&got, &expected, "SSE resume");
    let got = ws_records(&mut mux, expected.len()).await;
    assert!(got.iter().all(|r| r.4 == Some("r".to_owned())), "every record of the subscription carries its id");
    assert_once_in_order(&got, &expected, "multiplexed resume");
    assert_silent(&mut mux, Duration::from_millis(300)).await;
}

/// A multiplexed connection whose subscription `r` (every key) resumes from `cursor`; its
/// `subscribed` answer read.
async fn open_mux(sluice: &Sluice, cursor: &str) -> Ws {
    use futures_util::SinkExt;
    let (mut ws, _) = try_connect(
        &sluice.url("/"),
        &[("authorization", &basic(USER, PASSWORD)), ("sec-websocket-protocol", "sluice.v1")],
    )
    .await
    .expect("connect");
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    let subscribe = serde_json::json!({ "type": "subscribe", "id": "r", "cursor": cursor });
    ws.send(tokio_tungstenite::tungstenite::Message::Text(subscribe.to_string().into())).await.unwrap();
    let answer: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(
        (&answer["type"], &answer["resumed"]),
        (&serde_json::json!("subscribed"), &serde_json::json!(true)),
        "{answer}"
    );
    ws
}

#[tokio::test]
async fn a_restarted_gateway_resumes_every_record_of_batches_produced_while_it_was_down() {
    resume_after_restart(Tansu::memory(), false, 219).await;
}

#[tokio::test]
async fn a_restarted_gateway_resumes_every_record_with_the_broker_on_sqlite() {
    resume_after_restart(Tansu::durable(), false, 219).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_resumes_every_record_while_the_producer_keeps_going() {
    resume_after_restart(Tansu::memory(), true, 219).await;
}

#[tokio::test]
async fn a_cursor_inside_a_batch_resumes_with_the_rest_of_that_batch() {
    // Record 100 lies inside the batches of the second flush: Kafka is read from the
    // middle of a batch, which a broker serving whole batches must not skip.
    resume_after_restart(Tansu::memory(), false, 100).await;
}

#[tokio::test]
async fn last_n_right_after_a_restart_is_read_from_kafka() {
    let tansu = Tansu::memory();
    let topic = topic("restart-last");
    tansu.create_topic(&topic, 3).await;
    let producer = tansu.batching_producer(Duration::from_millis(20));
    producer.flush_all(&topic, &batch("a", 0..30)).await;
    // Ten more, one at a time: their times order them across partitions.
    for i in 0..10 {
        producer.flush_all(&topic, &batch("t", i..i + 1)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A gateway that has dispatched nothing yet: memory holds none of these.
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut ws, welcome) = open_ws(&sluice, "/A?envelope=true&last=3").await;
    assert_eq!(welcome["last"], 3, "{welcome}");
    let got: Vec<String> = ws_records(&mut ws, 3).await.into_iter().map(|r| r.2).collect();
    // Key A is every sixth record: a24 and the t's whose index is a multiple of six.
    assert_eq!(got, ["a24", "t0", "t6"]);

    let (mut ws, welcome) = open_ws(&sluice, "/*?envelope=true&last=4").await;
    assert_eq!(welcome["last"], 4, "{welcome}");
    let got: Vec<String> = ws_records(&mut ws, 4).await.into_iter().map(|r| r.2).collect();
    assert_eq!(got, ["t6", "t7", "t8", "t9"]);

    // Then live, nothing repeated.
    producer.flush_all(&topic, &batch("live", 0..1)).await;
    assert_eq!(ws_records(&mut ws, 1).await[0].2, "live0");
    assert_silent(&mut ws, Duration::from_millis(300)).await;
}
