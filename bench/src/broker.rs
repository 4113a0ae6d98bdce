//! A Tansu (Kafka-protocol) broker with in-memory storage, started for one scenario run
//! and stopped with it, through the harness the tests use (`sluice-support`).

use std::path::Path;

use anyhow::Result;
use sluice_support::tansu::{Storage, Tansu};

pub use sluice_support::tansu::default_binary;

pub struct Broker(Tansu);

impl Broker {
    pub fn start(binary: &Path) -> Result<Broker> {
        Ok(Broker(Tansu::launch(binary, Storage::Memory)?))
    }

    pub fn address(&self) -> String {
        self.0.brokers()
    }

    /// The port it listens on (its connections are counted by it).
    pub fn port(&self) -> u16 {
        self.0.port
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        self.0.try_create_topic(name, partitions).await
    }
}

/// A port nobody listens on now (for a process that cannot report the port it bound).
#[allow(dead_code)] // Kept beside the broker for scenarios that start processes of their own.
pub fn free_port() -> Result<u16> {
    Ok(sluice_support::free_port())
}

/// A topic name never used before: Tansu may replay a reused topic's records.
pub fn fresh_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
