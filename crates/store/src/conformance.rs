//! The conformance suite every backend must pass: call [`run`] with a store and a key prefix that
//! nothing else uses. Panics (with the failing check) on the first violation.

use std::sync::Arc;
use std::time::Duration;

use crate::types::{Cmp, Compare, EventKind, Op, Store, StoreError, StoreExt, Txn};

fn k(prefix: &str, key: &str) -> String {
    format!("{prefix}{key}")
}

/// Runs every check against `store` under `prefix`.
pub async fn run(store: Arc<dyn Store>, prefix: &str) {
    basics(&*store, prefix).await;
    transactions(&*store, prefix).await;
    watches(&*store, prefix).await;
    leases(&*store, prefix).await;
    contention(Arc::clone(&store), prefix).await;
}

async fn basics(s: &dyn Store, p: &str) {
    let r0 = s.revision().await.expect("revision");
    let r1 = s.put(&k(p, "a"), b"1".to_vec()).await.expect("put");
    assert!(r1 > r0, "a put raises the revision");
    let a = s.get(&k(p, "a")).await.expect("get").expect("a exists");
    assert_eq!((a.value.as_slice(), a.create_revision, a.mod_revision, a.version), (&b"1"[..], r1, r1, 1));
    let r2 = s.put(&k(p, "a"), b"2".to_vec()).await.expect("put");
    let a = s.get(&k(p, "a")).await.expect("get").expect("a exists");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (r1, r2, 2),
        "create revision stays, version counts"
    );
    s.put(&k(p, "b/1"), b"x".to_vec()).await.expect("put");
    s.put(&k(p, "b/2"), b"y".to_vec()).await.expect("put");
    s.put(&k(p, "c"), b"z".to_vec()).await.expect("put");
    let (list, rev) = s.range(&k(p, "b/")).await.expect("range");
    assert_eq!(list.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![k(p, "b/1"), k(p, "b/2")]);
    assert!(rev >= r2);
    assert!(s.get(&k(p, "missing")).await.expect("get").is_none());
    s.delete(&k(p, "c")).await.expect("delete");
    assert!(s.get(&k(p, "c")).await.expect("get").is_none());
    let before = s.revision().await.expect("revision");
    s.delete(&k(p, "c")).await.expect("deleting an absent key is fine");
    assert_eq!(s.revision().await.expect("revision"), before, "a delete of nothing changes nothing");
}

async fn transactions(s: &dyn Store, p: &str) {
    let key = k(p, "txn/x");
    let create = || Txn {
        compare: vec![Compare::absent(&key)],
        success: vec![Op::put(&key, b"mine".to_vec())],
        failure: vec![Op::Get { key: key.clone() }],
    };
    let first = s.txn(create()).await.expect("txn");
    assert!(first.succeeded, "create-if-absent succeeds once");
    let second = s.txn(create()).await.expect("txn");
    assert!(!second.succeeded, "and fails the second time");
    assert_eq!(second.reads[0][0].value, b"mine".to_vec(), "failure ops run");
    assert_eq!(second.revision, first.revision, "a failed compare writes nothing");
    let stale =
        Txn::when(vec![Compare::unchanged(&key, first.revision - 1)], vec![Op::put(&key, b"no".to_vec())]);
    assert!(!s.txn(stale).await.expect("txn").succeeded, "mod revision compare");
    let fresh =
        Txn::when(vec![Compare::unchanged(&key, first.revision)], vec![Op::put(&key, b"yes".to_vec())]);
    assert!(s.txn(fresh).await.expect("txn").succeeded);
    let by_value =
        Txn::when(vec![Compare::Value(key.clone(), Cmp::Equal, b"yes".to_vec())], vec![Op::delete(&key)]);
    assert!(s.txn(by_value).await.expect("txn").succeeded, "value compare");
    // Several writes in one transaction share one revision.
    let multi = s
        .txn(Txn::when(
            vec![],
            vec![Op::put(k(p, "txn/m1"), b"1".to_vec()), Op::put(k(p, "txn/m2"), b"2".to_vec())],
        ))
        .await
        .expect("txn");
    let m1 = s.get(&k(p, "txn/m1")).await.expect("get").expect("m1");
    let m2 = s.get(&k(p, "txn/m2")).await.expect("get").expect("m2");
    assert_eq!((m1.mod_revision, m2.mod_revision), (multi.revision, multi.revision));
    let del = s.txn(Txn::when(vec![], vec![Op::DeletePrefix { prefix: k(p, "txn/m") }])).await.expect("txn");
    assert!(del.revision > multi.revision);
    assert!(s.range(&k(p, "txn/m")).await.expect("range").0.is_empty());
}

async fn next_batch(w: &mut crate::WatchStream) -> Vec<crate::Event> {
    tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .expect("watch delivers within 5 s")
        .expect("watch stream open")
        .expect("no watch error")
}

async fn watches(s: &dyn Store, p: &str) {
    let wp = k(p, "w/");
    let r1 = s.put(&format!("{wp}1"), b"a".to_vec()).await.expect("put");
    let r2 = s.put(&format!("{wp}2"), b"b".to_vec()).await.expect("put");
    s.put(&k(p, "elsewhere"), b"z".to_vec()).await.expect("put");
    let mut w = s.watch(&wp, r1).await.expect("watch from the past");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_batch(&mut w).await);
    }
    assert_eq!(
        seen.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
        vec![r1, r2],
        "resumes from a revision"
    );
    s.delete(&format!("{wp}1")).await.expect("delete");
    let live = next_batch(&mut w).await;
    assert_eq!(
        (live[0].kind, live[0].kv.key.clone()),
        (EventKind::Delete, format!("{wp}1")),
        "live delete, prefix only"
    );
    let mut now = s.watch(&wp, 0).await.expect("watch from now");
    let r3 = s.put(&format!("{wp}3"), b"c".to_vec()).await.expect("put");
    let e = next_batch(&mut now).await;
    assert_eq!((e[0].kind, e[0].kv.mod_revision), (EventKind::Put, r3), "watch from 0 sees only new changes");
}

async fn leases(s: &dyn Store, p: &str) {
    let lease = s.lease_grant(1).await.expect("grant");
    let key = k(p, "lease/alive");
    s.txn(Txn::when(vec![], vec![Op::Put { key: key.clone(), value: b"1".to_vec(), lease }]))
        .await
        .expect("put with lease");
    assert_eq!(s.get(&key).await.expect("get").expect("leased key").lease, lease);
    let mut w = s.watch(&key, 0).await.expect("watch");
    // Kept alive past its TTL, the key stays.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.lease_keepalive(lease).await.expect("keepalive");
    }
    assert!(s.get(&key).await.expect("get").is_some(), "a kept-alive lease keeps its key");
    // Left alone, it expires and its key goes, with a delete event.
    let e = tokio::time::timeout(Duration::from_secs(6), w.recv()).await.expect("expiry within 6 s");
    let e = e.expect("open").expect("no error");
    assert_eq!((e[0].kind, e[0].kv.key.clone()), (EventKind::Delete, key.clone()));
    let gone = s.lease_keepalive(lease).await;
    assert!(matches!(gone, Err(StoreError::LeaseNotFound(_))), "keepalive of an expired lease: {gone:?}");
    let other = s.lease_grant(30).await.expect("grant");
    let key2 = k(p, "lease/revoked");
    s.txn(Txn::when(vec![], vec![Op::Put { key: key2.clone(), value: vec![], lease: other }]))
        .await
        .expect("put");
    s.lease_revoke(other).await.expect("revoke");
    assert!(s.get(&key2).await.expect("get").is_none(), "revoking deletes the lease's keys");
    let bad = s
        .txn(Txn::when(vec![], vec![Op::Put { key: k(p, "lease/none"), value: vec![], lease: 987_654 }]))
        .await;
    assert!(bad.is_err(), "a put with an unknown lease fails: {bad:?}");
}

async fn contention(s: Arc<dyn Store>, p: &str) {
    // 20 tasks race to increment a counter with compare-and-swap; every success counts once.
    let key = k(p, "counter");
    s.put(&key, b"0".to_vec()).await.expect("put");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, key) = (Arc::clone(&s), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for _ in 0..10 {
                loop {
                    let cur = s.get(&key).await.expect("get").expect("counter");
                    let n: u64 = String::from_utf8_lossy(&cur.value).parse().expect("number");
                    let t = Txn::when(
                        vec![Compare::unchanged(&key, cur.mod_revision)],
                        vec![Op::put(&key, (n + 1).to_string())],
                    );
                    if s.txn(t).await.expect("txn").succeeded {
                        won += 1;
                        break;
                    }
                }
            }
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    let v = s.get(&key).await.expect("get").expect("counter");
    assert_eq!(String::from_utf8_lossy(&v.value), total.to_string());
    assert_eq!(total, 200);
}
