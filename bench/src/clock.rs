//! One monotonic clock for the whole process: the producer stamps records with it and
//! the clients read it on arrival, so produce→receive latency needs no clock sync.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Fixes the clock's origin; call once, early.
pub fn start() {
    START.get_or_init(Instant::now);
}

/// Nanoseconds since the origin.
pub fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The clock reading of an instant (0 if before the origin).
pub fn ns_at(at: Instant) -> u64 {
    at.saturating_duration_since(*START.get_or_init(Instant::now)).as_nanos() as u64
}
