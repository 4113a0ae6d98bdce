//! Quix Cloud, as a deployment meets it: the real `sluice` binary given only what Quix
//! Cloud and the connector's three variables give it, a fake Quix portal on 127.0.0.1
//! answering with the portal's documented shapes (the real one is not reachable from the
//! test machines), and a real Tansu broker behind the settings that portal hands out. Also
//! the container's health check and the connector's `library.json`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "sdk-0123456789abcdef-test-token";

/// What the fake portal knows.
#[derive(Clone, Default)]
struct Workspaces {
    /// Workspace id → its topics (id, name).
    topics: HashMap<String, Vec<(String, String)>>,
    /// The answer of `/workspaces/{ws}/broker/librdkafka`, for every workspace.
    broker: Value,
}

/// A Quix portal on 127.0.0.1 that checks the token and the API version on every request
/// and records each path asked for.
struct FakePortal {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakePortal {
    fn start(workspaces: Workspaces) -> FakePortal {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let state = Arc::new(workspaces);
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let state = state.clone();
            let seen = seen.clone();
            async move { answer(&state, &seen, &uri, &headers) }
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // A runtime of its own: the harness waits for the gateway on the test's thread.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("fake portal listening");
        FakePortal { url: format!("http://{addr}/"), requests, stop: Some(stop) }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakePortal {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn answer(state: &Workspaces, seen: &Mutex<Vec<String>>, uri: &Uri, headers: &HeaderMap) -> Response {
    seen.lock().unwrap().push(uri.path().to_owned());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("authorization") != format!("Bearer {TOKEN}") {
        let refusal = json!({"message": "User is not authenticated", "correlationId": "2332CBB8"});
        return (StatusCode::UNAUTHORIZED, Json(refusal)).into_response();
    }
    if header("x-version") != "2.0" {
        return (StatusCode::BAD_REQUEST, Json(json!({"message": "X-Version 2.0 expected"}))).into_response();
    }
    let not_found = || (StatusCode::NOT_FOUND, Json(json!({"message": "Not found"}))).into_response();
    let parts: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["workspaces"] => {
            let mut ids: Vec<&String> = state.topics.keys().collect();
            ids.sort();
            let list: Vec<Value> = ids
                .into_iter()
                .map(|id| json!({"workspaceId": id, "name": format!("{id} name"), "status": "Ready"}))
                .collect();
            Json(list).into_response()
        }
        ["workspaces", ws, "broker", "librdkafka"] if state.topics.contains_key(*ws) => {
            Json(state.broker.clone()).into_response()
        }
        [ws, "topics"] => match state.topics.get(*ws) {
            Some(topics) => {
                let list: Vec<Value> = topics.iter().map(|(id, name)| topic_json(ws, id, name)).collect();
                Json(list).into_response()
            }
            None => not_found(),
        },
        [ws, "topics", name] => match state.topics.get(*ws).and_then(|topics| topics.iter().find(|(_, n)| n == name)) {
            Some((id, name)) => Json(topic_json(ws, id, name)).into_response(),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn topic_json(ws: &str, id: &str, name: &str) -> Value {
    json!({"id": id, "name": name, "workspaceId": ws, "status": "Ready",
           "configuration": {"partitions": 1, "replicationFactor": 1, "retentionInMinutes": 1440,
                             "retentionInBytes": 52428800, "cleanupPolicy": "Delete"}})
}

/// The librdkafka settings the portal hands out, pointing at `tansu`; with a CA
/// certificate inline, as Quix's brokers have one.
fn broker_settings(tansu: &Tansu, ca_pem: &str) -> Value {
    json!({
        "bootstrap.servers": tansu.brokers(),
        "security.protocol": "PLAINTEXT",
        "client.id": "quix-workspace-client",
        "ssl.ca.cert": base64::engine::general_purpose::STANDARD.encode(ca_pem),
    })
}

fn ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["kafka.quix.test".to_owned()]).unwrap().cert.pem()
}

/// A fresh workspace id, shaped like Quix's (`{org}-{project}-{environment}`).
fn workspace(name: &str) -> String {
    format!("acme-{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The binary with none of the Quix settings leaking in from the environment.
fn quix_command(args: &[&str]) -> std::process::Command {
    let mut cmd = sluice_command(args);
    for name in ["Quix__Sdk__Token", "Quix__Portal__Api", "Quix__Workspace__Id"] {
        cmd.env_remove(name);
    }
    cmd
}

/// The log without its colours (it is coloured even when piped).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn run(env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = quix_command(&["--port", "0"]).envs(env.iter().copied()).output().expect("run sluice");
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test]
async fn a_quix_deployment_needs_only_the_token_the_topic_and_the_credentials() {
    let tansu = Tansu::memory();
    let ws = workspace("prod");
    let input = topic("telemetry");
    let topic_id = format!("{ws}-{input}");
    tansu.create_topic(&topic_id, 1).await;
    let pem = ca_pem();
    let portal = FakePortal::start(Workspaces {
        topics: [(ws.clone(), vec![(topic_id.clone(), input.clone())])].into(),
        broker: broker_settings(&tansu, &pem),
    });

    // What Quix Cloud gives a deployment of the connector, and nothing else.
    let mut sluice = Sluice::start(
        &[],
        &[
            ("Quix__Sdk__Token", TOKEN),
            ("Quix__Portal__Api", &portal.url),
            ("input", &input),
            ("WS_USERNAME", USER),
            ("WS_PASSWORD", PASSWORD),
        ],
    );
    assert_eq!(
        portal.requests(),
        ["/workspaces".to_owned(), format!("/workspaces/{ws}/broker/librdkafka"), format!("/{ws}/topics/{input}")]
    );
    let (mut ws_client, _) = connect(&sluice, "/sensor-1").await;
    tansu.producer().text(&topic_id, "sensor-1", r#"{"t":21.5}"#).await;
    assert_eq!(next_text(&mut ws_client).await, r#"{"t":21.5}"#);

    let log = sluice.stderr();
    assert!(log.contains("broker settings fetched from the Quix portal"), "{log}");
    assert!(log.contains(&format!("{input} → {topic_id}")), "{log}");
    let everything = format!("{}\n{log}", sluice.banner.join("\n"));
    assert!(!everything.contains(TOKEN), "the token reached the output");

    // The CA certificate sits in a file only this user may read, for as long as Sluice runs.
    let ca_path = plain(&log)
        .split("ca_file=Some(\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("the CA file is not in the log: {log}"));
    assert_eq!(std::fs::read_to_string(&ca_path).unwrap(), pem);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&ca_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    sluice.signal("TERM");
    assert!(sluice.wait(Duration::from_secs(20)).success());
    assert!(!ca_path.exists(), "the CA file outlived the process");
}

#[tokio::test]
async fn the_workspace_holding_input_is_found_among_several_and_unknown_topics_get_its_prefix() {
    let tansu = Tansu::memory();
    let (ws_a, ws_b) = (workspace("a"), workspace("b"));
    let input = topic("orders");
    let topic_id = format!("{ws_b}-{input}");
    tansu.create_topic(&topic_id, 1).await;
    let portal = FakePortal::start(Workspaces {
        topics: [
            (ws_a.clone(), vec![(format!("{ws_a}-other"), "other".to_owned())]),
            (ws_b.clone(), vec![(topic_id.clone(), input.clone())]),
        ]
        .into(),
        broker: broker_settings(&tansu, &ca_pem()),
    });
    // `output` is not a topic the portal knows: its id is the workspace-prefixed name.
    let sluice = Sluice::start(
        &[],
        &[
            ("Quix__Sdk__Token", TOKEN),
            ("Quix__Portal__Api", &portal.url),
            ("input", &input),
            ("output", "client-messages"),
            ("WS_USERNAME", USER),
            ("WS_PASSWORD", PASSWORD),
        ],
    );
    sluice.wait_status("/readyz", 200, Duration::from_secs(20)).await;
    let requests = portal.requests();
    assert!(requests.contains(&format!("/{ws_b}/topics")), "{requests:?}");
    assert!(requests.contains(&format!("/workspaces/{ws_b}/broker/librdkafka")), "{requests:?}");
    assert!(!requests.iter().any(|r| r.contains(&format!("/workspaces/{ws_a}/"))), "{requests:?}");
    let log = sluice.stderr();
    assert!(log.contains(&format!("{input} → {topic_id}")), "{log}");
    assert!(log.contains(&format!("client-messages → {ws_b}-client-messages")), "{log}");
}

#[tokio::test]
async fn an_explicit_broker_address_wins_over_discovery() {
    let tansu = Tansu::memory();
    let input = topic("direct");
    tansu.create_topic(&input, 1).await;
    let portal = FakePortal::start(Workspaces::default());
    let sluice = Sluice::start(
        &[],
        &[
            ("Quix__Sdk__Token", TOKEN),
            ("Quix__Portal__Api", &portal.url),
            ("Quix__Broker__Address", &tansu.brokers()),
            ("input", &input),
            ("WS_USERNAME", USER),
            ("WS_PASSWORD", PASSWORD),
        ],
    );
    sluice.wait_status("/readyz", 200, Duration::from_secs(20)).await;
    assert!(portal.requests().is_empty(), "the portal was asked: {:?}", portal.requests());
}

#[test]
fn a_refused_token_is_one_line_naming_quix_sdk_token_and_exit_69() {
    let portal = FakePortal::start(Workspaces::default());
    let wrong = "sdk-wrong-token-value-0000";
    let (code, stdout, stderr) = run(&[
        ("Quix__Sdk__Token", wrong),
        ("Quix__Portal__Api", &portal.url),
        ("input", "telemetry"),
        ("WS_USERNAME", USER),
        ("WS_PASSWORD", PASSWORD),
    ]);
    assert_eq!(code, Some(69), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("Quix__Sdk__Token") && errors[0].contains("(401)"), "{stderr}");
    assert!(errors[0].contains("User is not authenticated"), "{stderr}");
    assert!(!stderr.contains(wrong) && !stdout.contains(wrong), "the token reached the output");
    assert!(!stdout.contains("listening"));
}

#[test]
fn an_unreachable_portal_is_one_line_naming_quix_portal_api_and_exit_69() {
    let url = format!("http://127.0.0.1:{}/", free_port());
    let started = Instant::now();
    let (code, _, stderr) = run(&[
        ("Quix__Sdk__Token", TOKEN),
        ("Quix__Portal__Api", &url),
        ("input", "telemetry"),
        ("WS_USERNAME", USER),
        ("WS_PASSWORD", PASSWORD),
    ]);
    assert_eq!(code, Some(69), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("Quix__Portal__Api") && errors[0].contains(&url), "{stderr}");
    // Retried a little, not for a minute.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn a_token_without_input_is_a_config_error_not_the_embedded_stream() {
    let portal = FakePortal::start(Workspaces::default());
    let (code, stdout, stderr) = run(&[
        ("Quix__Sdk__Token", TOKEN),
        ("Quix__Portal__Api", &portal.url),
        ("WS_USERNAME", USER),
        ("WS_PASSWORD", PASSWORD),
    ]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("config error: --input / input") && l.contains("Quix__Sdk__Token")),
        "{stderr}"
    );
    assert!(!stdout.contains("listening"));
    assert!(portal.requests().is_empty(), "the portal was asked: {:?}", portal.requests());
}

#[tokio::test]
async fn healthcheck_exits_0_while_the_gateway_answers_and_1_otherwise() {
    let sluice = Sluice::start(&["--demo"], &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD)]);
    let port = sluice.addr.port().to_string();
    let out = quix_command(&["healthcheck"]).env("PORT", &port).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let closed = free_port().to_string();
    let out = quix_command(&["healthcheck"]).env("PORT", &closed).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("unhealthy:") && stderr.contains(&closed), "{stderr}");
}

#[test]
fn library_json_declares_the_connector_variables_sluice_reads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("library.json")).expect("library.json at the repository root");
    let library: Value = serde_json::from_str(&text).expect("library.json is JSON");
    for key in ["libraryItemId", "name", "language", "shortDescription", "EntryPoint", "DefaultFile"] {
        assert!(library[key].as_str().is_some_and(|v| !v.is_empty()), "{key} missing");
    }
    let dockerfile = library["EntryPoint"].as_str().unwrap();
    assert!(root.join(dockerfile).is_file(), "EntryPoint {dockerfile} does not exist");
    assert!(root.join(library["DefaultFile"].as_str().unwrap()).is_file(), "DefaultFile does not exist");
    assert!(library["tags"].as_object().is_some_and(|t| !t.is_empty()), "no tags");

    let variables = library["Variables"].as_array().expect("Variables");
    let variable = |name: &str| {
        variables.iter().find(|v| v["Name"] == name).unwrap_or_else(|| panic!("no variable {name}")).clone()
    };
    let input = variable("input");
    assert_eq!(input["InputType"], "InputTopic");
    assert_eq!(input["Required"], true);
    for secret in ["WS_USERNAME", "WS_PASSWORD"] {
        let v = variable(secret);
        assert_eq!(v["InputType"], "Secret", "{secret}");
        assert_eq!(v["Required"], true, "{secret}");
    }

    // Every variable the connector offers is a setting Sluice reads.
    let help = String::from_utf8(quix_command(&["--help"]).output().unwrap().stdout).unwrap();
    for v in variables {
        assert_eq!(v["Type"], "EnvironmentVariable", "{v}");
        let name = v["Name"].as_str().unwrap();
        assert!(help.contains(&format!("[env: {name}")), "sluice --help does not read {name}");
    }

    // Quix routes the public URL to the service's port 80; the image listens on PORT.
    let deploy = &library["DeploySettings"];
    assert_eq!(deploy["DeploymentType"], "Service");
    assert_eq!(deploy["PublicAccess"], true);
    let ports = deploy["Network"]["Ports"].as_array().expect("DeploySettings.Network.Ports");
    assert_eq!(ports[0]["Port"], 80);
    let target = ports[0]["TargetPort"].as_u64().unwrap();
    let docker = std::fs::read_to_string(root.join(dockerfile)).unwrap();
    assert!(docker.lines().any(|l| l.trim() == format!("ENV PORT={target}")), "the image does not listen on {target}");
    assert!(docker.lines().any(|l| l.trim() == format!("EXPOSE {target}")), "the image does not expose {target}");
}
