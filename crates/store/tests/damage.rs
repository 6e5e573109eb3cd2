//! Damage to the embedded store's log file, table-driven: only a torn final write may be cut off
//! (the records before it intact); damage anywhere else refuses the open, names the file, the
//! offset and the way out, and leaves the file untouched; `recover` then keeps the intact prefix
//! after saving a copy. Also: logs of format 1 (no file header) still load and are upgraded.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use romana_store::{EmbeddedStore, Store, StoreExt};

const KEYS: usize = 10;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("romana-damage-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn key(i: usize) -> String {
    format!("/k/{i:03}")
}

/// A record's place in the file: where its header starts and where it ends.
#[derive(Debug, Clone, Copy)]
struct Rec {
    start: usize,
    end: usize,
}

/// The records of a format-2 log (file header of 8 bytes; records `RMNR`, len, crc, payload).
fn records(data: &[u8]) -> Vec<Rec> {
    assert_eq!(&data[..6], b"RMNLOG", "format 2 file header");
    let mut out = Vec::new();
    let mut at = 8;
    while at < data.len() {
        assert_eq!(&data[at..at + 4], b"RMNR", "record marker at {at}");
        let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push(Rec { start: at, end: at + 12 + len });
        at += 12 + len;
    }
    out
}

/// A store in `dir` with one record per key (values of 32 bytes), closed again.
async fn build(dir: &Path) -> Vec<u8> {
    let s = EmbeddedStore::open(dir).await.expect("open");
    for i in 0..KEYS {
        s.put(&key(i), vec![b'v'; 32]).await.expect("put");
    }
    drop(s);
    std::fs::read(dir.join("store.log")).expect("log")
}

async fn keys_present(s: &EmbeddedStore) -> usize {
    let mut n = 0;
    for i in 0..KEYS {
        if s.get(&key(i)).await.expect("get").is_some() {
            assert_eq!(n, i, "keys are a prefix: {} missing before {}", key(n), key(i));
            n += 1;
        }
    }
    n
}

#[derive(Debug)]
enum Expect {
    /// Opens; this many keys (a prefix) are there, and the file is cut to the intact prefix.
    Opens { keys: usize },
    /// Refused, naming the offset of record `at`; `recover` then keeps the keys before it.
    Refused { at: usize, says: &'static str },
}

async fn check(name: &str, damage: impl Fn(&mut Vec<u8>, &[Rec]), expect: Expect) {
    let dir = temp_dir(name);
    let clean = build(&dir).await;
    let recs = records(&clean);
    assert_eq!(recs.len(), KEYS, "{name}: one record per put");
    let mut data = clean.clone();
    damage(&mut data, &recs);
    let log = dir.join("store.log");
    std::fs::write(&log, &data).unwrap();
    match expect {
        Expect::Opens { keys } => {
            let s = EmbeddedStore::open(&dir).await.unwrap_or_else(|e| panic!("{name}: refused: {e}"));
            assert_eq!(keys_present(&s).await, keys, "{name}: keys kept");
            let kept = std::fs::metadata(&log).unwrap().len() as usize;
            let expect_len = if keys == 0 { 8 } else { recs[keys - 1].end };
            assert_eq!(kept, expect_len, "{name}: file cut to the intact prefix");
            s.put("/after", b"1".to_vec()).await.expect("writes go on");
            drop(s);
            let s = EmbeddedStore::open(&dir).await.expect("reopen");
            assert!(s.get("/after").await.unwrap().is_some(), "{name}: a write after the cut survives");
        }
        Expect::Refused { at, says } => {
            let e = EmbeddedStore::open(&dir).await.expect_err(name).to_string();
            let offset = recs[at].start;
            for part in [
                log.display().to_string(),
                format!("offset {offset} "),
                says.to_owned(),
                "--recover-store".into(),
            ] {
                assert!(e.contains(&part), "{name}: the error names {part:?}: {e}");
            }
            assert_eq!(std::fs::read(&log).unwrap(), data, "{name}: a refused open changes nothing");
            let r = EmbeddedStore::recover(&dir).expect("recover");
            let backup = r.backup.clone().expect("a copy was saved");
            assert_eq!(std::fs::read(&backup).unwrap(), data, "{name}: the copy is the damaged file");
            assert_eq!(
                (r.kept_bytes as usize, r.dropped_bytes as usize),
                (offset, data.len() - offset),
                "{name}"
            );
            let s = EmbeddedStore::open(&dir).await.expect("opens after recovery");
            assert_eq!(keys_present(&s).await, at, "{name}: the keys before the damage are kept");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn flip(data: &mut [u8], at: usize) {
    data[at] ^= 0x10;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_torn_final_write_is_cut_off() {
    let last = KEYS - 1;
    // Damage at the end: a torn final write.
    check("torn-record", |d, r| d.truncate(r[last].start + 20), Expect::Opens { keys: last }).await;
    check("torn-header", |d, r| d.truncate(r[last].start + 5), Expect::Opens { keys: last }).await;
    check("zeros-at-end", |d, _| d.extend([0u8; 4096]), Expect::Opens { keys: KEYS }).await;
    check("zeros-replace-last", |d, r| d[r[last].start..].fill(0), Expect::Opens { keys: last }).await;
    // Damage in the middle.
    check(
        "crc-middle",
        |d, r| flip(d, r[4].start + 9),
        Expect::Refused { at: 4, says: "fails its checksum" },
    )
    .await;
    check(
        "value-bit-middle",
        |d, r| flip(d, r[4].end - 8 - 3),
        Expect::Refused { at: 4, says: "fails its checksum" },
    )
    .await;
    check(
        "length-middle",
        |d, r| d[r[4].start + 5] ^= 0x03,
        Expect::Refused { at: 4, says: "intact record(s) follow" },
    )
    .await;
    check(
        "length-middle-shorter",
        |d, r| d[r[4].start + 4] ^= 0x08,
        Expect::Refused { at: 4, says: "intact record(s) follow" },
    )
    .await;
    // 64 zeros across the end of record 3 and the start of record 4 (the finding of issue 14).
    check(
        "zeros-middle",
        |d, r| d[r[3].start + 40..r[3].start + 104].fill(0),
        Expect::Refused { at: 3, says: "5 intact record(s) follow" },
    )
    .await;
    check("marker-middle", |d, r| flip(d, r[6].start), Expect::Refused { at: 6, says: "no record marker" })
        .await;
    // Damage in the last record that a crash cannot explain: it was written whole.
    check(
        "value-bit-last",
        |d, r| flip(d, r[last].end - 8 - 3),
        Expect::Refused { at: last, says: "written whole" },
    )
    .await;
    check(
        "length-last",
        |d, r| d[r[last].start + 6] ^= 0x01,
        Expect::Refused { at: last, says: "the length field is damaged" },
    )
    .await;
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// The same records in format 1: no file header, `[len][crc32(payload)][payload]`.
fn to_format_1(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records(data) {
        let payload = &data[r.start + 12..r.end];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_log_loads_and_is_upgraded_and_its_damage_is_refused() {
    let dir = temp_dir("v1");
    let v2 = build(&dir).await;
    let v1 = to_format_1(&v2);
    let log = dir.join("store.log");
    // The finding of issue 14: 64 zero bytes in the middle were taken for a torn tail and
    // everything after them was cut off without a word.
    let mut zeroed = v1.clone();
    zeroed[v1.len() / 2..v1.len() / 2 + 64].fill(0);
    std::fs::write(&log, &zeroed).unwrap();
    let e = EmbeddedStore::open(&dir).await.expect_err("zeros in the middle of a format-1 log").to_string();
    assert!(e.contains("intact record(s) follow"), "{e}");
    assert_eq!(std::fs::read(&log).unwrap(), zeroed, "untouched");

    std::fs::write(&log, &v1).unwrap();
    let s = EmbeddedStore::open(&dir).await.expect("a format-1 log opens");
    assert_eq!(keys_present(&s).await, KEYS);
    let upgraded = std::fs::read(&log).unwrap();
    assert_eq!(&upgraded[..8], b"RMNLOG\x02\x00", "rewritten in format 2");
    s.put("/after", b"1".to_vec()).await.unwrap();
    drop(s);
    let s = EmbeddedStore::open(&dir).await.expect("reopen");
    assert_eq!(keys_present(&s).await, KEYS);
    assert!(s.get("/after").await.unwrap().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
