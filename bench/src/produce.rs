//! Producing stamped records into the broker, either as fast as the producer and broker
//! allow or open-loop at a fixed rate, bounded by a record count and a time limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::avro::Framing;
use crate::clock;
use crate::payload::{self, Stamp};
use crate::usage::OwnThreads;

/// What to produce.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topic: String,
    /// Records cycle over these keys; key `i` is `keys[i]`.
    pub keys: Vec<String>,
    /// Bytes per value.
    pub size: usize,
    /// At most this many records.
    pub max_records: u64,
    /// For at most this long.
    pub max_time: Duration,
    /// Records per second, paced open-loop; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// The producer's linger.ms: how long it waits to fill a batch.
    pub linger_ms: u32,
    /// Where each key's sequence starts (continuing an earlier phase).
    pub first_seq: Vec<u64>,
    /// Values as Avro records in the Confluent wire format, the stamp their first field
    /// (`size` is then not used); `None`: the stamp padded to `size`, verbatim. The rig
    /// sets it when its gateway decodes Avro.
    pub avro: Option<Arc<Framing>>,
}

/// What was produced.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    /// Records per key handed to the producer, including `Plan::first_seq`.
    pub next_seq: Vec<u64>,
    /// Records of this plan acknowledged by the broker, per key.
    pub acked: Vec<u64>,
    pub failed: u64,
    /// Until the last acknowledgement.
    pub elapsed: Duration,
    /// CPU seconds of the producing thread and librdkafka's threads.
    pub cpu: f64,
    /// How late the paced producer ran behind its schedule at worst.
    pub max_behind: Duration,
    /// Intended send time → broker acknowledgement, microseconds: the share of the
    /// end-to-end latency spent before the gateway could see a record.
    pub ack_us: Option<Histogram<u64>>,
}

impl Produced {
    pub fn total_acked(&self) -> u64 {
        self.acked.iter().sum()
    }

    /// Acknowledged records per second.
    pub fn rate(&self) -> f64 {
        self.total_acked() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Acks {
    acked: Vec<AtomicU64>,
    failed: AtomicU64,
    /// Only touched by the producing thread, in poll(): never contended.
    ack_us: Mutex<Histogram<u64>>,
}

struct Context(Arc<Acks>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    /// The key index and the intended send time.
    type DeliveryOpaque = Box<(usize, u64)>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        let (key, send_ns) = *sent;
        match result {
            Ok(_) => {
                self.0.acked[key].fetch_add(1, Ordering::Relaxed);
                let us = clock::now_ns().saturating_sub(send_ns) / 1000;
                self.0.ack_us.lock().expect("not poisoned").saturating_record(us.max(1));
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Produces `plan` on this thread (call from a dedicated thread named
/// [`crate::usage::PRODUCER_THREAD`]) and waits for every acknowledgement.
pub fn run(brokers: &str, plan: &Plan) -> Result<Produced> {
    let cpu_before = OwnThreads::now();
    let acks = Arc::new(Acks {
        acked: plan.keys.iter().map(|_| AtomicU64::new(0)).collect(),
        failed: AtomicU64::new(0),
        ack_us: Mutex::new(crate::tally::latency_histogram()),
    });
    let producer: BaseProducer<Context> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", plan.linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "none")
        .set("acks", "1")
        .create_with_context(Context(acks.clone()))?;

    let mut next_seq = plan.first_seq.clone();
    next_seq.resize(plan.keys.len(), 0);
    let mut value = Vec::with_capacity(plan.size);
    let mut stamp_text = Vec::new();
    let started = Instant::now();
    let deadline = started + plan.max_time;
    let mut max_behind = Duration::ZERO;
    let mut i = 0u64;
    while i < plan.max_records {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let send_ns = match plan.rate {
            Some(rate) => {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                if due > now {
                    // Long waits in poll(), which takes acknowledgements as they come (so
                    // their times are right) but counts whole milliseconds; the rest asleep.
                    if due - now > Duration::from_millis(2) {
                        producer.poll(due - now - Duration::from_millis(1));
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                } else {
                    max_behind = max_behind.max(now - due);
                }
                clock::ns_at(due)
            }
            None => clock::now_ns(),
        };
        let key = (i % plan.keys.len() as u64) as usize;
        let stamp = Stamp { seq: next_seq[key], send_ns, key: key as u32 };
        match &plan.avro {
            Some(avro) => {
                payload::encode(&mut stamp_text, stamp, 0);
                avro.framed(&mut value, &stamp_text);
            }
            None => payload::encode(&mut value, stamp, plan.size),
        }
        let mut record =
            BaseRecord::with_opaque_to(&plan.topic, Box::new((key, send_ns))).key(&plan.keys[key]).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The local queue is full: the broker is the limit right now.
                    record = r;
                    producer.poll(Duration::from_millis(5));
                    if Instant::now() >= deadline + Duration::from_secs(5) {
                        anyhow::bail!("producer queue stayed full past the time limit");
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        next_seq[key] += 1;
        i += 1;
        // Flat out, acknowledgements are taken every so often; paced, while waiting above.
        if plan.rate.is_some() || i & 511 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let elapsed = started.elapsed();
    let cpu = OwnThreads::now().since(cpu_before).producer;
    drop(producer);
    let ack_us = acks.ack_us.lock().expect("not poisoned").clone();
    Ok(Produced {
        next_seq,
        acked: acks.acked.iter().map(|a| a.load(Ordering::Relaxed)).collect(),
        failed: acks.failed.load(Ordering::Relaxed),
        elapsed,
        cpu,
        max_behind,
        ack_us: Some(ack_us),
    })
}

/// Runs [`run`] on its own named thread.
pub fn spawn(brokers: String, plan: Plan) -> std::thread::JoinHandle<Result<Produced>> {
    std::thread::Builder::new()
        .name(crate::usage::PRODUCER_THREAD.into())
        .spawn(move || run(&brokers, &plan))
        .expect("spawn the producer thread")
}
