//! Test harness: the workspace's `sluice-support` crate (Tansu, Redis and the real `sluice`
//! binary on free ports; Kafka producers and WebSocket clients), shared with `bench/`.
#![allow(unused_imports)]

pub use sluice_support::*;
