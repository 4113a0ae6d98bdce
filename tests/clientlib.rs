//! The JavaScript client library (`clients/js`) against the real binary: its Node.js tests
//! (`node --test clients/js/test/*.test.js`, with the `ws` package standing in for the
//! WebSocket Node.js 20 lacks) and its browser test (`tests/browser/clientlib-page.mjs`,
//! headless Chromium through playwright-core, the browser's own WebSocket). Each script starts
//! the gateway binary cargo built, passed to it as `SLUICE_TEST_BIN`, as often as it needs.
//!
//! Nothing here skips: without Node.js, Chromium or the npm packages a test fails and says
//! how to install them (`scripts/test.sh` installs the packages).

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::sluice_binary;

/// How long a script may run before it is killed and its test fails.
const DEADLINE: Duration = Duration::from_secs(180);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn library_dir() -> PathBuf {
    repo().join("clients").join("js")
}

fn browser_dir() -> PathBuf {
    repo().join("tests").join("browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("SLUICE_TEST_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails, saying how to install it, when Node.js 20 or a package under `dir` is missing.
fn require_node(dir: &Path, packages: &[&str]) {
    let node = Command::new("node")
        .args(["-e", "process.exit(Number(process.versions.node.split('.')[0]) >= 20 ? 0 : 1)"])
        .status();
    assert!(
        node.is_ok_and(|s| s.success()),
        "the client library's tests need Node.js 20 or later as `node` on the PATH: on Debian `apt-get install nodejs npm`"
    );
    let relative = dir.strip_prefix(repo()).unwrap_or(dir).display();
    for package in packages {
        assert!(
            dir.join("node_modules").join(package).join("package.json").is_file(),
            "the client library's tests need {package} in {relative}: run `npm ci --prefix {relative}` \
             (scripts/test.sh does)"
        );
    }
}

/// What a finished script printed.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn text(&self) -> String {
        format!("exit: {}\nstdout:\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `node args…` in `dir` with the gateway binary in its environment; panics with all it
/// printed when it overruns [`DEADLINE`].
fn node(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    // A group of its own, so that an overrun ends the gateways and browsers it started too.
    let mut child = Command::new("node")
        .process_group(0)
        .args(args)
        .current_dir(dir)
        .env("SLUICE_TEST_BIN", sluice_binary())
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-KILL", &format!("-{}", child.id())]).status();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let overran = status.is_none();
    let status = status.unwrap_or_else(|| child.wait().unwrap());
    let output = Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
    assert!(!overran, "node {args:?} ran over {DEADLINE:?}\n{}", output.text());
    output
}

/// The test files of the library, so that a helper under `test/` is never run as one.
fn test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(library_dir().join("test"))
        .expect("clients/js/test")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.js"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.js in clients/js/test");
    files
}

/// The number after `# name ` in the test runner's summary.
fn summary(stdout: &str, name: &str) -> Option<u64> {
    stdout.lines().find_map(|line| line.strip_prefix(&format!("# {name} "))?.trim().parse().ok())
}

#[test]
fn the_library_passes_its_node_tests_against_the_real_gateway() {
    require_node(&library_dir(), &["ws", "typescript"]);
    let files = test_files();
    let mut args = vec!["--test", "--test-reporter=tap", "--test-timeout=60000"];
    args.extend(files.iter().map(String::as_str));
    let output = node(&library_dir(), &args, &[]);
    assert!(output.status.success(), "the client library's Node tests failed\n{}", output.text());
    // A file whose tests never registered would pass with nothing run: count them (22 now).
    let (passed, failed) = (summary(&output.stdout, "pass"), summary(&output.stdout, "fail"));
    assert!(
        passed.is_some_and(|n| n >= 20) && failed == Some(0),
        "passed {passed:?}, failed {failed:?}\n{}",
        output.text()
    );
    for skipped in ["skipped", "todo", "cancelled"] {
        assert_eq!(summary(&output.stdout, skipped), Some(0), "{skipped} tests\n{}", output.text());
    }
}

#[test]
fn a_browser_page_streams_and_resumes_with_the_library() {
    require_node(&browser_dir(), &["playwright-core"]);
    let chromium = chromium();
    assert!(
        chromium.is_file(),
        "the browser test needs Chromium at {}: on Debian `apt-get install chromium` (.ci/run does), \
         or set SLUICE_TEST_CHROMIUM to another Chromium",
        chromium.display()
    );
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clientlib.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = node(&browser_dir(), &["clientlib-page.mjs"], &[("CHROMIUM", &chromium), ("SCREENSHOT", &screenshot)]);
    let last = output.stdout.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    assert!(
        output.status.success() && last.is_some_and(|l| l["ok"] == true),
        "the browser test failed\n{}",
        output.text()
    );
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "not a real screenshot: {} bytes", png.len());
}
