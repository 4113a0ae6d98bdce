//! Where records come from. A source knows nothing of clients: it hands each record to a
//! [`Dispatch`], in order, and reports whether it is consuming through [`Readiness`].
//!
//! - [`kafka`]: every partition of the `input` topic, assigned explicitly.
//! - [`memory`]: the embedded stream, fed by the admin API and the demo generator.
//! - [`progress`]: how far consuming is in each partition: lag, stuck partitions.
//!
//! [`Readiness`]: crate::readiness::Readiness

pub mod kafka;
pub mod memory;
pub mod progress;

use crate::record::Record;

/// The one thing a source may do with a record: pass it on. Implemented by the hub.
pub trait Dispatch: Send + Sync + 'static {
    /// Delivers without waiting on any client.
    fn dispatch(&self, record: Record);

    /// Consuming `partition` starts (or starts again) at `next`: said before its first
    /// record, so positions and cursors cover it from there.
    fn watch(&self, _partition: i32, _next: i64) {}
}
