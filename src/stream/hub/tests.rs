//! The hub's fan-out, shedding, seams and shared conditions, with clients and records built
//! in memory.

use super::*;
use crate::client::QueueReceiver;
use crate::selector::Selector;
use serde_json::Value;
use tungstenite::Message;

/// A client with one subscription, as a plain form opens it.
fn client(selector: Selector, capacity: usize) -> (Arc<Subscriber>, QueueReceiver) {
    let (c, rx) = Client::new(
        crate::client::tests::info(&format!("{selector:?}"), None),
        crate::client::tests::limits(capacity),
        1024,
    );
    (Arc::new(Subscriber::new(Arc::new(c), None, "t".into(), selector, false)), rx)
}

/// Offsets rise from record to record, as a partition's do.
static OFFSET: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn record(key: Option<&'static str>, value: Option<&'static str>) -> Record {
    Record {
        topic: Arc::from("t"),
        partition: 0,
        offset: OFFSET.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        timestamp: None,
        key: key.map(|k| Bytes::from_static(k.as_bytes())),
        value: value.map(|v| Bytes::from_static(v.as_bytes())),
        headers: vec![],
        decoded: None,
    }
}

const STREAM: StreamSettings =
    StreamSettings { tag: 1, recent_bytes: 0, limits: Limits { kafka: false, max_fetch: 0 } };

fn unbounded() -> Budget {
    Budget::new(usize::MAX, Default::default())
}

fn texts(rx: &mut QueueReceiver) -> Vec<String> {
    let mut out = vec![];
    while let Some(Message::Text(t)) = rx.try_recv() {
        out.push(t.to_string());
    }
    out
}

#[test]
fn records_reach_their_key_and_the_wildcard_only() {
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, Metrics::new(), unbounded(), STREAM);
    let (a, mut rx_a) = client(keyed("a"), 8);
    let (all, mut rx_all) = client(Selector::default(), 8);
    hub.subscribe(a, &Start::Live);
    hub.subscribe(all, &Start::Live);
    hub.dispatch(record(Some("a"), Some("1")));
    hub.dispatch(record(Some("b"), Some("2")));
    hub.dispatch(record(None, Some("3")));
    hub.dispatch(record(Some("a"), None));
    assert_eq!(texts(&mut rx_a), ["1"]);
    assert_eq!(texts(&mut rx_all), ["1", "2", "3"]);
}

#[test]
fn a_full_queue_closes_only_that_client_under_disconnect() {
    let metrics = Metrics::new();
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, metrics.clone(), unbounded(), STREAM);
    let (slow, _rx_slow) = client(Selector::default(), 1);
    let (fast, mut rx_fast) = client(Selector::default(), 8);
    hub.subscribe(slow.clone(), &Start::Live);
    hub.subscribe(fast.clone(), &Start::Live);
    for v in ["1", "2", "3"] {
        hub.dispatch(record(Some("k"), Some(v)));
    }
    assert_eq!(slow.client.close_reason().unwrap().code, 1008);
    assert!(!fast.client.is_closing());
    assert_eq!(texts(&mut rx_fast), ["1", "2", "3"]);
    assert_eq!(metrics.slow_consumer_disconnects.get(), 1);
}

#[test]
fn drop_policy_keeps_the_client_and_counts() {
    let metrics = Metrics::new();
    let hub = Hub::new(SlowConsumerPolicy::DropNewest, metrics.clone(), unbounded(), STREAM);
    let (slow, mut rx) = client(Selector::default(), 1);
    hub.subscribe(slow.clone(), &Start::Live);
    for v in ["1", "2", "3"] {
        hub.dispatch(record(Some("k"), Some(v)));
    }
    assert!(!slow.client.is_closing());
    assert_eq!(slow.client.dropped(), 2);
    assert_eq!(metrics.frames_dropped.get(), 2);
    assert_eq!(texts(&mut rx), ["1"]);
}

fn keyed(key: &'static str) -> Selector {
    Selector::key(Bytes::from_static(key.as_bytes()))
}

fn value(key: &'static str, size: usize) -> Record {
    Record { value: Some(Bytes::from(vec![b'x'; size])), ..record(Some(key), None) }
}

#[test]
fn past_the_gateway_bound_the_clients_holding_the_most_are_closed_and_fast_ones_kept() {
    let metrics = Metrics::new();
    let budget = Budget::new(10_000, metrics.queued_bytes.clone());
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, metrics.clone(), budget.clone(), STREAM);
    let stalled: Vec<_> = ["a", "b", "c"].iter().map(|k| client(keyed(k), 1000)).collect();
    for (c, _) in &stalled {
        hub.subscribe(c.clone(), &Start::Live);
    }
    let (fast, mut rx_fast) = client(keyed("f"), 1000);
    hub.subscribe(fast.clone(), &Start::Live);
    // "a" stalls first and holds most; "b" and "c" less; "f" reads everything at once.
    for (key, records) in [("a", 8), ("b", 2), ("c", 1)] {
        for _ in 0..records {
            hub.dispatch(value(key, 1000));
            hub.dispatch(value("f", 1000));
            assert_eq!(texts(&mut rx_fast).len(), 1);
        }
    }
    assert!(budget.held() <= 10_000, "{}", budget.held());
    assert_eq!(stalled[0].0.client.close_reason().map(|r| r.code), Some(1008), "the biggest holder is closed");
    assert!(!fast.client.is_closing());
    // More records past the bound: the next biggest holder goes, then the next.
    for _ in 0..5 {
        hub.dispatch(value("b", 1000));
        hub.dispatch(value("c", 1000));
    }
    assert!(budget.held() <= 10_000, "{}", budget.held());
    assert!(stalled[1].0.client.is_closing() || stalled[2].0.client.is_closing());
    assert!(!fast.client.is_closing());
    assert!(metrics.queue_bound_sheds.get() >= 2);
}

#[test]
fn clients_whose_socket_is_full_are_shed_before_bigger_ones_that_read() {
    let metrics = Metrics::new();
    let budget = Budget::new(3_500, metrics.queued_bytes.clone());
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, metrics.clone(), budget.clone(), STREAM);
    let (reading, _rx1) = client(keyed("r"), 1000);
    let (stuck, _rx2) = client(keyed("s"), 1000);
    hub.subscribe(reading.clone(), &Start::Live);
    hub.subscribe(stuck.clone(), &Start::Live);
    stuck.client.set_blocked(true);
    hub.dispatch(value("s", 1000));
    hub.dispatch(value("r", 1500));
    hub.dispatch(value("r", 1500));
    assert!(stuck.client.is_closing(), "the client not reading goes first");
    assert!(!reading.client.is_closing(), "it held more, but it reads");
}

#[test]
fn past_the_gateway_bound_under_drop_the_biggest_queue_is_dropped_and_the_client_kept() {
    let metrics = Metrics::new();
    let budget = Budget::new(5_000, metrics.queued_bytes.clone());
    let hub = Hub::new(SlowConsumerPolicy::DropNewest, metrics.clone(), budget.clone(), STREAM);
    let (big, _rx_big) = client(keyed("a"), 1000);
    let (small, _rx_small) = client(keyed("b"), 1000);
    hub.subscribe(big.clone(), &Start::Live);
    hub.subscribe(small.clone(), &Start::Live);
    hub.dispatch(value("b", 1000));
    for _ in 0..5 {
        hub.dispatch(value("a", 1000));
    }
    assert!(budget.held() <= 5_000, "{}", budget.held());
    assert!(!big.client.is_closing() && !small.client.is_closing());
    assert_eq!(small.client.queued(), 1, "the small holder kept its frame");
    assert!(big.client.dropped() >= 4, "{}", big.client.dropped());
    assert_eq!(metrics.frames_dropped.get(), big.client.dropped());
}

#[test]
fn keys_without_subscribers_are_removed() {
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, Metrics::new(), unbounded(), STREAM);
    let (a, _rx) = client(keyed("a"), 1);
    hub.subscribe(a.clone(), &Start::Live);
    assert_eq!(hub.sizes(), (1, 0, 0, 0));
    hub.unsubscribe(&a);
    assert_eq!(hub.sizes(), (0, 0, 0, 0));
}

fn selector(query: &str) -> Selector {
    let mut s = Selector::default();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap();
        s.take_query_param(name, value, value).unwrap();
    }
    s
}

fn json(key: &'static str, value: &'static str) -> Record {
    record(Some(key), Some(value))
}

#[test]
fn patterns_and_conditions_are_shared_and_evaluated_once_per_record() {
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, Metrics::new(), unbounded(), STREAM);
    let (p1, mut rx1) = client(selector("pattern=sensor-*"), 8);
    let (p2, mut rx2) = client(selector("pattern=sensor-*&where.t=1"), 8);
    let (p3, mut rx3) = client(selector("where.t=1&pattern=sensor-*"), 8);
    let (k, mut rxk) = client(selector("keys=sensor-1,pump-1&pattern=pump-*"), 8);
    for s in [&p1, &p2, &p3, &k] {
        hub.subscribe(s.clone(), &Start::Live);
    }
    // One pattern group for the three pattern subscribers; one shared condition set
    // for p2 and p3, one for k's pattern beside its keys.
    assert_eq!(hub.sizes(), (2, 0, 1, 2));
    hub.dispatch(json("sensor-1", r#"{"t":1}"#));
    hub.dispatch(json("sensor-2", r#"{"t":2}"#));
    hub.dispatch(json("pump-1", r#"{"t":1}"#));
    hub.dispatch(json("other", r#"{"t":1}"#));
    assert_eq!(texts(&mut rx1), [r#"{"t":1}"#, r#"{"t":2}"#]);
    assert_eq!(texts(&mut rx2), [r#"{"t":1}"#]);
    assert_eq!(texts(&mut rx3), [r#"{"t":1}"#]);
    // keys AND pattern: sensor-1 is a key but not a pump.
    assert_eq!(texts(&mut rxk), [r#"{"t":1}"#]);
    hub.unsubscribe(&p2);
    assert_eq!(hub.sizes(), (2, 0, 1, 2), "p3 still shares the conditions");
    for s in [&p1, &p3, &k] {
        hub.unsubscribe(s);
    }
    assert_eq!(hub.sizes(), (0, 0, 0, 0));
}

#[test]
fn a_holding_subscriber_gets_its_opening_first_then_what_was_held() {
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, Metrics::new(), unbounded(), STREAM);
    let info = crate::client::ClientInfo { form: Form::Mux, ..crate::client::tests::info("m", None) };
    let (c, mut rx) = Client::new(info, crate::client::tests::limits(8), 1024);
    let c = Arc::new(c);
    let sub = Arc::new(Subscriber::new(c.clone(), Some("s1".into()), "t".into(), Selector::default(), true));
    hub.subscribe(sub.clone(), &Start::Live);
    hub.dispatch(json("k", "live"));
    assert_eq!(c.queued(), 0, "held until the opening is out");
    let metrics = Metrics::new();
    sub.release(vec![Message::Text("opening".into())], |client, frame, stamp| {
        offer(client, frame, stamp, SlowConsumerPolicy::Disconnect, &metrics)
    });
    hub.dispatch(json("k", "after"));
    let frames = texts(&mut rx);
    assert_eq!(frames[0], "opening");
    let records: Vec<Value> = frames[1..].iter().map(|f| serde_json::from_str(f).unwrap()).collect();
    assert_eq!(records.iter().map(|r| r["value"].as_str().unwrap()).collect::<Vec<_>>(), ["live", "after"]);
    assert!(records.iter().all(|r| r["type"] == "record" && r["sub"] == "s1"));
    // Ended while its opening was prepared: nothing of it is queued.
    let late = Arc::new(Subscriber::new(c.clone(), Some("s2".into()), "t".into(), Selector::default(), true));
    hub.subscribe(late.clone(), &Start::Live);
    hub.dispatch(json("k", "never"));
    late.end();
    hub.unsubscribe(&late);
    late.release(vec![Message::Text("never".into())], |_, _, _| panic!("nothing is offered after the end"));
    let rest = texts(&mut rx);
    assert!(rest.iter().all(|f| !f.contains(r#""sub":"s2""#)), "{rest:?}");
    hub.unsubscribe(&sub);
}

fn at(partition: i32, offset: i64, value: &'static str) -> Record {
    Record { partition, offset, ..record(Some("k"), Some(value)) }
}

fn watch(hub: &Hub, partitions: &[(i32, i64, bool)]) {
    let w: Vec<Watch> = partitions.iter().map(|&(partition, next, joined)| Watch { partition, next, joined }).collect();
    Hub::watch(hub, &w);
}

#[test]
fn a_record_below_the_live_position_is_never_delivered_again() {
    let metrics = Metrics::new();
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, metrics.clone(), unbounded(), STREAM);
    watch(&hub, &[(0, 10, true)]);
    let (c, mut rx) = client(Selector::default(), 8);
    hub.subscribe(c, &Start::Live);
    for (offset, v) in [(10, "a"), (11, "b"), (10, "a again"), (11, "b again"), (12, "c")] {
        hub.dispatch(at(0, offset, v));
    }
    assert_eq!(texts(&mut rx), ["a", "b", "c"]);
    assert!(metrics.render().contains("sluice_records_skipped_total{reason=\"behind\"} 2"));
}

#[test]
fn a_jump_of_the_live_stream_is_counted_and_not_claimed_as_held() {
    let metrics = Metrics::new();
    let stream = StreamSettings { recent_bytes: 1 << 20, limits: Limits { kafka: true, max_fetch: 1000 }, ..STREAM };
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, metrics.clone(), unbounded(), stream);
    watch(&hub, &[(0, 0, true)]);
    hub.dispatch(at(0, 0, "a"));
    hub.dispatch(at(0, 1, "b"));
    // Offsets 2..7 never came: a reset, or a batch the broker skipped.
    hub.dispatch(at(0, 7, "h"));
    assert_eq!(metrics.offset_jumps.get(), 1);
    // A client that had seen "a" resumes: "b" is in memory, but what followed it up to
    // the jump may exist in Kafka, so all of it is read from there.
    let (c, mut rx) = client(Selector::default(), 8);
    let begin = hub.subscribe(c, &Start::After(Position::new(vec![(0, 1)])));
    assert_eq!(begin.fetch, [(0, 1, 7)]);
    assert_eq!(texts(&mut rx), ["h"]);
}

#[tokio::test]
async fn subscriptions_wait_until_every_partition_is_joined() {
    let hub = Hub::new(SlowConsumerPolicy::Disconnect, Metrics::new(), unbounded(), STREAM);
    let none = std::time::Duration::ZERO;
    assert!(!hub.wait_joined(none).await, "nothing watched yet");
    watch(&hub, &[(0, 5, true), (1, 9, false), (2, 3, false)]);
    assert!(!hub.wait_joined(none).await);
    hub.joined(1);
    assert!(!hub.wait_joined(none).await);
    let waiting = tokio::spawn({
        let hub = hub.clone();
        async move { hub.wait_joined(std::time::Duration::from_secs(10)).await }
    });
    hub.joined(2);
    assert!(waiting.await.unwrap());
    // A partition added later starts joined (nothing before its first offset).
    watch(&hub, &[(3, 0, true)]);
    assert!(hub.wait_joined(none).await);
}
