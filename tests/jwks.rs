//! Tokens of an identity provider (`--jwks-url`), through the real binary and a key set
//! served over HTTP: RS256, ES256 and EdDSA tokens verified with the provider's keys, the
//! issuer and audience checked, a rotated key picked up, a flood of made-up key ids costing
//! the provider one request per interval, and HS256 tokens of the gateway working beside.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Error as WsError;

const ISSUER: &str = "https://id.example/";
const AUDIENCE: &str = "sluice";

fn gateway(provider_url: &str) -> Sluice {
    Sluice::start(
        &["--jwks-url", provider_url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE],
        &[("WS_USERNAME", USER), ("WS_PASSWORD", PASSWORD), ("ADMIN_TOKEN", ADMIN_TOKEN)],
    )
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims as the provider issues them, for `sub`, allowed key `k`.
fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iss": ISSUER, "aud": [AUDIENCE, "another-api"], "exp": now() + 60, "keys": ["k"] })
}

/// The upgrade's answer to this token on `/{key}`: 101, or the status that refused it with
/// the error it gave.
async fn upgrade(sluice: &Sluice, key: &str, token: &str) -> (u16, String) {
    match try_connect(&sluice.url(&format!("/{key}?token={token}")), &[]).await {
        Ok((mut ws, _)) => {
            let welcome = next_text(&mut ws).await;
            (101, welcome)
        }
        Err(WsError::Http(response)) => {
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn tokens_of_the_provider_are_verified_with_its_keys_issuer_and_audience() {
    let provider = IdentityProvider::start().await;
    let sluice = gateway(&provider.jwks_url());
    for (key, kid) in [(SigningKey::Rs256, "rsa"), (SigningKey::Es256, "ec"), (SigningKey::EdDsa, "ed")] {
        let token = IdentityProvider::sign(key, kid, &claims("dash"));
        let (status, welcome) = upgrade(&sluice, "k", &token).await;
        assert_eq!(status, 101, "{key:?}: {welcome}");
        assert_eq!(serde_json::from_str::<Value>(&welcome).unwrap()["type"], "connected");
        // What the token's claims allow, and nothing more.
        assert_eq!(upgrade(&sluice, "other", &token).await.0, 403, "{key:?}");
    }

    let with = |change: Value| {
        let mut c = claims("dash");
        for (name, value) in change.as_object().unwrap() {
            c[name] = value.clone();
        }
        c
    };
    let refused = [
        ("another issuer", IdentityProvider::sign(SigningKey::Es256, "ec", &with(json!({ "iss": "https://evil/" })))),
        ("another audience", IdentityProvider::sign(SigningKey::Es256, "ec", &with(json!({ "aud": "other" })))),
        ("expired", IdentityProvider::sign(SigningKey::EdDsa, "ed", &with(json!({ "exp": now() - 60 })))),
        // Signed with the EC key, naming the RSA key's id.
        ("another key's id", IdentityProvider::sign(SigningKey::Es256, "rsa", &claims("dash"))),
        ("a key id the set lacks", IdentityProvider::sign(SigningKey::Rs256, "gone", &claims("dash"))),
        // The classic confusion: HS256 keyed with the provider's public key.
        ("HS256 with a public key", {
            let set: Value = reqwest::get(provider.jwks_url()).await.unwrap().json().await.unwrap();
            let public = set["keys"][0]["n"].as_str().unwrap().to_owned();
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some("rsa".into());
            jsonwebtoken::encode(&header, &claims("dash"), &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()))
                .unwrap()
        }),
    ];
    for (what, token) in refused {
        let (status, error) = upgrade(&sluice, "k", &token).await;
        assert_eq!(status, 401, "{what}: {error}");
        assert!(error.contains("invalid token"), "{what}: {error}");
    }

    // The gateway's own HS256 tokens keep working beside the provider's.
    let body = json!({ "sub": "console", "ttl": 60 }).to_string();
    let (status, minted) = sluice.api("POST", "/api/tokens", Some(&body)).await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(upgrade(&sluice, "k", minted["token"].as_str().unwrap()).await.0, 101);
    assert!(sluice.metric("sluice_jwks_fetches_total{outcome=\"ok\"}").await >= 1.0);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_and_made_up_key_ids_cost_one_fetch_per_interval() {
    let provider = IdentityProvider::start().await;
    provider.publish(&[("rsa", SigningKey::Rs256)]);
    let sluice = gateway(&provider.jwks_url());
    // Fetched at start-up, before any client asks.
    let started = Instant::now();
    while provider.requests() == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the key set was not fetched at start-up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rsa = IdentityProvider::sign(SigningKey::Rs256, "rsa", &claims("dash"));
    assert_eq!(upgrade(&sluice, "k", &rsa).await.0, 101);

    // The provider rotates: the RSA key goes, an EC key comes under a new id.
    provider.publish(&[("ec-2", SigningKey::Es256)]);
    let flood_started = Instant::now();
    let before = provider.requests();
    for i in 0..200 {
        let token = IdentityProvider::sign(SigningKey::Es256, &format!("made-up-{i}"), &claims("mallory"));
        assert_eq!(upgrade(&sluice, "k", &token).await.0, 401);
    }
    let fetches = provider.requests() - before;
    // One fetch per 10 s at most, whatever the number of unknown ids.
    let allowed = 1 + flood_started.elapsed().as_secs() as usize / 10;
    assert!(fetches <= allowed, "{fetches} fetches for 200 made-up key ids in {:?}", flood_started.elapsed());

    // The new key verifies once the set has been fetched again (within the interval).
    let ec = IdentityProvider::sign(SigningKey::Es256, "ec-2", &claims("dash"));
    let rotating = Instant::now();
    loop {
        let (status, answer) = upgrade(&sluice, "k", &ec).await;
        if status == 101 {
            break;
        }
        assert_eq!(status, 401, "{answer}");
        assert!(rotating.elapsed() < Duration::from_secs(15), "the rotated key was never picked up: {answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And the key the provider withdrew no longer does.
    assert_eq!(upgrade(&sluice, "k", &rsa).await.0, 401);
}

#[tokio::test]
async fn while_the_provider_is_unreachable_its_tokens_are_refused_and_basic_still_works() {
    // A port nothing listens on.
    let url = format!("http://127.0.0.1:{}/.well-known/jwks.json", free_port());
    let sluice = gateway(&url);
    let token = IdentityProvider::sign(SigningKey::EdDsa, "ed", &claims("dash"));
    let (status, error) = upgrade(&sluice, "k", &token).await;
    assert_eq!(status, 401, "{error}");
    assert!(error.contains("no key \\\"ed\\\""), "{error}");
    sluice.wait_metric("sluice_jwks_fetches_total{outcome=\"error\"}", 1.0, Duration::from_secs(10)).await;
    sluice.wait_for_log("cannot fetch the identity provider's key set", Duration::from_secs(5)).await;
    let (mut ws, _) = try_connect(&sluice.url("/k"), &[("authorization", &basic(USER, PASSWORD))]).await.unwrap();
    assert!(next_text(&mut ws).await.contains("connected"));
}

#[test]
fn issuer_and_audience_need_the_key_set_url() {
    for flag in ["--jwt-issuer", "--jwt-audience"] {
        let out = sluice_command(&["--port", "0", "--allow-anonymous", flag, "x"]).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(&format!("{flag} / ")) && stderr.contains("given without SLUICE_JWKS_URL"), "{stderr}");
    }
    let out = sluice_command(&["--port", "0", "--jwks-url", "ftp://x/keys"]).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--jwks-url / SLUICE_JWKS_URL"), "{stderr}");
}
