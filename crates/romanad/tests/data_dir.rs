//! romanad's data directory from a local user's side: started with the usual umask 022, the
//! directory is 0700 and everything in it 0600 (store, credentials, TLS material, whatever else);
//! a directory left loose is narrowed at start with a log line. And a damaged store: the start is
//! refused with the offset and the way out, `--recover-store` keeps the intact prefix after a copy.
//! Its own test binary, because the umask is per process.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use romana_store::{EmbeddedStore, Store, StoreExt};
use romana_test_support::{Romanad, TempDir};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_romanad"))
}

fn set_umask_022() {
    // SAFETY: umask only sets this process's file creation mask; it cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(0o022);
    }
}

/// Every entry under `dir` (itself included) that is not owner-only, with its mode.
fn loose(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        if mode != if m.is_dir() { 0o700 } else { 0o600 } {
            out.push((p.clone(), mode));
        }
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

fn args(dir: &Path, more: &[&str]) -> Vec<String> {
    let mut a = vec!["--data-dir".to_owned(), dir.display().to_string()];
    a.extend(more.iter().map(|s| (*s).to_owned()));
    a
}

#[test]
fn everything_in_the_data_dir_is_owner_only() {
    set_umask_022();
    let tmp = TempDir::new("datadir-modes");
    let dir = tmp.path().join("data");
    let d = Romanad::start(bin(), &args(&dir, &["--tls-self-signed"])).expect("romanad");
    let found = files(&dir);
    for f in ["LOCK", "admin.credentials", "store.log", "tls/ca.pem", "tls/server.key", "tls/server.pem"] {
        assert!(found.contains(&f.to_owned()), "{f} in {found:?}");
    }
    assert_eq!(loose(&dir), vec![], "a new data directory");
    drop(d);

    // A data directory made loose by hand, with a file romanad does not know.
    std::fs::write(dir.join("signing.key"), b"secret").unwrap();
    for (p, m) in
        [("", 0o755), ("tls", 0o755), ("store.log", 0o644), ("signing.key", 0o644), ("tls/ca.pem", 0o644)]
    {
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
    let log = tmp.path().join("romanad.log");
    let d = Romanad::start_logged(bin(), &args(&dir, &["--tls-self-signed"]), Some(&log)).expect("romanad");
    assert_eq!(loose(&dir), vec![], "narrowed at start");
    let text = std::fs::read_to_string(&log).unwrap();
    for f in ["signing.key", "store.log", "tls/ca.pem"] {
        assert!(
            text.lines().any(|l| l.contains("narrowed") && l.contains(&dir.join(f).display().to_string())),
            "a log line for {f}: {text}"
        );
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_stops_the_start_and_recover_store_keeps_the_intact_prefix() {
    set_umask_022();
    let tmp = TempDir::new("datadir-damage");
    let dir = tmp.path().join("data");
    {
        let s = EmbeddedStore::open(&dir).await.unwrap();
        for i in 0..10 {
            s.put(&format!("/test/{i}"), vec![b'v'; 40]).await.unwrap();
        }
    }
    let path = dir.join("store.log");
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid..mid + 64].fill(0);
    std::fs::write(&path, &data).unwrap();

    let log = tmp.path().join("romanad.log");
    assert!(Romanad::start_logged(bin(), &args(&dir, &[]), Some(&log)).is_err(), "the start is refused");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("{} is damaged at offset", path.display()))
            && text.contains("--recover-store"),
        "the error names the file, the offset and the way out: {text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), data, "nothing changed");

    let out = Command::new(bin()).args(args(&dir, &["--recover-store"])).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("the whole file was saved as"), "{stdout}");
    let copies: Vec<String> =
        files(&dir).into_iter().filter(|f| f.starts_with("store.log.damaged-")).collect();
    assert_eq!(copies.len(), 1, "{:?}", files(&dir));
    assert_eq!(std::fs::read(dir.join(&copies[0])).unwrap(), data, "the copy is the damaged file");
    assert_eq!(loose(&dir), vec![], "the copy is owner-only too");

    let d = Romanad::start(bin(), &args(&dir, &[])).expect("starts after recovery");
    drop(d);
    let s = EmbeddedStore::open(&dir).await.unwrap();
    let (kept, _) = s.range("/test/").await.unwrap();
    assert!((1..10).contains(&kept.len()), "the records before the damage are kept: {}", kept.len());
    // And only a prefix: the keys are written in order.
    for (i, kv) in kept.iter().enumerate() {
        assert_eq!(kv.key, format!("/test/{i}"));
    }
}
