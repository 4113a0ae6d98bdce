//! Who may open a subscription: the topic and what it selects (the key in the path, the
//! selectors of the query), the page's origin, the credentials and what they allow, what it
//! asks to get first (a cursor to resume from, the last N records, or the records since a
//! time), and a free session slot. Every refusal is answered before anything is opened,
//! counted by reason, and logged (rate-limited, never with credentials).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{header, request, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::OwnedSemaphorePermit;

use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use crate::auth::origin::AllowedOrigins;
use crate::auth::proxy::{ConnectRequest, Proxy};
use crate::auth::{AuthError, Authenticator, Identity};
use crate::client::address::{RemoteAddr, TrustedProxies};
use crate::metrics::Metrics;
use crate::record::position::Cursor;
use crate::selector::Selector;
use crate::stream::replay::Start;
use crate::stream::{Streams, Topic};

/// Seconds a client refused at the connection limit is told to wait before trying again.
const RETRY_AFTER_SECS: &str = "5";
/// How long a subscription waits for the stream to be joined at start-up (a fetch or two)
/// before it is refused as not yet possible.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Everything an admission decision reads: built from its own parts (no socket, no broker),
/// so a decision can be tested alone.
pub struct Gate {
    pub auth: Arc<Authenticator>,
    /// `--connect-url`: a backend decides who may connect, in place of `auth`.
    pub connect: Option<Arc<Proxy>>,
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
    /// The topics a client may read, whose cursors it may bring, and whether each stream is
    /// joined yet.
    pub streams: Streams,
    pub metrics: Metrics,
}

/// A request that may subscribe.
pub struct Admitted {
    /// The topic it reads.
    pub topic: Topic,
    pub selector: Selector,
    /// The key of a plain form (`/{key}`'s, `*` for `/*`); `None` on `/`.
    pub key: Option<Box<str>>,
    /// A multiplexed connection (`/` with the `sluice.v1` subprotocol): its subscriptions
    /// come later, as frames.
    pub multiplexed: bool,
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
    /// `?since=`, as given.
    pub since: Option<String>,
    /// `?topic=`: `None` is the default topic.
    pub topic: Option<String>,
    /// The selectors of the query (`keys`, `pattern`, `header.`, `where.`).
    pub selector: Selector,
    /// Whether any of those was given.
    pub selects: bool,
}

/// The query's parameters; a selector that cannot be parsed is refused (400).
pub fn params(uri: &Uri) -> Result<Params, String> {
    let mut p = Params::default();
    for pair in uri.query().unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let raw_value = pair.split_once('=').map_or("", |(_, v)| v);
        let Some((name, value)) = form_urlencoded::parse(pair.as_bytes()).next() else { continue };
        let value = value.into_owned();
        match &*name {
            "token" => p.token = Some(value),
            "envelope" => p.envelope = matches!(&*value, "true" | "1" | "yes"),
            "cursor" => p.cursor = Some(value),
            "last" => p.last = Some(value),
            "since" => p.since = Some(value),
            "topic" if value.is_empty() => return Err("topic must not be empty".into()),
            "topic" => {
                p.topic = Some(value);
                p.selects = true;
            }
            _ => p.selects |= p.selector.take_query_param(&name, &value, raw_value)?,
        }
    }
    p.selector.check()?;
    Ok(p)
}

/// `since=`: an RFC 3339 time, or a duration before now (`15m`, `2h`, `1d`), as
/// milliseconds since the epoch.
pub fn since(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let at = humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_duration(text).map(|ago| std::time::SystemTime::now() - ago))
        .map_err(|_| format!("since must be an RFC 3339 time or a duration such as 15m, not {text:?}"))?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| "since must be after 1970".to_owned())?.as_millis();
    Ok(ms as i64)
}

/// What a subscriber asked to get first: the records after its cursor (`?cursor=`, or
/// `Last-Event-ID` for an EventSource reconnecting), the last N (`?last=N`), or those since a
/// time (`?since=`). At most one of them.
pub fn start(
    topic: &Topic,
    max_last: usize,
    cursor: Option<&str>,
    last: Option<&str>,
    since_text: Option<&str>,
) -> Result<Start, String> {
    let cursor = cursor.map(str::trim).filter(|c| !c.is_empty());
    let given = [cursor.is_some(), last.is_some(), since_text.is_some()].iter().filter(|g| **g).count();
    if given > 1 {
        return Err("cursor, last and since cannot be used together".into());
    }
    if let Some(text) = cursor {
        let cursor = Cursor::decode(text).map_err(|e| e.to_string())?;
        // A cursor of another stream (another topic, or an embedded stream that has
        // restarted) names offsets of something else: start at the oldest record held,
        // and say it was not a resume.
        return Ok(if topic.hub.is_ours(&cursor) { Start::After(cursor.position) } else { Start::Oldest });
    }
    if let Some(n) = last {
        return match n.trim().parse::<usize>() {
            Ok(0) => Ok(Start::Live),
            Ok(n) if n <= max_last => Ok(Start::Last(n)),
            _ => Err(format!("last must be a number from 0 to {max_last}")),
        };
    }
    if let Some(text) = since_text {
        return since(text).map(Start::Since);
    }
    Ok(Start::Live)
}

/// The selector a request's path gives: `/*` every key, `/{key}` that key (percent-decoded,
/// so `/%2A` is the literal key `*`), `/` none (the query says what it selects); with the
/// key of the plain form as the registry shows it.
pub fn path_selector(path: &str) -> Result<(Option<Selector>, Option<Box<str>>), &'static str> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw == "*" {
        return Ok((Some(Selector::default()), Some("*".into())));
    }
    if raw.is_empty() {
        return Ok((None, None));
    }
    let key: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let shown = String::from_utf8_lossy(&key).into_owned().into_boxed_str();
    Ok((Some(Selector::key(bytes::Bytes::from(key))), Some(shown)))
}

/// How the request subscribes, as the connect proxy is told.
fn transport(parts: &request::Parts, multiplexed: bool) -> &'static str {
    if multiplexed {
        "websocket+sluice.v1"
    } else if parts.headers.contains_key(header::UPGRADE) {
        "websocket"
    } else {
        "sse"
    }
}

/// Why a subscription is refused.
#[derive(Debug)]
pub enum Refused {
    BadPath(&'static str),
    /// A topic that is not streamed here.
    UnknownTopic(String),
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
            Refused::UnknownTopic(_) => "unknown_topic",
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
            Refused::UnknownTopic(topic) => {
                error(StatusCode::NOT_FOUND, &format!("topic {topic:?} is not streamed here")).into_response()
            }
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

    /// Checks the path and the query, the origin, the credentials, the topic and what the
    /// credentials allow of it, and what the subscriber asks to get first, in that order. `multiplexed` for an upgrade
    /// that chose the `sluice.v1` subprotocol.
    pub async fn admit(&self, parts: &request::Parts, multiplexed: bool) -> Result<Admitted, Refused> {
        let remote = self.remote(parts);
        let (from_path, key) = path_selector(parts.uri.path()).map_err(Refused::BadPath)?;
        let params = params(&parts.uri).map_err(Refused::BadRequest)?;
        let selector = match from_path {
            _ if multiplexed && (from_path.is_some() || params.selects) => {
                return Err(Refused::BadPath("a multiplexed connection opens on / and subscribes with frames"));
            }
            None if !params.selects && !multiplexed => {
                return Err(Refused::BadPath(
                    "no key: connect to /{key} for one key's records, /* for all, / with selectors \
                     (keys=, pattern=, header.NAME=, where.POINTER=), or / with the sluice.v1 subprotocol",
                ));
            }
            None => params.selector.clone(),
            Some(path) => {
                if path.keys.is_some() && params.selector.keys.is_some() {
                    return Err(Refused::BadRequest("keys= cannot be used with /{key}: use / with keys=".into()));
                }
                Selector { keys: path.keys.or(params.selector.keys.clone()), ..params.selector.clone() }
            }
        };
        if !self.permits_origin(&parts.headers) {
            return Err(Refused::Origin);
        }
        let identity = match &self.connect {
            Some(proxy) => {
                let request = ConnectRequest {
                    path: parts.uri.path(),
                    query: parts.uri.query(),
                    token: params.token.as_deref(),
                    headers: &parts.headers,
                    remote: remote.to_string(),
                    transport: transport(parts, multiplexed),
                };
                proxy.decide(&request).await
            }
            None => self.auth.authenticate(&parts.headers, params.token.as_deref()).await,
        }
        .map_err(Refused::Auth)?;
        // Which topics exist is told only to those who may connect.
        let topic = self
            .streams
            .get(params.topic.as_deref())
            .ok_or_else(|| Refused::UnknownTopic(params.topic.clone().unwrap_or_default()))?
            .clone();
        // A multiplexed connection's subscriptions are authorized as they come.
        if !multiplexed {
            Authenticator::authorize(&identity, &selector, &topic.name).map_err(Refused::Auth)?;
        }
        let last_event_id = parts.headers.get("last-event-id").and_then(|v| v.to_str().ok());
        let cursor = params.cursor.as_deref().or(last_event_id);
        let start = if multiplexed {
            Start::Live
        } else {
            start(&topic, self.max_last, cursor, params.last.as_deref(), params.since.as_deref())
                .map_err(Refused::BadRequest)?
        };
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Admitted { topic, selector, key, multiplexed, identity, remote, user_agent, params, start })
    }

    /// Waits (bounded) until the stream is joined in every partition: no subscription is
    /// planned against a start the broker has not confirmed, so none is told it resumed
    /// when it did not, nor handed a cursor the stream may skip past.
    pub async fn joined(&self) -> Result<(), Refused> {
        if self.streams.wait_joined(JOIN_WAIT).await {
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
        let key = |path: &str| path_selector(path).unwrap();
        assert_eq!(key("/*"), (Some(Selector::default()), Some("*".into())));
        assert_eq!(key("/%2A"), (Some(Selector::key(Bytes::from_static(b"*"))), Some("*".into())));
        assert_eq!(key("/sensor%201").0, Some(Selector::key(Bytes::from_static(b"sensor 1"))));
        assert_eq!(key("/a/b").0, Some(Selector::key(Bytes::from_static(b"a/b"))));
        assert_eq!(key("/caf%C3%A9"), (Some(Selector::key(Bytes::from("café"))), Some("café".into())));
        assert_eq!(key("/"), (None, None));
    }

    #[test]
    fn query_gives_token_envelope_and_selectors() {
        let p = params(&"/k?token=a%2Bb&envelope=true".parse().unwrap()).unwrap();
        assert_eq!(p.token.as_deref(), Some("a+b"));
        assert!(p.envelope);
        assert!(!p.selects);
        assert!(!params(&"/k".parse().unwrap()).unwrap().envelope);
        let p = params(&"/?keys=a,b%2Cc&topic=t2&since=15m".parse().unwrap()).unwrap();
        assert!(p.selects);
        assert_eq!(p.selector.keys.as_ref().map(|k| k.len()), Some(2));
        assert_eq!(p.topic.as_deref(), Some("t2"));
        assert_eq!(p.since.as_deref(), Some("15m"));
        assert!(params(&"/?pattern=".parse().unwrap()).is_err());
    }

    #[test]
    fn since_is_a_time_or_a_duration_before_now() {
        assert_eq!(since("2026-01-02T03:04:05Z"), Ok(1_767_323_045_000));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let ago = now - since("15m").unwrap();
        assert!((899_000..=901_000).contains(&ago), "{ago}");
        assert!(since("yesterday").is_err());
    }

    use crate::auth::AuthSettings;
    use crate::client::SlowConsumerPolicy;
    use crate::record::budget::Budget;
    use crate::secret::Secret;
    use crate::source::{Dispatch, Watch};
    use crate::stream::hub::{Hub, StreamSettings};
    use crate::stream::replay::Limits;

    /// A gate as the gateway builds one, from parts that need no socket or broker: two
    /// topics, `t` (the default) and `u`.
    fn gate(max_connections: usize) -> Gate {
        let metrics = Metrics::new();
        let topic = |name: &str, tag: u32| {
            let stream = StreamSettings { tag, recent_bytes: 1 << 20, limits: Limits { kafka: false, max_fetch: 0 } };
            let budget = Budget::new(usize::MAX, Default::default());
            let hub = Hub::new(SlowConsumerPolicy::Disconnect, metrics.clone(), budget, stream);
            Topic { name: name.into(), hub, history: None, decoder: None }
        };
        let streams = Streams::new(vec![topic("t", 7), topic("u", 9)]);
        Gate {
            connect: None,
            auth: Arc::new(
                Authenticator::new(
                    &AuthSettings {
                        users: vec![("ann".into(), Secret::new("pw"))],
                        jwt_secret: None,
                        allow_anonymous: false,
                        generated_password: false,
                        provider: None,
                    },
                    &Metrics::new(),
                )
                .unwrap(),
            ),
            allowed_origins: AllowedOrigins::default(),
            trusted_proxies: TrustedProxies::default(),
            console_port: Arc::new(OnceLock::new()),
            slots: Arc::new(Semaphore::new(max_connections)),
            max_last: 10,
            streams,
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

    /// `admit`, waited on here: Basic credentials never wait on anything.
    fn admit_now(gate: &Gate, parts: &request::Parts, multiplexed: bool) -> Result<Admitted, Refused> {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(gate.admit(parts, multiplexed))
    }

    const ANN: (&str, &str) = ("authorization", "Basic YW5uOnB3");

    #[test]
    fn a_decision_checks_path_origin_and_credentials_before_anything_opens() {
        let gate = gate(1);
        let admitted = admit_now(&gate, &request("/sensor-1?envelope=true&last=3", &[ANN]), false).expect("admitted");
        assert_eq!(admitted.selector, Selector::key(bytes::Bytes::from_static(b"sensor-1")));
        assert_eq!(&*admitted.topic.name, "t");
        assert_eq!(admitted.identity.user.as_deref(), Some("ann"));
        assert_eq!(admitted.start, Start::Last(3));

        let refused = |r: Result<Admitted, Refused>| r.err().map(|e| e.reason()).unwrap_or("admitted");
        let admit = |uri: &str, headers: &[(&str, &str)]| refused(admit_now(&gate, &request(uri, headers), false));
        assert_eq!(admit("/", &[ANN]), "bad_path");
        assert_eq!(admit("/k", &[]), "missing");
        assert_eq!(admit("/k", &[ANN, ("origin", "https://evil.example")]), "origin");
        assert_eq!(admit("/k?last=11", &[ANN]), "bad_request");
        assert_eq!(admit("/k?cursor=%21%21", &[ANN]), "bad_request");
        assert_eq!(admit("/k?last=1&since=5m", &[ANN]), "bad_request");
        assert_eq!(admit("/k?since=soon", &[ANN]), "bad_request");
        assert_eq!(admit("/k?keys=a", &[ANN]), "bad_request");
        assert_eq!(admit("/?pattern=", &[ANN]), "bad_request");
        // An unknown topic is 404, told only to those who may connect.
        assert_eq!(admit("/k?topic=nope", &[]), "missing");
        assert_eq!(admit("/k?topic=nope", &[ANN]), "unknown_topic");
        // A well-formed cursor of another stream is no resume: everything held, then live.
        let other = Cursor { tag: 8, position: Default::default() }.encode();
        assert_eq!(
            admit_now(&gate, &request(&format!("/k?cursor={other}"), &[ANN]), false).unwrap().start,
            Start::Oldest
        );
        // Nor is a cursor of another topic.
        let t_cursor = Cursor { tag: 7, position: Default::default() }.encode();
        let on_u = admit_now(&gate, &request(&format!("/*?topic=u&cursor={t_cursor}"), &[ANN]), false).unwrap();
        assert_eq!((&*on_u.topic.name, on_u.start), ("u", Start::Oldest));
    }

    #[test]
    fn selectors_on_slash_and_a_plain_key_combine() {
        let gate = gate(1);
        let a = admit_now(&gate, &request("/?keys=a,b&header.region=eu&topic=u", &[ANN]), false).unwrap();
        assert_eq!(a.selector.keys.as_ref().map(|k| k.len()), Some(2));
        assert_eq!((&*a.topic.name, a.key), ("u", None));
        let b = admit_now(&gate, &request("/sensor-1?where.temp=20", &[ANN]), false).unwrap();
        assert_eq!(b.selector.fields().len(), 1);
        assert_eq!(b.key.as_deref(), Some("sensor-1"));
        // A multiplexed connection subscribes with frames, on `/` only.
        assert!(admit_now(&gate, &request("/", &[ANN]), true).unwrap().multiplexed);
        assert_eq!(admit_now(&gate, &request("/k", &[ANN]), true).err().map(|e| e.reason()), Some("bad_path"));
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
        let (t, u) =
            (gate.streams.get(Some("t")).unwrap().hub.clone(), gate.streams.get(Some("u")).unwrap().hub.clone());
        Dispatch::watch(&t, &[Watch { partition: 0, next: 5, joined: false }]);
        Dispatch::watch(&u, &[Watch { partition: 0, next: 0, joined: true }]);
        let waiting = tokio::spawn({
            let gate_streams = gate.streams.clone();
            async move { gate_streams.wait_joined(std::time::Duration::from_secs(10)).await }
        });
        Dispatch::joined(&t, 0);
        assert!(waiting.await.unwrap());
        assert!(gate.joined().await.is_ok());
    }
}
