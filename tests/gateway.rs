//! Kafka → WebSocket, end to end: a real Tansu broker, records produced with rdkafka, the
//! real `sluice` binary, real WebSocket clients.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use tokio_tungstenite::tungstenite::Message;

fn texts(frames: &[Message]) -> Vec<String> {
    frames.iter().map(|m| m.to_text().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn records_reach_the_clients_of_their_key_and_of_star() {
    let tansu = Tansu::memory();
    let topic = topic("keys");
    tansu.create_topic(&topic, 3).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut a, _) = connect(&sluice, "/a").await;
    let (mut b, _) = connect(&sluice, "/b").await;
    let (mut all, _) = connect(&sluice, "/*").await;
    let p = tansu.producer();
    for (k, v) in [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2"), ("a", "a3")] {
        p.text(&topic, k, v).await;
    }
    // One key lives in one partition, so its records keep their order.
    assert_eq!([next_text(&mut a).await, next_text(&mut a).await, next_text(&mut a).await], ["a1", "a2", "a3"]);
    assert_eq!(next_text(&mut b).await, "b1");
    let mut got = HashSet::new();
    for _ in 0..5 {
        got.insert(next_text(&mut all).await);
    }
    assert_eq!(got, ["a1", "b1", "c1", "a2", "a3"].into_iter().map(String::from).collect());
    // Nothing else reached the keyed clients: the next record for them is the marker.
    p.text(&topic, "a", "a-end").await;
    p.text(&topic, "b", "b-end").await;
    assert_eq!(next_text(&mut a).await, "a-end");
    assert_eq!(next_text(&mut b).await, "b-end");
    // A sample of the records has its fan-out timed (one in 16), and of the batches written
    // (one in 16 per client) their record's age: records one at a time, each its own batch.
    for i in 0..64 {
        p.text(&topic, "a", &format!("age{i}")).await;
        assert_eq!(next_text(&mut a).await, format!("age{i}"));
    }
    sluice.wait_metric("sluice_fanout_seconds_count", 4.0, Duration::from_secs(5)).await;
    sluice.wait_metric("sluice_record_age_seconds_count", 2.0, Duration::from_secs(5)).await;
    let text = reqwest::get(sluice.http("/metrics")).await.unwrap().text().await.unwrap();
    let age_sum: f64 =
        text.lines().find_map(|l| l.strip_prefix("sluice_record_age_seconds_sum ")).unwrap().parse().unwrap();
    assert!(age_sum > 0.0 && age_sum < 60.0, "record ages summing to {age_sum} s");
}

#[tokio::test]
async fn keys_in_the_path_are_percent_decoded_without_the_query() {
    let tansu = Tansu::memory();
    let topic = topic("decode");
    tansu.create_topic(&topic, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut spaced, _) = connect(&sluice, "/sensor%201%2Fnorth?unrelated=1").await;
    let (mut accented, _) = connect(&sluice, "/caf%C3%A9").await;
    let (mut star_key, _) = connect(&sluice, "/%2A").await;
    let p = tansu.producer();
    p.text(&topic, "sensor 1/north", "spaced").await;
    p.text(&topic, "café", "accented").await;
    p.text(&topic, "*", "literal star").await;
    assert_eq!(next_text(&mut spaced).await, "spaced");
    assert_eq!(next_text(&mut accented).await, "accented");
    assert_eq!(next_text(&mut star_key).await, "literal star");
}

#[tokio::test]
async fn odd_records_are_forwarded_or_skipped_and_never_stall_the_stream() {
    let tansu = Tansu::memory();
    let topic = topic("odd");
    tansu.create_topic(&topic, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut keyed, _) = connect(&sluice, "/k").await;
    let (mut all, _) = connect(&sluice, "/*").await;
    let p = tansu.producer();
    let big = "x".repeat(1_000_000);
    p.send(&topic, None, None, Some(b"null key"), &[]).await;
    p.send(&topic, None, Some(b"k"), None, &[]).await; // tombstone
    p.send(&topic, None, Some(b"k"), Some(b"not json {"), &[]).await;
    p.send(&topic, None, Some(b"k"), Some(&[0xff, 0xfe, 0x00, 0x01]), &[]).await;
    p.send(&topic, None, Some(b"k"), Some(big.as_bytes()), &[]).await;
    p.send(&topic, None, Some(b"k"), Some(br#"{"after":true}"#), &[]).await;

    assert_eq!(next_text(&mut all).await, "null key");
    for ws in [&mut keyed, &mut all] {
        assert_eq!(next_text(ws).await, "not json {");
        assert_eq!(next_frame(ws).await, Message::Binary(vec![0xff, 0xfe, 0x00, 0x01].into()));
        assert_eq!(next_text(ws).await.len(), 1_000_000);
        assert_eq!(next_text(ws).await, r#"{"after":true}"#);
    }
    sluice.wait_metric("sluice_records_skipped_total{reason=\"tombstone\"}", 1.0, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn envelope_wraps_each_record_with_its_metadata() {
    let tansu = Tansu::memory();
    let topic = topic("envelope");
    tansu.create_topic(&topic, 2).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut ws, _) = connect(&sluice, "/k?envelope=true").await;
    let p = tansu.producer();
    p.send(&topic, Some(1), Some(b"k"), Some(br#"{"reading":42}"#), &[("source", "plant-7")]).await;
    p.send(&topic, Some(1), Some(b"k"), Some(b"plain"), &[]).await;

    let v: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(v["key"], "k");
    assert_eq!(v["topic"], topic.as_str());
    assert_eq!(v["partition"], 1);
    assert_eq!(v["offset"], 0);
    assert!(v["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(v["headers"]["source"], "plant-7");
    assert_eq!(v["value"]["reading"], 42);
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(v["value"], "plain");
    assert_eq!(v["offset"], 1);
}

#[tokio::test]
async fn welcome_frame_comes_first_with_a_unique_connection_id() {
    let tansu = Tansu::memory();
    let topic = topic("welcome");
    tansu.create_topic(&topic, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let mut ids = HashSet::new();
    for _ in 0..5 {
        // `connect` checks the first frame is the welcome and matches the header.
        let (_ws, id) = connect(&sluice, "/k").await;
        assert!(id.len() >= 32, "{id}");
        assert!(ids.insert(id));
    }

    let quiet = Sluice::with_kafka(&tansu, &topic, &["--no-welcome"]);
    let (mut ws, response) = try_connect(&quiet.url("/k"), &[("authorization", &basic(USER, PASSWORD))]).await.unwrap();
    assert!(response.headers().get("sluice-connection-id").is_some());
    tansu.producer().text(&topic, "k", "first data").await;
    assert_eq!(next_text(&mut ws).await, "first data");
}

#[tokio::test]
async fn every_replica_receives_every_partition() {
    let tansu = Tansu::memory();
    let topic = topic("replicas");
    tansu.create_topic(&topic, 4).await;
    let one = Sluice::with_kafka(&tansu, &topic, &[]);
    let two = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut a, _) = connect(&one, "/*").await;
    let (mut b, _) = connect(&two, "/*").await;
    let p = tansu.producer();
    for partition in 0..4 {
        p.send(&topic, Some(partition), Some(b"k"), Some(format!("p{partition}").as_bytes()), &[]).await;
    }
    let want: HashSet<String> = (0..4).map(|p| format!("p{p}")).collect();
    for ws in [&mut a, &mut b] {
        let mut got = HashSet::new();
        for _ in 0..4 {
            got.insert(next_text(ws).await);
        }
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_disconnected_without_blocking_others() {
    let tansu = Tansu::memory();
    let topic = topic("slow");
    tansu.create_topic(&topic, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &["--queue-capacity", "1024"]);
    let (mut fast, _) = connect(&sluice, "/k").await;
    let (mut slow, _) = connect_small_window(&sluice, "/k").await;

    // Enough to fill the slow client's queue (1024 frames here) and both sockets' buffers.
    const RECORDS: usize = 4000;
    const CHUNK: usize = 100;
    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(RECORDS);
        while got.len() < RECORDS {
            let text = next_text(&mut fast).await;
            got.push(text[..8].to_owned());
            let _ = progress.send(got.len());
        }
        got
    });
    // A steady stream, not one burst: each chunk goes out once the fast client has the
    // previous one, as a live topic would flow.
    let p = tansu.producer();
    let filler = "f".repeat(4 * 1024);
    for chunk in 0..RECORDS / CHUNK {
        let values: Vec<String> = (chunk * CHUNK..(chunk + 1) * CHUNK).map(|i| format!("{i:08}{filler}")).collect();
        p.many(&topic, "k", &values).await;
        let want = (chunk + 1) * CHUNK;
        tokio::time::timeout(Duration::from_secs(20), seen.wait_for(|n| *n >= want))
            .await
            .expect("the fast client keeps up")
            .expect("reader alive");
    }
    // The slow client is told why once it reads again; the fast one got everything.
    sluice.wait_metric("sluice_slow_consumer_disconnects_total", 1.0, Duration::from_secs(30)).await;
    let (_, close) = read_until_close(&mut slow, Duration::from_secs(10)).await;
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "slow consumer");
    let got = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("fast client kept up").unwrap();
    assert_eq!(got, (0..RECORDS).map(|i| format!("{i:08}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn clients_stay_connected_while_the_broker_restarts() {
    let mut tansu = Tansu::durable();
    let topic = topic("restart");
    tansu.create_topic(&topic, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    sluice.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    let (mut ws, _) = connect(&sluice, "/k").await;
    tansu.producer().text(&topic, "k", "before").await;
    assert_eq!(next_text(&mut ws).await, "before");

    tansu.stop();
    sluice.wait_status("/readyz", 503, Duration::from_secs(20)).await;
    tansu.restart();
    sluice.wait_status("/readyz", 200, Duration::from_secs(40)).await;
    tansu.producer().text(&topic, "k", "after").await;
    let frame = tokio::time::timeout(Duration::from_secs(40), next_text(&mut ws)).await.expect("delivery resumed");
    assert_eq!(frame, "after");
}

#[tokio::test]
async fn sigterm_flushes_queued_records_then_closes_with_1001() {
    let tansu = Tansu::memory();
    let topic = topic("sigterm");
    tansu.create_topic(&topic, 1).await;
    let mut sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut ws, _) = connect(&sluice, "/k").await;
    let p = tansu.producer();
    for i in 0..50 {
        p.text(&topic, "k", &format!("r{i}")).await;
    }
    // Everything is consumed (queued or on the wire) before the signal; none read yet.
    sluice.wait_metric("sluice_records_consumed_total", 50.0, Duration::from_secs(20)).await;
    sluice.signal("TERM");
    let (data, close) = read_until_close(&mut ws, Duration::from_secs(15)).await;
    assert_eq!(texts(&data), (0..50).map(|i| format!("r{i}")).collect::<Vec<_>>());
    assert_eq!(u16::from(close.expect("close frame").code), 1001);
    assert!(sluice.wait(Duration::from_secs(15)).success());
}

#[tokio::test]
async fn a_missing_topic_is_one_clear_line_and_a_nonzero_exit() {
    let tansu = Tansu::memory();
    let brokers = tansu.brokers();
    let out = sluice_command(&["--port", "0"])
        .envs([
            ("KAFKA_BROKERS", brokers.as_str()),
            ("input", "no-such-topic"),
            ("WS_USERNAME", "u"),
            ("WS_PASSWORD", "p"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("input") && errors[0].contains("no-such-topic"), "{stderr}");
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed() {
    let tansu = Tansu::memory();
    let topic = topic("ping");
    tansu.create_topic(&topic, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &["--ping-interval", "1"]);
    let (mut silent, id) = connect(&sluice, "/k").await;
    let (mut alive, _) = connect(&sluice, "/k").await;
    // The silent client does not read, so it answers no ping; the other one reads (and
    // so answers pings) all along, until the record produced below reaches it.
    let reader = tokio::spawn(async move { next_text(&mut alive).await });
    // Read only once the gateway has decided: reading earlier would answer its pings.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, client) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
        if client["closing"]["reason"] == "ping timeout" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the silent client was not closed: {client}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, close) = read_until_close(&mut silent, Duration::from_secs(5)).await;
    let close = close.expect("close frame");
    assert_eq!(close.reason.as_str(), "ping timeout");
    tansu.producer().text(&topic, "k", "still connected").await;
    assert_eq!(reader.await.unwrap(), "still connected");
}
