//! Several replicas on one Redis (`--cluster`), from outside: the admin API of any replica
//! answers for the clients of all, a killed replica leaves the list, a stopped one leaves
//! at once, and a Redis outage drops nothing and heals by itself. Real Redis (started and
//! stopped by each test), real Tansu, real binaries, real sockets.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// `n` replicas named r0, r1… reading one topic and sharing one Redis.
fn kafka_replicas(tansu: &Tansu, topic: &str, redis: &Redis, n: usize) -> Vec<Sluice> {
    let url = redis.url();
    (0..n).map(|i| Sluice::with_kafka(tansu, topic, &["--cluster", &url, "--node-id", &format!("r{i}")])).collect()
}

/// `n` replicas on their own embedded streams, sharing one Redis.
fn embedded_replicas(url: &str, n: usize) -> Vec<Sluice> {
    embedded_replicas_with(url, n, &[])
}

/// The same, with these extra arguments for each.
fn embedded_replicas_with(url: &str, n: usize, extra: &[&str]) -> Vec<Sluice> {
    (0..n)
        .map(|i| {
            let node = format!("e{i}");
            let mut args = vec!["--cluster", url, "--node-id", &node];
            args.extend_from_slice(extra);
            Sluice::start(&args, &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)])
        })
        .collect()
}

async fn kafka_cluster(n: usize) -> (Tansu, Redis, String, Vec<Sluice>) {
    let tansu = Tansu::memory();
    let topic = topic("cluster");
    tansu.create_topic(&topic, 2).await;
    let redis = Redis::start();
    let replicas = kafka_replicas(&tansu, &topic, &redis, n);
    (tansu, redis, topic, replicas)
}

/// Every client object of the whole list, walked page by page (1000 a page), and whether
/// any page said it was partial.
async fn list_all(sluice: &Sluice, query: &str) -> (Vec<Value>, bool) {
    let (mut all, mut partial, mut cursor) = (Vec::new(), false, None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/clients?limit=1000{query}&cursor={c}"),
            None => format!("/api/clients?limit=1000{query}"),
        };
        let (status, body) = sluice.api("GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        partial |= body["partial"] == true;
        all.extend(body["clients"].as_array().unwrap().iter().cloned());
        match body["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (all, partial),
        }
    }
}

fn ids(clients: &[Value]) -> BTreeSet<String> {
    clients.iter().map(|c| c["replyId"].as_str().unwrap().to_owned()).collect()
}

/// Polls a replica's list until it holds exactly `want`, whole (not partial).
async fn wait_listed(sluice: &Sluice, want: &BTreeSet<String>, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let (clients, partial) = list_all(sluice, "").await;
        if !partial && ids(&clients) == *want {
            return clients;
        }
        assert!(
            Instant::now() < deadline,
            "the list of {} never became {want:?}: {:?} (partial {partial})\n{}",
            sluice.addr,
            ids(&clients),
            sluice.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a metric equals `value`.
async fn wait_metric_eq(sluice: &Sluice, name: &str, value: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while sluice.metric(name).await != value {
        assert!(Instant::now() < deadline, "{name} never became {value}:\n{}", sluice.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_replica_lists_inspects_messages_and_disconnects_the_clients_of_all() {
    let (tansu, _redis, topic, r) = kafka_cluster(3).await;
    let (mut a0, id_a0) = connect(&r[0], "/a").await;
    let (_all0, id_all0) = connect(&r[0], "/*").await;
    let (mut a1, id_a1) = connect(&r[1], "/a").await;
    let (mut b1, id_b1) = connect(&r[1], "/b").await;
    let (mut a2, id_a2) = connect(&r[2], "/a").await;
    let (_b2, id_b2) = connect(&r[2], "/b").await;
    let everyone: BTreeSet<String> = [&id_a0, &id_all0, &id_a1, &id_b1, &id_a2, &id_b2].map(|s| s.clone()).into();

    for replica in &r {
        let clients = wait_listed(replica, &everyone, Duration::from_secs(15)).await;
        let listed: Vec<&str> = clients.iter().map(|c| c["replyId"].as_str().unwrap()).collect();
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "ordered by id across replicas");
        for c in &clients {
            let id = c["replyId"].as_str().unwrap();
            let node = if [&id_a0, &id_all0].contains(&&id.to_owned()) {
                "r0"
            } else if [&id_a1, &id_b1].contains(&&id.to_owned()) {
                "r1"
            } else {
                "r2"
            };
            assert_eq!(c["node"], node, "{c}");
        }
    }

    // The key filter and pagination hold across replicas: `key=a` lists every client whose
    // subscriptions can match `a`, the `/*` one included.
    let (by_key, _) = list_all(&r[1], "&key=a").await;
    assert_eq!(ids(&by_key), [&id_a0, &id_all0, &id_a1, &id_a2].map(|s| s.clone()).into());
    let (by_key, _) = list_all(&r[0], "&key=b").await;
    assert_eq!(ids(&by_key), [&id_all0, &id_b1, &id_b2].map(|s| s.clone()).into());
    let (_, first) = r[2].api("GET", "/api/clients?limit=4", None).await;
    assert_eq!(first["clients"].as_array().unwrap().len(), 4);
    let cursor = first["next"].as_str().expect("a second page");
    let (_, second) = r[2].api("GET", &format!("/api/clients?limit=4&cursor={cursor}"), None).await;
    assert_eq!(second["clients"].as_array().unwrap().len(), 2);
    assert!(second["next"].is_null());
    let mut walked = ids(first["clients"].as_array().unwrap());
    walked.extend(ids(second["clients"].as_array().unwrap()));
    assert_eq!(walked, everyone);

    // A pattern subscription on r2 is listed, from r0, for the keys it can match, a page at
    // a time.
    let (_p2, id_p2) = connect(&r[2], "/?pattern=a*").await;
    let (_, page) = r[0].api("GET", "/api/clients?key=a&limit=2", None).await;
    let mut walked = ids(page["clients"].as_array().unwrap());
    let mut next = page["next"].as_str().map(str::to_owned);
    while let Some(cursor) = next {
        let (_, page) = r[0].api("GET", &format!("/api/clients?key=a&limit=2&cursor={cursor}"), None).await;
        assert!(page["clients"].as_array().unwrap().len() <= 2);
        walked.extend(ids(page["clients"].as_array().unwrap()));
        next = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(walked, [&id_a0, &id_all0, &id_a1, &id_a2, &id_p2].map(|s| s.clone()).into());
    let (by_key, _) = list_all(&r[1], "&key=b").await;
    assert!(!ids(&by_key).contains(&id_p2));

    // A client on r2, inspected from r0: its activity is exact, read from r2 when asked.
    a2.send(Message::Text("hello from a2".into())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let (status, c) = r[0].api("GET", &format!("/api/clients/{id_a2}"), None).await;
        assert_eq!(status, 200, "{c}");
        if c["messagesIn"] == 1 {
            break c;
        }
        assert!(Instant::now() < deadline, "the message never showed: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen["node"], "r2");
    assert_eq!(seen["lastMessageIn"]["data"], "hello from a2");
    assert_eq!(seen["user"], USER);

    // Sent through r1 to a client on r0.
    let (status, _) = r[1].api("POST", &format!("/api/clients/{id_a0}/messages"), Some("just you")).await;
    assert_eq!(status, 202);
    assert_eq!(next_text(&mut a0).await, "just you");

    // Records still reach every replica's clients of the key.
    tansu.producer().text(&topic, "a", "record-1").await;
    for ws in [&mut a0, &mut a1, &mut a2] {
        assert_eq!(next_text(ws).await, "record-1");
    }

    // Disconnected through r2, held by r1: the close frame, then gone from every list.
    let (status, _) = r[2].api("DELETE", &format!("/api/clients/{id_b1}?code=4001&reason=moved"), None).await;
    assert_eq!(status, 204);
    let (_, close) = read_until_close(&mut b1, Duration::from_secs(10)).await;
    let close = close.expect("a close frame");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (4001, "moved"));
    let mut remaining = everyone.clone();
    remaining.insert(id_p2.clone());
    remaining.remove(&id_b1);
    wait_listed(&r[0], &remaining, Duration::from_secs(10)).await;
    assert_eq!(r[0].api("GET", &format!("/api/clients/{id_b1}"), None).await.0, 404);

    // Unknown everywhere: 404 from every replica, for an id of any shape.
    for replica in &r {
        let unknown = uuid::Uuid::new_v4();
        assert_eq!(replica.api("GET", &format!("/api/clients/{unknown}"), None).await.0, 404);
        assert_eq!(replica.api("POST", &format!("/api/clients/{unknown}/messages"), Some("x")).await.0, 404);
        assert_eq!(replica.api("DELETE", "/api/clients/not-an-id", None).await.0, 404);
    }
}

#[tokio::test]
async fn a_disconnect_through_another_replica_answers_before_the_close_handshake() {
    let redis = Redis::start();
    // Far more may wait for a client that stopped reading than its socket holds.
    let r = embedded_replicas_with(&redis.url(), 2, &["--queue-bytes", "67108864", "--queue-capacity", "100000"]);
    let (mut ws, id) = connect_small_window(&r[0], "/k").await;
    wait_listed(&r[1], &BTreeSet::from([id.clone()]), Duration::from_secs(15)).await;
    fill_socket(&r[0], &id).await;

    let (status, body) = r[1].api("DELETE", &format!("/api/clients/{id}?code=4004&reason=elsewhere"), None).await;
    assert_eq!(status, 204, "{body}");
    for replica in &r {
        assert_eq!(replica.api("GET", &format!("/api/clients/{id}"), None).await.0, 404);
    }
    // Only now does the client read: its close frame still waited behind the rest.
    let (_, close) = read_until_close(&mut ws, Duration::from_secs(20)).await;
    let close = close.expect("the close frame, after the frames the client had not read");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (4004, "elsewhere"));
    wait_for_eof(&mut ws, Duration::from_secs(20)).await;
    wait_listed(&r[1], &BTreeSet::new(), Duration::from_secs(10)).await;
}

#[tokio::test]
async fn broadcast_counts_every_replicas_clients_and_publish_reaches_them_all() {
    let (_tansu, _redis, _topic, r) = kafka_cluster(3).await;
    let mut on_k = Vec::new();
    let mut ids_k = BTreeSet::new();
    for replica in &r {
        let (ws, id) = connect(replica, "/k").await;
        on_k.push(ws);
        ids_k.insert(id);
    }
    let (mut other, id_other) = connect(&r[1], "/other").await;
    let mut everyone = ids_k.clone();
    everyone.insert(id_other);
    wait_listed(&r[0], &everyone, Duration::from_secs(15)).await;

    let (status, body) = r[0].api("POST", "/api/broadcast?key=k", Some("to k")).await;
    assert_eq!((status, &body), (200, &serde_json::json!({ "delivered": 3 })));
    for ws in &mut on_k {
        assert_eq!(next_text(ws).await, "to k");
    }
    let (_, body) = r[2].api("POST", "/api/broadcast", Some("to all")).await;
    assert_eq!(body, serde_json::json!({ "delivered": 4 }));
    for ws in on_k.iter_mut().chain([&mut other]) {
        assert_eq!(next_text(ws).await, "to all");
    }

    // Published through one replica to Kafka, which every replica reads.
    let (status, _) = r[1].api("POST", "/api/publish/k", Some("published")).await;
    assert_eq!(status, 202);
    for ws in &mut on_k {
        assert_eq!(next_text(ws).await, "published");
    }
}

#[tokio::test]
async fn publish_on_embedded_streams_reaches_every_replicas_clients() {
    let redis = Redis::start();
    let r = embedded_replicas(&redis.url(), 3);
    let mut on_k = Vec::new();
    let mut ids_k = BTreeSet::new();
    for replica in &r {
        let (ws, id) = connect(replica, "/k").await;
        on_k.push(ws);
        ids_k.insert(id);
    }
    wait_listed(&r[2], &ids_k, Duration::from_secs(15)).await;
    let (status, body) = r[0].api("POST", "/api/publish/k", Some(r#"{"t":1}"#)).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["offset"].is_u64() && body.get("partial").is_none(), "{body}");
    for ws in &mut on_k {
        assert_eq!(next_text(ws).await, r#"{"t":1}"#);
    }
}

#[tokio::test]
async fn a_killed_replica_leaves_the_list_within_15_seconds_and_the_others_keep_serving() {
    let (tansu, _redis, topic, mut r) = kafka_cluster(3).await;
    let mut sockets = Vec::new();
    let mut everyone = BTreeSet::new();
    for replica in &r {
        let (ws, id) = connect(replica, "/k").await;
        sockets.push(ws);
        everyone.insert(id);
    }
    wait_listed(&r[0], &everyone, Duration::from_secs(15)).await;
    let killed_client = {
        let (_, c) = r[2].api("GET", "/api/clients?limit=1000", None).await;
        c["clients"].as_array().unwrap().iter().find(|c| c["node"] == "r2").unwrap()["replyId"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    r[2].signal("KILL");
    let killed = Instant::now();
    let mut survivors = everyone.clone();
    survivors.remove(&killed_client);
    // Listed whole again by both survivors: r2's clients gone, r2 no longer asked.
    wait_listed(&r[0], &survivors, Duration::from_secs(15)).await;
    wait_listed(&r[1], &survivors, Duration::from_secs(1)).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "a killed replica's clients stayed listed for {took:?}");
    assert_eq!(r[0].api("GET", &format!("/api/clients/{killed_client}"), None).await.0, 404);
    r[0].wait_for_log("a replica stopped answering", Duration::from_secs(5)).await;

    // The others never stopped serving.
    tansu.producer().text(&topic, "k", "after the kill").await;
    for ws in &mut sockets[..2] {
        assert_eq!(next_text(ws).await, "after the kill");
    }
    let (_, body) = r[1].api("POST", "/api/broadcast", Some("still here")).await;
    assert_eq!(body, serde_json::json!({ "delivered": 2 }));
    r.truncate(2);
}

#[tokio::test]
async fn a_replica_stopping_cleanly_removes_its_clients_at_once() {
    let redis = Redis::start();
    let mut r = embedded_replicas(&redis.url(), 2);
    let (_ws0, id0) = connect(&r[0], "/k").await;
    let (_ws1, id1) = connect(&r[1], "/k").await;
    wait_listed(&r[0], &[id0.clone(), id1].into(), Duration::from_secs(15)).await;
    r[1].signal("TERM");
    assert!(r[1].wait(Duration::from_secs(15)).success());
    let stopped = Instant::now();
    wait_listed(&r[0], &[id0].into(), Duration::from_secs(2)).await;
    // Well before its presence would have expired.
    assert!(stopped.elapsed() < Duration::from_secs(2));
    assert!(r[1].stderr().contains("left the cluster"), "{}", r[1].stderr());
}

#[tokio::test]
async fn a_redis_outage_drops_no_client_and_no_record_and_the_view_heals() {
    let (tansu, mut redis, topic, r) = kafka_cluster(3).await;
    let mut sockets = Vec::new();
    let mut everyone = BTreeSet::new();
    let mut by_replica = Vec::new();
    for replica in &r {
        let (ws, id) = connect(replica, "/k").await;
        sockets.push(ws);
        everyone.insert(id.clone());
        by_replica.push(id);
    }
    wait_listed(&r[0], &everyone, Duration::from_secs(15)).await;
    let producer = tansu.producer();

    redis.stop();
    wait_metric_eq(&r[0], "sluice_cluster_up", 0.0, Duration::from_secs(10)).await;
    // Records keep flowing to every replica's clients.
    for i in 0..20 {
        producer.text(&topic, "k", &format!("during-{i}")).await;
    }
    for ws in &mut sockets {
        for i in 0..20 {
            assert_eq!(next_text(ws).await, format!("during-{i}"));
        }
    }
    // The API says plainly it sees only this replica.
    let (status, body) = r[0].api("GET", "/api/clients", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["partial"], true, "{body}");
    assert_eq!(ids(body["clients"].as_array().unwrap()), [by_replica[0].clone()].into());
    let (status, body) = r[0].api("GET", &format!("/api/clients/{}", by_replica[1]), None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("cluster link down"), "{body}");
    assert_eq!(r[0].api("POST", &format!("/api/clients/{}/messages", by_replica[2]), Some("x")).await.0, 503);
    let (_, body) = r[0].api("POST", "/api/broadcast", Some("partial broadcast")).await;
    assert_eq!(body, serde_json::json!({ "delivered": 1, "partial": true }));
    assert_eq!(next_text(&mut sockets[0]).await, "partial broadcast");
    // Still held locally: reachable through its own replica.
    assert_eq!(r[1].api("GET", &format!("/api/clients/{}", by_replica[1]), None).await.0, 200);
    // Readiness is about the source, not Redis.
    for replica in &r {
        assert_eq!(reqwest::get(replica.http("/readyz")).await.unwrap().status(), 200);
    }
    // Clients come and go meanwhile: the view that heals has them as they are then.
    let (_late, late) = connect(&r[1], "/k").await;
    let (mut brief, _) = connect(&r[2], "/k").await;
    close(&mut brief).await;
    everyone.insert(late);
    // Several heartbeats into the outage: one line said so, not one per retry.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for replica in &r {
        let lines = replica.stderr().lines().filter(|l| l.contains("cluster link down")).count();
        assert_eq!(lines, 1, "{}", replica.stderr());
    }

    redis.restart();
    for (i, replica) in r.iter().enumerate() {
        wait_listed(replica, &everyone, Duration::from_secs(15)).await;
        wait_metric_eq(replica, "sluice_cluster_up", 1.0, Duration::from_secs(5)).await;
        let held = if i == 1 { 2.0 } else { 1.0 };
        assert_eq!(replica.metric("sluice_connections").await, held, "a client was dropped");
    }
    let (status, c) = r[0].api("GET", &format!("/api/clients/{}", by_replica[2]), None).await;
    assert_eq!((status, c["node"].as_str()), (200, Some("r2")));
    producer.text(&topic, "k", "after").await;
    for ws in &mut sockets {
        // Nothing lost, nothing in between: the next frame is the next record.
        assert_eq!(next_text(ws).await, "after");
    }
}

#[tokio::test]
async fn a_replica_started_while_redis_is_away_serves_alone_then_joins() {
    let mut redis = Redis::start();
    let url = redis.url();
    redis.stop();
    let r = embedded_replicas(&url, 1);
    let (mut ws, id) = connect(&r[0], "/k").await;
    let (status, body) = r[0].api("GET", "/api/clients", None).await;
    assert_eq!((status, &body["partial"]), (200, &Value::Bool(true)), "{body}");
    assert_eq!(r[0].api("POST", "/api/publish/k", Some("alone")).await.0, 202);
    assert_eq!(next_text(&mut ws).await, "alone");
    redis.restart();
    wait_listed(&r[0], &[id].into(), Duration::from_secs(15)).await;
    wait_metric_eq(&r[0], "sluice_cluster_nodes", 1.0, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn without_a_cluster_each_client_names_this_process_as_its_node() {
    let env = [("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)];
    let named = Sluice::start(&["--node-id", "solo-1"], &env);
    let (_ws, id) = connect(&named, "/k").await;
    let (_, c) = named.api("GET", &format!("/api/clients/{id}"), None).await;
    assert_eq!(c["node"], "solo-1");
    named.wait_for_log("node=solo-1", Duration::from_secs(5)).await;
    let metrics = reqwest::get(named.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("cluster"), "cluster metrics without a cluster");
    let (_, list) = named.api("GET", "/api/clients", None).await;
    assert!(list.get("partial").is_none(), "{list}");

    // Unnamed: a generated id, the same in the log and on the client.
    let unnamed = Sluice::start(&[], &env);
    let (_ws, id) = connect(&unnamed, "/k").await;
    let (_, c) = unnamed.api("GET", &format!("/api/clients/{id}"), None).await;
    let node = c["node"].as_str().expect("a node id");
    assert!(!node.is_empty());
    unnamed.wait_for_log(&format!("node={node}"), Duration::from_secs(5)).await;
}

/// Commands Redis has processed since it started.
fn redis_commands(redis: &Redis) -> u64 {
    redis
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_commands_processed in INFO stats")
}

#[tokio::test]
async fn records_on_their_way_to_clients_never_touch_redis() {
    let (tansu, redis, topic, r) = kafka_cluster(1).await;
    let mut sockets = Vec::new();
    let mut everyone = BTreeSet::new();
    for _ in 0..10 {
        let (ws, id) = connect(&r[0], "/k").await;
        sockets.push(ws);
        everyone.insert(id);
    }
    wait_listed(&r[0], &everyone, Duration::from_secs(15)).await;
    const RECORDS: usize = 2000;
    let before = redis_commands(&redis);
    let started = Instant::now();
    let values: Vec<String> = (0..RECORDS).map(|i| format!("r{i}")).collect();
    tansu.producer().many(&topic, "k", &values).await;
    for ws in &mut sockets {
        for v in &values {
            assert_eq!(&next_text(ws).await, v);
        }
    }
    let commands = redis_commands(&redis) - before;
    // 20,000 frames delivered; Redis saw the heartbeat (a few commands every 2 s) and the
    // INFO calls of this test, nothing per record or frame.
    let allowed = 20 + 4 * started.elapsed().as_secs();
    assert!(
        commands <= allowed,
        "{commands} Redis commands while {RECORDS} records streamed (at most {allowed} expected)"
    );
}

#[tokio::test]
async fn two_replicas_given_one_node_id_are_reported() {
    let redis = Redis::start();
    let env = [("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)];
    let url = redis.url();
    let a = Sluice::start(&["--cluster", &url, "--node-id", "twin"], &env);
    let b = Sluice::start(&["--cluster", &url, "--node-id", "twin"], &env);
    let deadline = Instant::now() + Duration::from_secs(10);
    let needle = "another process runs with this replica's --node-id";
    while !a.stderr().contains(needle) && !b.stderr().contains(needle) {
        assert!(Instant::now() < deadline, "the duplicate node id was never reported:\n{}\n{}", a.stderr(), b.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn replicas_join_a_redis_behind_tls_and_a_password() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let redis = Redis::start_with(sluice_support::redis::Options {
        // Percent-encoded in the URL, as a URL's password must be.
        password: Some("redis-pass: with space".to_owned()),
        tls: Some((cert_path.clone(), key_path)),
    });
    let url = redis.url();
    assert!(url.starts_with("rediss://:redis-pass"), "{url}");
    let env = [("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)];
    let ca = cert_path.to_str().unwrap();
    let r: Vec<Sluice> = (0..2)
        .map(|i| Sluice::start(&["--cluster", &url, "--cluster-ca-file", ca, "--node-id", &format!("t{i}")], &env))
        .collect();
    let (_a, id_a) = connect(&r[0], "/k").await;
    let (mut b, id_b) = connect(&r[1], "/k").await;
    wait_listed(&r[0], &[id_a, id_b.clone()].into(), Duration::from_secs(15)).await;
    assert_eq!(r[0].api("POST", &format!("/api/clients/{id_b}/messages"), Some("over tls")).await.0, 202);
    assert_eq!(next_text(&mut b).await, "over tls");
    // The password never reaches the log.
    assert!(!r[0].stderr().contains("redis-pass"), "{}", r[0].stderr());

    // Without the CA, the system's roots do not know this certificate: the link stays
    // down, said once, and the replica serves its own clients.
    let untrusted = Sluice::start(&["--cluster", &url, "--node-id", "t9"], &env);
    untrusted.wait_for_log("cluster link down", Duration::from_secs(10)).await;
    let (_c, _) = connect(&untrusted, "/k").await;
    let (_, list) = untrusted.api("GET", "/api/clients", None).await;
    assert_eq!((list["partial"].as_bool(), list["clients"].as_array().map(Vec::len)), (Some(true), Some(1)));
}

#[tokio::test]
async fn two_clusters_on_one_redis_in_two_databases_never_mix() {
    let redis = Redis::start();
    let base = redis.url();
    let base = base.strip_suffix("/0").unwrap();
    // The same node ids in both: only the database tells the clusters apart.
    let a = embedded_replicas(&format!("{base}/1"), 2);
    let b = embedded_replicas(&format!("{base}/2"), 2);
    let (mut a0, id_a0) = connect(&a[0], "/k").await;
    let (mut a1, id_a1) = connect(&a[1], "/k").await;
    let (mut b1, id_b1) = connect(&b[1], "/k").await;
    wait_listed(&a[0], &[id_a0, id_a1].into(), Duration::from_secs(15)).await;
    wait_listed(&b[0], &[id_b1.clone()].into(), Duration::from_secs(15)).await;
    let (_, body) = a[1].api("POST", "/api/broadcast", Some("to a")).await;
    assert_eq!(body, serde_json::json!({ "delivered": 2 }));
    assert_eq!(next_text(&mut a0).await, "to a");
    let (_, body) = b[0].api("POST", "/api/broadcast", Some("to b")).await;
    assert_eq!(body, serde_json::json!({ "delivered": 1 }));
    // Each got its own cluster's broadcast, never the other's (b0 asked "e1", and so is a1's
    // replica named).
    assert_eq!(next_text(&mut b1).await, "to b");
    assert_eq!(next_text(&mut a1).await, "to a");
    assert_silent(&mut a1, Duration::from_millis(500)).await;
    assert_eq!(a[0].api("GET", &format!("/api/clients/{id_b1}"), None).await.0, 404);
}
