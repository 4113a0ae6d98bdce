//! Sluice: a WebSocket gateway for streaming platforms.
//!
//! A record travels `source → hub → session → socket`:
//!
//! - [`config`]: settings from flags, environment and a TOML file, validated at once.
//! - [`quix`]: Quix Cloud discovery: the broker settings and topic names a Quix SDK token
//!   leads to, fetched from the Quix portal before the settings are validated.
//! - [`source`]: where records come from — [`source::kafka`] (every partition of the
//!   `input` topic) or [`source::memory`] (the embedded stream, with optional demo data).
//!   Sources see only the narrow [`source::Dispatch`] interface.
//! - [`record`]: the record type and its encoding into WebSocket frames, done once per
//!   record and shared by every subscriber.
//! - [`hub`]: fan-out from records to the clients subscribed to their key.
//! - [`budget`]: the gateway-wide bound on bytes held for clients.
//! - [`client`]: one connected client: its id, its bounded outgoing queue, the signal that
//!   closes it, and its activity counters.
//! - [`registry`]: every connected client by id, and [`registry::Clients`], the one interface
//!   the admin API manages clients through: [`registry::local`] answers for this process,
//!   [`registry::cluster`] for every replica sharing a Redis (`--cluster`), off the
//!   record's path.
//! - [`replies`]: records of the `replies` topic, each to the client its key names.
//! - [`admission`]: who may subscribe: key, origin, credentials, a free session slot.
//! - [`session`]: one client's session whatever its transport: registry, hub, queue,
//!   what comes before the live stream, liveness, how it ended.
//! - [`sse`]: Server-Sent Events, the same subscriptions over `text/event-stream`.
//! - [`position`], [`replay`], [`history`]: cursors made of Kafka positions; recent
//!   records held for resume and `?last=`; older ones read back from Kafka.
//! - [`ws`]: the WebSocket upgrade (authentication first) and the session that pumps a
//!   client's queue into its socket.
//! - [`auth`]: Basic and JWT authentication of upgrade requests.
//! - [`origin`]: which web pages may subscribe (the `Origin` check).
//! - [`proxy`]: the client's address behind trusted reverse proxies.
//! - [`admin`]: plain HTTP on the same port: health, readiness, metrics; which listener
//!   serves what.
//! - [`api`]: the admin API under `/api` (clients, messages, broadcast, publish, events,
//!   client tokens).
//! - [`console`]: the operator console page, embedded.
//! - [`server`]: the accept loop (plain TCP or TLS) and the connection limit.
//! - [`sink`]: client messages and lifecycle events out, to Kafka and the event feed.
//! - [`metrics`]: every metric name, in one place.
//! - [`machine`]: what the machine or container allows (memory), for defaults.
//! - [`app`]: wiring it all together; `run` takes a bound listener and a shutdown token.

pub mod admin;
pub mod auth;
pub mod client;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod readiness;
pub mod record;
pub mod registry;
pub mod secret;
pub mod server;
pub mod session;
pub mod sink;
pub mod source;
pub mod stream;
