//! Sluice: a WebSocket gateway for streaming platforms.
//!
//! A record travels `source → stream → client → session → socket`; what a client sends
//! travels `session → sink`. Each room below is a folder (or a file) that opens with what it
//! owns, listed from the bottom up: a room uses only rooms listed before it
//! (`scripts/modules.py` checks that no two rooms use each other, directly or not).
//!
//! - `secret`: values never printed or logged. `metrics`: every metric name, and the log
//!   line that goes with each failure. `readiness`: the latch behind `/readyz`.
//! - `backend`: clients of the HTTP services Sluice calls (Schema Registry, identity provider,
//!   proxies, webhook), their answers read with a bound.
//! - `record`: the record as consumed; its position in the stream and the cursor that
//!   names it; its frames and envelope, built once per record and shared by every
//!   subscriber; the gateway-wide bound on bytes those frames hold.
//! - `selector`: what a subscription selects — topic, exact keys or a pattern, header and
//!   JSON-field conditions — parsed once and bounded; key patterns and their coverage.
//! - `decode`: readable values — each record's value and key from Avro, Protobuf or JSON
//!   (Schema) to JSON, once per record; the Schema Registry client and its cache.
//! - `client`: one connected client: who it is and where from (behind trusted proxies),
//!   what it subscribed to, its bounded outgoing queue and the policy when it is full, the
//!   signal that closes it, its counters.
//! - `source`: where records come from — Kafka (every partition, each one's start checked
//!   against what the broker serves) or the embedded stream — through the narrow
//!   `Dispatch` interface; how far consuming is.
//! - `stream`: fan-out of each record to its subscribers (the hub); recent records held
//!   for resume and `?last=`, and the seam between replay and live; older records read
//!   back from Kafka by one shared reader.
//! - `sink`: client messages and lifecycle events out, to Kafka, the event feed and the
//!   event webhook.
//! - `registry`: every connected client by id, and the one interface the admin API manages
//!   clients through, answered by this process or by every replica sharing a Redis;
//!   records of the `replies` topic, each to its client.
//! - [`auth`]: Basic and JWT credentials (HS256, or an identity provider's keys), client
//!   tokens, the connect and subscribe proxies, which web pages may subscribe.
//! - [`server`]: the listeners: the accept loop (plain TCP or TLS), the connection limit.
//! - `session`: who may subscribe (admission), and one session per client whatever its
//!   transport: one pump (queue, liveness, closes, counters) behind a narrow `Transport`
//!   seam that WebSocket and Server-Sent Events each implement.
//! - `admin`: plain HTTP beside the subscriptions: health, readiness, metrics, the admin
//!   API and the console.
//! - [`config`]: settings from flags, environment and a TOML file, each declared once and
//!   validated at once; Quix Cloud discovery; each part's settings built from them.
//! - [`gateway`]: the wiring: each part built from its own settings, in order; `serve`
//!   takes a bound listener and a shutdown token.
//!
//! The binary (`main.rs`) is the start-up sequence: settings, bind, serve, signals, drain.

mod admin;
pub mod auth;
mod backend;
mod client;
pub mod config;
pub mod decode;
pub mod gateway;
pub mod metrics;
mod readiness;
mod record;
mod registry;
mod secret;
mod selector;
pub mod server;
mod session;
mod sink;
mod source;
mod stream;
