//! Reads past gRPC's 4 MiB message limit against a real etcd: a range over 21 MB comes back whole
//! and as one snapshot while another client writes, and a watch that catches up over 8 MiB of
//! changes delivers every one.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use romana_store::{EventKind, Op, Revision, Store, Txn};
use romana_store_etcd::EtcdStore;
use romana_store_etcd::server::EtcdServer;

const VALUE: usize = 10 * 1024;
const PREFIX: &str = "/big/";

fn value(tag: u8, i: usize) -> Vec<u8> {
    let mut v = vec![tag; VALUE];
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v
}

/// `n` keys of 10 KiB in transactions of 100 (1 MiB, under etcd's 1.5 MiB request limit).
async fn fill(store: &EtcdStore, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let ops = chunk.iter().map(|i| Op::put(format!("{PREFIX}k{i:05}"), value(b'a', *i))).collect();
        assert!(store.txn(Txn::when(vec![], ops)).await.unwrap().succeeded);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_over_20_mib_is_whole_and_one_snapshot() {
    let etcd = EtcdServer::start("large-range").unwrap().expect("etcd is installed (scripts/setup.sh)");
    let store = Arc::new(EtcdStore::connect(&etcd.endpoints()).await.unwrap());
    let n = 2_100;
    fill(&store, n).await;

    // Another client rewrites existing keys and adds new ones while the range reads its pages.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut writes: Vec<(String, Revision)> = Vec::new();
            let mut j = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Spread over the key space, and new keys between existing ones.
                let old = format!("{PREFIX}k{:05}", (j * 7_919) % n);
                let new = format!("{PREFIX}k{:05}-new", (j * 104_729) % n);
                let txn =
                    Txn::when(vec![], vec![Op::put(&old, value(b'b', j)), Op::put(&new, value(b'c', j))]);
                let rev = store.txn(txn).await.unwrap().revision;
                writes.push((old, rev));
                writes.push((new, rev));
                j += 1;
            }
            writes
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (kvs, rev) = store.range(PREFIX).await.expect("a range over 20 MiB reads");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let during = writes.iter().filter(|(_, r)| *r > rev).count();
    eprintln!("range at revision {rev}: {} keys; {} writes landed after that revision", kvs.len(), during);
    assert!(during > 0, "the writer kept writing while the range read (otherwise this proves nothing)");

    // What the store held at `rev`: the filled keys, plus every write at or before `rev`.
    let mut want: BTreeMap<String, Revision> = (0..n).map(|i| (format!("{PREFIX}k{i:05}"), 0)).collect();
    for (k, r) in &writes {
        if *r <= rev {
            want.insert(k.clone(), *r);
        }
    }
    let got: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    let want_keys: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(got.len(), want_keys.len(), "one snapshot: no key written after revision {rev}, none missing");
    assert_eq!(got, want_keys, "keys in order, each once");
    for kv in &kvs {
        assert!(
            kv.mod_revision <= rev,
            "{} was read at {} after the snapshot's {rev}",
            kv.key,
            kv.mod_revision
        );
        let last = want[&kv.key];
        if last > 0 {
            assert_eq!(kv.mod_revision, last, "{}: the value as of revision {rev}", kv.key);
        }
    }
    let bytes: usize = kvs.iter().map(|kv| kv.value.len()).sum();
    assert!(bytes > 20 << 20, "more than 20 MiB read ({bytes} bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_catching_up_over_8_mib_delivers_every_change() {
    let etcd = EtcdServer::start("large-watch").unwrap().expect("etcd is installed (scripts/setup.sh)");
    let store = EtcdStore::connect(&etcd.endpoints()).await.unwrap();
    let first = store.revision().await.unwrap() + 1;
    // 800 changes of 10 KiB, one revision each: etcd sends a catching-up watch up to 1,000
    // revisions in one response, here about 8 MiB.
    let n = 800;
    for i in 0..n {
        store
            .txn(Txn::when(vec![], vec![Op::put(format!("{PREFIX}w{i:04}"), value(b'w', i))]))
            .await
            .unwrap();
    }
    let mut watch = store.watch(PREFIX, first).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < n {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(20), watch.recv())
            .await
            .expect("the watch delivers within 20 s")
            .expect("the watch stays open")
            .expect("no watch error");
        for e in batch {
            assert_eq!(e.kind, EventKind::Put);
            assert_eq!(e.kv.value.len(), VALUE);
            seen.push(e.kv.key);
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("{PREFIX}w{i:04}")).collect();
    assert_eq!(seen, want, "every change, in order, once");
}

/// etcd refuses a request over its limit (1.5 MiB by default): five values of 400 KiB, a route
/// manager's sets in a leaf of 5,000 blocks, in one transaction fail and write nothing; in
/// transactions of two (what `route_manager::batches` makes of them) they are all written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_the_request_limit_is_refused_and_batches_under_it_pass() {
    let etcd = EtcdServer::start("large-txn").unwrap().expect("etcd is installed (scripts/setup.sh)");
    let store = EtcdStore::connect(&etcd.endpoints()).await.unwrap();
    let put = |i: usize| Op::put(format!("{PREFIX}set{i}"), vec![b'r'; 400 * 1024]);
    let all = store.txn(Txn::when(vec![], (0..5).map(put).collect())).await;
    assert!(all.is_err(), "2 MiB in one request: {:?}", all.map(|r| r.succeeded));
    assert!(store.range(PREFIX).await.unwrap().0.is_empty(), "nothing written");
    for pair in [0..2, 2..4, 4..5] {
        assert!(store.txn(Txn::when(vec![], pair.map(put).collect())).await.unwrap().succeeded);
    }
    assert_eq!(store.range(PREFIX).await.unwrap().0.len(), 5);
}
