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

/// A `redis-server` on 127.0.0.1 and a free port, stopped when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one for a test; panics saying how to install Redis when it cannot.
    pub fn start() -> Redis {
        Self::launch(default_binary()).unwrap_or_else(|e| {
            panic!("{e:#}\nthe cluster tests need redis-server: apt-get install redis-server, or set REDIS_SERVER")
        })
    }

    pub fn launch(binary: PathBuf) -> Result<Redis> {
        let mut r =
            Redis { child: None, port: free_port(), binary, dir: tempfile::tempdir().context("Redis's directory")? };
        r.spawn()?;
        Ok(r)
    }

    /// The URL gateways are given: database 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join("redis.log"))?;
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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
        let out = Command::new(cli).args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
