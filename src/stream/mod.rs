//! The stream as clients receive it, one per topic: fan-out of each record to its
//! subscribers, the recent records held for resume and `?last=`, and older ones read back
//! from Kafka.
//!
//! - [`hub`]: fan-out from records to the subscribers they match; where the stream is.
//! - [`replay`]: recent records held in memory, and the plan of what a subscriber gets
//!   before the live stream (the seam between replay and live).
//! - [`history`]: older records from Kafka, one shared reader for every resuming client.

pub mod history;
pub mod hub;
pub mod replay;

use std::sync::Arc;

use crate::decode::Decoder;
use crate::stream::history::History;
use crate::stream::hub::Hub;

/// One topic as clients read it.
#[derive(Clone)]
pub struct Topic {
    pub name: Arc<str>,
    pub hub: Hub,
    /// Reads its older records back from Kafka (Kafka only).
    pub history: Option<History>,
    /// Turns its values (and keys) from their wire format into JSON, when they have one.
    pub decoder: Option<Decoder>,
}

/// Every topic streamed, the default one first. Cheap to clone.
#[derive(Clone)]
pub struct Streams(Arc<[Topic]>);

impl Streams {
    /// `topics` must hold at least one: the first is the default.
    pub fn new(topics: Vec<Topic>) -> Streams {
        assert!(!topics.is_empty(), "a gateway streams at least one topic");
        Streams(topics.into())
    }

    /// The topic `/{key}` and `/*` read, and any subscription that names none.
    pub fn default_topic(&self) -> &Topic {
        &self.0[0]
    }

    /// The topic of this name (the default for `None`); `None` when it is not streamed.
    pub fn get(&self, name: Option<&str>) -> Option<&Topic> {
        match name {
            None => Some(self.default_topic()),
            Some(name) => self.0.iter().find(|t| &*t.name == name),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Topic> {
        self.0.iter()
    }

    /// Waits (bounded) until every partition of every topic is joined; whether they are.
    pub async fn wait_joined(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        for topic in self.iter() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !topic.hub.wait_joined(left).await {
                return false;
            }
        }
        true
    }
}
