//! Who may open a subscription: the key in the path, the page's origin, the credentials,
//! what it asks to get first (a cursor to resume from, or the last N records), and a free
//! session slot. Every refusal is answered before anything is opened, counted
//! by reason, and logged (rate-limited, never with credentials).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{header, request, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::OwnedSemaphorePermit;

use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use crate::auth::origin::AllowedOrigins;
use crate::auth::{AuthError, Authenticator, Identity};
use crate::client::address::{RemoteAddr, TrustedProxies};
use crate::client::Subscription;
use crate::metrics::Metrics;
use crate::record::position::Cursor;
use crate::stream::hub::Hub;
use crate::stream::replay::Start;

/// Seconds a client refused at the connection limit is told to wait before trying again.
const RETRY_AFTER_SECS: &str = "5";
/// How long a subscription waits for the stream to be joined at start-up (a fetch or two)
/// before it is refused as not yet possible.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Everything an admission decision reads: built from its own parts (no socket, no broker),
/// so a decision can be tested alone.
pub struct Gate {
    pub auth: Arc<Authenticator>,
    /// Web pages allowed to subscribe besides the gateway's own.
    pub allowed_origins: AllowedOrigins,
    /// Proxies whose forwarding headers name the client's address.
    pub trusted_proxies: TrustedProxies,
    /// The port of the `--admin-addr` listener, once bound: pages of the console served
    /// there may subscribe here.
    pub console_port: Arc<OnceLock<u16>>,
    /// One permit per session (`--max-connections`): an upgrade finding none is refused
    /// with 503 at once, rather than left to wait for a slot its client gave up on.
    pub slots: Arc<Semaphore>,
    /// Largest N of `?last=N`.
    pub max_last: usize,
    /// Whose cursors a client may bring, and whether the stream is joined yet.
    pub hub: Hub,
    pub metrics: Metrics,
}

/// A request that may subscribe.
pub struct Admitted {
    pub subscription: Subscription,
    pub identity: Identity,
    pub remote: RemoteAddr,
    pub user_agent: Option<String>,
    pub params: Params,
    /// What it gets before the live stream.
    pub start: Start,
}

/// What the query string asks for.
#[derive(Debug, Default)]
pub struct Params {
    pub token: Option<String>,
    pub envelope: bool,
    /// `?cursor=` (or, for SSE, the `Last-Event-ID` header).
    pub cursor: Option<String>,
    /// `?last=`, as given.
    pub last: Option<String>,
}

pub fn params(uri: &Uri) -> Params {
    let mut p = Params::default();
    for (name, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match &*name {
            "token" => p.token = Some(value.into_owned()),
            "envelope" => p.envelope = matches!(&*value, "true" | "1" | "yes"),
            "cursor" => p.cursor = Some(value.into_owned()),
            "last" => p.last = Some(value.into_owned()),
            _ => {}
        }
    }
    p
}

/// What a subscriber asked to get first: the records after its cursor (`?cursor=`, or
/// `Last-Event-ID` for an EventSource reconnecting), or the last N (`?last=N`).
fn start(gate: &Gate, params: &Params, last_event_id: Option<&str>) -> Result<Start, Refused> {
    let cursor = params.cursor.as_deref().or(last_event_id).map(str::trim).filter(|c| !c.is_empty());
    match (cursor, params.last.as_deref()) {
        (Some(_), Some(_)) => Err(Refused::BadRequest("cursor and last cannot be used together".into())),
        (Some(text), None) => {
            let cursor = Cursor::decode(text).map_err(|e| Refused::BadRequest(e.to_string()))?;
            // A cursor of another stream (another topic, or an embedded stream that has
            // restarted) names offsets of something else: start at the oldest record held,
            // and say it was not a resume.
            Ok(if gate.hub.is_ours(&cursor) { Start::After(cursor.position) } else { Start::Oldest })
        }
        (None, Some(n)) => {
            let most = gate.max_last;
            match n.trim().parse::<usize>() {
                Ok(0) => Ok(Start::Live),
                Ok(n) if n <= most => Ok(Start::Last(n)),
                _ => Err(Refused::BadRequest(format!("last must be a number from 0 to {most}"))),
            }
        }
        (None, None) => Ok(Start::Live),
    }
}

/// Parses the subscription from a request path: `/*` is every record, anything else the
/// percent-decoded key (so `/%2A` is the literal key `*`).
pub fn subscription_from_path(path: &str) -> Result<Subscription, &'static str> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw == "*" {
        return Ok(Subscription::All);
    }
    if raw.is_empty() {
        return Err("no key: connect to /{key} for one key's records, or /* for all");
    }
    let key: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    Ok(Subscription::Key(bytes::Bytes::from(key)))
}

/// Why a subscription is refused.
#[derive(Debug)]
pub enum Refused {
    BadPath(&'static str),
    /// A malformed cursor, or `?last=` out of range.
    BadRequest(String),
    Origin,
    Auth(AuthError),
    /// The transport's own checks (the WebSocket opening handshake).
    Transport {
        reason: &'static str,
        response: Box<Response>,
    },
    /// `--max-connections` sessions are open.
    Full,
    /// The stream is not yet confirmed where it starts (just started, or the broker has not
    /// answered since): nothing can be promised about what follows a cursor.
    Starting,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::BadPath(_) => "bad_path",
            Refused::BadRequest(_) => "bad_request",
            Refused::Origin => "origin",
            Refused::Auth(e) => e.reason(),
            Refused::Transport { reason, .. } => reason,
            Refused::Full => "connection_limit",
            Refused::Starting => "starting",
        }
    }

    fn into_response(self, auth: &Authenticator) -> Response {
        let error = |status: StatusCode, message: &str| (status, Json(serde_json::json!({ "error": message })));
        match self {
            Refused::BadPath(message) => error(StatusCode::BAD_REQUEST, message).into_response(),
            Refused::BadRequest(message) => error(StatusCode::BAD_REQUEST, &message).into_response(),
            Refused::Origin => {
                error(StatusCode::FORBIDDEN, "this page's origin may not subscribe: see --allowed-origins")
                    .into_response()
            }
            Refused::Auth(e) => auth.refusal(&e),
            Refused::Transport { response, .. } => *response,
            Refused::Full | Refused::Starting => {
                let message = if matches!(self, Refused::Full) {
                    "connection limit reached; try again later"
                } else {
                    "the stream is starting: its partitions are not yet consumed; try again shortly"
                };
                let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
                response
            }
        }
    }
}

impl Gate {
    /// The client's address: the TCP peer, or what a trusted proxy says.
    pub fn remote(&self, parts: &request::Parts) -> RemoteAddr {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.trusted_proxies.client(peer, &parts.headers)
    }

    /// Whether a page of this origin (if any) may subscribe.
    pub fn permits_origin(&self, headers: &axum::http::HeaderMap) -> bool {
        self.allowed_origins.permits(headers, self.console_port.get().copied())
    }

    /// Checks the path, the origin and the credentials, in that order.
    pub fn admit(&self, parts: &request::Parts) -> Result<Admitted, Refused> {
        let remote = self.remote(parts);
        let subscription = subscription_from_path(parts.uri.path()).map_err(Refused::BadPath)?;
        if !self.permits_origin(&parts.headers) {
            return Err(Refused::Origin);
        }
        let params = params(&parts.uri);
        let identity = self
            .auth
            .authenticate(&parts.headers, params.token.as_deref())
            .and_then(|id| Authenticator::authorize(&id, &subscription).map(|()| id))
            .map_err(Refused::Auth)?;
        let last_event_id = parts.headers.get("last-event-id").and_then(|v| v.to_str().ok());
        let start = start(self, &params, last_event_id)?;
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Admitted { subscription, identity, remote, user_agent, params, start })
    }

    /// Waits (bounded) until the stream is joined in every partition: no subscription is
    /// planned against a start the broker has not confirmed, so none is told it resumed
    /// when it did not, nor handed a cursor the stream may skip past.
    pub async fn joined(&self) -> Result<(), Refused> {
        if self.hub.wait_joined(JOIN_WAIT).await {
            Ok(())
        } else {
            Err(Refused::Starting)
        }
    }

    /// A session slot, or [`Refused::Full`] at once.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.slots.clone().try_acquire_owned().map_err(|_| Refused::Full)
    }

    /// Counts and logs a refusal, and gives the answer to send.
    pub fn refuse(&self, parts: &request::Parts, refused: Refused) -> Response {
        self.metrics.upgrade_refused(refused.reason(), &self.remote(parts), parts.uri.path());
        refused.into_response(&self.auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_keys_percent_decoded_and_star_is_all() {
        use bytes::Bytes;
        assert_eq!(subscription_from_path("/*"), Ok(Subscription::All));
        assert_eq!(subscription_from_path("/%2A"), Ok(Subscription::Key(Bytes::from_static(b"*"))));
        assert_eq!(subscription_from_path("/sensor%201"), Ok(Subscription::Key(Bytes::from_static(b"sensor 1"))));
        assert_eq!(subscription_from_path("/a/b"), Ok(Subscription::Key(Bytes::from_static(b"a/b"))));
        assert_eq!(subscription_from_path("/caf%C3%A9"), Ok(Subscription::Key(Bytes::from("café"))));
        assert!(subscription_from_path("/").is_err());
    }

    #[test]
    fn query_gives_token_and_envelope() {
        let p = params(&"/k?token=a%2Bb&envelope=true".parse().unwrap());
        assert_eq!(p.token.as_deref(), Some("a+b"));
        assert!(p.envelope);
        assert!(!params(&"/k".parse().unwrap()).envelope);
    }

    use crate::auth::AuthSettings;
    use crate::client::SlowConsumerPolicy;
    use crate::record::budget::Budget;
    use crate::secret::Secret;
    use crate::source::{Dispatch, Watch};
    use crate::stream::hub::StreamSettings;
    use crate::stream::replay::Limits;

    /// A gate as the gateway builds one, from parts that need no socket or broker.
    fn gate(max_connections: usize) -> Gate {
        let metrics = Metrics::new();
        let stream = StreamSettings { tag: 7, recent_bytes: 1 << 20, limits: Limits { kafka: false, max_fetch: 0 } };
        let hub = Hub::new(
            SlowConsumerPolicy::Disconnect,
            metrics.clone(),
            Budget::new(usize::MAX, Default::default()),
            stream,
        );
        Gate {
            auth: Arc::new(Authenticator::new(&AuthSettings {
                users: vec![("ann".into(), Secret::new("pw"))],
                jwt_secret: None,
                allow_anonymous: false,
                generated_password: false,
            })),
            allowed_origins: AllowedOrigins::default(),
            trusted_proxies: TrustedProxies::default(),
            console_port: Arc::new(OnceLock::new()),
            slots: Arc::new(Semaphore::new(max_connections)),
            max_last: 10,
            hub,
            metrics,
        }
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut r = axum::http::Request::builder().uri(uri);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap().into_parts().0
    }

    const ANN: (&str, &str) = ("authorization", "Basic YW5uOnB3");

    #[test]
    fn a_decision_checks_path_origin_and_credentials_before_anything_opens() {
        let gate = gate(1);
        let admitted = gate.admit(&request("/sensor-1?envelope=true&last=3", &[ANN])).expect("admitted");
        assert_eq!(admitted.subscription, Subscription::Key(bytes::Bytes::from_static(b"sensor-1")));
        assert_eq!(admitted.identity.user.as_deref(), Some("ann"));
        assert_eq!(admitted.start, Start::Last(3));

        let refused = |r: Result<Admitted, Refused>| r.err().map(|e| e.reason()).unwrap_or("admitted");
        assert_eq!(refused(gate.admit(&request("/", &[ANN]))), "bad_path");
        assert_eq!(refused(gate.admit(&request("/k", &[]))), "missing");
        assert_eq!(refused(gate.admit(&request("/k", &[ANN, ("origin", "https://evil.example")]))), "origin");
        assert_eq!(refused(gate.admit(&request("/k?last=11", &[ANN]))), "bad_request");
        assert_eq!(refused(gate.admit(&request("/k?cursor=%21%21", &[ANN]))), "bad_request");
        // A well-formed cursor of another stream is no resume: everything held, then live.
        let other = Cursor { tag: 8, position: Default::default() }.encode();
        assert_eq!(gate.admit(&request(&format!("/k?cursor={other}"), &[ANN])).unwrap().start, Start::Oldest);
    }

    #[test]
    fn a_full_gateway_refuses_at_once_and_frees_the_slot_when_a_session_ends() {
        let gate = gate(1);
        let slot = gate.slot().expect("a free slot");
        assert_eq!(gate.slot().err().map(|e| e.reason()), Some("connection_limit"));
        drop(slot);
        assert!(gate.slot().is_ok());
    }

    #[tokio::test]
    async fn a_subscription_waits_for_the_stream_to_be_joined() {
        let gate = gate(1);
        Dispatch::watch(&gate.hub, &[Watch { partition: 0, next: 5, joined: false }]);
        let waiting = tokio::spawn({
            let hub = gate.hub.clone();
            async move { hub.wait_joined(std::time::Duration::from_secs(10)).await }
        });
        Dispatch::joined(&gate.hub, 0);
        assert!(waiting.await.unwrap());
        assert!(gate.joined().await.is_ok());
    }
}
