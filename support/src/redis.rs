//! A Redis server of the test's own on a free port, with nothing saved to disk: a test may
//! stop and restart it (losing everything, as a restarted Redis without persistence does)
//! without touching any other Redis on the machine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{free_port, wait_for_port};

/// `$REDIS_SERVER`, else `redis-server` on the `PATH`.
pub fn default_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// How a Redis is reached beyond a plain port.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `requirepass`: clients authenticate with this password.
    pub password: Option<String>,
    /// Served over TLS only, with this certificate and key (PEM files); clients present none.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A `redis-server` on 127.0.0.1 and a free port, stopped when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    binary: PathBuf,
    options: Options,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one for a test; panics saying how to install Redis when it cannot.
    pub fn start() -> Redis {
        Self::launch(default_binary()).unwrap_or_else(|e| {
            panic!("{e:#}\nthe cluster tests need redis-server: apt-get install redis-server, or set REDIS_SERVER")
        })
    }

    /// Starts one with a password or TLS for a test.
    pub fn start_with(options: Options) -> Redis {
        Self::launch_with(default_binary(), options).unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn launch(binary: PathBuf) -> Result<Redis> {
        Self::launch_with(binary, Options::default())
    }

    pub fn launch_with(binary: PathBuf, options: Options) -> Result<Redis> {
        let dir = tempfile::tempdir().context("Redis's directory")?;
        let mut r = Redis { child: None, port: free_port(), binary, options, dir };
        r.spawn()?;
        Ok(r)
    }

    /// The URL gateways are given: database 0, `rediss://` and the password as configured.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "rediss" } else { "redis" };
        let auth = self.options.password.as_ref().map(|p| format!(":{}@", percent_encode(p))).unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join("redis.log"))?;
        let mut cmd = Command::new(&self.binary);
        match &self.options.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        if let Some(password) = &self.options.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10)).context("redis-server")
    }

    /// Kills it at once (as a crash would): every key is gone with it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Runs `redis-cli` against it with these arguments; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let cli = self.binary.with_file_name("redis-cli");
        let cli = if cli.is_file() { cli } else { PathBuf::from("redis-cli") };
        let mut cmd = Command::new(cli);
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(password) = &self.options.password {
            cmd.args(["-a", password, "--no-auth-warning"]);
        }
        if let Some((cert, _)) = &self.options.tls {
            cmd.arg("--tls").arg("--cacert").arg(cert);
        }
        let out = cmd.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A URL's userinfo keeps only unreserved characters as they are (RFC 3986).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
