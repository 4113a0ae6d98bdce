//! An identity provider's signing keys (`--jwks-url`): its JSON Web Key Set (RFC 7517),
//! fetched once and cached by key id, so verifying a token costs no request.
//!
//! The set is fetched again when a token names a key id the cache does not hold (the
//! provider rotated its keys) or when the cache is older than [`MAX_AGE`] (a key it
//! withdrew stops working). Fetches are bounded: one at a time, and none within
//! [`MIN_INTERVAL`] of the last attempt, so a flood of tokens with made-up key ids costs
//! the provider one request per interval, not one per token. While the provider cannot be
//! reached, the keys already known keep verifying.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;

use crate::backend;
use crate::metrics::Metrics;

/// At most one fetch of the key set per interval, whatever the tokens ask for.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Keys older than this are fetched again before use (a withdrawn key stops verifying).
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// How long a fetch may take: a token waiting on it is answered with an error after that.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set larger than this is not one (providers publish a handful of keys).
const MAX_BODY_BYTES: usize = 1 << 20;

/// One verification key of the set.
#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    /// The algorithm the provider says the key is for (`alg`), when it says.
    pub algorithm: Option<Algorithm>,
}

/// The provider's keys, cached; shared by every connection's authentication.
pub struct KeySet {
    url: String,
    http: reqwest::Client,
    cache: RwLock<Cache>,
    /// Held while fetching: a second caller waits for that fetch instead of starting one.
    fetching: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Key>,
    /// When the keys above were fetched.
    fetched: Option<Instant>,
    /// When a fetch was last started, whatever its outcome.
    attempted: Option<Instant>,
}

impl KeySet {
    pub fn new(url: &str, metrics: Metrics) -> Result<KeySet, String> {
        let http = backend::client("the identity provider's key set", FETCH_TIMEOUT, 1)?;
        Ok(KeySet {
            url: url.to_owned(),
            http,
            cache: RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    /// The key `kid` names, fetching the set first when that key is unknown or the cache
    /// is old (within the bound on fetches).
    pub async fn key(&self, kid: &str) -> Result<Key, String> {
        {
            let cache = self.cache.read();
            let fresh = cache.fetched.is_some_and(|at| at.elapsed() < MAX_AGE);
            if let (true, Some(key)) = (fresh, cache.keys.get(kid)) {
                return Ok(key.clone());
            }
        }
        self.refresh().await;
        self.cache
            .read()
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| format!("no key {kid:?} in the identity provider's key set"))
    }

    /// Fetches the key set, unless a fetch was attempted within [`MIN_INTERVAL`] (then the
    /// cache stays as it is). A failed fetch keeps the keys known so far.
    pub async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        {
            let mut cache = self.cache.write();
            if cache.attempted.is_some_and(|at| at.elapsed() < MIN_INTERVAL) {
                return;
            }
            cache.attempted = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(keys) => {
                self.metrics.jwks_fetched(None);
                let mut cache = self.cache.write();
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
            }
            Err(error) => self.metrics.jwks_fetched(Some(&format!("{}: {error}", self.url))),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, String> {
        let response = self.http.get(&self.url).send().await.map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        parse(&backend::body(response, MAX_BODY_BYTES).await?)
    }
}

/// The verification keys of a key set's JSON: those with a key id, for signatures, of an
/// asymmetric type. A shared-secret (`oct`) key is never taken from a URL, and a key this
/// gateway cannot use is skipped, not fatal: the others still verify.
pub fn parse(body: &[u8]) -> Result<HashMap<String, Key>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else { continue };
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            continue;
        }
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            continue;
        }
        let algorithm = match jwk.common.key_algorithm.map(|a| a.to_string().parse::<Algorithm>()) {
            Some(Ok(a)) => Some(a),
            // An algorithm for encryption, not signatures.
            Some(Err(_)) => continue,
            None => None,
        };
        if let Ok(decoding) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid.clone(), Key { decoding, algorithm });
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_for_signatures_are_taken_and_the_others_skipped() {
        let set = serde_json::json!({ "keys": [
            // An Ed25519 key (RFC 8037's example public key).
            { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA", "use": "sig",
              "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
            // The same key without a kid: a token cannot name it.
            { "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
            // For encryption only.
            { "kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc",
              "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
            // A shared secret: never trusted from a URL.
            { "kty": "oct", "kid": "hs", "k": "c2VjcmV0" },
        ]});
        let keys = parse(set.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["ed"]);
        assert_eq!(keys["ed"].algorithm, Some(Algorithm::EdDSA));
        assert!(parse(b"{\"keys\": 3}").err().unwrap().starts_with("not a JSON Web Key Set"));
    }
}
