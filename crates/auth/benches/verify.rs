//! Cost of checking a token per request: Ed25519 verification of a Romana access token, against
//! HMAC-SHA256 (what most JWT deployments use, HS256) over the same bytes in the same run.
//! `cargo bench -p romana-auth --bench verify`.

use std::hint::black_box;
use std::time::Instant;

use ring::rand::SystemRandom;
use romana_auth::{Claims, KeySet, Role, SigningKey, TokenKind, VerifiedTokens, verify};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2_000 } else { 50_000 };
    let key = SigningKey::generate(&SystemRandom::new());
    let mut keys = KeySet::default();
    keys.insert(key.public_key());
    // A few other keys in the set, as after rotations.
    for _ in 0..3 {
        keys.insert(SigningKey::generate(&SystemRandom::new()).public_key());
    }
    let claims = Claims {
        sub: "agent-node-0001".into(),
        roles: vec![Role::Service],
        tenants: vec![],
        hosts: vec![],
        iat: 1_800_000_000,
        exp: 1_800_000_900,
        typ: TokenKind::Access,
    };
    let token = key.sign(&claims);
    let t = Instant::now();
    for _ in 0..n {
        black_box(verify(black_box(&token), &keys, 1_800_000_100, TokenKind::Access).expect("valid"));
    }
    let ed = t.elapsed().as_secs_f64() / n as f64 * 1e6;

    // What romanad pays per request: the signature once per token, then a lookup.
    let mut cache = VerifiedTokens::new(65_536);
    let t = Instant::now();
    for _ in 0..n {
        black_box(cache.verify(black_box(&token), &keys, 1_800_000_100, TokenKind::Access).expect("valid"));
    }
    let cached = t.elapsed().as_secs_f64() / n as f64 * 1e6;

    let hkey = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"a shared secret of thirty-two by");
    let signed = &token[..token.rfind('.').expect("three parts")];
    let tag = ring::hmac::sign(&hkey, signed.as_bytes());
    let t = Instant::now();
    for _ in 0..n {
        ring::hmac::verify(&hkey, black_box(signed.as_bytes()), tag.as_ref()).expect("valid");
    }
    let hs = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!("Token verification, {n} iterations, {} byte token", token.len());
    println!("| measure | value | target or baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| romanad per request: token checked once, then remembered (us) | {cached:.2} | target 50 | {:.3} |",
        cached / 50.0
    );
    println!(
        "| first use of a token: Ed25519 verification, parse and checks (us) | {ed:.1} | target 50 | {:.2} |",
        ed / 50.0
    );
    println!("| HMAC-SHA256 (HS256) signature check alone (us) | {hs:.2} | baseline | {:.0}x |", ed / hs);
}
