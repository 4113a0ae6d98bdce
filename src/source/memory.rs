//! The embedded stream: what Sluice runs on when no Kafka broker is configured. Records
//! published to it (by the admin API, or the demo generator) are dispatched at once, with
//! offsets in publication order, as a one-partition topic would number them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::record::Record;
use crate::source::Dispatch;

/// The topic name records of the embedded stream carry.
pub const TOPIC: &str = "sluice";

/// A cheap-to-clone handle on the embedded stream.
#[derive(Clone)]
pub struct MemoryStream {
    shared: Arc<Shared>,
}

struct Shared {
    dispatch: Arc<dyn Dispatch>,
    topic: Arc<str>,
    /// Held across numbering and dispatch, so offsets and delivery order agree even when
    /// several publishers race.
    next_offset: Mutex<i64>,
}

impl MemoryStream {
    pub fn new(dispatch: Arc<dyn Dispatch>) -> Self {
        dispatch.watch(&[crate::source::Watch { partition: 0, next: 0, joined: true }]);
        MemoryStream { shared: Arc::new(Shared { dispatch, topic: Arc::from(TOPIC), next_offset: Mutex::new(0) }) }
    }

    /// Puts a record on the stream; returns its offset.
    pub fn publish(&self, key: Option<Bytes>, value: Bytes, headers: Vec<(String, Option<Bytes>)>) -> i64 {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).ok();
        let mut next = self.shared.next_offset.lock();
        let offset = *next;
        *next += 1;
        self.shared.dispatch.dispatch(Record {
            topic: self.shared.topic.clone(),
            partition: 0,
            offset,
            timestamp,
            key,
            value: Some(value),
            headers,
            decoded: None,
        });
        offset
    }
}

/// Keys the demo generator publishes under.
pub const DEMO_KEYS: [&str; 3] = ["sensor-1", "sensor-2", "sensor-3"];

/// Feeds the stream with telemetry-like JSON, a record per sensor every `period`, until
/// shutdown. Values wander so a dashboard has something to draw.
pub async fn run_demo(stream: MemoryStream, period: Duration, shutdown: CancellationToken) {
    let mut temperature = [21.0f64, 19.5, 23.0];
    let mut tick = tokio::time::interval(period);
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (i, key) in DEMO_KEYS.iter().enumerate() {
            let (step, humidity) = {
                let mut rng = rand::rng();
                (rng.random_range(-0.3..0.3), rng.random_range(35.0..55.0))
            };
            temperature[i] += step;
            let value = serde_json::json!({
                "sensor": key,
                "seq": seq,
                "temperature": (temperature[i] * 100.0).round() / 100.0,
                "humidity": (humidity * 10.0f64).round() / 10.0,
            });
            stream.publish(Some(Bytes::from_static(key.as_bytes())), Bytes::from(value.to_string()), vec![]);
        }
        seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Record>>);
    impl Dispatch for Collect {
        fn dispatch(&self, record: Record) {
            self.0.lock().push(record);
        }
    }

    #[test]
    fn offsets_follow_publication_order() {
        let sink = Arc::new(Collect::default());
        let stream = MemoryStream::new(sink.clone());
        assert_eq!(stream.publish(None, Bytes::from_static(b"a"), vec![]), 0);
        assert_eq!(stream.publish(Some(Bytes::from_static(b"k")), Bytes::from_static(b"b"), vec![]), 1);
        let got = sink.0.lock();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(&*got[1].topic, TOPIC);
    }

    #[tokio::test(start_paused = true)]
    async fn demo_publishes_every_key() {
        let sink = Arc::new(Collect::default());
        let stream = MemoryStream::new(sink.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_demo(stream, Duration::from_millis(100), stop.clone()));
        tokio::time::sleep(Duration::from_millis(250)).await;
        stop.cancel();
        task.await.unwrap();
        let got = sink.0.lock();
        assert!(got.len() >= 6, "{}", got.len());
        for key in DEMO_KEYS {
            assert!(got.iter().any(|r| r.key.as_deref() == Some(key.as_bytes())));
        }
        let v: serde_json::Value = serde_json::from_slice(got[0].value.as_ref().unwrap()).unwrap();
        assert!(v["temperature"].is_number());
    }
}
