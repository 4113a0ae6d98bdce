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

/// An embedded-stream gateway (no broker) with the test credentials.
fn embedded(args: &[&str]) -> Sluice {
    Sluice::start(args, &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)])
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
    let (_tansu, topic, sluice) = kafka_gateway(&[]).await;
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

    // `?key=a`: the clients whose subscriptions can match `a`, the `/*` one too; `?key=*`:
    // those subscribed to every key.
    let (_, by_key) = sluice.api("GET", "/api/clients?key=a", None).await;
    assert_eq!(by_key["clients"].as_array().unwrap().len(), 3);
    let (_, by_key) = sluice.api("GET", "/api/clients?key=b", None).await;
    assert_eq!(by_key["clients"].as_array().unwrap().len(), 1);
    let (_, star) = sluice.api("GET", "/api/clients?key=*", None).await;
    let star: Vec<&str> = star["clients"].as_array().unwrap().iter().map(|c| c["replyId"].as_str().unwrap()).collect();
    assert_eq!(star, [id3.as_str()]);

    let (_, first) = sluice.api("GET", "/api/clients?limit=2", None).await;
    assert_eq!(first["clients"].as_array().unwrap().len(), 2);
    let cursor = first["next"].as_str().expect("a next cursor");
    let (_, second) = sluice.api("GET", &format!("/api/clients?limit=2&cursor={cursor}"), None).await;
    assert_eq!(second["clients"].as_array().unwrap().len(), 1);
    assert!(second["next"].is_null());

    let (status, c) = sluice.api("GET", &format!("/api/clients/{id3}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(c["key"], "*");
    assert_eq!(c["subscriptions"], serde_json::json!([{ "topic": topic }]), "{c}");
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
            match stream.next().await {
                Some(Ok(Message::Text(_))) => n += 1,
                Some(_) => {}
                // Fail rather than spin on a stream that has ended.
                None => panic!("the connection ended after {n} admin messages"),
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

    let closing = tokio::spawn(async move { read_until_close(&mut b, Duration::from_secs(10)).await.1 });
    assert_eq!(sluice.api("DELETE", &format!("/api/clients/{id_b}?code=4000&reason=bye"), None).await.0, 204);
    // DELETE answers once the client is out of the registry: it is no longer found.
    assert_eq!(sluice.api("GET", &format!("/api/clients/{id_b}"), None).await.0, 404);
    let close = closing.await.unwrap().expect("close frame");
    assert_eq!(u16::from(close.code), 4000);
    assert_eq!(close.reason.as_str(), "bye");
    assert_eq!(sluice.api("DELETE", &format!("/api/clients/{id_b}"), None).await.0, 404);
    assert_eq!(sluice.api("DELETE", &format!("/api/clients/{id1}?code=1005"), None).await.0, 400);
}

/// Lets far more wait for a client that stopped reading than its socket holds, so that
/// nothing but the admin closes it.
const PATIENT: [&str; 4] = ["--queue-bytes", "67108864", "--queue-capacity", "100000"];

#[tokio::test]
async fn disconnecting_a_client_that_does_not_read_answers_before_its_close_handshake() {
    let sluice = embedded(&PATIENT);
    let (mut ws, id) = connect_small_window(&sluice, "/k").await;
    fill_socket(&sluice, &id).await;

    let (status, body) = sluice.api("DELETE", &format!("/api/clients/{id}?code=4000&reason=stalled"), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(sluice.api("GET", &format!("/api/clients/{id}"), None).await.0, 404);
    assert!(sluice.api("GET", "/api/clients", None).await.1["clients"].as_array().unwrap().is_empty());
    // Only now does the client read: the close frame still waits behind what it had not
    // read, so the 204 came while its connection was open and its handshake not begun.
    let (_, close) = read_until_close(&mut ws, Duration::from_secs(20)).await;
    let close = close.expect("the close frame, after the frames the client had not read");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (4000, "stalled"));
    // Never answered: the gateway ends the connection by itself, within its close timeout.
    wait_for_eof(&mut ws, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn disconnecting_a_client_that_just_sent_a_burst_answers_and_the_client_gets_its_close_frame() {
    let sluice = embedded(&[]);
    let (mut ws, id) = connect(&sluice, "/k").await;
    for i in 0..300 {
        ws.send(Message::Text(format!("burst {i}").into())).await.unwrap();
    }
    // The client reads nothing until the answer: the close handshake cannot end before it.
    let (status, body) = sluice.api("DELETE", &format!("/api/clients/{id}?code=4001&reason=enough"), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(sluice.api("GET", &format!("/api/clients/{id}"), None).await.0, 404);
    let (_, close) = read_until_close(&mut ws, Duration::from_secs(20)).await;
    let close = close.expect("a close frame after the 204");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (4001, "enough"));
    // Answered (tungstenite replies as it reads on): the gateway then ends the connection.
    let end = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("the connection ends");
    assert!(!matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))), "{end:?}");
}

#[tokio::test]
async fn disconnecting_an_event_stream_answers_and_the_stream_ends_with_a_close_event() {
    let sluice = embedded(&[]);
    let (mut events, head) = EventStream::open(&sluice, "/k", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (event, _, welcome) = events.next().await;
    assert_eq!(event, "connected");
    let id = serde_json::from_str::<serde_json::Value>(&welcome).unwrap()["replyId"].as_str().unwrap().to_owned();

    let (status, body) = sluice.api("DELETE", &format!("/api/clients/{id}?code=4002&reason=over"), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(sluice.api("GET", &format!("/api/clients/{id}"), None).await.0, 404);
    let (event, _, data) = events.next().await;
    assert_eq!(event, "close", "{data}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&data).unwrap(),
        serde_json::json!({ "code": 4002, "reason": "over" })
    );
    events.end(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_disconnect_is_recorded_once_with_the_admins_code_and_reason() {
    let sluice = embedded(&[]);
    let mut events = Events::open(&sluice).await;
    let (mut ws, id) = connect(&sluice, "/k").await;
    events.find(Duration::from_secs(10), |e| e["type"] == "connect" && e["replyId"] == id.as_str()).await;

    assert_eq!(sluice.api("DELETE", &format!("/api/clients/{id}?code=4003&reason=once"), None).await.0, 204);
    let (_, close) = read_until_close(&mut ws, Duration::from_secs(20)).await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(4003));
    let left = events.find(Duration::from_secs(20), |e| e["type"] == "disconnect" && e["replyId"] == id.as_str()).await;
    assert_eq!((&left["code"], &left["reason"]), (&serde_json::json!(4003), &serde_json::json!("once")), "{left}");
    // A second DELETE finds nothing to close...
    assert_eq!(sluice.api("DELETE", &format!("/api/clients/{id}"), None).await.0, 404);
    // ...and nothing records the client again before an event that comes after its end.
    let (_later, later) = connect(&sluice, "/k").await;
    loop {
        let e = events.next(Duration::from_secs(10)).await;
        if e["type"] == "connect" && e["replyId"] == later.as_str() {
            break;
        }
        assert_ne!(e["replyId"], id.as_str(), "recorded again: {e}");
    }
}

/// One admin API request: status, Content-Type, Allow, and the body as JSON (null if not JSON).
async fn raw_api(
    sluice: &Sluice,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, String, Option<String>, serde_json::Value) {
    let mut request =
        reqwest::Client::new().request(method.parse().unwrap(), sluice.http(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("admin request");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (content_type, allow) = (header("content-type").unwrap_or_default(), header("allow"));
    let status = response.status().as_u16();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(serde_json::Value::Null);
    (status, content_type, allow, body)
}

#[tokio::test]
async fn every_admin_api_refusal_is_a_json_error_with_its_status() {
    let sluice = embedded(&[]);
    let (_ws, id) = connect(&sluice, "/k").await;
    let client = format!("/api/clients/{id}");
    let long_reason = "x".repeat(124);
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        // A bad limit: out of bounds, and not a number (axum's own rejection).
        ("GET", "/api/clients?limit=0".into(), None, 400),
        ("GET", "/api/clients?limit=1001".into(), None, 400),
        ("GET", "/api/clients?limit=ten".into(), None, 400),
        // A bad close code: reserved, too large for one, not a number; a reason too long.
        ("DELETE", format!("{client}?code=1005"), None, 400),
        ("DELETE", format!("{client}?code=70000"), None, 400),
        ("DELETE", format!("{client}?code=bye"), None, 400),
        ("DELETE", format!("{client}?reason={long_reason}"), None, 400),
        // A path that is not UTF-8, bodies that are empty or not a token request.
        ("GET", "/api/clients/%FF".into(), None, 400),
        ("POST", "/api/broadcast".into(), Some(""), 400),
        ("POST", format!("{client}/messages"), Some(""), 400),
        ("POST", "/api/tokens".into(), Some(r#"["sub"]"#), 400),
        ("POST", "/api/tokens".into(), Some(r#"{"sub":"x","ttl":null}"#), 400),
        // Wrong methods.
        ("PUT", "/api/clients".into(), None, 405),
        ("PATCH", client.clone(), None, 405),
        ("GET", "/api/broadcast".into(), None, 405),
        ("DELETE", "/api/openapi.json".into(), None, 405),
        // Unknown paths under /api.
        ("GET", "/api/nothing-here".into(), None, 404),
        ("GET", format!("{client}/messages/more"), None, 404),
        ("GET", "/api/clients/nobody".into(), None, 404),
    ];
    for (method, path, body, want) in &cases {
        let (status, content_type, allow, json) =
            raw_api(&sluice, method, path, body.map(|b| b.as_bytes().to_vec())).await;
        assert_eq!(status, *want, "{method} {path}: {json}");
        assert_eq!(content_type, "application/json", "{method} {path}");
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {json}");
        assert_eq!(json.as_object().unwrap().len(), 1, "{method} {path}: {json}");
        if status == 405 {
            let allow = allow.unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"));
            assert!(!allow.is_empty() && !allow.split(',').any(|m| m == *method), "{method} {path}: Allow: {allow}");
        }
    }
    let (status, _, allow, _) = raw_api(&sluice, "PUT", &client, None).await;
    assert_eq!((status, allow.as_deref()), (405, Some("GET,HEAD,DELETE")));

    // A body over the limit: 413, as JSON.
    let (status, content_type, _, json) =
        raw_api(&sluice, "POST", "/api/broadcast", Some(vec![b'x'; (1 << 20) + 1])).await;
    assert_eq!((status, content_type.as_str()), (413, "application/json"), "{json}");
    assert!(json["error"].is_string());

    // None of it reached the client, which is still connected.
    let (status, c) = sluice.api("GET", &client, None).await;
    assert_eq!(status, 200);
    assert_eq!(c["messagesOut"], 1, "only the welcome frame: {c}");

    // Every request was timed by its route's pattern, never by its path.
    let metrics = reqwest::get(sluice.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            r#"sluice_admin_request_duration_seconds_count{route="/api/clients/{id}",outcome="client_error"}"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(&format!("route=\"{client}")), "a raw path became a label:\n{metrics}");
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
    let sluice = embedded(&[]);
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
