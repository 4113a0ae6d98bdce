//! Clients of the HTTP services Sluice calls — the Schema Registry, an identity provider's
//! key set, the connect and subscribe proxies, the event webhook: each built the same way
//! (a whole-request timeout, pooled connections, Sluice's user agent), and their answers read
//! with a bound, so a backend that sends megabytes cannot make the gateway hold them.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// An HTTP client for one backend: requests time out after `timeout`, and up to
/// `idle_per_host` connections stay open between them.
pub fn client(what: &str, timeout: Duration, idle_per_host: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
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
