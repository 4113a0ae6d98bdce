//! Nothing missed, through the real binary against a real broker: resume by cursor after a
//! disconnect (from memory, and from Kafka after a gateway restart), exactly once at the
//! seam while records keep coming, a cursor too old, `?last=N`, a malformed cursor, and
//! Server-Sent Events resuming with `Last-Event-ID`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Error as WsError;

/// Connects with the test credentials; returns the socket and its welcome frame.
async fn open(sluice: &Sluice, path: &str) -> (Ws, Value) {
    let (mut ws, _) =
        try_connect(&sluice.url(path), &[("authorization", &basic(USER, PASSWORD))]).await.expect("connect");
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    (ws, welcome)
}

/// The next envelope frame as (partition, offset, value, cursor).
async fn record(ws: &mut Ws) -> (i64, i64, String, String) {
    let v: Value = serde_json::from_str(&next_text(ws).await).unwrap();
    (
        v["partition"].as_i64().unwrap(),
        v["offset"].as_i64().unwrap(),
        v["value"].as_str().map(str::to_owned).unwrap_or_else(|| v["value"].to_string()),
        v["cursor"].as_str().expect("a cursor in every envelope frame").to_owned(),
    )
}

async fn records(ws: &mut Ws, n: usize) -> Vec<(i64, i64, String, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(record(ws).await);
    }
    out
}

/// Produces `n` records spread over `partitions`, values `{prefix}{i}`, key `k{i % 3}`.
async fn produce(tansu: &Tansu, topic: &str, partitions: i32, prefix: &str, range: std::ops::Range<usize>) {
    let p = tansu.producer();
    for i in range {
        let key = format!("k{}", i % 3);
        p.send(topic, Some(i as i32 % partitions), Some(key.as_bytes()), Some(format!("{prefix}{i}").as_bytes()), &[])
            .await;
    }
}

fn values(got: &[(i64, i64, String, String)]) -> BTreeSet<String> {
    got.iter().map(|r| r.2.clone()).collect()
}

fn expected(prefix: &str, range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn a_client_that_reconnects_with_its_cursor_gets_exactly_what_it_missed() {
    let tansu = Tansu::memory();
    let topic = topic("resume");
    tansu.create_topic(&topic, 3).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut all, welcome) = open(&sluice, "/*?envelope=true").await;
    assert!(welcome["cursor"].is_string(), "{welcome}");
    assert!(welcome.get("resumed").is_none(), "{welcome}");
    let (mut keyed, _) = open(&sluice, "/k1?envelope=true").await;

    produce(&tansu, &topic, 3, "a", 0..30).await;
    let first = records(&mut all, 30).await;
    assert_eq!(values(&first), expected("a", 0..30));
    let keyed_first = records(&mut keyed, 10).await;
    close(&mut all).await;
    close(&mut keyed).await;

    produce(&tansu, &topic, 3, "b", 0..30).await;
    let cursor = &first.last().unwrap().3;
    let (mut all, welcome) = open(&sluice, &format!("/*?envelope=true&cursor={cursor}")).await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    let missed = records(&mut all, 30).await;
    assert_eq!(values(&missed), expected("b", 0..30), "exactly the missed records");
    // Each partition's order is kept.
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for (p, o, _, _) in &missed {
        assert!(last.insert(*p, *o).is_none_or(|prev| prev < *o), "partition {p} out of order");
    }
    let cursor = &keyed_first.last().unwrap().3;
    let (mut keyed, welcome) = open(&sluice, &format!("/k1?envelope=true&cursor={cursor}")).await;
    assert_eq!(welcome["resumed"], true);
    let keyed_missed = records(&mut keyed, 10).await;
    assert_eq!(values(&keyed_missed), (0..30).filter(|i| i % 3 == 1).map(|i| format!("b{i}")).collect());

    // Then live, with nothing repeated.
    produce(&tansu, &topic, 3, "c", 0..3).await;
    assert_eq!(values(&records(&mut all, 3).await), expected("c", 0..3));
    assert_eq!(record(&mut keyed).await.2, "c1");
    assert_silent(&mut all, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_repeated_at_the_seam_while_records_keep_coming() {
    let tansu = Tansu::memory();
    let topic = topic("seam");
    tansu.create_topic(&topic, 3).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut ws, _) = open(&sluice, "/*?envelope=true").await;

    const TOTAL: usize = 600;
    let producer = {
        let brokers = tansu.brokers();
        let topic = topic.clone();
        tokio::spawn(async move {
            let p = ProducerAt::new(&brokers);
            for i in 0..TOTAL {
                p.send(&topic, (i % 3) as i32, &format!("s{i}")).await;
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }
        })
    };
    // Reconnect again and again while the producer runs, each time from the last cursor.
    let mut got: Vec<String> = Vec::new();
    let mut cursor = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < TOTAL {
        assert!(Instant::now() < deadline, "only {} of {TOTAL} records", got.len());
        for _ in 0..37 {
            if got.len() == TOTAL {
                break;
            }
            let (_, _, value, c) = record(&mut ws).await;
            got.push(value);
            cursor = c;
        }
        close(&mut ws).await;
        let (again, welcome) = open(&sluice, &format!("/*?envelope=true&cursor={cursor}")).await;
        assert_eq!(welcome["resumed"], true, "{welcome}");
        ws = again;
    }
    producer.await.unwrap();
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a record was delivered twice");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), expected("s", 0..TOTAL));
    assert_silent(&mut ws, Duration::from_millis(300)).await;
}

/// A producer on its own, for a task.
struct ProducerAt(rdkafka::producer::FutureProducer);

impl ProducerAt {
    fn new(brokers: &str) -> ProducerAt {
        ProducerAt(
            rdkafka::config::ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("linger.ms", "0")
                .create()
                .unwrap(),
        )
    }

    async fn send(&self, topic: &str, partition: i32, value: &str) {
        let record = rdkafka::producer::FutureRecord::to(topic).partition(partition).key("k").payload(value);
        self.0.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
    }
}

#[tokio::test]
async fn a_restarted_gateway_serves_a_cursor_from_kafka() {
    let tansu = Tansu::memory();
    let topic = topic("restart-resume");
    tansu.create_topic(&topic, 3).await;
    let mut first_gateway = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut ws, _) = open(&first_gateway, "/*?envelope=true").await;
    produce(&tansu, &topic, 3, "a", 0..12).await;
    let got = records(&mut ws, 12).await;
    let cursor = got.last().unwrap().3.clone();
    first_gateway.signal("TERM");
    assert!(first_gateway.wait(Duration::from_secs(15)).success());

    produce(&tansu, &topic, 3, "b", 0..12).await;
    // A new process, starting at the end: what was missed is only in Kafka now.
    let second = Sluice::with_kafka(&tansu, &topic, &[]);
    second.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    let (mut ws, welcome) = open(&second, &format!("/*?envelope=true&cursor={cursor}")).await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    assert_eq!(values(&records(&mut ws, 12).await), expected("b", 0..12));
    produce(&tansu, &topic, 3, "c", 0..3).await;
    assert_eq!(values(&records(&mut ws, 3).await), expected("c", 0..3));
    second.wait_metric("sluice_resumes_total{outcome=\"kafka\"}", 1.0, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_cursor_beyond_the_replay_limit_resumes_false_from_the_oldest_record_held() {
    let tansu = Tansu::memory();
    let topic = topic("too-old");
    tansu.create_topic(&topic, 1).await;
    let mut first_gateway = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut ws, _) = open(&first_gateway, "/*?envelope=true").await;
    produce(&tansu, &topic, 1, "a", 0..2).await;
    let cursor = records(&mut ws, 2).await.last().unwrap().3.clone();
    first_gateway.signal("TERM");
    assert!(first_gateway.wait(Duration::from_secs(15)).success());
    produce(&tansu, &topic, 1, "b", 0..20).await;

    // Twenty records behind, five allowed: not a resume, and what memory holds (nothing
    // yet for this new process) then live.
    let second = Sluice::with_kafka(&tansu, &topic, &["--max-resume-records", "5"]);
    second.wait_status("/readyz", 200, Duration::from_secs(10)).await;
    let (mut ws, welcome) = open(&second, &format!("/*?envelope=true&cursor={cursor}")).await;
    assert_eq!(welcome["resumed"], false, "{welcome}");
    produce(&tansu, &topic, 1, "c", 0..2).await;
    assert_eq!(values(&records(&mut ws, 2).await), expected("c", 0..2));
}

#[tokio::test]
async fn last_n_gives_the_newest_records_of_the_subscription_first() {
    let sluice = Sluice::start(&["--allow-anonymous"], &[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    for i in 0..10 {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        assert_eq!(sluice.api("POST", &format!("/api/publish/{key}"), Some(&format!("v{i}"))).await.0, 202);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(sluice.url("/even?last=3")).await.unwrap();
    next_text(&mut ws).await;
    assert_eq!([next_text(&mut ws).await, next_text(&mut ws).await, next_text(&mut ws).await], ["v4", "v6", "v8"]);
    sluice.api("POST", "/api/publish/even", Some("live")).await;
    assert_eq!(next_text(&mut ws).await, "live");

    let status = |r: Result<_, WsError>| match r {
        Err(WsError::Http(response)) => response.status().as_u16(),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    };
    assert_eq!(status(tokio_tungstenite::connect_async(sluice.url("/even?last=101")).await), 400);
    assert_eq!(status(tokio_tungstenite::connect_async(sluice.url("/even?last=x")).await), 400);
    assert_eq!(status(tokio_tungstenite::connect_async(sluice.url("/even?cursor=not-a-cursor")).await), 400);
    assert_eq!(status(tokio_tungstenite::connect_async(sluice.url("/even?cursor=AQ&last=2")).await), 400);
}

#[tokio::test]
async fn server_sent_events_resume_with_last_event_id_and_carry_messages() {
    let tansu = Tansu::memory();
    let topic = topic("sse");
    tansu.create_topic(&topic, 3).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, &[]);
    let (mut events, head) = EventStream::open(&sluice, "/*", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    let (event, _, welcome) = events.next().await;
    assert_eq!(event, "connected");
    let id = serde_json::from_str::<Value>(&welcome).unwrap()["replyId"].as_str().unwrap().to_owned();

    // In the registry like any client; a message sent to it arrives as `event: message`.
    let (_, client) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
    assert_eq!(client["transport"], "sse", "{client}");
    assert_eq!(sluice.api("POST", &format!("/api/clients/{id}/messages"), Some("hello\nthere")).await.0, 202);
    assert_eq!(events.next().await, ("message".to_owned(), None, "hello\nthere".to_owned()));

    produce(&tansu, &topic, 3, "a", 0..9).await;
    let mut last_id = String::new();
    let mut got = BTreeSet::new();
    for _ in 0..9 {
        let (event, id, data) = events.next().await;
        assert_eq!(event, "message");
        last_id = id.expect("every record event has an id");
        got.insert(data);
    }
    assert_eq!(got, expected("a", 0..9));
    drop(events);

    produce(&tansu, &topic, 3, "b", 0..9).await;
    let (mut events, _) = EventStream::open(&sluice, "/*", Some(&last_id)).await;
    let (_, _, welcome) = events.next().await;
    assert_eq!(serde_json::from_str::<Value>(&welcome).unwrap()["resumed"], true, "{welcome}");
    let mut got = BTreeSet::new();
    for _ in 0..9 {
        got.insert(events.next().await.2);
    }
    assert_eq!(got, expected("b", 0..9));

    // A malformed Last-Event-ID is refused like a malformed cursor.
    let (_, head) = EventStream::open(&sluice, "/*", Some("???")).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}
