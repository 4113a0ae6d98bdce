//! The harness Sluice's integration tests and benchmarks share: each process they need —
//! a Tansu broker, a Redis server, the `sluice` binary — started on a free port and stopped
//! when dropped, and the clients that drive them (Kafka producers and readers, WebSocket
//! and event-stream clients, the admin API).
//!
//! - [`process`]: free ports, waiting for a listener, and launching the gateway binary
//!   (its address read from the line it prints).
//! - [`tansu`]: the Kafka-protocol broker, in memory or on SQLite; topics, producers, readers.
//! - [`redis`]: a Redis server of its own, which a test may stop and restart.
//! - [`registry`]: a Schema Registry stand-in: schemas registered in process, served by id
//!   and by subject version, taken away and brought back.
//! - [`identity`]: an identity provider stand-in: a JSON Web Key Set of RSA, P-256 and
//!   Ed25519 test keys, rotated at will, and tokens signed with them.
//! - [`gateway`]: the gateway as the tests drive it: admin API, metrics, logs, signals.
//! - [`ws`]: WebSocket clients: connect with credentials, read frames, close.
//! - [`sse`]: Server-Sent Events clients: open a stream, read its events.
//!
//! Test helpers panic with what went wrong (a test fails where the harness did); the
//! `launch`/`try_` forms return errors for the benchmarks, which report rather than panic.

pub mod gateway;
pub mod identity;
pub mod process;
pub mod redis;
pub mod registry;
pub mod sse;
pub mod tansu;
pub mod ws;

pub use gateway::{sluice_command, Events, Sluice};
pub use identity::{IdentityProvider, SigningKey};
pub use process::{free_port, sluice_binary, wait_for_port};
pub use redis::Redis;
pub use registry::SchemaRegistry;
pub use sse::EventStream;
pub use tansu::{next_record, reader, topic, Producer, Tansu};
pub use ws::{
    assert_silent, basic, close, connect, connect_small_window, fill_socket, next_frame, next_frame_within, next_text,
    next_text_within, read_until_close, try_connect, wait_for_eof, Ws,
};

// The clients' crates, for drivers (the benchmarks) that have no dependency of their own on them.
pub use {futures_util, reqwest, tokio_tungstenite};

/// The Basic credentials the tests' gateways accept.
pub const USER: &str = "tester";
/// Holds a colon and a space, as RFC 7617 allows.
pub const PASSWORD: &str = "s3cret: with space";
pub const JWT_SECRET: &str = "a-test-signing-secret-of-32-bytes!!";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
