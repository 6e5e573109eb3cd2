//! `VerifiedTokens`: tokens already verified, so that a token used for many requests costs one
//! signature check. Keyed by the SHA-256 of the whole token; expiry is still checked every time.

use std::collections::HashMap;

use crate::token::{Claims, KeySet, TokenKind, VerifyError, verify};

#[derive(Debug)]
pub struct VerifiedTokens {
    map: HashMap<[u8; 32], Claims>,
    capacity: usize,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens { map: HashMap::new(), capacity: capacity.max(1) }
    }

    /// Like [`verify`], remembering successes. Clear it whenever the key set loses a key.
    pub fn verify(
        &mut self,
        token: &str,
        keys: &KeySet,
        now: u64,
        kind: TokenKind,
    ) -> Result<Claims, VerifyError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let h: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        if let Some(c) = self.map.get(&h) {
            if c.exp <= now {
                let exp = c.exp;
                self.map.remove(&h);
                return Err(VerifyError::Expired { exp, now });
            }
            if c.typ != kind {
                return Err(VerifyError::WrongKind(c.typ));
            }
            return Ok(c.clone());
        }
        let claims = verify(token, keys, now, kind)?;
        if self.map.len() >= self.capacity {
            // Simple and bounded: start over (live tokens come back on their next use).
            self.map.clear();
        }
        self.map.insert(h, claims.clone());
        Ok(claims)
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::token::{Role, SigningKey};

    #[test]
    fn remembers_successes_only_and_still_expires() {
        let key = SigningKey::generate(&ring::rand::SystemRandom::new());
        let mut keys = KeySet::default();
        keys.insert(key.public_key());
        let claims = Claims {
            sub: "a".into(),
            roles: vec![Role::Admin],
            tenants: vec![],
            hosts: vec![],
            iat: 0,
            exp: 100,
            typ: TokenKind::Access,
        };
        let t = key.sign(&claims);
        let mut cache = VerifiedTokens::new(2);
        assert!(cache.verify(&t, &keys, 50, TokenKind::Access).is_ok());
        assert_eq!(cache.len(), 1);
        assert!(cache.verify(&t, &keys, 60, TokenKind::Access).is_ok());
        assert!(matches!(cache.verify(&t, &keys, 60, TokenKind::Refresh), Err(VerifyError::WrongKind(_))));
        assert!(matches!(cache.verify(&t, &keys, 100, TokenKind::Access), Err(VerifyError::Expired { .. })));
        assert!(cache.is_empty());
        assert!(cache.verify("x.y.z", &keys, 50, TokenKind::Access).is_err());
        assert!(cache.is_empty(), "failures are not remembered");
    }
}
