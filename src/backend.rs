//! Clients of the HTTP services Sluice calls — the Schema Registry, an identity provider's
//! key set, the connect and subscribe proxies, the event webhook: each built the same way
//! (a whole-request timeout, pooled connections, Sluice's user agent), and their answers read
//! with a bound, so a backend that sends megabytes cannot make the gateway hold them.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// A backend that does not take a connection within this is away: fail fast rather than
/// spend the request's whole timeout on the connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long to wait before trying a backend again: the first retry after `first`,
/// doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1 for the first).
    pub fn after(self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// An HTTP client for one backend: requests time out after `timeout` (connecting after
/// at most 2 s of it), and up to `idle_per_host` connections stay open between them.
pub fn client(what: &str, timeout: Duration, idle_per_host: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .pool_max_idle_per_host(idle_per_host)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client for {what}: {e}"))
}

/// The answer's body, or an error once it passes `max` bytes (said by its length or
/// counted as it arrives).
pub async fn body(mut response: reqwest::Response, max: usize) -> Result<Bytes, String> {
    let too_big = || format!("an answer over {max} bytes");
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + chunk.len() > max {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
