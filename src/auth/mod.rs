//! Authentication of WebSocket upgrade requests, answered before any upgrade.
//!
//! - `Authorization: Basic …` (RFC 7617): the password may hold `:` and spaces; the
//!   comparison takes the same time whatever the guess.
//! - `Authorization: Bearer …` or `?token=…` (browsers cannot set headers): an HS256 JWT
//!   with `sub` and `exp`, and optionally `keys`, the keys it may subscribe to (exact keys
//!   or patterns such as `sensor-*`), and `topics`, the topics it may read.
//!
//! - With `--jwks-url`, also an RS256, ES256 or EdDSA JWT (or another asymmetric algorithm)
//!   signed by an identity provider with a key of its key set (`jwks`), `iss` and `aud`
//!   checked when `--jwt-issuer` and `--jwt-audience` are set. The algorithm in a token's
//!   header picks the key: HS256 is verified with the secret only, the others with the
//!   provider's keys only, so no token can pass a public key off as a secret.
//!
//! Tokens are signed with `--jwt-secret` when one is configured. Without one the gateway
//! draws a random signing secret at start-up, so the console (and any admin) can still mint
//! browser tokens with `POST /api/tokens`; such tokens are accepted only by the process
//! that minted them, because no other process knows that secret.
//!
//! Missing or wrong credentials are a 401 with `WWW-Authenticate`; a key the identity may
//! not read is a 403. Credentials are never logged.

pub mod jwks;
pub mod origin;
pub mod proxy;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::jwks::KeySet;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::selector::{Glob, Selector};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who may connect, as the settings say (config builds it from `WS_USERNAME`,
/// `WS_PASSWORD`, `--jwt-secret` and `--allow-anonymous`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Basic-auth users. Empty with no JWT secret means anonymous (only when allowed).
    pub users: Vec<(String, Secret)>,
    pub jwt_secret: Option<Secret>,
    pub allow_anonymous: bool,
    /// True when the only user's password was generated at start-up and must be printed.
    pub generated_password: bool,
    /// An identity provider whose tokens are accepted.
    pub provider: Option<ProviderSettings>,
}

/// An identity provider: where its key set is, and what its tokens must say.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    pub jwks_url: String,
    /// `iss` must be this, when set.
    pub issuer: Option<String>,
    /// `aud` must hold this, when set.
    pub audience: Option<String>,
}

/// Who a request authenticated as, and what it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Basic user name or JWT `sub`; `None` when anonymous.
    pub user: Option<String>,
    /// Keys it may subscribe to, exact or as patterns; `None` is every key and `/*`.
    pub keys: Option<Vec<String>>,
    /// Topics it may read; `None` is every topic streamed.
    pub topics: Option<Vec<String>>,
    /// When its token expires (`exp`, seconds since the epoch); `None` for Basic
    /// credentials and anonymous clients.
    pub expires: Option<u64>,
    /// JSON the connect proxy attached to the client (shown in the registry).
    pub data: Option<Box<str>>,
}

impl Identity {
    /// Who may read everything: a Basic user, or anyone when anonymous access is on.
    pub fn unrestricted(user: Option<String>) -> Identity {
        Identity { user, keys: None, topics: None, expires: None, data: None }
    }
}

/// Why an upgrade is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("credentials required")]
    Missing,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("invalid token: {0}")]
    BadToken(String),
    #[error("this identity may not subscribe to that key")]
    Forbidden,
    #[error("this identity may not read that topic")]
    ForbiddenTopic,
    /// The connect proxy's backend refused, with the status to answer.
    #[error("{error}")]
    Denied { status: u16, error: String },
    /// The connect proxy's backend could not decide (down, slow, a bad answer).
    #[error("the connect proxy cannot decide now: {0}")]
    ProxyUnavailable(String),
}

impl AuthError {
    /// The metric label for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadCredentials => "bad_credentials",
            AuthError::BadToken(_) => "bad_token",
            AuthError::Forbidden | AuthError::ForbiddenTopic => "forbidden",
            AuthError::Denied { .. } => "proxy_denied",
            AuthError::ProxyUnavailable(_) => "proxy_unavailable",
        }
    }
}

/// The JWT claims Sluice reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(default)]
    topics: Option<Vec<String>>,
}

impl Claims {
    fn identity(self) -> Identity {
        Identity { user: Some(self.sub), keys: self.keys, topics: self.topics, expires: Some(self.exp), data: None }
    }
}

/// Bytes of a generated signing secret: alphanumeric, so 64 of them carry about 380 bits,
/// well beyond HS256's 256-bit key.
const GENERATED_SECRET_LEN: usize = 64;

/// Where the token signing secret came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningSecret {
    /// `--jwt-secret`: shared with `sluice token` and every replica given the same one.
    Configured,
    /// Drawn at start-up: only this process can mint or verify its tokens.
    Generated,
}

/// Checks upgrade requests against the configured users and token secret, and mints
/// client tokens with that secret.
pub struct Authenticator {
    /// User names with the SHA-256 of their password: comparing fixed-size digests makes
    /// the comparison's time independent of the password's length as well as its content.
    users: Vec<(String, [u8; 32])>,
    /// Signs and verifies tokens. Never printed or logged: [`Secret`] masks itself.
    secret: Secret,
    source: SigningSecret,
    key: DecodingKey,
    validation: Validation,
    anonymous: bool,
    /// The identity provider's keys and what its tokens must say.
    provider: Option<Provider>,
}

struct Provider {
    keys: KeySet,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Provider {
    /// What a token of this provider signed with `algorithm` must satisfy.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            // Providers put their own audiences in tokens: without a configured one, `aud`
            // is not looked at.
            None => validation.validate_aud = false,
        }
        validation
    }
}

/// The asymmetric algorithms a provider's tokens may be signed with.
const PROVIDER_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Authenticator {
    /// Fails only when the identity provider's HTTP client cannot be built.
    pub fn new(cfg: &AuthSettings, metrics: &Metrics) -> Result<Self, String> {
        let users = cfg.users.iter().map(|(u, p)| (u.clone(), digest(p.expose().as_bytes()))).collect();
        let (secret, source) = match &cfg.jwt_secret {
            Some(s) => (s.clone(), SigningSecret::Configured),
            None => (Secret::generate(GENERATED_SECRET_LEN), SigningSecret::Generated),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        let key = DecodingKey::from_secret(secret.expose().as_bytes());
        let provider = match &cfg.provider {
            Some(p) => Some(Provider {
                keys: KeySet::new(&p.jwks_url, metrics.clone())?,
                issuer: p.issuer.clone(),
                audience: p.audience.clone(),
            }),
            None => None,
        };
        Ok(Authenticator { users, secret, source, key, validation, anonymous: cfg.allow_anonymous, provider })
    }

    /// Fetches the identity provider's keys, when there is one: at start-up, so the first
    /// client does not wait for them.
    pub async fn prefetch(&self) {
        if let Some(provider) = &self.provider {
            provider.keys.refresh().await;
        }
    }

    /// Where the signing secret came from (the console tells operators whether its tokens
    /// work on other replicas).
    pub fn signing_secret(&self) -> SigningSecret {
        self.source
    }

    /// A client token this gateway accepts: see [`mint`]. Returns it with its expiry.
    pub fn mint(&self, sub: &str, grant: &Grant, ttl: Duration) -> (String, SystemTime) {
        sign(&self.secret, sub, grant, SystemTime::now(), ttl)
    }

    /// Authenticates a request from its headers and its `?token=` (already decoded).
    pub async fn authenticate(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<Identity, AuthError> {
        if let Some(token) = query_token {
            return self.verify_token(token).await;
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return if self.anonymous { Ok(Identity::unrestricted(None)) } else { Err(AuthError::Missing) };
        };
        let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
        let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Malformed)?;
        if scheme.eq_ignore_ascii_case("basic") {
            self.verify_basic(rest.trim())
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.verify_token(rest.trim()).await
        } else {
            Err(AuthError::Malformed)
        }
    }

    fn verify_basic(&self, encoded: &str) -> Result<Identity, AuthError> {
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| AuthError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        // The user-id cannot contain ':'; the password may (RFC 7617 §2).
        let (user, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        let given = digest(password.as_bytes());
        // Look at every user, so timing does not tell which names exist.
        let mut matched: Option<&str> = None;
        for (name, expected) in &self.users {
            let ok = name.as_bytes().ct_eq(user.as_bytes()) & expected.ct_eq(&given);
            if bool::from(ok) {
                matched = Some(name);
            }
        }
        match matched {
            Some(name) => Ok(Identity::unrestricted(Some(name.to_owned()))),
            None => Err(AuthError::BadCredentials),
        }
    }

    /// A token: HS256 with the secret, any other accepted algorithm with the provider's key
    /// its header names.
    pub async fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::BadToken(e.to_string()))?;
        if header.alg == Algorithm::HS256 {
            return self.verify_secret_token(token);
        }
        let Some(provider) = &self.provider else {
            return Err(AuthError::BadToken(format!(
                "{:?} tokens are not accepted: only HS256 without an identity provider (--jwks-url)",
                header.alg
            )));
        };
        if !PROVIDER_ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::BadToken(format!("{:?} tokens are not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::BadToken("the token names no key (kid)".into()))?;
        let key = provider.keys.key(&kid).await.map_err(AuthError::BadToken)?;
        if key.algorithm.is_some_and(|a| a != header.alg) {
            return Err(AuthError::BadToken(format!("key {kid:?} is not for {:?}", header.alg)));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &provider.validation(header.alg))
            .map_err(|e| AuthError::BadToken(e.to_string()))?;
        Ok(data.claims.identity())
    }

    fn verify_secret_token(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            let signature = matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature);
            if signature && self.source == SigningSecret::Generated {
                // The likely cause: a token from another replica or an earlier run.
                AuthError::BadToken(
                    "not signed by this gateway (no JWT secret is configured: only tokens minted by this \
                     process are accepted)"
                        .into(),
                )
            } else {
                AuthError::BadToken(e.to_string())
            }
        })?;
        Ok(data.claims.identity())
    }

    /// Whether `identity` may read what `selector` selects in `topic`: the topic must be one
    /// its `topics` claim lists, and every key the selector can match must be one its `keys`
    /// claim allows — each exact key matched by a claim, a pattern covered by a claim
    /// pattern (`sensor-*` covers `sensor-1*`), every key (`/*`, or conditions on headers
    /// and values alone) only by `*`.
    pub fn authorize(identity: &Identity, selector: &Selector, topic: &str) -> Result<(), AuthError> {
        if let Some(topics) = &identity.topics {
            if !topics.iter().any(|t| t == topic || t == "*") {
                return Err(AuthError::ForbiddenTopic);
            }
        }
        let Some(keys) = &identity.keys else { return Ok(()) };
        let claims: Vec<Glob> = keys.iter().filter_map(|k| Glob::new(k).ok()).collect();
        let allowed = match (&selector.keys, &selector.pattern) {
            (Some(exact), _) => exact.iter().all(|k| claims.iter().any(|c| c.matches(k))),
            (None, Some(pattern)) => claims.iter().any(|c| c.covers(pattern)),
            (None, None) => claims.iter().any(|c| c.as_str() == "*"),
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// The `WWW-Authenticate` challenges this gateway answers a 401 with: Basic, and Bearer
    /// since tokens are always accepted (signed with the configured or generated secret).
    fn challenges(&self) -> [HeaderValue; 2] {
        [
            HeaderValue::from_static("Basic realm=\"sluice\", charset=\"UTF-8\""),
            HeaderValue::from_static("Bearer realm=\"sluice\""),
        ]
    }

    /// The HTTP answer to a refused upgrade: 401 with challenges, or 403.
    pub fn refusal(&self, error: &AuthError) -> Response {
        let status = match error {
            AuthError::Forbidden | AuthError::ForbiddenTopic => StatusCode::FORBIDDEN,
            AuthError::Denied { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN),
            AuthError::ProxyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        let body = serde_json::json!({ "error": error.to_string() }).to_string();
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        // The proxy's backend speaks for itself: no challenge of the gateway's own.
        if status == StatusCode::UNAUTHORIZED && !matches!(error, AuthError::Denied { .. }) {
            for challenge in self.challenges() {
                response.headers_mut().append(header::WWW_AUTHENTICATE, challenge);
            }
        }
        response
    }
}

/// What a client token allows beyond its subject: `None` is everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Keys, exact or as patterns (`sensor-*`).
    pub keys: Option<Vec<String>>,
    pub topics: Option<Vec<String>>,
}

/// A client token: an HS256 JWT for `sub`, valid for `ttl`, limited to what `grant` says.
/// What `sluice token` prints, and what the authenticator above accepts.
pub fn mint(secret: &Secret, sub: &str, grant: &Grant, ttl: Duration) -> String {
    sign(secret, sub, grant, SystemTime::now(), ttl).0
}

/// The token and the expiry it carries (`exp` is whole seconds, and so is the time returned).
fn sign(secret: &Secret, sub: &str, grant: &Grant, now: SystemTime, ttl: Duration) -> (String, SystemTime) {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let exp = now.saturating_add(ttl.as_secs());
    let mut claims = serde_json::json!({ "sub": sub, "iat": now, "exp": exp });
    if let Some(keys) = &grant.keys {
        claims["keys"] = keys.clone().into();
    }
    if let Some(topics) = &grant.topics {
        claims["topics"] = topics.clone().into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes());
    // HS256 over a JSON object with an HMAC key of any length cannot fail.
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap_or_default();
    (token, UNIX_EPOCH + Duration::from_secs(exp))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// `authenticate`, waited on here: tokens of the secret never wait on anything.
    trait Now {
        fn authenticate_now(&self, headers: &HeaderMap, token: Option<&str>) -> Result<Identity, AuthError>;
    }

    impl Now for Authenticator {
        fn authenticate_now(&self, headers: &HeaderMap, token: Option<&str>) -> Result<Identity, AuthError> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(self.authenticate(headers, token))
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(anonymous: bool) -> Authenticator {
        Authenticator::new(
            &AuthSettings {
                users: vec![("alice".into(), Secret::new("pa:ss word"))],
                jwt_secret: Some(Secret::new(SECRET)),
                allow_anonymous: anonymous,
                generated_password: false,
                provider: None,
            },
            &Metrics::new(),
        )
        .unwrap()
    }

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass));
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn basic_accepts_passwords_with_colons_and_spaces() {
        let id = auth(false).authenticate_now(&basic("alice:pa:ss word"), None).unwrap();
        assert_eq!(id.user.as_deref(), Some("alice"));
    }

    #[test]
    fn basic_refuses_wrong_and_malformed_credentials() {
        let a = auth(false);
        assert_eq!(a.authenticate_now(&basic("alice:wrong"), None), Err(AuthError::BadCredentials));
        assert_eq!(a.authenticate_now(&basic("bob:pa:ss word"), None), Err(AuthError::BadCredentials));
        assert_eq!(a.authenticate_now(&basic("no-colon"), None), Err(AuthError::Malformed));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(a.authenticate_now(&h, None), Err(AuthError::Malformed));
        h.insert(header::AUTHORIZATION, "Digest abc".parse().unwrap());
        assert_eq!(a.authenticate_now(&h, None), Err(AuthError::Malformed));
        assert_eq!(a.authenticate_now(&HeaderMap::new(), None), Err(AuthError::Missing));
    }

    #[test]
    fn anonymous_only_when_allowed_and_wrong_credentials_still_fail() {
        assert!(auth(true).authenticate_now(&HeaderMap::new(), None).unwrap().user.is_none());
        assert_eq!(auth(true).authenticate_now(&basic("alice:x"), None), Err(AuthError::BadCredentials));
    }

    #[test]
    fn tokens_are_checked_for_signature_and_expiry() {
        let a = auth(false);
        let good = token(serde_json::json!({"sub": "dash", "exp": now() + 60, "keys": ["sensor-1"]}));
        let id = a.authenticate_now(&HeaderMap::new(), Some(&good)).unwrap();
        assert_eq!(id.user.as_deref(), Some("dash"));
        assert_eq!(id.keys, Some(vec!["sensor-1".to_owned()]));

        let expired = token(serde_json::json!({"sub": "dash", "exp": now() - 120}));
        assert!(matches!(a.authenticate_now(&HeaderMap::new(), Some(&expired)), Err(AuthError::BadToken(_))));
        let no_exp = token(serde_json::json!({"sub": "dash"}));
        assert!(matches!(a.authenticate_now(&HeaderMap::new(), Some(&no_exp)), Err(AuthError::BadToken(_))));
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "x", "exp": now() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(b"another secret, 32 bytes long!!!"),
        )
        .unwrap();
        assert!(matches!(a.authenticate_now(&HeaderMap::new(), Some(&forged)), Err(AuthError::BadToken(_))));

        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {good}").parse().unwrap());
        assert!(a.authenticate_now(&h, None).is_ok());
    }

    #[test]
    fn minted_tokens_are_accepted_and_carry_their_keys() {
        let a = auth(false);
        let keys = vec!["sensor-1".to_owned()];
        let topics = vec!["telemetry".to_owned()];
        let grant = Grant { keys: Some(keys.clone()), topics: Some(topics.clone()) };
        let t = mint(&Secret::new(SECRET), "dash", &grant, Duration::from_secs(60));
        let id = a.authenticate_now(&HeaderMap::new(), Some(&t)).unwrap();
        assert_eq!((id.user.as_deref(), id.keys, id.topics), (Some("dash"), Some(keys), Some(topics)));
        let left = id.expires.unwrap() as i64 - SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((58..=60).contains(&left), "{left}");
        let other =
            mint(&Secret::new("another secret, 32 bytes long!!!"), "dash", &Grant::default(), Duration::from_secs(60));
        assert!(matches!(a.authenticate_now(&HeaderMap::new(), Some(&other)), Err(AuthError::BadToken(_))));
    }

    #[test]
    fn without_a_configured_secret_the_gateway_accepts_only_its_own_tokens() {
        let cfg = AuthSettings {
            users: vec![("alice".into(), Secret::new("pw"))],
            jwt_secret: None,
            allow_anonymous: false,
            generated_password: false,
            provider: None,
        };
        let (a, b) =
            (Authenticator::new(&cfg, &Metrics::new()).unwrap(), Authenticator::new(&cfg, &Metrics::new()).unwrap());
        assert_eq!(a.signing_secret(), SigningSecret::Generated);
        let keys = vec!["sensor-1".to_owned()];
        let grant = Grant { keys: Some(keys.clone()), topics: None };
        let (t, expires) = a.mint("console", &grant, Duration::from_secs(60));
        let left = expires.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60), "{left:?}");
        let id = a.authenticate_now(&HeaderMap::new(), Some(&t)).unwrap();
        assert_eq!((id.user.as_deref(), id.keys, id.topics), (Some("console"), Some(keys), None));
        // Another process draws another secret.
        match b.authenticate_now(&HeaderMap::new(), Some(&t)) {
            Err(AuthError::BadToken(why)) => assert!(why.contains("not signed by this gateway"), "{why}"),
            other => panic!("accepted a foreign token: {other:?}"),
        }
        // Nor does a token signed with some guessable secret pass.
        let guess = mint(&Secret::new(""), "x", &Grant::default(), Duration::from_secs(60));
        assert!(a.authenticate_now(&HeaderMap::new(), Some(&guess)).is_err());
        assert!(a.authenticate_now(&basic("alice:pw"), None).is_ok());
    }

    #[test]
    fn a_configured_secret_signs_what_the_gateway_mints() {
        let a = auth(false);
        assert_eq!(a.signing_secret(), SigningSecret::Configured);
        let (t, _) = a.mint("console", &Grant::default(), Duration::from_secs(60));
        let id = auth(false).authenticate_now(&HeaderMap::new(), Some(&t)).unwrap();
        assert_eq!((id.user.as_deref(), id.keys, id.topics), (Some("console"), None, None));
    }

    #[test]
    fn keys_claim_limits_subscriptions_and_patterns_need_a_covering_claim() {
        let id = |keys: &[&str]| Identity {
            user: Some("d".into()),
            keys: Some(keys.iter().map(|k| k.to_string()).collect()),
            topics: None,
            expires: None,
            data: None,
        };
        let key = |k: &'static str| Selector::key(Bytes::from_static(k.as_bytes()));
        let pattern = |p: &str| Selector { pattern: Some(Glob::new(p).unwrap()), ..Selector::default() };
        let keys = |ks: &[&'static str]| Selector {
            keys: Some(ks.iter().map(|k| Bytes::from_static(k.as_bytes())).collect()),
            ..Selector::default()
        };
        let ok = |i: &Identity, s: &Selector| Authenticator::authorize(i, s, "t").is_ok();
        let limited = id(&["a"]);
        assert!(ok(&limited, &key("a")));
        assert!(!ok(&limited, &key("b")));
        assert!(!ok(&limited, &Selector::default()));
        assert!(ok(&id(&["*"]), &Selector::default()));
        // Claims may be patterns: every exact key must match one, a pattern be covered.
        let sensors = id(&["sensor-*", "pump-7"]);
        assert!(ok(&sensors, &keys(&["sensor-1", "pump-7"])));
        assert!(!ok(&sensors, &keys(&["sensor-1", "pump-8"])));
        assert!(ok(&sensors, &pattern("sensor-1*")));
        assert!(!ok(&sensors, &pattern("sens*")));
        assert!(!ok(&sensors, &pattern("pump-?")));
        // Conditions on headers or values alone can match every key.
        let conditions =
            crate::selector::Conditions { headers: vec![("r".into(), Bytes::from_static(b"eu"))], fields: vec![] };
        let by_header = Selector { conditions: Some(Box::new(conditions)), ..Selector::default() };
        assert!(!ok(&sensors, &by_header));
        // A topics claim lists what may be read.
        let topics = Identity { user: None, keys: None, topics: Some(vec!["a".into()]), expires: None, data: None };
        assert!(Authenticator::authorize(&topics, &Selector::default(), "a").is_ok());
        assert_eq!(Authenticator::authorize(&topics, &Selector::default(), "b"), Err(AuthError::ForbiddenTopic));
    }

    #[test]
    fn refusals_carry_challenges() {
        let a = auth(false);
        let r = a.refusal(&AuthError::Missing);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenges: Vec<_> = r.headers().get_all(header::WWW_AUTHENTICATE).iter().collect();
        assert_eq!(challenges.len(), 2);
        assert_eq!(a.refusal(&AuthError::Forbidden).status(), StatusCode::FORBIDDEN);
    }
}
