//! One subscription of a client, as the hub delivers to it: the client, the selector, the
//! id a multiplexed connection gave it, and where its delivery may start.
//!
//! A plain connection (`/{key}`, `/*`, `/?keys=…`) has one; a multiplexed one (`sluice.v1`)
//! has one per `subscribe`. Each is in its topic's hub and in its client's list (for the
//! registry) until the subscription or the session ends.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tungstenite::Message;

use crate::client::{Client, Offer};
use crate::record::position::Position;
use crate::selector::Selector;

pub struct Subscriber {
    pub client: Arc<Client>,
    /// The id a multiplexed connection gave it; `None` for the plain forms.
    pub id: Option<Arc<str>>,
    /// The topic it reads.
    pub topic: Arc<str>,
    pub selector: Selector,
    /// Set when it resumed a cursor ahead of this gateway: live records below it, already
    /// delivered by another replica, are not sent. Boxed: every idle plain connection holds
    /// a subscriber, and few need it.
    floor: OnceLock<Box<Position>>,
    /// [`HOLDING`] and [`ENDED`].
    state: AtomicU8,
    /// While [`HOLDING`], a multiplexed subscription's frames wait here instead of the
    /// client's queue: its `subscribed` answer and what it replays must go out before them.
    /// Allocated only then, and freed once released.
    held: Mutex<Option<Box<Held>>>,
}

/// Frames kept back, each with its record's timestamp.
type Held = Vec<(Message, i64)>;

/// Its opening is being prepared: frames are held.
const HOLDING: u8 = 1;
/// Unsubscribed: whatever was preparing its opening gives up.
const ENDED: u8 = 2;

impl Subscriber {
    /// A subscription of `client`; `holding` for one whose opening is prepared while live
    /// records already arrive (see [`Subscriber::release`]).
    pub fn new(client: Arc<Client>, id: Option<Arc<str>>, topic: Arc<str>, selector: Selector, holding: bool) -> Self {
        let (state, held) = if holding { (HOLDING, Some(Box::default())) } else { (0, None) };
        Subscriber {
            client,
            id,
            topic,
            selector,
            floor: OnceLock::new(),
            state: AtomicU8::new(state),
            held: Mutex::new(held),
        }
    }

    /// Live records below this position are skipped for this subscriber. False when it
    /// already had one (the first stays).
    pub fn set_floor(&self, floor: Position) -> bool {
        self.floor.set(Box::new(floor)).is_ok()
    }

    pub fn has_floor(&self) -> bool {
        self.floor.get().is_some()
    }

    /// Whether a live record is one this subscriber already has (see
    /// [`Subscriber::set_floor`]).
    #[inline]
    pub fn has_already(&self, partition: i32, offset: i64) -> bool {
        self.floor.get().is_some_and(|f| f.get(partition).is_some_and(|next| offset < next))
    }

    /// Keeps a frame back while the subscription's opening is prepared, and drops one of a
    /// subscription that ended; `Err` gives it back otherwise (the common case: one load).
    #[inline]
    pub fn hold(&self, frame: Message, stamp: i64) -> Result<(), (Message, i64)> {
        let state = self.state.load(Ordering::Acquire);
        if state & (HOLDING | ENDED) == 0 {
            return Err((frame, stamp));
        }
        // Nothing of a subscription that ended goes out any more (the hub may still hold it
        // for a moment).
        if state & ENDED != 0 {
            return Ok(());
        }
        match self.held.lock().as_mut() {
            Some(held) => {
                held.push((frame, stamp));
                Ok(())
            }
            // Released between the load and the lock: straight to the queue.
            None => Err((frame, stamp)),
        }
    }

    /// Queues the opening (`subscribed`, then what is replayed), then what was held, and
    /// from then on lets frames through: all under the lock the fan-out holds back with, so
    /// no live frame can overtake the opening. Held frames go through `offer` (the slow
    /// consumer policy applies to them as to any live frame). Nothing is queued for a
    /// subscription that ended meanwhile: its `unsubscribed` answer may be out already, and
    /// nothing of it may follow that.
    pub fn release(&self, opening: Vec<Message>, mut offer: impl FnMut(&Client, Message, i64) -> Offer) {
        let mut held = self.held.lock();
        let Some(frames) = held.take() else { return };
        if self.state.load(Ordering::Acquire) & ENDED == 0 {
            for frame in opening {
                self.client.offer_replay(frame);
            }
            for (frame, stamp) in *frames {
                offer(&self.client, frame, stamp);
            }
        }
        self.state.fetch_and(!HOLDING, Ordering::AcqRel);
    }

    /// The subscription is over: its opening, if still being prepared, is never queued.
    pub fn end(&self) {
        // Under the lock `release` holds: an opening is either out before this, or never.
        let mut held = self.held.lock();
        self.state.fetch_or(ENDED, Ordering::AcqRel);
        *held = None;
    }

    pub fn is_ended(&self) -> bool {
        self.state.load(Ordering::Acquire) & ENDED != 0
    }

    /// The subscription as the registry shows it: `{"id","topic","keys","pattern",…}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.selector.to_json(&self.topic);
        if let Some(id) = &self.id {
            v["id"] = (**id).into();
        }
        v
    }
}
