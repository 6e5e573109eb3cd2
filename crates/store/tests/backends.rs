//! The conformance suite against the memory and embedded backends, and crash recovery of the embedded log.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use romana_store::{EmbeddedStore, MemStore, Store, StoreExt, conformance};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("romana-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms() {
    conformance::run(Arc::new(MemStore::new()), "/t/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms_and_survives_reopen() {
    let dir = temp_dir("conf");
    {
        let s = Arc::new(EmbeddedStore::open(&dir).await.expect("open"));
        conformance::run(s.clone() as Arc<dyn Store>, "/t/").await;
        s.put("/t/last", b"kept".to_vec()).await.expect("put");
    }
    // Let the committer thread see the shutdown; everything acknowledged is on disk already.
    let s = EmbeddedStore::open(&dir).await.expect("reopen");
    assert_eq!(s.get("/t/last").await.expect("get").expect("kept").value, b"kept".to_vec());
    assert_eq!(s.get("/t/a").await.expect("get").expect("a").version, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_refuses_a_second_opener_and_drops_a_torn_tail() {
    let dir = temp_dir("torn");
    let s = EmbeddedStore::open(&dir).await.expect("open");
    assert!(EmbeddedStore::open(&dir).await.is_err(), "the data dir is locked");
    let r = s.put("/x", b"1".to_vec()).await.expect("put");
    let path = s.path().to_owned();
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Simulate a crash in the middle of appending the next record.
    let mut data = std::fs::read(&path).expect("read log");
    data.extend_from_slice(&[42, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&path, &data).expect("write log");
    let s = EmbeddedStore::open(&dir).await.expect("reopen after a torn write");
    assert_eq!(s.get("/x").await.expect("get").expect("x").mod_revision, r);
    assert_eq!(std::fs::metadata(&path).expect("log").len() as usize, data.len() - 7, "torn tail removed");
    s.put("/y", b"2".to_vec()).await.expect("writes continue");
    let _ = std::fs::remove_dir_all(&dir);
}
