//! The event webhook (`--events-url`): every event, as the `events` topic carries it,
//! POSTed to an HTTP backend in batches (a JSON array), signed, in order per client.
//!
//! Clients are spread over a few lanes by their id; each lane sends one batch at a time,
//! so a client's events arrive in the order they happened while the lanes post side by
//! side. A batch is whatever queued while the previous one was in flight (up to
//! [`MAX_BATCH`] events), so a busy gateway sends fewer, larger requests. A batch that
//! fails (no answer, a timeout, 408, 429 or 5xx) is sent again after a back-off that
//! doubles from 200 ms up to 30 s ([`BACKOFF`]), with jitter, until it is taken; one the backend refuses
//! outright (another 4xx) is dropped. The events waiting, in every lane together, hold at
//! most [`MAX_QUEUED_BYTES`]: past it the oldest are dropped first, counted and logged, and
//! the client is never kept waiting for the backend.
//!
//! The answer to a batch may reply to the clients whose `message` events it held: a JSON
//! array with one entry per event, in order, where `{"reply": V}` sends V to that event's
//! client (a string as its text, anything else as its JSON); any other entry, a shorter
//! array, or a body that is not one, sends nothing.
//!
//! `Sluice-Signature: t=UNIX_SECONDS,v1=HEX(HMAC-SHA256(secret, "t.body"))`: the backend
//! recomputes it with the shared secret, and refuses old timestamps to stop replays.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::backend::{self, Backoff};
use crate::metrics::Metrics;
use crate::secret::Secret;

/// Lanes posting side by side.
const LANES: usize = 4;
/// Bytes of events waiting in all lanes together, while the backend is slow or away.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;
/// Bytes of an answer read (its replies): more is a bad answer, its events still taken.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Events in one POST.
pub const MAX_BATCH: usize = 100;
/// A request that takes longer has failed, and is sent again.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A failed batch is sent again after this, with jitter.
const BACKOFF: Backoff = Backoff { first: Duration::from_millis(200), max: Duration::from_secs(30) };

/// Where events go, and the secret that signs them.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    pub secret: Secret,
}

/// Sends a reply from the backend to one client: its id, and the frame's bytes.
pub type Reply = Arc<dyn Fn(&str, Bytes) + Send + Sync>;

/// One event waiting for its POST.
struct Pending {
    /// Its place among every lane's events: the lowest is the oldest.
    seq: u64,
    client: Arc<str>,
    json: String,
    message: bool,
}

/// The events waiting, lane by lane, and the bytes they hold together.
#[derive(Default)]
struct Waiting {
    lanes: [VecDeque<Pending>; LANES],
    bytes: usize,
    next_seq: u64,
}

struct Queues {
    waiting: Mutex<Waiting>,
    /// A lane's task waits here while its queue is empty.
    ready: [Notify; LANES],
}

/// The webhook's queues: cheap to clone.
#[derive(Clone)]
pub struct Webhook {
    queues: Arc<Queues>,
    hasher: std::collections::hash_map::RandomState,
    metrics: Metrics,
}

impl Webhook {
    /// Starts the lanes' tasks, for the life of the process.
    pub fn start(settings: &WebhookSettings, metrics: Metrics, reply: Reply) -> Result<Webhook, String> {
        let http = backend::client("the event webhook", TIMEOUT, LANES)?;
        let queues = Arc::new(Queues { waiting: Mutex::default(), ready: Default::default() });
        for lane in 0..LANES {
            let lane = Lane {
                lane,
                queues: queues.clone(),
                http: http.clone(),
                settings: settings.clone(),
                metrics: metrics.clone(),
                reply: reply.clone(),
            };
            tokio::spawn(lane.run());
        }
        Ok(Webhook { queues, hasher: Default::default(), metrics })
    }

    /// Queues an event of `client` (never waits); past the bound, the oldest events waiting
    /// are dropped, counted and logged.
    pub fn push(&self, client: &Arc<str>, json: String, message: bool) {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(client.as_bytes());
        let lane = hasher.finish() as usize % LANES;
        let mut dropped = 0;
        {
            let mut waiting = self.queues.waiting.lock();
            let seq = waiting.next_seq;
            waiting.next_seq += 1;
            waiting.bytes += json.len();
            waiting.lanes[lane].push_back(Pending { seq, client: client.clone(), json, message });
            while waiting.bytes > MAX_QUEUED_BYTES {
                let oldest = (0..LANES).filter_map(|i| waiting.lanes[i].front().map(|p| (p.seq, i))).min();
                let Some((_, i)) = oldest else { break };
                if let Some(gone) = waiting.lanes[i].pop_front() {
                    waiting.bytes -= gone.json.len();
                    dropped += 1;
                }
            }
        }
        self.queues.ready[lane].notify_one();
        if dropped > 0 {
            let error = "the webhook's queue is full (the backend is slow or away): the oldest events were dropped";
            self.metrics.webhook_dropped("full", dropped, error);
        }
    }
}

struct Lane {
    lane: usize,
    queues: Arc<Queues>,
    http: reqwest::Client,
    settings: WebhookSettings,
    metrics: Metrics,
    reply: Reply,
}

/// Why a POST failed: worth sending again, or not.
enum Failed {
    Again(String),
    Refused(String),
}

impl Lane {
    async fn run(self) {
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                self.queues.ready[self.lane].notified().await;
                continue;
            }
            let body = batch_body(&batch);
            let mut failures = 0u32;
            loop {
                let started = Instant::now();
                let outcome = self.post(body.clone()).await;
                self.metrics.webhook_latency(started.elapsed());
                match outcome {
                    Ok(answer) => {
                        self.metrics.webhook_sent(batch.len());
                        self.replies(&batch, &answer);
                        break;
                    }
                    Err(Failed::Refused(error)) => {
                        self.metrics.webhook_dropped("refused", batch.len(), &error);
                        break;
                    }
                    Err(Failed::Again(error)) => {
                        failures += 1;
                        self.metrics.webhook_failed(&error);
                        tokio::time::sleep(backoff(failures)).await;
                    }
                }
            }
        }
    }

    /// The oldest events of this lane, at most [`MAX_BATCH`]: no longer waiting (nor
    /// dropped for the bound) once taken.
    fn next_batch(&self) -> Vec<Pending> {
        let mut waiting = self.queues.waiting.lock();
        let queue = &mut waiting.lanes[self.lane];
        let n = queue.len().min(MAX_BATCH);
        let batch: Vec<Pending> = queue.drain(..n).collect();
        waiting.bytes -= batch.iter().map(|p| p.json.len()).sum::<usize>();
        batch
    }

    async fn post(&self, body: Bytes) -> Result<Bytes, Failed> {
        let signature = sign(&self.settings.secret, unix_now(), &body);
        let response = self
            .http
            .post(&self.settings.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Sluice-Signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| Failed::Again(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            // The events were taken: an answer too big to read, or cut short, carries no
            // reply, and says so once.
            return Ok(match backend::body(response, MAX_ANSWER_BYTES).await {
                Ok(answer) => answer,
                Err(error) => {
                    self.metrics.webhook_bad_answer(&error);
                    Bytes::new()
                }
            });
        }
        let error = format!("the backend answered {status}");
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(Failed::Again(error))
        } else {
            Err(Failed::Refused(error))
        }
    }

    /// Sends the answer's replies to the clients of the batch's `message` events.
    fn replies(&self, batch: &[Pending], answer: &[u8]) {
        let Ok(serde_json::Value::Array(entries)) = serde_json::from_slice(answer) else { return };
        for (event, entry) in batch.iter().zip(entries) {
            let Some(value) = entry.get("reply").filter(|_| event.message) else { continue };
            let body = match value {
                serde_json::Value::String(text) => Bytes::from(text.clone()),
                other => Bytes::from(other.to_string()),
            };
            (self.reply)(&event.client, body);
        }
    }
}

/// The batch as a JSON array of its events' JSON.
fn batch_body(batch: &[Pending]) -> Bytes {
    let mut body = Vec::with_capacity(2 + batch.iter().map(|p| p.json.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, event) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event.json.as_bytes());
    }
    body.push(b']');
    Bytes::from(body)
}

/// `t=…,v1=…`: HMAC-SHA256 over `t.body`, in hex.
pub fn sign(secret: &Secret, t: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The wait after the `failures`-th failure in a row: [`BACKOFF`]'s, drawn between half and
/// all of it so lanes (and replicas) that failed together do not retry together.
fn backoff(failures: u32) -> Duration {
    BACKOFF.after(failures).mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_time_and_the_body() {
        // RFC 4231's test case 2: key "Jefe", data "what do ya want for nothing?".
        let signature = sign(&Secret::new("Jefe"), 1, b"what do ya want for nothing?");
        // The data signed is "1." then the body, so it differs from the RFC's digest.
        assert!(signature.starts_with("t=1,v1="));
        assert_eq!(signature.len(), "t=1,v1=".len() + 64);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1.what do ya want for nothing?");
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(signature, format!("t=1,v1={expected}"));
    }

    #[test]
    fn back_off_doubles_up_to_its_cap_with_jitter() {
        for failures in 1..40 {
            let full = BACKOFF.first.saturating_mul(1 << (failures - 1).min(16)).min(BACKOFF.max);
            let wait = backoff(failures);
            assert!(wait >= full / 2 && wait <= full, "{failures}: {wait:?} of {full:?}");
        }
        assert!(backoff(30) >= BACKOFF.max / 2);
    }

    #[test]
    fn a_batch_is_a_json_array_of_its_events() {
        let event = |json: &str| Pending { seq: 0, client: "c".into(), json: json.into(), message: false };
        let body = batch_body(&[event(r#"{"a":1}"#), event(r#"{"b":2}"#)]);
        assert_eq!(&body[..], br#"[{"a":1},{"b":2}]"#);
    }

    #[tokio::test]
    async fn past_the_bound_the_oldest_events_are_dropped_and_nothing_waits() {
        let metrics = Metrics::new();
        // A backend nothing listens on: the lanes keep retrying their first batch.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let settings = WebhookSettings { url: format!("http://127.0.0.1:{port}/events"), secret: Secret::new("s") };
        let webhook = Webhook::start(&settings, metrics.clone(), Arc::new(|_: &str, _: Bytes| {})).unwrap();
        // 64 KiB events from many clients (every lane), twice what the bound holds; the
        // lanes' tasks do not run before the last push (this test's runtime has one thread).
        let event = "x".repeat(64 << 10);
        let pushes = 2 * MAX_QUEUED_BYTES / event.len();
        let started = std::time::Instant::now();
        for i in 0..pushes {
            webhook.push(&Arc::from(format!("client-{i}")), event.clone(), false);
        }
        assert!(started.elapsed() < Duration::from_secs(2), "pushing waited");
        let waiting = webhook.queues.waiting.lock();
        assert!(waiting.bytes <= MAX_QUEUED_BYTES);
        let kept = pushes - metrics.webhook_dropped_total() as usize;
        assert_eq!(kept * event.len(), waiting.bytes);
        // The newest are the ones kept, whatever their lane.
        let oldest = waiting.lanes.iter().filter_map(|l| l.front().map(|p| p.seq)).min().unwrap();
        assert_eq!(oldest as usize, pushes - kept);
    }
}
