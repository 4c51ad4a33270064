//! Node authentication, as Geo does it: `Authorization: Geo <access_key>:<JWT>`, the JWT signed
//! HS256 with the requesting node's secret, valid 60 s (`nbf` 5 s in the past, 60 s leeway for
//! clock skew), its `data` claim bound to the exact request (scope, replicable, id).
//!
//! Only HS256 is accepted (`alg: none` and every other algorithm are refused before any key is
//! used), the MAC is checked in constant time, and the token and secret never reach logs or
//! `Debug` output.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a token is valid.
pub const TOKEN_VALIDITY_SECS: i64 = 60;
/// How far in the past `nbf` is set.
pub const NOT_BEFORE_SECS: i64 = 5;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: i64 = 60;
/// The authorization scheme.
pub const SCHEME: &str = "Geo";

/// `len` characters drawn uniformly from `[A-Za-z0-9]` by rand's thread-local CSPRNG (ChaCha,
/// seeded and reseeded from the operating system).
fn random_token(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A node's shared secret. Its `Debug` and `Display` show only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret read from configuration.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// A new random secret: 40 characters from a CSPRNG (Geo's length).
    pub fn generate() -> Self {
        Secret(random_token(40))
    }

    /// The secret itself, for signing and for storing once. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time that does not depend on where they differ:
    /// both are hashed and the digests compared without an early exit.
    pub fn matches(&self, presented: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0_u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The key node secrets are encrypted with in `geo_nodes` (Geo's `db_key_base`): 32 random
/// bytes, written as 64 hex digits or in base64. Its `Debug` and `Display` show nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretsKey([u8; 32]);

impl SecretsKey {
    /// Parses 64 hex digits or base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| e.to_string())?
        } else {
            use base64::engine::general_purpose::{STANDARD, URL_SAFE};
            let unpadded = text.trim_end_matches('=');
            let padded = format!("{unpadded}{}", "=".repeat((4 - unpadded.len() % 4) % 4));
            STANDARD
                .decode(&padded)
                .or_else(|_| URL_SAFE.decode(&padded))
                .map_err(|_| "expected 64 hex digits or base64".to_owned())?
        };
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("expected 32 bytes, got {}", b.len()))?;
        Ok(SecretsKey(key))
    }

    /// A new random key.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(SecretsKey(key))
    }

    /// The key in base64, to put in a configuration once. Never log it.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// The key's bytes.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::str::FromStr for SecretsKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SecretsKey::parse(s)
    }
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

/// A new random access key: 20 characters (Geo's length). Not a secret: it names the node.
pub fn generate_access_key() -> String {
    random_token(20)
}

/// What a request is allowed to do; the `data` claim of its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum RequestScope {
    /// Read the event log.
    Events,
    /// List a replicable's ids.
    Replicables {
        /// The replicable.
        replicable_name: String,
    },
    /// Retrieve one object.
    Retrieve {
        /// The replicable.
        replicable_name: String,
        /// The model record.
        replicable_id: i64,
    },
    /// Retrieve several small objects in one response.
    RetrieveMany {
        /// The replicable.
        replicable_name: String,
        /// Hex SHA-256 of the request's exact `ids` list (`1,2,3`): the token is valid for
        /// those records only, without carrying the list itself.
        ids_sha256: String,
    },
    /// Report the secondary's status and cursor.
    Status,
}

impl RequestScope {
    /// The scope of a request for the objects `ids_list` (as sent: `1,2,3`) of a replicable.
    pub fn retrieve_many(replicable_name: &str, ids_list: &str) -> Self {
        RequestScope::RetrieveMany {
            replicable_name: replicable_name.to_owned(),
            ids_sha256: hex::encode(Sha256::digest(ids_list.as_bytes())),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The request scope, as a JSON string (Geo's `data`).
    data: String,
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// Why a request was refused. The messages never contain the token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Geo …` header.
    #[error("missing or malformed Authorization header (expected `Geo <access_key>:<token>`)")]
    Missing,
    /// The token is not a well-formed HS256 JWT.
    #[error("malformed token")]
    Malformed,
    /// The token uses another algorithm than HS256.
    #[error("token algorithm not accepted (only HS256)")]
    Algorithm,
    /// No enabled node has this access key.
    #[error("unknown or disabled node")]
    UnknownNode,
    /// The signature does not verify with the node's secret.
    #[error("invalid token signature")]
    Signature,
    /// Expired, not yet valid, or valid for too long.
    #[error("token not within its validity window; check the nodes' clocks")]
    Time,
    /// The token was issued for another request.
    #[error("token not valid for this request")]
    Scope,
}

fn sign_raw(secret: &Secret, signing_input: &str) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(signing_input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The `Authorization` header value for `scope`, signed with this node's credentials at `now`
/// (Unix seconds).
pub fn authorization(access_key: &str, secret: &Secret, scope: &RequestScope, now: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = Claims {
        data: serde_json::to_string(scope).unwrap_or_default(),
        jti: random_token(16),
        iat: now,
        nbf: now - NOT_BEFORE_SECS,
        exp: now + TOKEN_VALIDITY_SECS,
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(sign_raw(secret, &signing_input));
    format!("{SCHEME} {access_key}:{signing_input}.{signature}")
}

/// A parsed header, before the node is known.
#[derive(Clone)]
pub struct PresentedToken {
    /// The access key (names the node).
    pub access_key: String,
    token: String,
}

impl fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("access_key", &self.access_key)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Parses `Geo <access_key>:<token>` and checks the algorithm, before any secret is looked up.
pub fn parse_authorization(header: Option<&str>) -> Result<PresentedToken, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let rest = value
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(AuthError::Missing)?;
    let (access_key, token) = rest.split_once(':').ok_or(AuthError::Missing)?;
    if access_key.is_empty() || access_key.len() > 64 {
        return Err(AuthError::Missing);
    }
    let header_b64 = token.split('.').next().ok_or(AuthError::Malformed)?;
    let header: Header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(AuthError::Malformed)?;
    if header.alg != "HS256" {
        return Err(AuthError::Algorithm);
    }
    Ok(PresentedToken {
        access_key: access_key.to_owned(),
        token: token.to_owned(),
    })
}

/// Verifies the token with the node's secret at `now` (Unix seconds) and checks that it was
/// issued for `expected`.
pub fn verify(
    presented: &PresentedToken,
    secret: &Secret,
    expected: &RequestScope,
    now: i64,
) -> Result<(), AuthError> {
    let mut parts = presented.token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::Malformed)?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| AuthError::Signature)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::Signature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or(AuthError::Malformed)?;
    let too_long = claims.exp - claims.iat > TOKEN_VALIDITY_SECS
        || claims.exp - claims.nbf > TOKEN_VALIDITY_SECS + NOT_BEFORE_SECS;
    if now > claims.exp + LEEWAY_SECS
        || now + LEEWAY_SECS < claims.nbf
        || claims.iat > now + LEEWAY_SECS
        || too_long
    {
        return Err(AuthError::Time);
    }
    let scope: RequestScope = serde_json::from_str(&claims.data).map_err(|_| AuthError::Scope)?;
    if &scope != expected {
        return Err(AuthError::Scope);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_alphanumeric_of_geos_lengths_and_differ() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_eq!(a.expose().len(), 40);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        let key = generate_access_key();
        assert_eq!(key.len(), 20);
        assert!(key.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    fn scope() -> RequestScope {
        RequestScope::Retrieve {
            replicable_name: "widget".into(),
            replicable_id: 42,
        }
    }

    #[test]
    fn a_signed_request_verifies_and_nothing_else_does() {
        let secret = Secret::generate();
        let key = generate_access_key();
        assert_eq!((secret.expose().len(), key.len()), (40, 20));
        let now = 1_800_000_000;
        let header = authorization(&key, &secret, &scope(), now);
        let presented = parse_authorization(Some(&header)).expect("parse");
        assert_eq!(presented.access_key, key);
        assert_eq!(verify(&presented, &secret, &scope(), now), Ok(()));
        // Within the leeway, and not beyond.
        assert_eq!(verify(&presented, &secret, &scope(), now + 60 + 59), Ok(()));
        assert_eq!(
            verify(&presented, &secret, &scope(), now + 60 + 61),
            Err(AuthError::Time)
        );
        assert_eq!(
            verify(&presented, &secret, &scope(), now - 5 - 61),
            Err(AuthError::Time)
        );
        // Another secret, another id.
        assert_eq!(
            verify(&presented, &Secret::new("x".repeat(40)), &scope(), now),
            Err(AuthError::Signature)
        );
        let other = RequestScope::Retrieve {
            replicable_name: "widget".into(),
            replicable_id: 43,
        };
        assert_eq!(
            verify(&presented, &secret, &other, now),
            Err(AuthError::Scope)
        );
        // A tampered payload.
        let mut parts: Vec<String> = presented.token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"data":"{\"scope\":\"events\"}","jti":"x","iat":1800000000,"nbf":1799999995,"exp":1800000060}"#);
        let tampered = format!("Geo {key}:{}", parts.join("."));
        let p = parse_authorization(Some(&tampered)).expect("parse");
        assert_eq!(
            verify(&p, &secret, &RequestScope::Events, now),
            Err(AuthError::Signature)
        );
    }

    #[test]
    fn other_algorithms_and_shapes_are_refused() {
        let none = format!(
            "Geo abc:{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(b"{}")
        );
        assert_eq!(
            parse_authorization(Some(&none)).map(|_| ()),
            Err(AuthError::Algorithm)
        );
        let hs512 = format!(
            "Geo abc:{}.e30.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#)
        );
        assert_eq!(
            parse_authorization(Some(&hs512)).map(|_| ()),
            Err(AuthError::Algorithm)
        );
        for bad in [
            None,
            Some(""),
            Some("Bearer x"),
            Some("Geo nokey"),
            Some("Geo :x.y.z"),
            Some("Geo k:!!!.x.y"),
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("super-secret-value");
        assert!(!format!("{secret:?} {secret}").contains("super"));
        let p = parse_authorization(Some(&authorization("k", &secret, &RequestScope::Events, 0)))
            .expect("parse");
        assert!(!format!("{p:?}").contains(&p.token));
    }
}
