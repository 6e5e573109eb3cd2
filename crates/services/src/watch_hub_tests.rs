//! The shared watch against the in-memory store: streams get exactly what their filters want,
//! resume from memory, fall back when they start before it, and a stream that stops reading is
//! cut off with a reason instead of queueing without bound.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::watch_scope::{ADMIN_PREFIXES, SERVICE_PREFIXES};
use romana_store::{MemStore, StoreExt};

async fn running_hub(queue: usize) -> (Arc<dyn Store>, Keys, Arc<Hub>) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let keys = Keys::new("/romana");
    let hub = Hub::with_queue(store.clone(), keys.clone(), queue);
    hub.start();
    // Not a timing assertion: the pump opens its watch as soon as it runs.
    for _ in 0..10_000 {
        if hub.stats().running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(hub.stats().running, "the pump never opened its watch");
    (store, keys, hub)
}

fn filter(prefixes: &[&str], from: Revision, allowed: &'static [&'static str]) -> Filter {
    let ps: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
    Filter::from(&ps, from, allowed)
}

/// The keys of the lines `rx` has until it holds a line of `until` (the last change made).
async fn keys_until(rx: &mut mpsc::Receiver<Vec<Bytes>>, until: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(lines) = rx.recv().await {
        for l in lines {
            let ev: WatchEvent = serde_json::from_slice(&l).unwrap();
            out.push(ev.key);
        }
        if out.last().is_some_and(|k| k == until) {
            return out;
        }
    }
    panic!("the stream ended before {until}: {out:?}");
}

fn keys_of(lines: &[Bytes]) -> Vec<String> {
    lines.iter().map(|l| serde_json::from_slice::<WatchEvent>(l).unwrap().key).collect()
}

#[tokio::test]
async fn each_stream_gets_what_its_filter_wants() {
    let (store, keys, hub) = running_hub(STREAM_QUEUE).await;
    let from = hub.stats().covered_from;
    let mut agent = hub.subscribe(filter(&["routes/h1", "tenants/"], from, SERVICE_PREFIXES)).unwrap();
    let mut all = hub.subscribe(filter(&[""], from, SERVICE_PREFIXES)).unwrap();
    let mut admin = hub.subscribe(filter(&[""], from, ADMIN_PREFIXES)).unwrap();
    assert_eq!(hub.stats().streams, 3);
    for k in ["routes/h2", "routes/h1", "auth/keys/k1", "counters/c", "tenants/red", "vips/end"] {
        store.put(&keys.under(k), b"{}".to_vec()).await.unwrap();
    }
    assert_eq!(keys_until(&mut agent.rx, "tenants/red").await, ["routes/h1", "tenants/red"]);
    assert_eq!(
        keys_until(&mut all.rx, "vips/end").await,
        ["routes/h2", "routes/h1", "tenants/red", "vips/end"]
    );
    // Never `auth/`, whatever the role; the admin also sees romanad's counters.
    assert_eq!(
        keys_until(&mut admin.rx, "vips/end").await,
        ["routes/h2", "routes/h1", "counters/c", "tenants/red", "vips/end"]
    );
    assert!(agent.replay.is_empty() && all.replay.is_empty());
}

#[tokio::test]
async fn a_stream_resumes_from_memory_or_is_sent_to_the_store() {
    let (store, keys, hub) = running_hub(STREAM_QUEUE).await;
    let first = hub.stats().covered_from;
    // Before the hub's first revision: it cannot say what happened then.
    assert!(hub.subscribe(filter(&["tenants/"], first - 1, SERVICE_PREFIXES)).is_none());
    let mut revs = Vec::new();
    for k in ["tenants/a", "tenants/b", "segments/s", "tenants/c"] {
        revs.push(store.put(&keys.under(k), b"1".to_vec()).await.unwrap());
    }
    // The last change reached the hub once a stream opened before it has it.
    let mut probe = hub.subscribe(filter(&[""], first, SERVICE_PREFIXES)).unwrap();
    keys_until(&mut probe.rx, "tenants/c").await;
    let from_b = hub.subscribe(filter(&["tenants/"], revs[1], SERVICE_PREFIXES)).unwrap();
    assert_eq!(keys_of(&from_b.replay), ["tenants/b", "tenants/c"]);
    // Per prefix: tenants/ from the start, segments/ only after its change.
    let f = Filter {
        prefixes: vec![("segments/".into(), revs[3]), ("tenants/".into(), first)],
        allowed: SERVICE_PREFIXES,
    };
    assert_eq!(keys_of(&hub.subscribe(f).unwrap().replay), ["tenants/a", "tenants/b", "tenants/c"]);
}

#[tokio::test]
async fn a_stream_that_stops_reading_is_cut_off_with_a_reason() {
    let (store, keys, hub) = running_hub(2).await;
    let from = hub.stats().covered_from;
    let slow = hub.subscribe(filter(&["tenants/"], from, SERVICE_PREFIXES)).unwrap();
    let mut quick = hub.subscribe(filter(&["tenants/"], from, SERVICE_PREFIXES)).unwrap();
    let mut seen = Vec::new();
    for i in 0..6 {
        let k = format!("tenants/t{i}");
        store.put(&keys.under(&k), b"1".to_vec()).await.unwrap();
        // The quick stream reads each change: it is never cut off.
        seen.extend(keys_until(&mut quick.rx, &k).await);
    }
    assert_eq!(seen.len(), 6);
    let Subscription { mut rx, cut, .. } = slow;
    // What was queued is still delivered, then the stream ends and says why.
    assert_eq!(keys_until(&mut rx, "tenants/t1").await, ["tenants/t0", "tenants/t1"]);
    assert!(rx.recv().await.is_none(), "the slow stream is ended, not queueing");
    let why = cut.await.unwrap();
    assert!(why.contains("fell 2 changes behind") && why.contains("resume"), "{why}");
    assert_eq!(hub.stats().streams, 1, "only the quick stream is left");
}

#[tokio::test]
async fn streams_whose_client_left_are_dropped() {
    let (store, keys, hub) = running_hub(STREAM_QUEUE).await;
    let from = hub.stats().covered_from;
    let gone = hub.subscribe(filter(&["vips/"], from, SERVICE_PREFIXES)).unwrap();
    let mut kept = hub.subscribe(filter(&["tenants/"], from, SERVICE_PREFIXES)).unwrap();
    drop(gone);
    store.put(&keys.under("tenants/x"), b"1".to_vec()).await.unwrap();
    keys_until(&mut kept.rx, "tenants/x").await;
    assert_eq!(hub.stats().streams, 1);
}

#[test]
fn batches_nobody_wants_skip_the_streams() {
    let b = |key: &str| Batch { revision: 1, lines: vec![Line { key: key.into(), bytes: Bytes::new() }] };
    let mut w = Wanted::default();
    w.add(&filter(&["routes/h1", "tenants/"], 1, SERVICE_PREFIXES));
    for (key, want) in
        [("liveness/h1", false), ("ipam/names/x", false), ("routes/h2", true), ("tenants/r", true)]
    {
        assert_eq!(w.wants(&b(key)), want, "{key}");
    }
    // A prefix without a segment (`""`, `ipam`) wants every batch.
    w.add(&filter(&["ipam"], 1, SERVICE_PREFIXES));
    assert!(w.wants(&b("liveness/h1")));
}

#[tokio::test]
async fn a_large_batch_made_off_the_runtime_keeps_its_place_and_its_lines() {
    let (store, keys, hub) = running_hub(STREAM_QUEUE).await;
    let from = hub.stats().covered_from;
    let mut all = hub.subscribe(filter(&["routes/"], from, SERVICE_PREFIXES)).unwrap();
    // One transaction over BACKGROUND_BYTES (its lines are made on a background thread), between
    // two small ones: the stream gets all three, in revision order, each line as `line` makes it.
    let big = serde_json::to_vec(&serde_json::json!({"routes": "x".repeat(BACKGROUND_BYTES)})).unwrap();
    store.put(&keys.under("routes/a"), b"{\"n\":1}".to_vec()).await.unwrap();
    let ops = vec![
        romana_store::Op::put(keys.under("routes/b"), big.clone()),
        romana_store::Op::put(keys.under("routes/c"), big),
    ];
    store.txn(romana_store::Txn::when(vec![], ops)).await.unwrap();
    store.put(&keys.under("routes/d"), b"{\"n\":2}".to_vec()).await.unwrap();
    assert_eq!(keys_until(&mut all.rx, "routes/d").await, ["routes/a", "routes/b", "routes/c", "routes/d"]);
    let (kvs, _) = store.range(&keys.under("routes/")).await.unwrap();
    let replay = hub.subscribe(filter(&["routes/"], from, SERVICE_PREFIXES)).unwrap().replay;
    let want: Vec<Bytes> = kvs.iter().map(|kv| line(&keys, WatchKind::Put, kv).bytes).collect();
    assert_eq!(replay, want, "the lines kept are the ones `line` makes");
}

/// Each stored value's line: the event a client parses is the one the typed path made (value
/// parsed and printed again), whether the value went in as stored or not.
#[test]
fn lines_carry_the_value_as_stored_when_it_is_one_line_of_json() {
    let keys = Keys::new("/romana");
    let check = |kind: WatchKind, value: &[u8], raw: bool| {
        let kv = romana_store::KeyValue {
            key: keys.under("endpoints/a\"b"),
            value: value.to_vec(),
            create_revision: 3,
            mod_revision: 7,
            version: 1,
            lease: 0,
        };
        let got = line(&keys, kind, &kv);
        assert_eq!(got.key, "endpoints/a\"b");
        let text = std::str::from_utf8(&got.bytes).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "one line: {text:?}");
        let typed = (kind == WatchKind::Put).then(|| {
            serde_json::from_slice::<serde_json::Value>(value)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(value).into_owned()))
        });
        let want = WatchEvent::with_value(7, kind, got.key.clone(), typed.as_ref());
        assert_eq!(serde_json::from_str::<WatchEvent>(text).unwrap(), want, "{text}");
        let as_stored = format!("\"value\":{}}}\n", String::from_utf8_lossy(value));
        assert_eq!(text.ends_with(&as_stored), raw, "{text}");
    };
    check(WatchKind::Put, br#"{"name":"a","ip":"10.0.0.2","labels":{"z":"1","a":"2"}}"#, true);
    check(WatchKind::Put, b"  [1, 2.5, null] ", true);
    // Not JSON, JSON over several lines, nothing: as before (a string, a re-printed value).
    check(WatchKind::Put, b"not json", false);
    check(WatchKind::Put, b"{\n  \"name\": \"a\"\n}", false);
    check(WatchKind::Put, b"", false);
    check(WatchKind::Put, b"{\"a\":1} {\"b\":2}", false);
    check(WatchKind::Delete, b"", false);
}
