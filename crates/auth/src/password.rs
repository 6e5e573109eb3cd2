//! Password hashes: argon2id (memory-hard) in PHC string form. The salt is an argument.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Hashes `password` with a 16-byte random `salt` the caller drew.
pub fn hash_password(password: &str, salt: &[u8; 16]) -> String {
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// Whether `password` matches a stored hash (false for a malformed hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), phc).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse", &[7; 16]);
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("battery staple", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
