//! Sluice: a WebSocket gateway for streaming platforms.
//!
//! A record travels `source → hub → session → socket`:
//!
//! - [`config`]: settings from flags, environment and a TOML file, validated at once.
//! - [`source`]: where records come from — [`source::kafka`] (every partition of the
//!   `input` topic) or [`source::memory`] (the embedded stream, with optional demo data).
//!   Sources see only the narrow [`source::Dispatch`] interface.
//! - [`record`]: the record type and its encoding into WebSocket frames, done once per
//!   record and shared by every subscriber.
//! - [`hub`]: fan-out from records to the clients subscribed to their key.
//! - [`client`]: one connected client: its id, its bounded outgoing queue, the signal that
//!   closes it, and its activity counters.
//! - [`registry`]: every connected client by id.
//! - [`replies`]: records of the `replies` topic, each to the client its key names.
//! - [`ws`]: the WebSocket upgrade (authentication first) and the session that pumps a
//!   client's queue into its socket.
//! - [`auth`]: Basic and JWT authentication of upgrade requests.
//! - [`admin`]: plain HTTP on the same port: health, readiness, metrics; which listener
//!   serves what.
//! - [`api`]: the admin API under `/api` (clients, messages, broadcast, publish, events,
//!   client tokens).
//! - [`console`]: the operator console page, embedded.
//! - [`server`]: the accept loop (plain TCP or TLS) and the connection limit.
//! - [`sink`]: client messages and lifecycle events out, to Kafka and the event feed.
//! - [`metrics`]: every metric name, in one place.
//! - [`app`]: wiring it all together; `run` takes a bound listener and a shutdown token.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod client;
pub mod config;
pub mod console;
pub mod hub;
pub mod metrics;
pub mod readiness;
pub mod record;
pub mod registry;
pub mod replies;
pub mod secret;
pub mod server;
pub mod sink;
pub mod source;
pub mod ws;
