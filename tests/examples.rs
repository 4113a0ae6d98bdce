//! The example clients in `examples/`, each run as a newcomer would run it, against the real
//! binary: the Node clients (`websocket` and `ws` packages) and the Python one (`websockets`)
//! as child processes, the browser pages in headless Chromium (`tests/browser/example-page.mjs`,
//! `eventsource-page.mjs` and `dashboard-page.mjs`, playwright-core), served by
//! `python3 -m http.server` as `examples/README.md` says.
//!
//! What each did is checked through the gateway's public surface: the records it printed
//! are the distinctive values published for it, its acknowledgements are on the event feed
//! and in its client entry, and its close codes and reconnects are the ones the admin API
//! or a real shutdown caused.
//!
//! Nothing here skips: without Node.js, Python, Chromium or the examples' packages a test
//! fails and says how to install them (`scripts/test.sh` installs the packages).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// How long one example may take to do what a step asks of it.
const STEP: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- the examples

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// One example client: how to start it and what it needs installed.
#[derive(Clone, Copy)]
enum Example {
    NodeWebsocket,
    NodeWs,
    Python,
}

impl Example {
    fn dir(self) -> PathBuf {
        examples_dir().join(match self {
            Example::NodeWebsocket => "node-websocket",
            Example::NodeWs => "node-ws",
            Example::Python => "python",
        })
    }

    /// The interpreter to run it with: the virtualenv `scripts/test.sh` makes for Python,
    /// unless SLUICE_TEST_PYTHON names another one that has the requirements.
    fn interpreter(self) -> PathBuf {
        match self {
            Example::NodeWebsocket | Example::NodeWs => PathBuf::from("node"),
            Example::Python => std::env::var_os("SLUICE_TEST_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| self.dir().join(".venv/bin/python")),
        }
    }

    /// Fails, saying how to install it, when anything the example needs is missing.
    fn require(self) {
        match self {
            Example::NodeWebsocket | Example::NodeWs => {
                require_node();
                let (dir, package) = match self {
                    Example::NodeWebsocket => ("node-websocket", "websocket"),
                    _ => ("node-ws", "ws"),
                };
                assert!(
                    self.dir().join("node_modules").join(package).join("package.json").is_file(),
                    "the {dir} example needs its packages: run `npm ci --prefix examples/{dir}` (scripts/test.sh does)"
                );
            }
            Example::Python => {
                let python = self.interpreter();
                let check = Command::new(&python)
                    .args(["-c", "import websockets.asyncio.client"])
                    .stdin(Stdio::null())
                    .stderr(Stdio::piped())
                    .output();
                assert!(
                    check.as_ref().is_ok_and(|o| o.status.success()),
                    "the Python example needs Python 3.10+ with its requirements at {}: run \
                     `python3 -m venv examples/python/.venv && examples/python/.venv/bin/pip install -r \
                     examples/python/requirements.txt` (scripts/test.sh does; on Debian `apt-get install \
                     python3-venv` first), or set SLUICE_TEST_PYTHON to a Python that has them ({})",
                    python.display(),
                    check.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_else(|e| e.to_string())
                );
            }
        }
    }

    /// Starts the example with only these settings: nothing leaks in from the environment of
    /// whoever runs the tests.
    fn spawn(self, env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(self.interpreter());
        cmd.arg(match self {
            Example::Python => "client.py",
            _ => "client.js",
        });
        for name in ["SLUICE_URL", "SLUICE_KEY", "SLUICE_USER", "SLUICE_PASSWORD", "SLUICE_TOKEN", "SLUICE_MAX_RECORDS"]
        {
            cmd.env_remove(name);
        }
        // The gateway is on loopback: no proxy from the environment (the Python library
        // honours them) may stand in between.
        for name in ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            cmd.env_remove(name);
        }
        cmd.current_dir(self.dir()).envs(env.iter().copied());
        Running::spawn(cmd)
    }
}

fn require_node() {
    let node = Command::new("node")
        .args(["-e", "process.exit(Number(process.versions.node.split('.')[0]) >= 18 ? 0 : 1)"])
        .status();
    assert!(
        node.is_ok_and(|s| s.success()),
        "the examples need Node.js 18 or later (20 for the browser test) as `node` on the PATH: on Debian \
         `apt-get install nodejs npm`"
    );
}

/// A child process whose output lines are collected as they come.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr: done once the process and its pipes are.
    readers: [JoinHandle<()>; 2],
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        Running { child, stdout, stderr, readers: [out_reader, err_reader] }
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything it printed, for failure messages.
    fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.lines().join("\n"), self.stderr.lock().unwrap().join("\n"))
    }

    /// Waits until it has printed `n` lines matching `pick`; returns the n-th.
    async fn wait_for_nth(&mut self, n: usize, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(line) = self.lines().into_iter().filter(|l| pick(l)).nth(n - 1) {
                return line;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the example exited ({status}) before printing {what}\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "the example did not print {what} within {STEP:?}\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_line(&mut self, line: &str) {
        self.wait_for_nth(1, &format!("{line:?}"), |l| l == line).await;
    }

    /// The replyId of the n-th connection, from the line the example prints for the
    /// gateway's welcome frame.
    async fn reply_id(&mut self, n: usize) -> String {
        let line =
            self.wait_for_nth(n, &format!("connection {n}'s replyId"), |l| l.starts_with("connected replyId=")).await;
        line["connected replyId=".len()..].to_owned()
    }

    /// Waits for the process to exit and for all it printed to be read.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if self.readers.iter().all(JoinHandle::is_finished) {
                    return status;
                }
            }
            assert!(Instant::now() < deadline, "still running after {within:?}\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line into a shared list, on a thread of its own.
fn collect(pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let into = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

// ---------------------------------------------------------------- the gateway

/// The password `--demo` generated for user `sluice`, from its start-up line.
fn demo_password(sluice: &Sluice) -> String {
    let line = sluice.banner.iter().find(|l| l.starts_with("generated credentials")).expect("generated credentials");
    let quoted: Vec<&str> = line.split('"').collect();
    assert_eq!(quoted[1], "sluice", "{line}");
    quoted[3].to_owned()
}

fn segment(key: &str) -> String {
    utf8_percent_encode(key, NON_ALPHANUMERIC).to_string()
}

/// Puts a record on the embedded stream through the admin API.
async fn publish(http: &str, key: &str, value: &str) {
    let response = reqwest::Client::new()
        .post(format!("{http}/api/publish/{}", segment(key)))
        .bearer_auth(ADMIN_TOKEN)
        .body(value.to_owned())
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202, "publish to {key}");
}

/// Record values no other record could be mistaken for.
fn distinct_values(n: usize) -> Vec<String> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    (1..=n).map(|i| format!(r#"{{"n":{i},"run":"{run}"}}"#)).collect()
}

/// The `record …` lines an example printed, without the prefix.
fn records(lines: &[String]) -> Vec<String> {
    lines.iter().filter_map(|l| l.strip_prefix("record ")).map(str::to_owned).collect()
}

/// The delays of the `reconnecting in N ms` lines, in order.
fn reconnect_delays(lines: &[String]) -> Vec<u64> {
    lines.iter().filter_map(|l| l.strip_prefix("reconnecting in ")?.strip_suffix(" ms")?.parse().ok()).collect()
}

/// A gateway on a port chosen here, so that it can be stopped and started again on the
/// same address, as a restart looks to a client (the harness's gateway takes port 0).
struct FixedPortGateway(Running);

impl FixedPortGateway {
    fn start(port: u16, env: &[(&str, &str)]) -> FixedPortGateway {
        let port = port.to_string();
        let mut cmd = sluice_command(&["--host", "127.0.0.1", "--port", &port, "--demo"]);
        cmd.envs(env.iter().copied());
        let mut gateway = Running::spawn(cmd);
        // The listening line comes once the port is bound.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !gateway.lines().iter().any(|l| l.starts_with("sluice listening on ")) {
            let exited = gateway.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "sluice did not start ({exited:?})\n{}",
                gateway.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        FixedPortGateway(gateway)
    }

    /// SIGTERM, and waits for a clean exit: clients get 1001 first.
    async fn terminate(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.0.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let status = self.0.wait_exit(STEP).await;
        assert!(status.success(), "sluice exited with {status}\n{}", self.0.output());
    }
}

// ---------------------------------------------------------------- what every CLI example does

/// Against a fresh `--demo` gateway with its generated credentials: the example prints its
/// replyId and exactly the records of its key, acknowledges each (seen on the event feed and
/// in its client entry), reconnects after 1001 and 1008, and exits 0 after N records with a
/// normal close.
async fn prints_acknowledges_and_reconnects(example: Example) {
    example.require();
    let sluice = Sluice::start(&["--demo"], &[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let password = demo_password(&sluice);
    let mut events = Events::open(&sluice).await;
    // A space and a slash: the example must escape the key into one path segment.
    let key = "line 7/oven";
    let values = distinct_values(4);
    let url = sluice.url("");
    let http = sluice.http("");
    let mut run = example.spawn(&[
        ("SLUICE_URL", &url),
        ("SLUICE_PASSWORD", &password),
        ("SLUICE_KEY", key),
        ("SLUICE_MAX_RECORDS", "4"),
    ]);

    let first = run.reply_id(1).await;
    let connect = events.find(STEP, |e| e["type"] == "connect" && e["replyId"] == first).await;
    assert_eq!((connect["user"].as_str(), connect["key"].as_str()), (Some("sluice"), Some(key)), "{connect}");

    for value in &values[..2] {
        publish(&http, key, value).await;
    }
    for (i, value) in values[..2].iter().enumerate() {
        run.wait_for_line(&format!("record {value}")).await;
        let ack = format!(r#"{{"ack":{}}}"#, i + 1);
        run.wait_for_line(&format!("sent {ack}")).await;
        let message = events.find(STEP, |e| e["type"] == "message" && e["replyId"] == first).await;
        assert_eq!(message["data"], ack.as_str(), "{message}");
    }
    let (status, client) = sluice.api("GET", &format!("/api/clients/{first}"), None).await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(client["lastMessageIn"]["data"], r#"{"ack":2}"#, "{client}");
    assert_eq!(client["messagesIn"], 2, "{client}");

    // What a gateway going away and a slow-consumer disconnect look like on the wire.
    let mut ids = vec![first];
    for (n, (code, reason)) in [(1001, "shutting down"), (1008, "slow consumer")].into_iter().enumerate() {
        let id = ids.last().unwrap().clone();
        let path = format!("/api/clients/{id}?code={code}&reason={}", segment(reason));
        assert_eq!(sluice.api("DELETE", &path, None).await.0, 204);
        run.wait_for_line(&format!("closed code={code} reason={reason}")).await;
        let next = run.reply_id(n + 2).await;
        assert!(!ids.contains(&next), "a reconnect got an old replyId {next}");
        let left = events.find(STEP, |e| e["type"] == "disconnect" && e["replyId"] == id).await;
        assert_eq!(left["code"], code, "{left}");
        events.find(STEP, |e| e["type"] == "connect" && e["replyId"] == next).await;
        ids.push(next);
    }

    for value in &values[2..] {
        publish(&http, key, value).await;
    }
    let status = run.wait_exit(STEP).await;
    assert!(status.success(), "the example failed ({status})\n{}", run.output());
    let lines = run.lines();
    assert_eq!(records(&lines), values, "the example printed other records than its key's\n{}", run.output());
    assert!(lines.iter().any(|l| l == "done after 4 records"), "{}", run.output());
    assert_eq!(reconnect_delays(&lines).len(), 2, "{}", run.output());

    let last = ids.last().unwrap().clone();
    for ack in [r#"{"ack":3}"#, r#"{"ack":4}"#] {
        let message = events.find(STEP, |e| e["type"] == "message" && e["replyId"] == last).await;
        assert_eq!(message["data"], ack, "{message}");
    }
    let left = events.find(STEP, |e| e["type"] == "disconnect" && e["replyId"] == last).await;
    assert_eq!((left["code"].as_u64(), left["reason"].as_str()), (Some(1000), Some("done")), "{left}");
}

/// A real restart: SIGTERM closes the example with 1001, its attempts are refused while the
/// gateway is down and wait longer each time, and it comes back to the new process on the
/// same address and carries on.
async fn rides_out_a_gateway_restart(example: Example) {
    example.require();
    let port = free_port();
    let env = [("WS_USERNAME", "sluice"), ("WS_PASSWORD", "restart-password"), ("ADMIN_TOKEN", ADMIN_TOKEN)];
    let mut gateway = FixedPortGateway::start(port, &env);
    let url = format!("ws://127.0.0.1:{port}");
    let http = format!("http://127.0.0.1:{port}");
    let values = distinct_values(2);
    let mut run = example.spawn(&[
        ("SLUICE_URL", &url),
        ("SLUICE_PASSWORD", "restart-password"),
        ("SLUICE_KEY", "restart"),
        ("SLUICE_MAX_RECORDS", "2"),
    ]);
    let before = run.reply_id(1).await;
    publish(&http, "restart", &values[0]).await;
    run.wait_for_line(&format!("record {}", values[0])).await;

    gateway.terminate().await;
    run.wait_for_line("closed code=1001 reason=shutting down").await;
    // Two attempts refused while nothing listens, before the gateway comes back.
    run.wait_for_nth(2, "two refused attempts", |l| l.starts_with("cannot connect")).await;
    let _gateway = FixedPortGateway::start(port, &env);
    let after = run.reply_id(2).await;
    assert_ne!(before, after);
    publish(&http, "restart", &values[1]).await;

    let status = run.wait_exit(STEP).await;
    assert!(status.success(), "the example failed ({status})\n{}", run.output());
    let lines = run.lines();
    assert_eq!(records(&lines), values, "{}", run.output());
    let delays = reconnect_delays(&lines);
    assert!(delays.len() >= 3, "{}", run.output());
    // Each wait is drawn from a range twice as high as the one before: never shorter.
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "the backoff did not grow: {delays:?}\n{}", run.output());
    assert!(delays.iter().all(|d| (250..=30_000).contains(d)), "{delays:?}");
}

/// Credentials a retry cannot fix end the example at once with a non-zero exit and what to
/// check; a token (Bearer) and a password with a colon and a space both work.
async fn stops_on_refusals_and_takes_a_token(example: Example) {
    example.require();
    let sluice = Sluice::start(&[], &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let url = sluice.url("");
    let http = sluice.http("");

    let mut wrong = example.spawn(&[("SLUICE_URL", &url), ("SLUICE_USER", USER), ("SLUICE_PASSWORD", "wrong")]);
    let status = wrong.wait_exit(STEP).await;
    assert_eq!(status.code(), Some(1), "{}", wrong.output());
    assert!(wrong.output().contains("HTTP 401"), "{}", wrong.output());
    assert!(
        reconnect_delays(&wrong.lines()).is_empty(),
        "it retried credentials that were refused\n{}",
        wrong.output()
    );

    let (status, minted) =
        sluice.api("POST", "/api/tokens", Some(r#"{"sub":"example","keys":["mine"],"ttl":600}"#)).await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap();
    let mut forbidden = example.spawn(&[("SLUICE_URL", &url), ("SLUICE_TOKEN", token), ("SLUICE_KEY", "theirs")]);
    let status = forbidden.wait_exit(STEP).await;
    assert_eq!(status.code(), Some(1), "{}", forbidden.output());
    assert!(forbidden.output().contains("HTTP 403"), "{}", forbidden.output());

    for (auth, user) in [(("SLUICE_TOKEN", token), "example"), (("SLUICE_PASSWORD", PASSWORD), USER)] {
        let value = &distinct_values(1)[0];
        let mut run = example.spawn(&[
            ("SLUICE_URL", &url),
            ("SLUICE_USER", USER),
            auth,
            ("SLUICE_KEY", "mine"),
            ("SLUICE_MAX_RECORDS", "1"),
        ]);
        let id = run.reply_id(1).await;
        let (_, client) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
        assert_eq!(client["user"], user, "{client}");
        publish(&http, "mine", value).await;
        let status = run.wait_exit(STEP).await;
        assert!(status.success(), "the example failed ({status})\n{}", run.output());
        assert_eq!(records(&run.lines()), std::slice::from_ref(value), "{}", run.output());
    }
}

/// The same three tests for each command-line example, named after it.
macro_rules! example_tests {
    ($($name:ident => $example:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn prints_its_records_acknowledges_them_and_reconnects_after_1001_and_1008() {
                prints_acknowledges_and_reconnects($example).await;
            }

            #[tokio::test]
            async fn rides_out_a_gateway_restart_with_growing_backoff() {
                rides_out_a_gateway_restart($example).await;
            }

            #[tokio::test]
            async fn stops_on_refused_credentials_and_connects_with_a_token() {
                stops_on_refusals_and_takes_a_token($example).await;
            }
        }
    )*};
}

example_tests! {
    node_websocket => Example::NodeWebsocket,
    node_ws => Example::NodeWs,
    python => Example::Python,
}

// ---------------------------------------------------------------- the browser page

fn chromium() -> PathBuf {
    std::env::var_os("SLUICE_TEST_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser")
}

/// Fails, saying how to install it, when anything the page's test needs is missing.
fn require_browser_tools() {
    require_node();
    assert!(
        chromium().is_file(),
        "the example page's test needs Chromium at {}: on Debian `apt-get install chromium` (.ci/run does), \
         or set SLUICE_TEST_CHROMIUM to another Chromium",
        chromium().display()
    );
    assert!(
        browser_dir().join("node_modules/playwright-core/package.json").is_file(),
        "the example page's test needs playwright-core: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let python = Command::new("python3").args(["-c", "import http.server"]).status();
    assert!(
        python.is_ok_and(|s| s.success()),
        "the example page's test serves the page with `python3 -m http.server`: install Python 3 (`apt-get install python3`)"
    );
}

/// `python3 -m http.server` in `dir`, serving a page, as examples/README.md has it.
fn serve_page(port: u16, dir: &Path) -> Running {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()]).current_dir(dir);
    let server = Running::spawn(cmd);
    let deadline = Instant::now() + STEP;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the page server did not listen on {port}\n{}", server.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn page_url(origin: &str, gateway: &str, key: &str, token: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("url", gateway)
        .append_pair("key", key)
        .append_pair("token", token)
        .finish();
    format!("{origin}/?{query}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_page_shows_records_close_codes_and_reconnects() {
    require_browser_tools();
    let page_port = free_port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let sluice = Sluice::start(
        &["--demo", "--allowed-origins", &origin],
        &[("SLUICE_JWT_SECRET", JWT_SECRET), ("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let _server = serve_page(page_port, &examples_dir().join("browser"));
    let key = "line 7/oven";
    // The token as the README has it: `sluice token`, signed with the gateway's secret.
    let out = sluice_command(&["token", "--sub", "example-page", "--keys", key, "--ttl", "10m"])
        .env("SLUICE_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut events = Events::open(&sluice).await;
    let values = distinct_values(4);
    let markup = r#"<img src="x" onerror="window.pwned = 1">"#;
    let message = r#"{"hello":"from the example page"}"#;
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-page.png");
    let gateway = sluice.url("");
    let env = [
        ("PAGE_URL", page_url(&origin, &gateway, key, &token)),
        // localhost is another origin than 127.0.0.1, and not an allowed one.
        ("REFUSED_PAGE_URL", page_url(&format!("http://localhost:{page_port}"), &gateway, key, &token)),
        ("GATEWAY_HTTP", sluice.http("")),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("KEY", key.to_owned()),
        ("RECORDS", serde_json::to_string(&values).unwrap()),
        ("MARKUP", markup.to_owned()),
        ("MESSAGE", message.to_owned()),
        ("SCREENSHOT", screenshot.display().to_string()),
    ];
    let steps = run_page_script("example-page.mjs", &env, &sluice).await;
    let step =
        |name: &str| steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no {name} step: {steps:?}"));

    // Every record in the DOM, as text.
    let closed = step("closed");
    let shown: Vec<&str> = closed["records"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for value in values.iter().map(String::as_str).chain([markup]) {
        assert!(shown.contains(&value), "{value} is not on the page: {shown:?}");
    }
    assert_eq!(shown.len(), 5, "{shown:?}");

    // What the gateway saw of the page.
    let first = step("connected")["replyId"].as_str().unwrap().to_owned();
    let second = step("reconnected")["replyId"].as_str().unwrap().to_owned();
    let connect = events.find(STEP, |e| e["type"] == "connect" && e["replyId"] == first.as_str()).await;
    assert_eq!((connect["user"].as_str(), connect["key"].as_str()), (Some("example-page"), Some(key)), "{connect}");
    let sent = events.find(STEP, |e| e["type"] == "message" && e["replyId"] == first.as_str()).await;
    assert_eq!(sent["data"], message, "{sent}");
    let left = events.find(STEP, |e| e["type"] == "disconnect" && e["replyId"] == first.as_str()).await;
    assert_eq!(left["code"], 1001, "{left}");
    events.find(STEP, |e| e["type"] == "connect" && e["replyId"] == second.as_str()).await;
    let left = events.find(STEP, |e| e["type"] == "disconnect" && e["replyId"] == second.as_str()).await;
    assert_eq!((left["code"].as_u64(), left["reason"].as_str()), (Some(4001), Some("bye from the test")), "{left}");

    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "not a screenshot");
}

/// Runs `script` (in tests/browser) and returns the JSON lines it printed; panics with its
/// output when it fails or overruns.
async fn run_page_script(script: &str, env: &[(&str, String)], sluice: &Sluice) -> Vec<serde_json::Value> {
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join(script))
        .current_dir(browser_dir())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CHROMIUM", chromium());
    let mut script = Running::spawn(cmd);
    let status = script.wait_exit(Duration::from_secs(120)).await;
    let parsed: Vec<serde_json::Value> = script.lines().iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let ok = parsed.last().is_some_and(|last| last["ok"] == true);
    let log = sluice.stderr();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(
        status.success() && ok,
        "the page script failed ({status})\n{}\ngateway log (tail):\n{}",
        script.output(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    parsed
}

/// The dashboard example: the repository's root served as examples/README.md says (the page
/// imports the client library from `../../clients/js/index.js`), a token from `sluice token`
/// granting a pattern and a key, and a gateway with `--demo`. Both subscriptions' records show
/// (the last ones first, then live), on one multiplexed connection, and a reconnect resumes
/// both with nothing missed and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_shows_two_subscriptions_on_one_connection() {
    require_browser_tools();
    let page_port = free_port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let sluice = Sluice::start(
        &["--demo", "--allowed-origins", &origin],
        &[("SLUICE_JWT_SECRET", JWT_SECRET), ("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let _server = serve_page(page_port, Path::new(env!("CARGO_MANIFEST_DIR")));
    let pattern = "sensor-*";
    // A key the demo does not feed, with a space and a slash, and a key of the pattern that
    // only this test publishes to.
    let key = "line 7/oven";
    let pattern_key = format!("sensor-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let grant = format!("{pattern},{key}");
    let out = sluice_command(&["token", "--sub", "dashboard", "--keys", &grant, "--ttl", "10m"])
        .env("SLUICE_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let values = distinct_values(8);
    let page = |origin: &str| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("url", &sluice.url(""))
            .append_pair("token", &token)
            .append_pair("pattern", pattern)
            .append_pair("key", key)
            .finish();
        format!("{origin}/examples/dashboard/?{query}")
    };
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let env = [
        ("PAGE_URL", page(&origin)),
        // localhost is another origin than 127.0.0.1, and not an allowed one.
        ("REFUSED_PAGE_URL", page(&format!("http://localhost:{page_port}"))),
        ("GATEWAY_HTTP", sluice.http("")),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("PATTERN", pattern.to_owned()),
        ("PATTERN_KEY", pattern_key.clone()),
        ("KEY", key.to_owned()),
        ("BEFORE", serde_json::to_string(&values[..2]).unwrap()),
        ("RECORDS", serde_json::to_string(&values[2..6]).unwrap()),
        ("AFTER", serde_json::to_string(&values[6..]).unwrap()),
        ("MARKUP", r#"<img src="x" onerror="window.pwned = 1">"#.to_owned()),
        ("SCREENSHOT", screenshot.display().to_string()),
    ];
    let steps = run_page_script("dashboard-page.mjs", &env, &sluice).await;
    let step =
        |name: &str| steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no {name} step: {steps:?}"));

    // One connection, the token's subject, with exactly the page's two subscriptions.
    let one = step("one connection");
    assert_eq!(one["user"], "dashboard", "{one}");
    assert_eq!(
        one["subscriptions"],
        serde_json::json!([
            { "id": "s1", "topic": "sluice", "pattern": pattern },
            { "id": "s2", "topic": "sluice", "keys": [key] },
        ]),
        "{one}"
    );
    let connected = step("connected");
    assert_eq!(connected["lastKey"], "2", "{connected}");
    for sensor in ["sensor-1", "sensor-2", "sensor-3"] {
        assert!(connected["tiles"].as_array().unwrap().iter().any(|t| t == sensor), "no {sensor} tile: {connected}");
    }
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "not a real screenshot: {} bytes", png.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eventsource_page_resumes_after_the_gateway_ends_its_stream() {
    require_browser_tools();
    let page_port = free_port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let sluice = Sluice::start(
        &["--allowed-origins", &origin],
        &[("SLUICE_JWT_SECRET", JWT_SECRET), ("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1", &page_port.to_string()])
        .current_dir(examples_dir().join("eventsource"));
    let server = Running::spawn(cmd);
    let deadline = Instant::now() + STEP;
    while std::net::TcpStream::connect(("127.0.0.1", page_port)).is_err() {
        assert!(Instant::now() < deadline, "the page server did not listen\n{}", server.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = "es-key";
    let out = sluice_command(&["token", "--sub", "eventsource-page", "--keys", key, "--ttl", "10m"])
        .env("SLUICE_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let env = [
        ("PAGE_URL", page_url(&origin, &sluice.http(""), key, &token)),
        ("GATEWAY_HTTP", sluice.http("")),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("KEY", key.to_owned()),
    ];
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("eventsource-page.mjs"))
        .current_dir(browser_dir())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CHROMIUM", chromium());
    let mut script = Running::spawn(cmd);
    let status = script.wait_exit(Duration::from_secs(120)).await;
    let steps: Vec<serde_json::Value> = script.lines().iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        status.success() && steps.last().is_some_and(|s| s["ok"] == true),
        "the EventSource page failed ({status})\n{}\ngateway log:\n{}",
        script.output(),
        sluice.stderr()
    );
    sluice.wait_metric("sluice_resumes_total{outcome=\"memory\"}", 1.0, Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------- the HTTP backend

#[tokio::test]
async fn the_backend_example_admits_by_token_verifies_the_webhook_and_answers_pings() {
    use common::futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let secret = "a webhook secret of 32 bytes!!!!";
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.arg(examples_dir().join("backend/backend.py")).arg(port.to_string()).env("SLUICE_WEBHOOK_SECRET", secret);
    let backend = Running::spawn(cmd);
    let deadline = Instant::now() + STEP;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the backend did not listen\n{}", backend.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://127.0.0.1:{port}");
    let sluice = Sluice::start(
        &["--connect-url", &format!("{base}/connect"), "--events-url", &format!("{base}/events")],
        &[("SLUICE_WEBHOOK_SECRET", secret), ("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    match try_connect(&sluice.url("/sensor-1?token=nope"), &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("an unknown token was not refused: {:?}", other.map(|_| ())),
    }
    let (mut ws, _) = try_connect(&sluice.url("/sensor-1?token=demo-token"), &[]).await.expect("admitted");
    let welcome: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let id = welcome["replyId"].as_str().unwrap().to_owned();
    ws.send(Message::Text("ping".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "pong", "backend:\n{}", backend.output());
    let (_, client) = sluice.api("GET", &format!("/api/clients/{id}"), None).await;
    assert_eq!(
        (&client["user"], &client["data"]),
        (&serde_json::json!("demo"), &serde_json::json!({ "plan": "trial" }))
    );
    let printed = backend.lines();
    assert!(printed.iter().any(|l| l.starts_with("connect demo from 127.0.0.1:")), "{printed:?}");
    assert!(printed.iter().any(|l| *l == format!("event message {id} ping")), "{printed:?}");
}
