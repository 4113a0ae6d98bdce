//! Replies through Kafka: each record of the `replies` topic goes to the one client whose
//! `replyId` is the record's key, value verbatim. Records for no connected client are
//! counted and dropped (the client has gone; nobody else may read its replies).

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
        let client =
            record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).and_then(|id| self.registry.get(id));
        let (Some(client), Some(value)) = (client, record.value) else {
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
