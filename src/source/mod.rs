//! Where records come from. A source knows nothing of clients: it hands each record to a
//! [`Dispatch`], in order, and reports whether it is consuming through [`Readiness`].
//!
//! - [`kafka`]: every partition of the `input` topic, assigned explicitly.
//! - [`memory`]: the embedded stream, fed by the admin API and the demo generator.
//! - [`progress`]: how far consuming is in each partition: lag, stuck partitions.
//! - [`join`]: where a partition's stream really begins, checked against what the broker
//!   serves (shared with the history reader).
//!
//! [`Readiness`]: crate::readiness::Readiness

pub mod join;
pub mod kafka;
pub mod memory;
pub mod progress;

use crate::record::Record;

/// The one thing a source may do with a record: pass it on. Implemented by the hub.
pub trait Dispatch: Send + Sync + 'static {
    /// Delivers without waiting on any client.
    fn dispatch(&self, record: Record);

    /// Consuming these partitions starts: said before their first record, all at once, so
    /// that no subscriber sees some of them watched and not the others.
    fn watch(&self, _partitions: &[Watch]) {}

    /// The stream of `partition` is confirmed to go on from where it was watched (see
    /// [`join`]): from now on its records are dispatched contiguously from there.
    fn joined(&self, _partition: i32) {}
}

/// A partition whose consuming starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    pub partition: i32,
    /// The offset of the next record to dispatch.
    pub next: i64,
    /// Nothing can come before `next` (the partition's first offset): confirmed at once,
    /// without waiting for [`Dispatch::joined`].
    pub joined: bool,
}
