//! Romana's identities: roles (admin, service, tenant), signed tokens, password hashes, and the
//! access rule each route declares. Pure: the caller passes the time and the random bytes.
//!
//! Tokens are JWT-shaped (`header.claims.signature`, base64url) and signed with Ed25519 (EdDSA);
//! the header names the key (`kid`) so that keys rotate without downtime: every key that signed a
//! live token stays in the verifying key set until its tokens expire.

mod b64;
mod cache;
mod password;
mod rules;
mod token;

pub use b64::{decode as b64_decode, encode as b64_encode, encode_std as b64_std_encode};
pub use cache::VerifiedTokens;
pub use password::{hash_password, verify_password};
pub use rules::{Access, Decision, decide};
pub use token::{Claims, KeySet, Principal, Role, SigningKey, TokenKind, VerifyError, verify};
