//! Many subscriptions, through the real binary against a real broker: several topics,
//! selectors on the plain forms (keys, pattern, headers, `where`, `since`), the multiplexed
//! protocol (`sluice.v1`) with its answers, errors and limits, per-subscription resume under
//! a producer that never stops, token claims with patterns and topics, and the registry's
//! view. What must not arrive is checked by producing a sentinel after it and reading up to
//! the sentinel.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::futures_util::SinkExt;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

/// A gateway streaming `topics` (the first is the default), each created with `partitions`.
async fn gateway(topics: &[&str], partitions: i32, args: &[&str]) -> (Tansu, Vec<String>, Sluice) {
    let tansu = Tansu::memory();
    let names: Vec<String> = topics.iter().map(|t| topic(t)).collect();
    for name in &names {
        tansu.create_topic(name, partitions).await;
    }
    let sluice = Sluice::with_kafka(&tansu, &names.join(","), args);
    sluice.wait_status("/readyz", 200, Duration::from_secs(30)).await;
    (tansu, names, sluice)
}

async fn open(sluice: &Sluice, path: &str) -> (Ws, Value) {
    let (mut ws, _) =
        try_connect(&sluice.url(path), &[("authorization", &basic(USER, PASSWORD))]).await.expect("connect");
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    (ws, welcome)
}

/// The status an upgrade is refused with.
async fn refused(sluice: &Sluice, path: &str, authorization: &str) -> u16 {
    match try_connect(&sluice.url(path), &[("authorization", authorization)]).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("{path} was accepted"),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// Text frames up to and including the one equal to `sentinel`.
async fn until(ws: &mut Ws, sentinel: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let text = next_text(ws).await;
        let done = text == sentinel;
        got.push(text);
        if done {
            return got;
        }
    }
}

async fn produce(tansu: &Tansu, topic: &str, records: &[(&str, &str)]) {
    let p = tansu.producer();
    for (key, value) in records {
        p.text(topic, key, value).await;
    }
}

#[tokio::test]
async fn each_topic_is_its_own_stream_and_an_unknown_one_is_404() {
    let (tansu, topics, sluice) = gateway(&["a", "b"], 1, &[]).await;
    let (mut plain, _) = open(&sluice, "/*").await;
    let (mut on_b, welcome_b) = open(&sluice, &format!("/*?topic={}", topics[1])).await;
    produce(&tansu, &topics[1], &[("k", "b1")]).await;
    produce(&tansu, &topics[0], &[("k", "a1"), ("k", "end")]).await;
    // `/*` reads the default topic only.
    assert_eq!(until(&mut plain, "end").await, ["a1", "end"]);
    assert_eq!(next_text(&mut on_b).await, "b1");

    assert_eq!(refused(&sluice, "/*?topic=nope", &basic(USER, PASSWORD)).await, 404);
    // Which topics exist is not told to those who may not connect.
    assert_eq!(refused(&sluice, "/*?topic=nope", "Basic bm86bm8=").await, 401);
    // A cursor of topic b names offsets of b: on a it is no resume.
    let cursor = welcome_b["cursor"].as_str().unwrap();
    let (_, welcome) = open(&sluice, &format!("/*?cursor={cursor}")).await;
    assert_eq!(welcome["resumed"], false, "{welcome}");
}

#[tokio::test]
async fn selectors_on_plain_forms_deliver_exactly_what_they_select() {
    let (tansu, topics, sluice) = gateway(&["in"], 2, &[]).await;
    let t = &topics[0];
    let (mut keys, _) = open(&sluice, "/?keys=k1,k%2C2").await;
    let (mut pattern, _) = open(&sluice, "/?pattern=sensor-*").await;
    let (mut header, _) = open(&sluice, "/*?header.region=eu").await;
    let (mut field, _) = open(&sluice, "/?pattern=sensor-*&where.temp=20").await;
    let (mut keyed_field, _) = open(&sluice, "/sensor-1?where./site/name=north").await;
    let p = tansu.producer();
    let send = |key: &'static str, value: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let p = &p;
        async move { p.send(t, Some(0), Some(key.as_bytes()), Some(value.as_bytes()), headers).await }
    };
    send("k1", "to keys", &[]).await;
    send("k,2", "to keys, a comma in the key", &[]).await;
    send("k3", "to nobody", &[]).await;
    send("sensor-1", r#"{"temp":20,"site":{"name":"north"}}"#, &[("region", "eu")]).await;
    send("sensor-2", r#"{"temp":21}"#, &[("region", "us")]).await;
    send("pump-1", r#"{"temp":20}"#, &[("region", "eu")]).await;
    // The sentinels: k1's for keys, sensor-1's for the `where` selectors, sensor-9's for the
    // pattern and the header.
    send("k1", "end", &[]).await;
    send("sensor-1", r#"{"temp":20,"site":{"name":"north"},"end":true}"#, &[]).await;
    send("sensor-9", "end", &[("region", "eu")]).await;

    assert_eq!(until(&mut keys, "end").await, ["to keys", "to keys, a comma in the key", "end"]);
    assert_eq!(
        until(&mut pattern, "end").await,
        [
            r#"{"temp":20,"site":{"name":"north"}}"#,
            r#"{"temp":21}"#,
            r#"{"temp":20,"site":{"name":"north"},"end":true}"#,
            "end"
        ]
    );
    assert_eq!(until(&mut header, "end").await, [r#"{"temp":20,"site":{"name":"north"}}"#, r#"{"temp":20}"#, "end"]);
    let end = r#"{"temp":20,"site":{"name":"north"},"end":true}"#;
    assert_eq!(until(&mut field, end).await, [r#"{"temp":20,"site":{"name":"north"}}"#, end]);
    assert_eq!(until(&mut keyed_field, end).await, [r#"{"temp":20,"site":{"name":"north"}}"#, end]);

    for bad in
        ["/?pattern=", "/?keys=", "/k?keys=a", "/?where.x=1&since=never", &format!("/?pattern={}", "x".repeat(300))]
    {
        assert_eq!(refused(&sluice, bad, &basic(USER, PASSWORD)).await, 400, "{bad}");
    }
    assert_eq!(refused(&sluice, "/", &basic(USER, PASSWORD)).await, 400);
}

#[tokio::test]
async fn an_event_stream_takes_the_same_selectors() {
    let (tansu, topics, sluice) = gateway(&["in"], 1, &[]).await;
    let (mut events, head) = EventStream::open(&sluice, "/?keys=a,b", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(events.next().await.0, "connected");
    produce(&tansu, &topics[0], &[("a", "1"), ("c", "no"), ("b", "2")]).await;
    assert_eq!(events.next().await.2, "1");
    assert_eq!(events.next().await.2, "2");
}

#[tokio::test]
async fn since_starts_at_the_first_record_at_or_after_the_time() {
    let (tansu, topics, sluice) = gateway(&["in"], 2, &[]).await;
    let t = &topics[0];
    produce(&tansu, t, &[("a", "old-1"), ("b", "old-2")]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce(&tansu, t, &[("a", "new-1"), ("b", "new-2")]).await;
    let (mut ws, _) = open(&sluice, &format!("/*?since={from}")).await;
    let got: BTreeSet<String> = [next_text(&mut ws).await, next_text(&mut ws).await].into();
    assert_eq!(got, BTreeSet::from(["new-1".to_owned(), "new-2".to_owned()]));
    produce(&tansu, t, &[("a", "live")]).await;
    assert_eq!(next_text(&mut ws).await, "live");
}

/// A multiplexed connection's client.
struct Mux {
    ws: Ws,
    reply_id: String,
}

impl Mux {
    async fn open(sluice: &Sluice, authorization: &str) -> Mux {
        let (mut ws, response) =
            try_connect(&sluice.url("/"), &[("authorization", authorization), ("sec-websocket-protocol", "sluice.v1")])
                .await
                .expect("connect");
        assert_eq!(response.headers()["sec-websocket-protocol"], "sluice.v1");
        let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(welcome["type"], "connected", "{welcome}");
        Mux { ws, reply_id: welcome["replyId"].as_str().unwrap().to_owned() }
    }

    async fn send(&mut self, frame: Value) {
        self.ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    }

    async fn next(&mut self) -> Value {
        serde_json::from_str(&next_text(&mut self.ws).await).unwrap()
    }

    /// Subscribes and returns the `subscribed` answer (or the error).
    async fn subscribe(&mut self, fields: Value) -> Value {
        let mut frame = json!({ "type": "subscribe" });
        frame.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        self.send(frame).await;
        self.next().await
    }

    /// `(sub, value)` of record frames up to the one of `sub` whose value is `sentinel`.
    async fn until(&mut self, sub: &str, sentinel: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        loop {
            let f = self.next().await;
            assert_eq!(f["type"], "record", "{f}");
            let pair = (f["sub"].as_str().unwrap().to_owned(), value_text(&f["value"]));
            let done = pair.0 == sub && pair.1 == sentinel;
            got.push(pair);
            if done {
                return got;
            }
        }
    }
}

fn value_text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

#[tokio::test]
async fn one_socket_carries_many_subscriptions_across_topics() {
    let (tansu, topics, sluice) = gateway(&["a", "b"], 1, &[]).await;
    let mut mux = Mux::open(&sluice, &basic(USER, PASSWORD)).await;
    let s1 = mux.subscribe(json!({ "id": "s1", "keys": ["k1"] })).await;
    assert_eq!((&s1["type"], &s1["id"]), (&json!("subscribed"), &json!("s1")), "{s1}");
    assert!(s1["cursor"].is_string() && s1.get("resumed").is_none(), "{s1}");
    let s2 = mux.subscribe(json!({ "id": "s2", "pattern": "k*" })).await;
    assert_eq!(s2["type"], "subscribed");
    let s3 = mux.subscribe(json!({ "id": "s3", "topic": topics[1], "where": { "/on": true } })).await;
    assert_eq!(s3["type"], "subscribed", "{s3}");

    produce(&tansu, &topics[0], &[("k1", "both"), ("k2", "pattern only"), ("x", "nobody")]).await;
    produce(&tansu, &topics[1], &[("any", r#"{"on":false}"#), ("any", r#"{"on":true}"#)]).await;
    produce(&tansu, &topics[0], &[("k2", "end")]).await;
    let mut got = mux.until("s2", "end").await;
    // s3's record may come before or after topic a's: it is another stream.
    let on = got.iter().position(|(sub, _)| sub == "s3").map(|i| got.remove(i));
    let on = match on {
        Some(r) => r,
        None => {
            let f = mux.next().await;
            (f["sub"].as_str().unwrap().to_owned(), value_text(&f["value"]))
        }
    };
    assert_eq!(on, ("s3".to_owned(), r#"{"on":true}"#.to_owned()));
    // A record matching two subscriptions arrives once for each.
    let want: Vec<(String, String)> = [("s1", "both"), ("s2", "both"), ("s2", "pattern only"), ("s2", "end")]
        .iter()
        .map(|(s, v)| (s.to_string(), v.to_string()))
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted, "{got:?}");

    // Unsubscribed: nothing of s1 follows the answer.
    mux.send(json!({ "type": "unsubscribe", "id": "s1" })).await;
    loop {
        let f = mux.next().await;
        if f["type"] == "unsubscribed" {
            assert_eq!(f["id"], "s1");
            break;
        }
        assert_eq!(f["type"], "record", "{f}");
    }
    produce(&tansu, &topics[0], &[("k1", "after"), ("k2", "end2")]).await;
    assert_eq!(
        mux.until("s2", "end2").await,
        [("s2".to_owned(), "after".to_owned()), ("s2".to_owned(), "end2".to_owned())]
    );

    // The registry lists the subscriptions; `?key=` reaches the clients that can match.
    let (status, c) = sluice.api("GET", &format!("/api/clients/{}", mux.reply_id), None).await;
    assert_eq!(status, 200);
    assert_eq!(c["key"], Value::Null);
    assert_eq!(c["multiplexed"], true);
    let subs: BTreeSet<String> =
        c["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(subs, BTreeSet::from(["s2".to_owned(), "s3".to_owned()]));
    let (_, listed) = sluice.api("GET", "/api/clients?key=k77", None).await;
    assert_eq!(listed["clients"].as_array().unwrap().len(), 1, "s2's pattern matches k77");
    let (_, listed) = sluice.api("GET", "/api/clients?key=zz", None).await;
    assert_eq!(listed["clients"].as_array().unwrap().len(), 1, "s3 selects every key of b");

    // Messages from the client are client messages; from the API, typed frames.
    let mut events = Events::open(&sluice).await;
    mux.send(json!({ "type": "message", "data": "hello" })).await;
    let e = events.find(Duration::from_secs(10), |e| e["type"] == "message").await;
    assert_eq!((&e["data"], &e["replyId"]), (&json!("hello"), &json!(mux.reply_id)));
    let (status, _) = sluice.api("POST", &format!("/api/clients/{}/messages", mux.reply_id), Some("hi")).await;
    assert_eq!(status, 202);
    loop {
        let f = mux.next().await;
        if f["type"] == "message" {
            assert_eq!(f["data"], "hi");
            break;
        }
    }
}

#[tokio::test]
async fn bad_requests_get_error_frames_and_the_connection_stays() {
    let (tansu, topics, sluice) = gateway(&["in"], 1, &["--max-subscriptions", "2"]).await;
    let mut mux = Mux::open(&sluice, &basic(USER, PASSWORD)).await;
    let error = |f: &Value, status: u64| {
        assert_eq!((f["type"].as_str(), f["status"].as_u64()), (Some("error"), Some(status)), "{f}");
    };
    mux.ws.send(Message::Text("not json".into())).await.unwrap();
    error(&mux.next().await, 400);
    mux.ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    error(&mux.next().await, 400);
    mux.send(json!({ "type": "dance" })).await;
    error(&mux.next().await, 400);
    mux.send(json!({ "type": "subscribe", "id": 7 })).await;
    error(&mux.next().await, 400);
    mux.send(json!({ "type": "subscribe", "id": "x", "pattern": "" })).await;
    let f = mux.next().await;
    error(&f, 400);
    assert_eq!(f["id"], "x");
    error(&mux.subscribe(json!({ "id": "y".repeat(65) })).await, 400);
    error(&mux.subscribe(json!({ "id": "t", "topic": "nope" })).await, 404);
    error(&mux.subscribe(json!({ "id": "c", "cursor": "!!" })).await, 400);
    error(&mux.subscribe(json!({ "id": "l", "last": 100_000 })).await, 400);
    mux.send(json!({ "type": "unsubscribe", "id": "never" })).await;
    error(&mux.next().await, 404);
    assert_eq!(mux.subscribe(json!({ "id": "a", "keys": ["k"] })).await["type"], "subscribed");
    error(&mux.subscribe(json!({ "id": "a" })).await, 400);
    assert_eq!(mux.subscribe(json!({ "id": "b" })).await["type"], "subscribed");
    error(&mux.subscribe(json!({ "id": "c" })).await, 429);
    // A flood of subscribes beyond the limit: each answered, none opened.
    for i in 0..200 {
        mux.send(json!({ "type": "subscribe", "id": format!("f{i}") })).await;
    }
    for _ in 0..200 {
        error(&mux.next().await, 429);
    }
    // Still delivering.
    produce(&tansu, &topics[0], &[("k", "still here")]).await;
    let mut subs = BTreeSet::new();
    for _ in 0..2 {
        let f = mux.next().await;
        assert_eq!(f["value"], "still here", "{f}");
        subs.insert(f["sub"].as_str().unwrap().to_owned());
    }
    assert_eq!(subs, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    let metrics = reqwest::get(sluice.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"sluice_subscribes_refused_total{reason="limit"} 201"#), "{metrics}");
    assert!(metrics.contains(r#"sluice_control_frames_refused_total{reason="not_json"} 1"#), "{metrics}");
    assert!(metrics.contains("sluice_subscriptions 2"), "{metrics}");
}

/// Mints a client token through the admin API.
async fn token(sluice: &Sluice, grant: Value) -> String {
    let mut body = json!({ "sub": "dash" });
    body.as_object_mut().unwrap().extend(grant.as_object().unwrap().clone());
    let (status, answer) = sluice.api("POST", "/api/tokens", Some(&body.to_string())).await;
    assert_eq!(status, 201, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn token_claims_with_patterns_and_topics_decide_what_a_selector_may_read() {
    let (_tansu, topics, sluice) = gateway(&["a", "b"], 1, &[]).await;
    let sensors = format!("Bearer {}", token(&sluice, json!({ "keys": ["sensor-*"], "topics": [topics[0]] })).await);
    for path in ["/sensor-1", "/?keys=sensor-1,sensor-2", "/?pattern=sensor-1*"] {
        let (ws, _) = try_connect(&sluice.url(path), &[("authorization", &sensors)]).await.expect(path);
        drop(ws);
    }
    for path in ["/*", "/pump-1", "/?pattern=s*", "/?keys=sensor-1,pump-1", "/*?header.r=eu"] {
        assert_eq!(refused(&sluice, path, &sensors).await, 403, "{path}");
    }
    assert_eq!(refused(&sluice, &format!("/sensor-1?topic={}", topics[1]), &sensors).await, 403);

    let mut mux = Mux::open(&sluice, &sensors).await;
    assert_eq!(mux.subscribe(json!({ "id": "ok", "pattern": "sensor-4?" })).await["type"], "subscribed");
    let f = mux.subscribe(json!({ "id": "all" })).await;
    assert_eq!((f["type"].as_str(), f["status"].as_u64()), (Some("error"), Some(403)), "{f}");
    let f = mux.subscribe(json!({ "id": "b", "topic": topics[1], "keys": ["sensor-1"] })).await;
    assert_eq!(f["status"], 403, "{f}");
}

#[tokio::test]
async fn each_subscription_resumes_from_its_cursor_under_a_producer_that_never_stops() {
    resume_under_load(&[]).await;
}

#[tokio::test]
async fn each_subscription_resumes_from_kafka_when_memory_holds_too_little() {
    // A replay buffer of a few records: what was missed is read back from Kafka.
    resume_under_load(&["--replay-buffer-bytes", "2048"]).await;
}

async fn resume_under_load(args: &[&str]) {
    let (tansu, topics, sluice) = gateway(&["in"], 3, args).await;
    let t = topics[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let (stop, p, t) = (stop.clone(), tansu.producer(), t.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = ["a", "b", "c"][i % 3];
                p.send(&t, Some((i % 3) as i32), Some(key.as_bytes()), Some(format!("v{i}").as_bytes()), &[]).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };
    // First connection: a's records and every key's, each with its cursor.
    let mut first = Mux::open(&sluice, &basic(USER, PASSWORD)).await;
    first.subscribe(json!({ "id": "a", "keys": ["a"] })).await;
    first.subscribe(json!({ "id": "all" })).await;
    let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut cursors: std::collections::BTreeMap<String, String> = Default::default();
    while seen.get("all").map_or(0, Vec::len) < 60 {
        let f = first.next().await;
        let sub = f["sub"].as_str().unwrap().to_owned();
        seen.entry(sub.clone()).or_default().push(value_text(&f["value"]));
        cursors.insert(sub, f["cursor"].as_str().unwrap().to_owned());
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Second connection: each subscription resumes from its own last cursor.
    let mut second = Mux::open(&sluice, &basic(USER, PASSWORD)).await;
    for (id, keys) in [("a", json!(["a"])), ("all", Value::Null)] {
        let mut fields = json!({ "id": id, "cursor": cursors[id] });
        if !keys.is_null() {
            fields["keys"] = keys;
        }
        let answer = second.subscribe(fields).await;
        // Records of the first subscription may already come before the second's answer.
        let answer = if answer["type"] == "record" {
            let sub = answer["sub"].as_str().unwrap().to_owned();
            seen.entry(sub).or_default().push(value_text(&answer["value"]));
            loop {
                let f = second.next().await;
                if f["type"] == "subscribed" {
                    break f;
                }
                let sub = f["sub"].as_str().unwrap().to_owned();
                seen.entry(sub).or_default().push(value_text(&f["value"]));
            }
        } else {
            answer
        };
        assert_eq!((&answer["id"], &answer["resumed"]), (&json!(id), &json!(true)), "{answer}");
    }
    let until = seen["all"].len() + 150;
    while seen["all"].len() < until {
        let f = second.next().await;
        let sub = f["sub"].as_str().unwrap().to_owned();
        seen.entry(sub).or_default().push(value_text(&f["value"]));
    }
    stop.store(true, Ordering::Relaxed);
    let produced = producing.await.unwrap();
    // Where the resumes were served from: memory by default, Kafka with a tiny buffer.
    let outcome = if args.is_empty() { "memory" } else { "kafka" };
    let served = sluice.metric(&format!("sluice_resumes_total{{outcome=\"{outcome}\"}}")).await;
    assert!(served >= 2.0, "{served} resumes served from {outcome}");
    // Every value once, in each partition's order, with no gap in any partition up to what
    // reached the client (partitions are separate streams: one may be ahead of another when
    // reading stops). `a` has partition 0's records (key a).
    let index = |v: &String| v[1..].parse::<usize>().unwrap();
    for (sub, partitions) in [("all", 0..3), ("a", 0..1)] {
        let got = &seen[sub];
        let unique: BTreeSet<usize> = got.iter().map(index).collect();
        assert_eq!(unique.len(), got.len(), "{sub}: a record twice: {got:?}");
        for partition in partitions {
            let order: Vec<usize> = got.iter().map(index).filter(|i| i % 3 == partition).collect();
            let highest = *order.iter().max().expect("records of every partition");
            let want: Vec<usize> = (0..=highest).filter(|i| i % 3 == partition).collect();
            assert_eq!(order, want, "{sub}: partition {partition} (produced {produced})");
        }
    }
}

#[tokio::test]
async fn last_n_per_subscription_comes_first() {
    let (tansu, topics, sluice) = gateway(&["in"], 1, &[]).await;
    produce(&tansu, &topics[0], &[("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")]).await;
    let (mut wait, _) = open(&sluice, "/a").await;
    produce(&tansu, &topics[0], &[("a", "5")]).await;
    assert_eq!(until(&mut wait, "5").await.last().map(String::as_str), Some("5"));
    let mut mux = Mux::open(&sluice, &basic(USER, PASSWORD)).await;
    let answer = mux.subscribe(json!({ "id": "l", "keys": ["a"], "last": 2 })).await;
    assert_eq!((&answer["type"], &answer["last"]), (&json!("subscribed"), &json!(2)), "{answer}");
    let values: Vec<String> = [mux.next().await, mux.next().await].iter().map(|f| value_text(&f["value"])).collect();
    assert_eq!(values, ["4", "5"]);
}
