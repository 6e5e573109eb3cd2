//! A write that reached a member but whose answer never came is sent to another member (after
//! `POINT_TIMEOUT`), and a compare-and-swap transaction is still applied once. A real
//! three-member etcd; the first member is reached through a proxy on 127.0.0.1 that, once muted,
//! passes requests on but swallows every answer (a member that applied a write and then hung).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use romana_store::{Compare, Op, Store, StoreExt, Txn};
use romana_store_etcd::EtcdStore;
use romana_store_etcd::cluster::EtcdCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `upstream`; while `mute` is set, bytes coming back from upstream are dropped.
/// Its tasks end with the test's runtime.
async fn muting_proxy(upstream: String) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mute = Arc::new(AtomicBool::new(false));
    let muted = mute.clone();
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else { continue };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
            let muted = muted.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if !muted.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, mute)
}

/// The cluster, a store whose first member sits behind a muted proxy, and a store on the
/// others only (to read what was applied).
async fn setup(tag: &str) -> (EtcdCluster, EtcdStore, EtcdStore, Arc<AtomicBool>) {
    let etcd =
        EtcdCluster::start(tag, 3).expect("etcd starts").expect("etcd is installed (scripts/setup.sh)");
    let endpoints = etcd.endpoints();
    // Every call starts on the proxied member only if nothing failed there before: a member
    // without a leader yet would send the store on to the next one.
    for _ in 0..100 {
        if etcd.leader().await.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let direct = EtcdStore::connect(&endpoints[1..]).await.unwrap();
    let (proxy, mute) = muting_proxy(endpoints[0].clone()).await;
    let store = EtcdStore::connect(&[proxy, endpoints[1].clone(), endpoints[2].clone()]).await.unwrap();
    // The first call goes through the proxy while it still answers: the connection is up.
    store.put("/f/warm", b"up".to_vec()).await.unwrap();
    (etcd, store, direct, mute)
}

/// How many times `key` was written (its version), as the other members see it.
async fn version(direct: &EtcdStore, key: &str) -> i64 {
    direct.get(key).await.unwrap().map_or(0, |kv| kv.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_compare_and_swap_is_applied_once() {
    let (_etcd, store, direct, mute) = setup("failover-cas").await;
    let rev =
        store.txn(Txn::when(vec![], vec![Op::put("/f/counter", b"0".to_vec())])).await.unwrap().revision;
    let control_before = version(&direct, "/f/control").await;
    mute.store(true, Ordering::SeqCst);

    // Control: without a compare, the write the first member applied is applied again by the
    // second: so the call did go to two members (the proxy passed the request on, the answer
    // never came).
    store.txn(Txn::when(vec![], vec![Op::put("/f/control", b"x".to_vec())])).await.unwrap();
    assert_eq!(
        version(&direct, "/f/control").await - control_before,
        2,
        "the unguarded write reached both the muted member and the next"
    );

    // The same path with compare-and-swap on the revision, as every IPAM write: applied once.
    // Whichever attempt committed first, the other one's compare failed.
    let cas = Txn::when(
        vec![Compare::unchanged("/f/counter", rev)],
        vec![Op::put("/f/counter", b"1".to_vec()), Op::put("/f/log", b"once".to_vec())],
    );
    let got = store.txn(cas).await.expect("the second member answers");
    let counter = direct.get("/f/counter").await.unwrap().unwrap();
    assert_eq!(counter.value, b"1".to_vec());
    assert_eq!(counter.version, 2, "created, then changed once: {got:?}");
    assert_eq!(version(&direct, "/f/log").await, 1, "the transaction's other key written once");
    // The caller learns of the commit through its compare failing, as after any conflict: it
    // re-reads and finds its own change.
    assert!(!got.succeeded || counter.mod_revision == got.revision, "{got:?} {counter:?}");

    // Creating a key that must be absent (a name's first allocation): once.
    let create = Txn::when(vec![Compare::absent("/f/name")], vec![Op::put("/f/name", b"10.0.0.1".to_vec())]);
    store.txn(create).await.expect("the second member answers");
    assert_eq!(version(&direct, "/f/name").await, 1, "created once");
}
