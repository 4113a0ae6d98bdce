//! The operator console, end to end: the real binary, real WebSocket clients (plain ones and
//! a multiplexed one with several subscriptions), and the page driven in headless Chromium by
//! `tests/browser/console.mjs` (playwright-core). The script signs in, checks each client's
//! subscriptions, sends, disconnects, broadcasts, publishes, watches events and data (with
//! the client library the gateway serves at `/client.js`); this side then checks on the
//! clients' own sockets that each action reached them. Also the two endpoints the console
//! stands on, through plain HTTP: client tokens and gateway info.
//!
//! The browser test never skips: without Node.js, Chromium or `tests/browser/node_modules`
//! it fails and says how to install them.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

// What the script does to the clients; tests/browser/console.mjs uses the same values.
const SENT_TEXT: &str = "hello from the console";
const CLOSE_CODE: u16 = 4001;
const CLOSE_REASON: &str = "bye from the console";
const KEYED_TEXT: &str = "to one key from the console";
const ALL_TEXT: &str = "to everyone from the console";
const PUBLISHED: &str = r#"{"from":"console"}"#;
/// Sent by one client before the page opens: the page must show it as text.
const MARKUP: &str = r#"<img src="x" onerror="window.pwned = 1"><b>hello</b>"#;

/// How long the whole browser script may take before it is killed and the test fails.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(150);

// ---------------------------------------------------------------- the browser

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("SLUICE_TEST_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails, saying how to install it, when anything the browser test needs is missing.
fn require_browser_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the console test needs Node.js 20 or later as `node` on the PATH: on Debian `apt-get install nodejs npm`"
    );
    let chromium = chromium();
    assert!(
        chromium.is_file(),
        "the console test needs Chromium at {}: on Debian `apt-get install chromium` (.ci/run does), \
         or set SLUICE_TEST_CHROMIUM to another Chromium",
        chromium.display()
    );
    assert!(
        browser_dir().join("node_modules/playwright-core/package.json").is_file(),
        "the console test needs playwright-core: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
}

/// Runs the browser script with `env` and returns the JSON lines it printed; panics with
/// its output when it fails or overruns.
async fn run_browser(env: Vec<(&'static str, String)>, sluice: &Sluice) -> Vec<serde_json::Value> {
    let script = browser_dir().join("console.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(browser_dir())
        .envs(env)
        .env("CHROMIUM", chromium())
        .env("FAILURE_SCREENSHOT", Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-failure.png"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let lines: Vec<String> = BufReader::new(stdout).lines().map_while(Result::ok).collect();
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        (lines, err)
    });
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (lines, err) = lines.await.unwrap();
    let output =
        format!("stdout:\n{}\nstderr:\n{err}\ngateway log (tail):\n{}", lines.join("\n"), tail(&sluice.stderr()));
    let status = status.unwrap_or_else(|| panic!("the browser script ran over {SCRIPT_DEADLINE:?}\n{output}"));
    let parsed: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let ok = parsed.last().is_some_and(|last| last["ok"] == true);
    assert!(status.success() && ok, "the browser script failed ({status})\n{output}");
    parsed
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

// ---------------------------------------------------------------- clients that keep reading

/// What one client received, read in the background so its socket keeps flowing while
/// the browser works.
#[derive(Clone, Default)]
struct Received {
    texts: Arc<Mutex<Vec<String>>>,
    close: Arc<Mutex<Option<(u16, String)>>>,
}

impl Received {
    fn has(&self, text: &str) -> bool {
        self.texts.lock().unwrap().iter().any(|t| t == text)
    }

    fn closed_with(&self) -> Option<(u16, String)> {
        self.close.lock().unwrap().clone()
    }

    /// Whether a multiplexed connection's `{"type":"message"}` frame carrying `data` arrived.
    fn has_message(&self, data: &str) -> bool {
        self.texts.lock().unwrap().iter().any(|t| {
            serde_json::from_str::<serde_json::Value>(t).is_ok_and(|f| f["type"] == "message" && f["data"] == data)
        })
    }

    /// Waits until a multiplexed connection received the message `data`.
    async fn wait_for_message(&self, data: &str, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has_message(data) {
            assert!(Instant::now() < deadline, "{who} never received the message {data:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a frame equal to `text` has arrived.
    async fn wait_for(&self, text: &str, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has(text) {
            assert!(Instant::now() < deadline, "{who} never received {text:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads `ws` until it closes; with `chatter`, also sends a small message that often, so
/// the console has client messages to show.
fn keep_reading(ws: Ws, chatter: Option<Duration>) -> Received {
    let received = Received::default();
    let out = received.clone();
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut tick = tokio::time::interval(chatter.unwrap_or(Duration::from_secs(3600)));
        let mut sent = 0u64;
        loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(t))) => out.texts.lock().unwrap().push(t.to_string()),
                    Some(Ok(Message::Close(frame))) => {
                        *out.close.lock().unwrap() = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                _ = tick.tick(), if chatter.is_some() => {
                    sent += 1;
                    let _ = sink.send(Message::Text(format!(r#"{{"ack":{sent}}}"#).into())).await;
                }
            }
        }
    });
    received
}

/// Connects with this Authorization header and reads the welcome frame.
async fn connect_with(sluice: &Sluice, path: &str, authorization: &str) -> (Ws, String) {
    let (mut ws, _) = try_connect(&sluice.url(path), &[("authorization", authorization)]).await.expect("connect");
    let welcome: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "connected");
    (ws, welcome["replyId"].as_str().unwrap().to_owned())
}

/// The subscriptions the multiplexed client opens: a pattern, exact keys with a condition on
/// the value, and one whose header condition is markup the console must show as text.
fn mux_subscriptions() -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({ "id": "s1", "pattern": "sensor-*" }),
        serde_json::json!({ "id": "s2", "keys": ["sensor-2", "sensor-3"], "where": { "/sensor": "sensor-2" } }),
        serde_json::json!({ "id": "s3", "pattern": "pump-*", "headers": { "x": MARKUP } }),
    ]
}

/// A multiplexed connection (`/` with the subprotocol `sluice.v1`) that opens
/// [`mux_subscriptions`] and reads each `subscribed` answer (records of those already open
/// may come between them).
async fn connect_mux(sluice: &Sluice, authorization: &str) -> (Ws, String) {
    let (mut ws, response) =
        try_connect(&sluice.url("/"), &[("authorization", authorization), ("sec-websocket-protocol", "sluice.v1")])
            .await
            .expect("connect a multiplexed client");
    assert_eq!(response.headers()["sec-websocket-protocol"], "sluice.v1");
    let welcome: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    for mut subscribe in mux_subscriptions() {
        subscribe["type"] = "subscribe".into();
        let id = subscribe["id"].clone();
        ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
        loop {
            let frame: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
            assert_ne!(frame["type"], "error", "{subscribe} was refused: {frame}");
            if frame["type"] == "subscribed" && frame["id"] == id {
                break;
            }
        }
    }
    (ws, welcome["replyId"].as_str().unwrap().to_owned())
}

/// The value printed after `prefix` on a start-up line.
fn printed<'a>(sluice: &'a Sluice, prefix: &str) -> &'a str {
    let line = sluice.banner.iter().find(|l| l.starts_with(prefix));
    line.unwrap_or_else(|| panic!("no start-up line {prefix:?} in {:?}", sluice.banner))[prefix.len()..].trim()
}

/// Five clients on three keys and `/*`, a multiplexed one with three subscriptions, and the
/// script's environment to act on them. The browser disconnects `b` and messages `a`; `c`
/// (on `/*`) keeps sending messages.
struct Scene {
    a: Received,
    b: Received,
    c: Received,
    d: Received,
    e: Received,
    mux: Received,
    env: Vec<(&'static str, String)>,
}

async fn scene(sluice: &Sluice, authorization: &str, console: &str, admin_token: &str) -> Scene {
    let (a, id_a) = connect_with(sluice, "/sensor-1", authorization).await;
    let (b, id_b) = connect_with(sluice, "/sensor-2", authorization).await;
    let (c, id_c) = connect_with(sluice, "/*", authorization).await;
    let (mut d, id_d) = connect_with(sluice, "/sensor-3", authorization).await;
    d.send(Message::Text(MARKUP.into())).await.unwrap();
    let (e, id_e) = connect_with(sluice, "/sensor-2?envelope=true", authorization).await;
    let (mux, id_mux) = connect_mux(sluice, authorization).await;
    // What the console must show of each client's subscriptions, in its row, as text.
    let shows = serde_json::json!({
        &id_a: [["sensor-1"]],
        &id_c: [["*"]],
        &id_e: [["sensor-2"]],
        &id_mux: [
            ["s1", "sensor-*"],
            ["s2", "sensor-2, sensor-3", r#"where./sensor="sensor-2""#],
            ["s3", "pump-*", format!("header.x={MARKUP}")],
        ],
    });
    let env = vec![
        ("CONSOLE_URL", console.to_owned()),
        ("ADMIN_TOKEN", admin_token.to_owned()),
        ("CLIENT_IDS", [&id_a, &id_b, &id_c, &id_d, &id_e, &id_mux].map(|s| s.as_str()).join(",")),
        ("MULTIPLEXED", id_mux),
        ("SUBSCRIPTIONS", shows.to_string()),
        ("SEND_TO", id_a),
        ("DISCONNECT", id_b),
        ("BROADCAST_KEY", "sensor-1".to_owned()),
        // sensor-1 reaches `a`, `c` (on `/*`, whose subscription can match any key) and the
        // multiplexed client (its `sensor-*`); everyone is a, c, d, e and it once b is gone.
        ("EXPECT_KEY_DELIVERED", "3".to_owned()),
        ("EXPECT_ALL_DELIVERED", "5".to_owned()),
        ("PUBLISH_KEY", "sensor-1".to_owned()),
        ("MARKUP_FROM", id_d.clone()),
        ("MARKUP", MARKUP.to_owned()),
    ];
    Scene {
        a: keep_reading(a, None),
        b: keep_reading(b, None),
        c: keep_reading(c, Some(Duration::from_millis(700))),
        d: keep_reading(d, None),
        e: keep_reading(e, None),
        mux: keep_reading(mux, None),
        env,
    }
}

/// What the script did, seen from the clients' sockets.
async fn check_clients(s: &Scene) {
    s.a.wait_for(SENT_TEXT, "the client messaged from its row").await;
    for (other, name) in [(&s.c, "c"), (&s.d, "d"), (&s.e, "e")] {
        assert!(!other.has(SENT_TEXT), "{name} received a message meant for another client");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.b.closed_with().is_none() {
        assert!(Instant::now() < deadline, "the disconnected client saw no close frame");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.b.closed_with(), Some((CLOSE_CODE, CLOSE_REASON.to_owned())));

    s.a.wait_for(KEYED_TEXT, "the sensor-1 client").await;
    s.c.wait_for(KEYED_TEXT, "the /* client").await;
    for (client, name) in [(&s.a, "a"), (&s.c, "c"), (&s.d, "d"), (&s.e, "e")] {
        client.wait_for(ALL_TEXT, name).await;
    }
    // A multiplexed connection gets them as message frames.
    s.mux.wait_for_message(KEYED_TEXT, "the multiplexed client").await;
    s.mux.wait_for_message(ALL_TEXT, "the multiplexed client").await;
    assert!(!s.mux.has_message(SENT_TEXT), "the multiplexed client received a message meant for another client");
    for (other, name) in [(&s.b, "b"), (&s.d, "d"), (&s.e, "e")] {
        assert!(!other.has(KEYED_TEXT), "{name} received a broadcast for sensor-1");
    }
    assert!(!s.b.has(ALL_TEXT), "a disconnected client received the broadcast");
    s.a.wait_for(PUBLISHED, "the sensor-1 client").await;
    s.c.wait_for(PUBLISHED, "the /* client").await;
    assert!(!s.d.has(PUBLISHED), "a sensor-3 client received a sensor-1 record");
}

fn screenshot_path() -> PathBuf {
    // SLUICE_CONSOLE_SCREENSHOT=docs/console.png refreshes the README's picture.
    // Relative to the repository, not to the script's directory.
    std::env::var_os("SLUICE_CONSOLE_SCREENSHOT")
        .map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_manages_clients_from_the_console_of_a_fresh_demo() {
    require_browser_tools();
    // As a newcomer runs it: nothing configured, credentials and admin token generated.
    let sluice = Sluice::start(&["--demo"], &[]);
    let admin_token = printed(&sluice, "generated admin token (set ADMIN_TOKEN to choose your own):").to_owned();
    let credentials = printed(&sluice, "generated credentials").to_owned();
    let quoted: Vec<&str> = credentials.split('"').collect();
    let (user, password) = (quoted[1], quoted[3]);
    let console = printed(&sluice, "console:").to_owned();
    assert_eq!(console, format!("http://{}/", sluice.addr));

    let mut scene = scene(&sluice, &basic(user, password), &console, &admin_token).await;
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);
    scene.env.extend([
        ("WATCH_KEY", "sensor-1".to_owned()),
        ("WATCH_TEXT", r#""sensor":"sensor-1""#.to_owned()),
        ("SCREENSHOT", screenshot.display().to_string()),
    ]);
    let steps = run_browser(scene.env.clone(), &sluice).await;
    check_clients(&scene).await;

    let published = steps.iter().find(|s| s["step"] == "published").expect("published step");
    assert!(published["answer"]["offset"].is_u64(), "{published}");
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "not a real screenshot: {} bytes", png.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_on_a_separate_admin_listener_watches_the_subscription_port() {
    require_browser_tools();
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let sluice = Sluice::start(
        &["--demo", "--admin-addr", &admin_addr],
        &[
            ("WS_USERNAME", USER),
            ("WS_PASSWORD", PASSWORD),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("SLUICE_JWT_SECRET", JWT_SECRET),
        ],
    );
    let console = printed(&sluice, "console:").to_owned();
    assert_eq!(console, format!("http://{admin_addr}/"));

    let mut scene = scene(&sluice, &basic(USER, PASSWORD), &console, ADMIN_TOKEN).await;
    // A pattern: the console's client token holds it as a claim pattern.
    scene.env.extend([("WATCH_KEY", "sensor-*".to_owned()), ("WATCH_TEXT", r#""sensor":"sensor-"#.to_owned())]);
    let steps = run_browser(scene.env.clone(), &sluice).await;
    check_clients(&scene).await;
    let data = steps.iter().find(|s| s["step"] == "data shown").expect("data step");
    let port = format!(":{}/ ", sluice.addr.port());
    assert!(data["state"].as_str().unwrap().contains(&port), "the data pane did not use the subscription port: {data}");
}

// ---------------------------------------------------------------- tokens and info over HTTP

/// The HTTP status an upgrade request is answered with (101 when it is accepted).
async fn upgrade_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    match try_connect(url, headers).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade to {url} failed without an HTTP answer: {e}"),
    }
}

async fn mint(sluice: &Sluice, body: &str) -> (String, SystemTime) {
    let (status, answer) = sluice.api("POST", "/api/tokens", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let expires = time::OffsetDateTime::parse(
        answer["expiresAt"].as_str().expect("expiresAt"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("expiresAt is RFC 3339");
    (answer["token"].as_str().expect("token").to_owned(), expires.into())
}

fn seconds_from_now(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::now()).unwrap_or_default().as_secs()
}

#[tokio::test]
async fn minted_tokens_open_their_keys_only_and_bad_requests_are_refused() {
    // No JWT secret: the gateway signs with one it drew itself.
    let sluice = Sluice::start(&[], &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let (limited, expires) = mint(&sluice, r#"{"sub":"dash","keys":["sensor-1"],"ttl":120}"#).await;
    assert!((118..=120).contains(&seconds_from_now(expires)), "{expires:?}");

    assert_eq!(upgrade_status(&sluice.url(&format!("/sensor-1?token={limited}")), &[]).await, 101);
    assert_eq!(upgrade_status(&sluice.url(&format!("/sensor-2?token={limited}")), &[]).await, 403);
    assert_eq!(upgrade_status(&sluice.url(&format!("/*?token={limited}")), &[]).await, 403);
    let bearer = format!("Bearer {limited}");
    assert_eq!(upgrade_status(&sluice.url("/sensor-1"), &[("authorization", &bearer)]).await, 101);
    // The token's subject is the client's user.
    let (mut ws, _) = try_connect(&sluice.url(&format!("/sensor-1?token={limited}")), &[]).await.unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&next_text(&mut ws).await).unwrap()["replyId"].clone();
    let (_, client) = sluice.api("GET", &format!("/api/clients/{}", id.as_str().unwrap()), None).await;
    assert_eq!(client["user"], "dash");

    let (every, expires) = mint(&sluice, r#"{"sub":"console"}"#).await;
    assert!((3598..=3600).contains(&seconds_from_now(expires)), "default ttl: {expires:?}");
    assert_eq!(upgrade_status(&sluice.url(&format!("/*?token={every}")), &[]).await, 101);
    let (_, expires) = mint(&sluice, r#"{"sub":"console","keys":["*"],"ttl":86400}"#).await;
    assert!((86398..=86400).contains(&seconds_from_now(expires)));

    for body in [
        "",
        "not json",
        "{}",
        r#"{"sub":""}"#,
        &format!(r#"{{"sub":"{}"}}"#, "x".repeat(257)),
        r#"{"sub":"x","ttl":0}"#,
        r#"{"sub":"x","ttl":86401}"#,
        r#"{"sub":"x","ttl":-5}"#,
        r#"{"sub":"x","ttl":"1h"}"#,
        r#"{"sub":"x","keys":[]}"#,
        r#"{"sub":"x","keys":"sensor-1"}"#,
        r#"{"sub":"x","keys":[""]}"#,
        r#"{"sub":"x","key":["sensor-1"]}"#,
        r#"["x"]"#,
    ] {
        let (status, answer) = sluice.api("POST", "/api/tokens", Some(body)).await;
        assert_eq!(status, 400, "{body:?} gave {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{body:?} gave {answer}");
    }
    let (status, answer) = sluice.api_with("POST", "/api/tokens", Some(r#"{"sub":"x"}"#), None).await;
    assert_eq!(status, 401);
    assert!(answer["error"].is_string());
    assert_eq!(sluice.api_with("POST", "/api/tokens", Some(r#"{"sub":"x"}"#), Some("wrong-token-wrong")).await.0, 401);

    // Another process drew another secret: this gateway's tokens mean nothing there.
    let other = Sluice::start(&[], &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    assert_eq!(upgrade_status(&other.url(&format!("/*?token={every}")), &[]).await, 401);
    // Tokens are credentials: never in the log.
    assert!(!sluice.stderr().contains(&limited) && !sluice.stderr().contains(&every));
}

#[tokio::test]
async fn info_tells_the_console_where_subscriptions_are() {
    let env = [("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)];
    let shared = Sluice::start(&[], &env);
    let (status, info) = shared.api("GET", "/api/info", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["websocket"]["scheme"], "ws");
    assert_eq!(info["websocket"]["port"], shared.addr.port());
    assert_eq!(info["websocket"]["sameOrigin"], true);
    assert_eq!(info["source"], "embedded");
    assert_eq!(info["tokens"]["secret"], "generated");
    assert_eq!(info["tokens"]["maxTtl"], 86400);
    let (status, answer) = shared.api_with("GET", "/api/info", None, None).await;
    assert_eq!(status, 401);
    assert!(answer["error"].is_string());
    let (_, doc) = shared.api_with("GET", "/api/openapi.json", None, None).await;
    assert_eq!(doc["paths"]["/api/tokens"]["post"]["requestBody"]["required"], true);
    assert!(doc["paths"]["/api/info"]["get"].is_object());

    // The page and its assets, with a policy that keeps client data from running as script.
    for (path, kind) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
        ("/client.js", "text/javascript"),
    ] {
        let response = reqwest::get(shared.http(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        assert!(header("content-security-policy").contains("script-src 'self'"), "{path}");
        let body = response.text().await.unwrap();
        if path == "/client.js" {
            // The library itself, as the repository has it: the console imports it.
            let library = include_str!("../clients/js/index.js");
            assert_eq!(body, library, "/client.js is not clients/js/index.js");
        }
    }

    // With --admin-addr and a configured secret: the console learns the other port, and
    // what it mints is signed with the configured secret (so `sluice token` and replicas agree).
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let mut env = env.to_vec();
    env.push(("SLUICE_JWT_SECRET", JWT_SECRET));
    let split = Sluice::start(&["--admin-addr", &admin_addr], &env);
    let client = reqwest::Client::new();
    let info: serde_json::Value = client
        .get(format!("http://{admin_addr}/api/info"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["websocket"]["port"], split.addr.port());
    assert_eq!(info["websocket"]["sameOrigin"], false);
    assert_eq!(info["tokens"]["secret"], "configured");
    let answer: serde_json::Value = client
        .post(format!("http://{admin_addr}/api/tokens"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"sub":"console","keys":["k"]}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("signed with the configured secret")
    .claims;
    assert_eq!(claims["keys"], serde_json::json!(["k"]));
    assert_eq!(upgrade_status(&split.url(&format!("/k?token={token}")), &[]).await, 101);
    // The subscription port serves no console.
    assert_eq!(reqwest::get(split.http("/")).await.unwrap().status(), 404);
}
