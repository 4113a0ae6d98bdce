//! The stream as clients receive it: fan-out of each record to its subscribers, the
//! recent records held for resume and `?last=`, and older ones read back from Kafka.
//!
//! - [`hub`]: fan-out from records to the clients subscribed to them; where the stream is.
//! - [`replay`]: recent records held in memory, and the plan of what a subscriber gets
//!   before the live stream (the seam between replay and live).
//! - [`history`]: older records from Kafka, one shared reader for every resuming client.

pub mod history;
pub mod hub;
pub mod replay;
