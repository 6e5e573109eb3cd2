//! The element batch's encoding as data: key layouts, the batch's framing and numbering, its
//! size estimate, the nft text of the same changes, and the kernel's answers read back.

#![allow(clippy::unwrap_used)]

use super::*;

fn key(s: &str) -> ElementKey {
    match s.rsplit_once(" . ") {
        Some((a, p)) => ElementKey::AddrPort(a.parse().unwrap(), p.parse().unwrap()),
        None => ElementKey::Addr(s.parse().unwrap()),
    }
}

fn change(op: ElementOp, set: &str, keys: &[&str]) -> SetElements {
    SetElements { op, set: set.into(), keys: keys.iter().map(|k| key(k)).collect() }
}

#[test]
fn keys_are_laid_out_as_the_kernel_stores_them() {
    let check = |k: &str, want: &[u8]| {
        assert_eq!(key(k).data(), want, "{k}");
        assert_eq!(key(k).len(), want.len(), "{k}");
        assert_eq!(key(k).to_string(), k);
    };
    check("10.1.2.3", &[10, 1, 2, 3]);
    // The port in network order, padded to a 32-bit register.
    check("10.1.2.3 . 8080", &[10, 1, 2, 3, 0x1f, 0x90, 0, 0]);
    let mut v6 = vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    check("fd00::1", &v6);
    v6.extend_from_slice(&[0, 80, 0, 0]);
    check("fd00::1 . 80", &v6);
}

#[test]
fn the_script_is_the_same_changes_as_nft_text() {
    let changes = [
        change(ElementOp::Delete, "sel-1", &["10.0.0.1"]),
        change(ElementOp::Add, "np-4", &["10.0.0.2 . 80", "10.0.0.3 . 443"]),
        change(ElementOp::Add, "empty", &[]),
    ];
    assert_eq!(
        script(&changes),
        "delete element inet romana sel-1 { 10.0.0.1 }\n\
         add element inet romana np-4 { 10.0.0.2 . 80, 10.0.0.3 . 443 }\n"
    );
    assert_eq!(script(&[]), "");
}

/// The messages of a batch: (type, flags, sequence, family).
fn messages(bytes: &[u8]) -> Vec<(u16, u16, u32, u8)> {
    let mut out = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(bytes[at + 4..at + 6].try_into().unwrap());
        let flags = u16::from_ne_bytes(bytes[at + 6..at + 8].try_into().unwrap());
        let seq = u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        out.push((ty, flags, seq, bytes[at + 16]));
        assert_eq!(len % 4, 0, "messages stay aligned");
        at += len;
    }
    assert_eq!(at, bytes.len());
    out
}

#[test]
fn a_batch_is_framed_numbered_and_sized() {
    let many: Vec<String> = (0..CHUNK + 5).map(|i| format!("10.{}.{}.1", i / 256, i % 256)).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let check = |changes: &[SetElements], want: &[(u16, u16, u32, u8)]| {
        let b = batch(changes, 7);
        assert_eq!(messages(&b.bytes), want);
        assert_eq!((b.first, b.acked), (8, want.len() as u32 - 2));
        assert_eq!(batch_size(changes), b.bytes.len(), "the size estimate");
    };
    let begin = (0x10, 1, 7, 0);
    let end = |seq| (0x11, 1, seq, 0);
    let new = |seq| ((10 << 8) | 12, 1 | 4 | 0x400, seq, 1);
    let del = |seq| ((10 << 8) | 14, 1 | 4, seq, 1);
    check(&[], &[begin, end(8)]);
    check(
        &[change(ElementOp::Delete, "a", &["10.0.0.1"]), change(ElementOp::Add, "np", &["fd00::1 . 80"])],
        &[begin, del(8), new(9), end(10)],
    );
    // Over a chunk: two messages for one set.
    check(&[change(ElementOp::Add, "big", &many)], &[begin, new(8), new(9), end(10)]);
}

/// An NLMSG_ERROR answer to message `seq` with `code`.
fn answer(seq: u32, code: i32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&36u32.to_ne_bytes());
    m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(&code.to_ne_bytes());
    // The request's header, echoed.
    m.extend_from_slice(&20u32.to_ne_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&[0; 4]);
    m
}

#[test]
fn answers_decide_the_verdict() {
    let changes =
        [change(ElementOp::Delete, "gone", &["10.0.0.1"]), change(ElementOp::Add, "fine", &["10.0.0.2"])];
    let b = batch(&changes, 100);
    let check = |buf: Vec<u8>, want: Result<(), &str>| {
        let got = verdict(&b, &changes, &answers(&buf)).map_err(|e| e.to_string());
        match want {
            Ok(()) => assert_eq!(got, Ok(())),
            Err(w) => assert!(got.as_ref().is_err_and(|e| e.contains(w)), "{got:?} should say {w}"),
        }
    };
    check([answer(101, 0), answer(102, 0)].concat(), Ok(()));
    // An answer to another request (an older batch) is not one of ours.
    check([answer(99, 0), answer(101, 0), answer(102, 0)].concat(), Ok(()));
    check([answer(101, -2), answer(102, 0)].concat(), Err("set gone: No such file or directory"));
    check(answer(101, 0), Err("answered 1 of 2"));
    check(vec![1, 2, 3], Err("answered 0 of 2"));
}
