//! What a local user can read of the embedded store: with the usual umask 022, the data
//! directory and everything the store creates in it (log, lock, compaction temporaries,
//! recovery copies) are owner-only, and a directory left with looser modes is narrowed on open.
//! Its own test binary, because the umask is per process.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use romana_store::{EmbeddedOptions, EmbeddedStore, StoreExt};

fn set_umask_022() {
    // SAFETY: umask only sets this process's file creation mask; it cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(0o022);
    }
}

/// Every entry under `dir` (itself included) whose mode is not owner-only: (path, mode).
fn loose(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push((p.clone(), mode));
        }
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_is_owner_only_whatever_the_umask() {
    set_umask_022();
    let base = std::env::temp_dir().join(format!("romana-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();

    // A new data directory (and its missing parent), through several compactions.
    let dir = base.join("new/data");
    let s = EmbeddedStore::open_with(&dir, EmbeddedOptions { compact_min_bytes: 4096 }).await.expect("open");
    for i in 0..200 {
        s.put(&format!("/k/{i:04}"), vec![b'v'; 64]).await.expect("put");
    }
    drop(s);
    let log = std::fs::read(dir.join("store.log")).unwrap();
    let records = log.windows(4).filter(|w| *w == b"RMNR").count();
    assert!(records < 200, "compaction ran ({records} records for 200 puts)");
    assert_eq!(names(&dir), vec!["LOCK", "store.log"]);
    assert_eq!(loose(&dir), vec![], "after compaction");
    assert_eq!(loose(&base.join("new")), vec![], "a parent it created");

    // A recovery copy.
    let mut damaged = log.clone();
    let mid = damaged.len() - 100;
    damaged[mid] ^= 1;
    damaged.extend_from_slice(&log[8..]);
    std::fs::write(dir.join("store.log"), &damaged).unwrap();
    assert!(EmbeddedStore::open(&dir).await.is_err(), "damage refused");
    let r = EmbeddedStore::recover(&dir).expect("recover");
    assert!(r.backup.is_some());
    assert_eq!(loose(&dir), vec![], "after recovery");

    // A directory made loose by hand (an older release, or a copy): narrowed on open, whatever
    // the files are called.
    let old = base.join("old");
    std::fs::create_dir_all(old.join("tls")).unwrap();
    for (f, m) in
        [("store.log", 0o644), ("signing.key", 0o644), ("tls/ca.pem", 0o664), ("store.log.tmp", 0o666)]
    {
        std::fs::write(old.join(f), b"").unwrap();
        std::fs::set_permissions(old.join(f), std::fs::Permissions::from_mode(m)).unwrap();
    }
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(loose(&old).len(), 6, "all loose before");
    let s = EmbeddedStore::open(&old).await.expect("open");
    s.put("/x", b"1".to_vec()).await.unwrap();
    drop(s);
    assert_eq!(loose(&old), vec![], "narrowed on open");

    let _ = std::fs::remove_dir_all(&base);
}
