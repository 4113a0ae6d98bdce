//! The client manager, end to end: the registry through the admin API, messages to one
//! client and to all, disconnects, client messages and lifecycle events into Kafka, and
//! replies from Kafka to one client. Real Tansu broker, real binary, real sockets.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use rdkafka::message::{Headers, Message as _};
use tokio_tungstenite::tungstenite::Message;

async fn kafka_gateway(extra: &[&str]) -> (Tansu, String, Sluice) {
    let tansu = Tansu::memory();
    let topic = topic("input");
    tansu.create_topic(&topic, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &topic, extra);
    (tansu, topic, sluice)
}

/// Polls GET /api/clients/{id} until `done` holds for it.
async fn wait_client(sluice: &Sluice, id: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, c) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
        if status == 200 && done(&c) {
            return c;
        }
        assert!(std::time::Instant::now() < deadline, "client {id} never reached the state: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn clients_are_listed_paged_and_inspected() {
    let (_tansu, _topic, sluice) = kafka_gateway(&[]).await;
    let (_a1, id1) = connect(&sluice, "/a").await;
    let (_a2, id2) = connect(&sluice, "/a").await;
    let (_all, id3) = connect(&sluice, "/*").await;

    let (status, body) = sluice.api("GET", "/api/clients", None).await;
    assert_eq!(status, 200);
    let mut ids: Vec<String> =
        body["clients"].as_array().unwrap().iter().map(|c| c["replyId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    let mut want = vec![id1.clone(), id2.clone(), id3.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(body["next"].is_null());

    let (_, by_key) = sluice.api("GET", "/api/clients?key=a", None).await;
    assert_eq!(by_key["clients"].as_array().unwrap().len(), 2);

    let (_, first) = sluice.api("GET", "/api/clients?limit=2", None).await;
    assert_eq!(first["clients"].as_array().unwrap().len(), 2);
    let cursor = first["next"].as_str().expect("a next cursor");
    let (_, second) = sluice.api("GET", &format!("/api/clients?limit=2&cursor={cursor}"), None).await;
    assert_eq!(second["clients"].as_array().unwrap().len(), 1);
    assert!(second["next"].is_null());

    let (status, c) = sluice.api("GET", &format!("/api/clients/{id3}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(c["key"], "*");
    assert_eq!(c["user"], USER);
    assert!(c["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(c["connectedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c["messagesOut"], 1, "the welcome frame");
    assert!(c["lastMessageOut"]["data"].as_str().unwrap().contains(&id3));
    assert!(c["lastMessageIn"].is_null());

    assert_eq!(sluice.api("GET", "/api/clients/no-such-id", None).await.0, 404);
    assert_eq!(sluice.api_with("GET", "/api/clients", None, None).await.0, 401);
    assert_eq!(sluice.api_with("GET", "/api/clients", None, Some("wrong-token-wrong-token")).await.0, 401);
    let (status, doc) = sluice.api_with("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/clients/{id}/messages"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_leave_exact_counters_and_the_last_message() {
    let (_tansu, _topic, sluice) = kafka_gateway(&[]).await;
    let (ws, id) = connect(&sluice, "/k").await;
    let (mut sink, mut stream) = ws.split();
    const IN: usize = 500;
    const OUT: usize = 200;
    let writer = tokio::spawn(async move {
        for i in 0..IN {
            sink.send(Message::Text(format!("m{i}").into())).await.unwrap();
        }
        sink
    });
    let drain = tokio::spawn(async move {
        let mut n = 0;
        while n < OUT {
            if let Some(Ok(Message::Text(_))) = stream.next().await {
                n += 1;
            }
        }
        stream
    });
    let mut sends = Vec::new();
    for i in 0..OUT {
        let path = format!("/api/clients/{id}/messages");
        let body = format!("o{i}");
        let s = &sluice;
        sends.push(async move { s.api("POST", &path, Some(&body)).await.0 });
    }
    for status in futures_util::future::join_all(sends).await {
        assert_eq!(status, 202);
    }
    let _sink = writer.await.unwrap();
    let _stream = tokio::time::timeout(Duration::from_secs(20), drain).await.expect("admin messages arrive").unwrap();

    let c = wait_client(&sluice, &id, |c| c["messagesIn"] == IN && c["messagesOut"] == OUT + 1).await;
    assert_eq!(c["lastMessageIn"]["data"], format!("m{}", IN - 1));
    let bytes_in: usize = (0..IN).map(|i| format!("m{i}").len()).sum();
    assert_eq!(c["bytesIn"], bytes_in);
    assert_eq!(c["queued"], 0);
}

#[tokio::test]
async fn send_to_one_broadcast_and_disconnect() {
    let (_tansu, _topic, sluice) = kafka_gateway(&[]).await;
    let (mut a1, id1) = connect(&sluice, "/a").await;
    let (mut a2, _) = connect(&sluice, "/a").await;
    let (mut b, id_b) = connect(&sluice, "/b").await;

    assert_eq!(sluice.api("POST", &format!("/api/clients/{id1}/messages"), Some("just you")).await.0, 202);
    assert_eq!(next_text(&mut a1).await, "just you");
    assert_eq!(sluice.api("POST", "/api/clients/nobody/messages", Some("x")).await.0, 404);

    let (status, body) = sluice.api("POST", "/api/broadcast?key=a", Some("to a")).await;
    assert_eq!(status, 200);
    assert_eq!(body["delivered"], 2);
    let (_, body) = sluice.api("POST", "/api/broadcast", Some("to all")).await;
    assert_eq!(body["delivered"], 3);
    // a2 got no private message: its first frame is the keyed broadcast.
    assert_eq!(next_text(&mut a2).await, "to a");
    assert_eq!(next_text(&mut a2).await, "to all");
    assert_eq!(next_text(&mut a1).await, "to a");
    assert_eq!(next_text(&mut b).await, "to all");

    assert_eq!(sluice.api("DELETE", &format!("/api/clients/{id_b}?code=4000&reason=bye"), None).await.0, 204);
    let (_, close) = read_until_close(&mut b, Duration::from_secs(10)).await;
    let close = close.expect("close frame");
    assert_eq!(u16::from(close.code), 4000);
    assert_eq!(close.reason.as_str(), "bye");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sluice.api("GET", &format!("/api/clients/{id_b}"), None).await.0 != 404 {
        assert!(std::time::Instant::now() < deadline, "entry not removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sluice.api("DELETE", &format!("/api/clients/{id_b}"), None).await.0, 404);
    assert_eq!(sluice.api("DELETE", &format!("/api/clients/{id1}?code=1005"), None).await.0, 400);
}

#[tokio::test]
async fn client_messages_and_lifecycle_events_land_in_kafka() {
    let tansu = Tansu::memory();
    let (input, output, events) = (topic("input"), topic("output"), topic("events"));
    for t in [&input, &output, &events] {
        tansu.create_topic(t, 1).await;
    }
    let sluice = Sluice::with_kafka(&tansu, &input, &["--output", &output, "--events", &events]);
    let (mut ws, id) = connect(&sluice, "/plant%207").await;
    for i in 0..5 {
        ws.send(Message::Text(format!("hello {i}").into())).await.unwrap();
    }
    ws.send(Message::Binary(vec![0u8, 159, 146, 150].into())).await.unwrap();
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() })).await.unwrap();

    let out = reader(&tansu, &output, 1);
    for i in 0..5 {
        let m = next_record(&out).await;
        assert_eq!(m.key(), Some(id.as_bytes()));
        assert_eq!(m.payload(), Some(format!("hello {i}").as_bytes()));
        let headers: HashMap<String, Option<Vec<u8>>> =
            m.headers().unwrap().iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect();
        assert_eq!(headers["sluice-key"].as_deref(), Some(&b"plant 7"[..]));
        assert_eq!(headers["sluice-user"].as_deref(), Some(USER.as_bytes()));
    }
    assert_eq!(next_record(&out).await.payload(), Some(&[0u8, 159, 146, 150][..]));

    let ev = reader(&tansu, &events, 1);
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("disconnect") {
        let m = next_record(&ev).await;
        assert_eq!(m.key(), Some(id.as_bytes()));
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(v["replyId"], id.as_str());
        assert_eq!(v["key"], "plant 7");
        assert_eq!(v["user"], USER);
        assert!(v["at"].as_str().unwrap().ends_with('Z'));
        match v["type"].as_str().unwrap() {
            "message" if kinds.len() == 1 => assert_eq!(v["data"], "hello 0"),
            "message" if v["encoding"] == "base64" => assert_eq!(v["data"], "AJ+Slg=="),
            "disconnect" => assert_eq!(v["code"], 1000),
            _ => {}
        }
        kinds.push(v["type"].as_str().unwrap().to_owned());
    }
    let mut want = vec!["connect".to_owned()];
    want.extend(std::iter::repeat_n("message".to_owned(), 6));
    want.push("disconnect".into());
    assert_eq!(kinds, want);
}

#[tokio::test]
async fn a_reply_record_reaches_exactly_its_client() {
    let tansu = Tansu::memory();
    let (input, replies) = (topic("input"), topic("replies"));
    tansu.create_topic(&input, 1).await;
    tansu.create_topic(&replies, 3).await;
    let sluice = Sluice::with_kafka(&tansu, &input, &["--replies", &replies]);
    let (mut one, id1) = connect(&sluice, "/k").await;
    let (mut two, _) = connect(&sluice, "/k").await;
    let p = tansu.producer();
    p.text(&replies, &id1, "for one").await;
    p.text(&replies, "nobody-here", "lost").await;
    assert_eq!(next_text(&mut one).await, "for one");
    sluice.wait_metric("sluice_replies_unknown_total", 1.0, Duration::from_secs(10)).await;
    // The other client's next frame is a record both receive: no reply reached it.
    p.text(&input, "k", "shared").await;
    assert_eq!(next_text(&mut two).await, "shared");
    assert_eq!(next_text(&mut one).await, "shared");
    assert_eq!(sluice.metric("sluice_replies_delivered_total").await, 1.0);
}

#[tokio::test]
async fn oversized_and_invalid_utf8_messages_close_with_1009_and_1007() {
    let (_tansu, _topic, sluice) = kafka_gateway(&["--max-message-size", "1024"]).await;
    let (mut big, _) = connect(&sluice, "/k").await;
    big.send(Message::Text("x".repeat(2000).into())).await.unwrap();
    let (_, close) = read_until_close(&mut big, Duration::from_secs(10)).await;
    assert_eq!(u16::from(close.expect("close frame").code), 1009);

    let (mut bad, _) = connect(&sluice, "/k").await;
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::Data, coding::OpCode, Frame};
    let frame = Frame::message(vec![0xc3, 0x28], OpCode::Data(Data::Text), true);
    bad.send(Message::Frame(frame)).await.unwrap();
    let (_, close) = read_until_close(&mut bad, Duration::from_secs(10)).await;
    assert_eq!(u16::from(close.expect("close frame").code), 1007);
}

#[tokio::test]
async fn publish_puts_a_record_on_the_kafka_stream() {
    let (_tansu, _topic, sluice) = kafka_gateway(&[]).await;
    let (mut ws, _) = connect(&sluice, "/sensor%209").await;
    assert_eq!(sluice.api("POST", "/api/publish/sensor%209", Some(r#"{"t":1}"#)).await.0, 202);
    assert_eq!(next_text(&mut ws).await, r#"{"t":1}"#);
}

#[tokio::test]
async fn embedded_mode_publishes_and_streams_events() {
    let sluice = Sluice::start(&[], &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let mut feed =
        reqwest::Client::new().get(sluice.http("/api/events")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(feed.status(), 200);
    let (mut ws, id) = connect(&sluice, "/k").await;
    assert_eq!(sluice.api("POST", "/api/publish/k", Some("from the api")).await.0, 202);
    assert_eq!(next_text(&mut ws).await, "from the api");
    ws.send(Message::Text("hi".into())).await.unwrap();

    let mut text = String::new();
    while !(text.contains("\"connect\"") && text.contains("\"message\"")) {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), feed.chunk()).await.expect("events").unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains(&id));
    assert!(text.contains("\"data\":\"hi\""));
}

#[tokio::test]
async fn a_generated_admin_token_is_printed_and_a_separate_admin_listener_works() {
    let admin_port = free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let sluice = Sluice::start(&["--admin-addr", &admin_addr], &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD)]);
    let line = sluice.banner.iter().find(|l| l.contains("generated admin token")).expect("token printed");
    let token = line.rsplit(": ").next().unwrap().trim();
    let client = reqwest::Client::new();
    let on_admin = client.get(format!("http://{admin_addr}/api/clients")).bearer_auth(token).send().await.unwrap();
    assert_eq!(on_admin.status(), 200);
    // The client port no longer serves the API.
    let on_clients = client.get(sluice.http("/api/clients")).bearer_auth(token).send().await.unwrap();
    assert_eq!(on_clients.status(), 404);
    connect(&sluice, "/k").await;
}

#[tokio::test]
async fn client_messages_beyond_the_produce_buffer_are_refused_and_counted_while_kafka_is_away() {
    let mut tansu = Tansu::memory();
    let (input, output) = (topic("input"), topic("output"));
    tansu.create_topic(&input, 1).await;
    tansu.create_topic(&output, 1).await;
    let sluice = Sluice::with_kafka(&tansu, &input, &["--output", &output, "--produce-buffer", "5"]);
    let (mut ws, _) = connect(&sluice, "/k").await;
    tansu.stop();
    sluice.wait_status("/readyz", 503, Duration::from_secs(20)).await;
    for i in 0..20 {
        ws.send(Message::Text(format!("m{i}").into())).await.unwrap();
    }
    // Five wait in the producer's buffer; the rest are refused, each counted.
    sluice.wait_metric("sluice_client_messages_total", 20.0, Duration::from_secs(10)).await;
    sluice.wait_metric("sluice_produce_refused_total", 15.0, Duration::from_secs(10)).await;
    // Reading from the client never stopped: it is still served.
    assert_eq!(sluice.api("POST", "/api/broadcast", Some("still here")).await.1["delivered"], 1);
    assert_eq!(next_text(&mut ws).await, "still here");
}
