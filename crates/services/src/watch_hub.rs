//! One store watch per romanad, shared by all of its `GET /watch` streams: a pump follows
//! every key under the store prefix once, turns each change into its JSON line once, keeps the
//! last few thousand batches (so a stream that resumes, or that listed a moment ago, starts from
//! memory) and hands each stream the lines its filter wants. On etcd this is one watch per
//! replica instead of one per agent stream.
//!
//! Back-pressure: every stream has a bounded queue. A stream that falls that far behind is cut
//! off with a reason (it ends after what is queued, with an `error` line) and its client resumes
//! from the last revision it saw, from memory or the store: no queue grows without bound.
//!
//! A stream is served here only while the hub has every change from the stream's first revision
//! on (`subscribe` gives `None` otherwise, and the handler opens a store watch of its own, as
//! before the hub).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::Bytes;
use romana_api::rest::{WatchEvent, WatchKind};
use romana_store::{Event, EventKind, Revision, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::keys::Keys;
use crate::watch_filter::Filter;

/// Batches one stream may have unsent before it is cut off.
pub const STREAM_QUEUE: usize = 1024;
/// A batch whose values pass this many bytes has its lines made on a background thread.
const BACKGROUND_BYTES: usize = 64 << 10;
/// Batches kept for streams that start behind the newest one.
const RECENT_BATCHES: usize = 4096;
/// ...and at most this many bytes of their lines.
const RECENT_BYTES: usize = 16 << 20;

/// One change as a stream sends it: the key relative to the store prefix, and its line.
#[derive(Debug, Clone)]
pub struct Line {
    pub key: String,
    pub bytes: Bytes,
}

/// The changes of one revision.
#[derive(Debug)]
pub struct Batch {
    pub revision: Revision,
    pub lines: Vec<Line>,
}

impl Batch {
    fn size(&self) -> usize {
        self.lines.iter().map(|l| l.bytes.len() + l.key.len()).sum()
    }

    /// The lines `f` wants, sharing their bytes.
    fn pick(&self, f: &Filter) -> Vec<Bytes> {
        self.lines.iter().filter(|l| f.wants(&l.key, self.revision)).map(|l| l.bytes.clone()).collect()
    }
}

/// A change's line (`put` with the value as JSON, or as a string when it is not JSON). A value
/// that is JSON on one line (what romanad writes) goes into the line as it is stored: checked,
/// not parsed into a tree and printed again (a stream's first listing is 55,000 lines at 5,000
/// policies x 50,000 endpoints, issue 22).
pub fn line(keys: &Keys, kind: WatchKind, kv: &romana_store::KeyValue) -> Line {
    let key = keys.relative(&kv.key).to_owned();
    let raw = kind == WatchKind::Put && one_line_json(&kv.value);
    let value = (kind == WatchKind::Put && !raw).then(|| {
        serde_json::from_slice::<serde_json::Value>(&kv.value)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&kv.value).into_owned()))
    });
    let ev = WatchEvent::with_value(kv.mod_revision, kind, key, value.as_ref());
    let mut text = serde_json::to_vec(&ev).expect("events serialize");
    if raw {
        // `{"revision":..,"kind":"put","key":".."}`: the value goes last, where the typed
        // event puts it.
        text.pop();
        text.extend_from_slice(b",\"value\":");
        text.extend_from_slice(&kv.value);
        text.push(b'}');
    }
    text.push(b'\n');
    Line { key: ev.key, bytes: Bytes::from(text) }
}

/// Whether `v` is one JSON value without a line break (a line of the stream can carry it).
fn one_line_json(v: &[u8]) -> bool {
    !v.iter().any(|b| matches!(b, b'\n' | b'\r'))
        && serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok()
}

fn batch(keys: &Keys, events: &[Event]) -> Batch {
    let revision = events.first().map_or(0, |e| e.kv.mod_revision);
    let lines = events
        .iter()
        .map(|e| {
            let kind = if e.kind == EventKind::Put { WatchKind::Put } else { WatchKind::Delete };
            line(keys, kind, &e.kv)
        })
        .collect();
    Batch { revision, lines }
}

/// What a stream reads: lines already due (`replay`), then its queue; when the queue ends,
/// `cut` says why if the hub ended it (fell behind, the store's watch failed).
#[derive(Debug)]
pub struct Subscription {
    pub replay: Vec<Bytes>,
    pub rx: mpsc::Receiver<Vec<Bytes>>,
    pub cut: oneshot::Receiver<String>,
}

struct Sub {
    filter: Filter,
    first: Revision,
    tx: mpsc::Sender<Vec<Bytes>>,
    cut: Option<oneshot::Sender<String>>,
}

impl Sub {
    fn end(mut self, why: String) {
        if let Some(c) = self.cut.take() {
            let _ = c.send(why);
        }
    }
}

#[derive(Default)]
struct Inner {
    /// The pump's watch is open: every change from `covered_from` on is in `recent` or to come.
    running: bool,
    covered_from: Revision,
    recent: VecDeque<Arc<Batch>>,
    recent_bytes: usize,
    subs: Vec<Sub>,
    /// The first key segments (`routes/`, `tenants/`) some stream wants, and whether one wants
    /// every key: a batch nobody wants (heartbeats under `liveness/`, allocations under `ipam/`
    /// for agents) skips the per-stream loop, which otherwise costs streams x heartbeats.
    wanted: Wanted,
    started: bool,
}

#[derive(Default)]
struct Wanted {
    segments: std::collections::HashSet<String>,
    any: bool,
}

impl Wanted {
    fn of(subs: &[Sub]) -> Wanted {
        let mut w = Wanted::default();
        for s in subs {
            w.add(&s.filter);
        }
        w
    }

    fn add(&mut self, f: &Filter) {
        for (p, _) in &f.prefixes {
            match p.find('/') {
                Some(i) => {
                    self.segments.insert(p[..=i].to_owned());
                }
                None => self.any = true,
            }
        }
    }

    fn wants(&self, b: &Batch) -> bool {
        self.any
            || b.lines.iter().any(|l| l.key.find('/').is_some_and(|i| self.segments.contains(&l.key[..=i])))
    }
}

/// The shared watch of one romanad.
pub struct Hub {
    store: Arc<dyn Store>,
    keys: Keys,
    queue: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.lock();
        f.debug_struct("Hub").field("running", &i.running).field("streams", &i.subs.len()).finish()
    }
}

/// Counts of a hub, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    pub running: bool,
    pub streams: usize,
    pub covered_from: Revision,
}

impl Hub {
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Arc<Hub> {
        Hub::with_queue(store, keys, STREAM_QUEUE)
    }

    /// A hub whose streams may fall `queue` batches behind (tests use a small one).
    pub fn with_queue(store: Arc<dyn Store>, keys: Keys, queue: usize) -> Arc<Hub> {
        Arc::new(Hub { store, keys, queue: queue.max(1), inner: Mutex::new(Inner::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> HubStats {
        let i = self.lock();
        HubStats { running: i.running, streams: i.subs.len(), covered_from: i.covered_from }
    }

    /// Starts the pump on first use (a romanad nobody watches keeps no watch open).
    pub fn start(self: &Arc<Self>) {
        let mut i = self.lock();
        if !i.started {
            i.started = true;
            tokio::spawn(pump(Arc::downgrade(self)));
        }
    }

    /// A stream for `filter`, or `None` when the hub does not have every change from the
    /// filter's first revision on (not running yet, or that revision is older than its memory).
    pub fn subscribe(self: &Arc<Self>, filter: Filter) -> Option<Subscription> {
        self.start();
        let first = filter.first();
        let mut i = self.lock();
        if !i.running || first < i.covered_from {
            return None;
        }
        let replay: Vec<Bytes> =
            i.recent.iter().filter(|b| b.revision >= first).flat_map(|b| b.pick(&filter)).collect();
        let (tx, rx) = mpsc::channel(self.queue);
        let (cut_tx, cut) = oneshot::channel();
        i.subs.retain(|s| !s.tx.is_closed());
        i.wanted.add(&filter);
        i.subs.push(Sub { filter, first, tx, cut: Some(cut_tx) });
        Some(Subscription { replay, rx, cut })
    }

    /// Hands a batch to every stream that wants some of it; cuts off the streams that are full.
    fn publish(&self, b: Batch) {
        let b = Arc::new(b);
        let mut i = self.lock();
        let queue = self.queue;
        let subs = if i.wanted.wants(&b) { std::mem::take(&mut i.subs) } else { Vec::new() };
        let before = subs.len();
        for s in subs {
            if s.tx.is_closed() {
                continue;
            }
            if b.revision < s.first {
                i.subs.push(s);
                continue;
            }
            let lines = b.pick(&s.filter);
            if lines.is_empty() {
                i.subs.push(s);
                continue;
            }
            match s.tx.try_send(lines) {
                Ok(()) => i.subs.push(s),
                Err(mpsc::error::TrySendError::Full(_)) => s.end(format!(
                    "this stream fell {queue} changes behind and was ended at revision {}; resume from the last revision seen",
                    b.revision
                )),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if i.subs.len() < before {
            i.wanted = Wanted::of(&i.subs);
        }
        i.recent_bytes += b.size();
        i.recent.push_back(b);
        while i.recent.len() > RECENT_BATCHES || (i.recent_bytes > RECENT_BYTES && i.recent.len() > 1) {
            if let Some(old) = i.recent.pop_front() {
                i.recent_bytes -= old.size();
                i.covered_from = old.revision + 1;
            }
        }
    }

    /// The pump's watch is open from `from`; `fresh`: changes before it were missed (first
    /// start, or compacted away), so what is kept starts over.
    fn opened(&self, from: Revision, fresh: bool) {
        let mut i = self.lock();
        if fresh {
            i.recent.clear();
            i.recent_bytes = 0;
            i.covered_from = from;
        }
        i.running = true;
    }

    /// Ends every stream with `why`; with `down`, new streams are not served until the pump's
    /// watch is open again.
    fn cut_all(&self, why: &str, down: bool) {
        let mut i = self.lock();
        if down {
            i.running = false;
        }
        for s in std::mem::take(&mut i.subs) {
            s.end(why.to_owned());
        }
        i.wanted = Wanted::default();
    }
}

/// Follows the store until the hub is dropped. A failed watch is reopened from the revision
/// after the last seen, at once; streams are ended only when that fails too (the store is
/// away: they come back through the store's own watch, or its 503) or when the store compacted
/// what the hub had not yet seen.
async fn pump(hub: Weak<Hub>) {
    let mut last: Option<Revision> = None;
    let mut failures = 0u32;
    loop {
        let Some(h) = hub.upgrade() else { return };
        let root = h.keys.under("");
        let (from, fresh) = match last {
            Some(r) => (r + 1, false),
            None => match h.store.revision().await {
                Ok(r) => (r + 1, true),
                Err(e) => {
                    failures += 1;
                    h.cut_all(&e.to_string(), true);
                    drop(h);
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            },
        };
        let mut rx = match h.store.watch(&root, from).await {
            Ok(rx) => rx,
            Err(e) => {
                failures += 1;
                if matches!(e, StoreError::Compacted { .. }) {
                    last = None;
                    h.cut_all(&format!("{e}; the replica's watch started over"), true);
                } else if failures >= 2 {
                    h.cut_all(&e.to_string(), true);
                }
                drop(h);
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        h.opened(from, fresh);
        let keys = h.keys.clone();
        drop(h);
        let why = loop {
            match rx.recv().await {
                Some(Ok(events)) if events.is_empty() => {}
                Some(Ok(events)) => {
                    let b = if events.iter().map(|e| e.kv.value.len()).sum::<usize>() > BACKGROUND_BYTES {
                        // A large batch (the route manager's sets after a new block) is tens of ms
                        // of JSON: off the runtime's workers, still in order (the pump waits).
                        let k = keys.clone();
                        crate::background::run(move || batch(&k, &events)).await
                    } else {
                        batch(&keys, &events)
                    };
                    let Some(h) = hub.upgrade() else { return };
                    last = Some(b.revision);
                    h.publish(b);
                }
                Some(Err(e)) => break e,
                None => break StoreError::Unavailable("the store's watch ended".into()),
            }
        };
        let Some(h) = hub.upgrade() else { return };
        // The watch had opened: one failure so far, reopened at once.
        failures = 1;
        if matches!(why, StoreError::Compacted { .. }) {
            last = None;
            h.cut_all(&format!("{why}; the replica's watch started over"), true);
        }
        tracing::warn!(error = %why, "the shared watch failed; reopening it");
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(2))
}

#[cfg(test)]
#[path = "watch_hub_tests.rs"]
mod tests;
