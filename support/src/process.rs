//! Processes on free ports: choosing the port, waiting for the listener, and launching the
//! `sluice` binary with an environment of its own.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A port nobody listens on right now. Tansu and Redis cannot report the port they bound,
/// so this is the one place a port is chosen outside the process that uses it.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, within: Duration) -> Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > within {
            bail!("nothing listening on {port} after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The `sluice` binary cargo built beside the running test: `$SLUICE_TEST_BIN` if set, else
/// `target/<profile>/sluice` next to this test executable (cargo builds a package's
/// binaries before its integration tests).
pub fn sluice_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_TEST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    // Integration tests run from target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("sluice{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "no sluice binary at {} (build it, or set SLUICE_TEST_BIN)", bin.display());
    bin
}

/// Settings a gateway reads from the environment that must not leak in from whoever runs
/// the tests or benchmarks.
pub const SCRUBBED: &[&str] = &[
    "input",
    "Quix__Broker__Address",
    "KAFKA_BROKERS",
    "WS_USERNAME",
    "WS_PASSWORD",
    "PORT",
    "SLUICE_CONFIG",
    "SLUICE_JWT_SECRET",
    "SLUICE_ALLOW_ANONYMOUS",
    "SLUICE_DEMO",
    "SLUICE_NO_WELCOME",
    "SLUICE_FROM",
    "ADMIN_TOKEN",
    "output",
    "events",
    "replies",
    "SLUICE_ADMIN_ADDR",
    "SLUICE_HOST",
    "KAFKA_PROPERTIES",
    "KAFKA_CONSUMER_PROPERTIES",
    "KAFKA_PRODUCER_PROPERTIES",
    "SLUICE_ALLOWED_ORIGINS",
    "SLUICE_TRUSTED_PROXIES",
    "SLUICE_MAX_QUEUED_BYTES",
    "SLUICE_QUEUE_BYTES",
    "SLUICE_QUEUE_CAPACITY",
    "SLUICE_SLOW_CONSUMER",
    "SLUICE_MAX_CONNECTIONS",
    "SLUICE_PING_INTERVAL",
    "SLUICE_HEADER_TIMEOUT",
    "SLUICE_CLUSTER",
    "SLUICE_NODE_ID",
    "Quix__Sdk__Token",
    "Quix__Portal__Api",
    "Quix__Workspace__Id",
];

/// A command running `binary` with [`SCRUBBED`] removed from its environment.
pub fn scrubbed_command(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for name in SCRUBBED {
        cmd.env_remove(name);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// How to read a launched gateway's standard error.
#[derive(Debug, Clone, Copy)]
pub struct Stderr {
    /// Keep only the last this many lines (a benchmark's gateway may log for minutes).
    pub keep: Option<usize>,
    /// Also print each line, prefixed, to this process's stderr.
    pub echo: bool,
}

/// A gateway process that printed the address it listens on.
pub struct Launched {
    pub child: Child,
    pub addr: SocketAddr,
    /// Lines the binary printed on stdout up to and including the listening line.
    pub banner: Vec<String>,
    /// What it wrote to stderr so far (see [`Stderr`]).
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// Starts `cmd` (a gateway with `--port 0`) and waits until it prints
/// `sluice listening on ws://ADDR …`; its stderr is read into [`Launched::stderr`].
pub fn launch(mut cmd: Command, stderr: Stderr, within: Duration) -> Result<Launched> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("start {:?}", cmd.get_program()))?;

    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    let err = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if stderr.echo {
                eprintln!("[sluice] {line}");
            }
            let mut k = kept.lock().expect("not poisoned");
            if stderr.keep.is_some_and(|n| k.len() >= n) {
                k.remove(0);
            }
            k.push(line);
        }
    });

    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    let deadline = Instant::now() + within;
    let addr = loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            // The reader thread may still be appending the last lines.
            std::thread::sleep(Duration::from_millis(100));
            bail!("the gateway did not start:\n{}", lines.lock().expect("not poisoned").join("\n"));
        };
        banner.push(line.clone());
        // "sluice listening on ws://127.0.0.1:PORT (subscribe at /{key} or /*)"
        if let Some(rest) = line.strip_prefix("sluice listening on ") {
            let url = rest.split_whitespace().next().unwrap_or_default();
            let hostport = url.split("://").nth(1).unwrap_or_default();
            break hostport.parse().with_context(|| format!("address in {line:?}"))?;
        }
    };
    Ok(Launched { child, addr, banner, stderr: lines })
}
