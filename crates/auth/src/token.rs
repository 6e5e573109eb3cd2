//! Signed tokens: claims, Ed25519 signing keys with key ids, and verification against a key set.

use std::collections::BTreeMap;

use ring::rand::SecureRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::b64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Agents, the CNI plugin, the OpenStack driver, listeners: what they need and no more.
    Service,
    /// Its own tenants' segments, addresses and policies.
    Tenant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Refresh,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The user or service account.
    pub sub: String,
    pub roles: Vec<Role>,
    /// Tenants a `tenant` role may act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Hosts a `service` role is bound to (an agent); empty for a controller, unbound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Issued and expiry times, seconds since the epoch.
    pub iat: u64,
    pub exp: u64,
    pub typ: TokenKind,
}

/// Who is asking, as the routes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
    pub tenants: Vec<String>,
    /// The hosts an agent (a `service` role bound to hosts) acts for; empty when unbound.
    pub hosts: Vec<String>,
}

impl Principal {
    /// Full rights (used when authentication is switched off).
    pub fn superuser() -> Principal {
        Principal { name: "anonymous-admin".into(), roles: vec![Role::Admin], tenants: vec![], hosts: vec![] }
    }

    /// An agent: a `service` principal bound to hosts and not an admin. It writes only its own
    /// hosts' records (liveness, tags, addresses, endpoints), never cluster-wide objects.
    pub fn is_agent(&self) -> bool {
        !self.is_admin() && self.roles.contains(&Role::Service) && !self.hosts.is_empty()
    }

    /// Whether this principal may act for `host`: everyone but an agent of other hosts.
    pub fn may_host(&self, host: &str) -> bool {
        !self.is_agent() || self.hosts.iter().any(|h| h == host)
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Admin or service: may act on every tenant.
    pub fn is_privileged(&self) -> bool {
        self.is_admin() || self.roles.contains(&Role::Service)
    }

    /// Whether this principal may act on `tenant`.
    pub fn may(&self, tenant: &str) -> bool {
        self.is_privileged()
            || (self.roles.contains(&Role::Tenant) && self.tenants.iter().any(|t| t == tenant))
    }
}

impl From<Claims> for Principal {
    fn from(c: Claims) -> Principal {
        Principal { name: c.sub, roles: c.roles, tenants: c.tenants, hosts: c.hosts }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token signed by unknown key {0}")]
    UnknownKey(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired at {exp} (now {now}); refresh it or log in again")]
    Expired { exp: u64, now: u64 },
    #[error("a {0:?} token cannot be used here")]
    WrongKind(TokenKind),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// A key id: the first 16 hex digits of the SHA-256 of the public key.
fn kid_of(public: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An Ed25519 signing key and its id.
pub struct SigningKey {
    pub kid: String,
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate(rng: &dyn SecureRandom) -> SigningKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng).expect("the system RNG works");
        SigningKey::from_pkcs8(pkcs8.as_ref()).expect("a key ring just generated parses")
    }

    /// Reads a PKCS#8 Ed25519 key: v2 (with the public key, as `generate` makes) or v1 (the private
    /// key alone, as `openssl genpkey -algorithm ed25519` writes), whose public key is derived.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Option<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8))
            .ok()?;
        Some(SigningKey { kid: kid_of(pair.public_key().as_ref()), pair, pkcs8: pkcs8.to_vec() })
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header { alg: "EdDSA".into(), typ: "JWT".into(), kid: self.kid.clone() };
        let head = b64::encode(&serde_json::to_vec(&header).expect("serializes"));
        let body = b64::encode(&serde_json::to_vec(claims).expect("serializes"));
        let signed = format!("{head}.{body}");
        let sig = self.pair.sign(signed.as_bytes());
        format!("{signed}.{}", b64::encode(sig.as_ref()))
    }
}

/// Verifying keys by id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: BTreeMap<String, Vec<u8>>,
}

impl KeySet {
    pub fn insert(&mut self, public: Vec<u8>) -> String {
        let kid = kid_of(&public);
        self.keys.insert(kid.clone(), public);
        kid
    }

    pub fn remove(&mut self, kid: &str) {
        self.keys.remove(kid);
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Checks a token's signature, expiry and kind at time `now` (seconds since the epoch).
pub fn verify(token: &str, keys: &KeySet, now: u64, kind: TokenKind) -> Result<Claims, VerifyError> {
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("expected three dot-separated parts"));
    };
    let header: Header = b64::decode(head)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(VerifyError::Malformed("unreadable header"))?;
    if header.alg != "EdDSA" {
        return Err(VerifyError::Malformed("only EdDSA tokens are accepted"));
    }
    let public = keys.keys.get(&header.kid).ok_or_else(|| VerifyError::UnknownKey(header.kid.clone()))?;
    let sig = b64::decode(sig).ok_or(VerifyError::Malformed("unreadable signature"))?;
    let signed_len = head.len() + 1 + body.len();
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&token.as_bytes()[..signed_len], &sig)
        .map_err(|_| VerifyError::BadSignature)?;
    let claims: Claims = b64::decode(body)
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or(VerifyError::Malformed("unreadable claims"))?;
    if claims.exp <= now {
        return Err(VerifyError::Expired { exp: claims.exp, now });
    }
    if claims.typ != kind {
        return Err(VerifyError::WrongKind(claims.typ));
    }
    Ok(claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            roles: vec![Role::Tenant],
            tenants: vec!["red".into()],
            hosts: vec![],
            iat: 100,
            exp,
            typ: TokenKind::Access,
        }
    }

    #[test]
    fn sign_verify_expire_forge_rotate() {
        let rng = SystemRandom::new();
        let (k1, k2) = (SigningKey::generate(&rng), SigningKey::generate(&rng));
        let mut keys = KeySet::default();
        keys.insert(k1.public_key());
        let t = k1.sign(&claims(200));
        assert_eq!(verify(&t, &keys, 150, TokenKind::Access).unwrap().sub, "alice");
        assert!(matches!(verify(&t, &keys, 200, TokenKind::Access), Err(VerifyError::Expired { .. })));
        assert!(matches!(verify(&t, &keys, 150, TokenKind::Refresh), Err(VerifyError::WrongKind(_))));
        // A token signed by a key outside the set, and one whose claims were edited.
        assert!(matches!(
            verify(&k2.sign(&claims(200)), &keys, 150, TokenKind::Access),
            Err(VerifyError::UnknownKey(_))
        ));
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut forged = claims(999);
        forged.roles = vec![Role::Admin];
        parts[1] = b64::encode(&serde_json::to_vec(&forged).unwrap());
        assert_eq!(verify(&parts.join("."), &keys, 150, TokenKind::Access), Err(VerifyError::BadSignature));
        // Rotation: both keys verify while both are in the set.
        keys.insert(k2.public_key());
        assert!(verify(&t, &keys, 150, TokenKind::Access).is_ok());
        assert!(verify(&k2.sign(&claims(200)), &keys, 150, TokenKind::Access).is_ok());
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(
                matches!(verify(bad, &keys, 150, TokenKind::Access), Err(VerifyError::Malformed(_))),
                "{bad}"
            );
        }
        // Key material never shows in debug output.
        assert!(!format!("{k1:?}").contains(&b64::encode(k1.pkcs8())));
        let again = SigningKey::from_pkcs8(k1.pkcs8()).unwrap();
        assert_eq!(again.kid, k1.kid);
    }
}
