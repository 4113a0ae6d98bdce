//! Replies through Kafka: each record of the `replies` topic goes to the one client whose
//! `replyId` is the record's key, value verbatim; the event webhook's replies go the same
//! way. Replies for no connected client are counted and dropped (the client has gone;
//! nobody else may read its replies).

use bytes::Bytes;

use crate::client::{Offer, SlowConsumerPolicy};
use crate::metrics::Metrics;
use crate::record::Record;
use crate::registry::Registry;
use crate::source::Dispatch;
use crate::stream::hub::Hub;

pub struct ReplyRouter {
    pub registry: Registry,
    /// For the gateway-wide bound replies are charged to.
    pub hub: Hub,
    pub metrics: Metrics,
    pub policy: SlowConsumerPolicy,
}

impl Dispatch for ReplyRouter {
    fn dispatch(&self, record: Record) {
        match (record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()), record.value) {
            (Some(id), Some(value)) => self.send(id, value),
            _ => {
                self.metrics.replies_unknown.inc();
            }
        }
    }
}

impl ReplyRouter {
    /// Queues `value` for the client `id` of this replica.
    pub fn send(&self, id: &str, value: Bytes) {
        let Some(client) = self.registry.get(id) else {
            self.metrics.replies_unknown.inc();
            return;
        };
        // In the client's transport: a frame, or an SSE `message` event.
        let frame = client.message(self.hub.budget().charge(value));
        match crate::stream::hub::offer(&client, frame, crate::client::NO_STAMP, self.policy, &self.metrics) {
            Offer::Queued => self.metrics.replies_delivered.inc(),
            Offer::Closed => self.metrics.replies_unknown.inc(),
            Offer::Full => 0,
        };
    }
}
