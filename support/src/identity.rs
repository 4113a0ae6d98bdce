//! An identity provider stand-in on 127.0.0.1 and a free port: its JSON Web Key Set at
//! `/.well-known/jwks.json`, and tokens signed with its keys — an RSA key (RS256), a P-256
//! key (ES256) and an Ed25519 key (EdDSA), generated fresh by each test process with the
//! `openssl` command. Which keys the set publishes, under which ids, can change while it
//! runs (a rotation), and every request is counted.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The provider's private keys, in the DER forms the JWT library reads, and the Ed25519
/// key's public half (RFC 8037's `x`): the library derives RSA and EC public keys, not
/// Ed25519 ones.
struct Keys {
    /// PKCS#1.
    rsa: Vec<u8>,
    /// PKCS#8.
    ec: Vec<u8>,
    /// PKCS#8.
    ed25519: Vec<u8>,
    ed25519_x: String,
}

/// The keys of this process, generated at first use.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], None);
        let rsa = openssl(&["rsa", "-traditional", "-outform", "DER"], Some(&rsa));
        let ec = openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], None);
        let ec = openssl(&["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"], Some(&ec));
        let ed25519 = openssl(&["genpkey", "-algorithm", "ed25519", "-outform", "DER"], None);
        let public = openssl(&["pkey", "-inform", "DER", "-pubout", "-outform", "DER"], Some(&ed25519));
        // An Ed25519 SubjectPublicKeyInfo ends with the key's 32 bytes.
        let ed25519_x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&public[public.len() - 32..]);
        Keys { rsa, ec, ed25519, ed25519_x }
    })
}

/// What `openssl ARGS` prints, given `input`.
fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the identity provider's keys are made with the openssl command: install it (apt-get install openssl)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.unwrap_or_default()).expect("openssl's input");
    drop(stdin);
    let out = child.wait_with_output().expect("openssl ran");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// One of the provider's signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    Rs256,
    Es256,
    EdDsa,
}

impl SigningKey {
    fn algorithm(self) -> Algorithm {
        match self {
            SigningKey::Rs256 => Algorithm::RS256,
            SigningKey::Es256 => Algorithm::ES256,
            SigningKey::EdDsa => Algorithm::EdDSA,
        }
    }

    fn encoding(self) -> EncodingKey {
        match self {
            SigningKey::Rs256 => EncodingKey::from_rsa_der(&keys().rsa),
            SigningKey::Es256 => EncodingKey::from_ec_der(&keys().ec),
            SigningKey::EdDsa => EncodingKey::from_ed_der(&keys().ed25519),
        }
    }

    /// The public key as the key set lists it, under `kid`.
    fn jwk(self, kid: &str) -> Value {
        let mut jwk = match self {
            SigningKey::EdDsa => json!({ "kty": "OKP", "crv": "Ed25519", "x": keys().ed25519_x, "alg": "EdDSA" }),
            _ => {
                let jwk = Jwk::from_encoding_key(&self.encoding(), self.algorithm()).expect("a public key");
                serde_json::to_value(jwk).expect("JSON")
            }
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk
    }
}

struct Shared {
    published: Mutex<Vec<(String, SigningKey)>>,
    requests: AtomicUsize,
}

pub struct IdentityProvider {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl IdentityProvider {
    /// Serves a key set of the three keys, under the ids `rsa`, `ec` and `ed`.
    pub async fn start() -> IdentityProvider {
        let published = vec![
            ("rsa".to_owned(), SigningKey::Rs256),
            ("ec".to_owned(), SigningKey::Es256),
            ("ed".to_owned(), SigningKey::EdDsa),
        ];
        let shared = Arc::new(Shared { published: Mutex::new(published), requests: AtomicUsize::new(0) });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port for the identity provider");
        let addr = listener.local_addr().expect("its address");
        let app = Router::new().route("/.well-known/jwks.json", get(key_set)).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        IdentityProvider { shared, addr, server }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Publishes these keys under these ids from now on, and no other.
    pub fn publish(&self, keys: &[(&str, SigningKey)]) {
        *self.shared.published.lock().unwrap() = keys.iter().map(|(kid, key)| ((*kid).to_owned(), *key)).collect();
    }

    /// Requests for the key set so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// A token with these claims, signed with `key` and naming `kid` in its header.
    pub fn sign(key: SigningKey, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(key.algorithm());
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding()).expect("a signed token")
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn key_set(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = shared.published.lock().unwrap().iter().map(|(kid, key)| key.jwk(kid)).collect();
    Json(json!({ "keys": keys }))
}
