//! The in-memory state machine behind the memory and embedded backends: keys with revisions,
//! transactions, an event history for watches that resume, and leases. Time is an argument.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::types::{
    Compare, Event, EventKind, KeyValue, LeaseId, Op, Result, Revision, StoreError, Txn, TxnResult,
    WatchStream,
};

/// A change as the log records it; replaying changes rebuilds the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Write {
        revision: Revision,
        writes: Vec<Write>,
    },
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    /// Ends a lease; its keys are deleted at `revision` (if it had any).
    LeaseRevoke {
        id: LeaseId,
        revision: Revision,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    Put { key: String, value: Vec<u8>, lease: LeaseId },
    Delete { key: String },
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    deadline: Instant,
    keys: BTreeSet<String>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Result<Vec<Event>>>,
}

/// Everything needed to rebuild the state (written as a snapshot record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub revision: Revision,
    pub next_lease: LeaseId,
    pub leases: Vec<(LeaseId, i64)>,
    pub kvs: Vec<KeyValue>,
}

/// A stored value, with its key shared beside the map's: a range takes both without copying
/// them under the engine's lock (`range_shared`).
#[derive(Debug, Clone)]
struct Stored {
    key: Arc<str>,
    value: Arc<[u8]>,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    lease: LeaseId,
}

impl Stored {
    fn kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// One entry of `Engine::range_shared`: its key and value still shared with the engine.
#[derive(Debug)]
pub(crate) struct SharedKv(Stored);

impl SharedKv {
    /// The entry as the store's callers get it (key and value copied here, outside the lock).
    pub fn into_kv(self) -> KeyValue {
        self.0.kv(&self.0.key)
    }
}

#[derive(Debug)]
pub(crate) struct Engine {
    kv: BTreeMap<String, Stored>,
    revision: Revision,
    history: VecDeque<Event>,
    history_limit: usize,
    history_bytes: usize,
    /// Watches may start at this revision or later.
    oldest: Revision,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<Watcher>,
}

/// Watches can resume within the last 100,000 changes, kept to at most 4 MiB of keys and values
/// (older revisions answer "compacted" and the watcher lists again).
const DEFAULT_HISTORY: usize = 100_000;
const HISTORY_MAX_BYTES: usize = 4 << 20;

fn event_bytes(e: &Event) -> usize {
    e.kv.key.len() + e.kv.value.len() + std::mem::size_of::<Event>()
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            kv: BTreeMap::new(),
            revision: 0,
            history: VecDeque::new(),
            history_limit: DEFAULT_HISTORY,
            history_bytes: 0,
            oldest: 1,
            leases: BTreeMap::new(),
            next_lease: 1,
            watchers: Vec::new(),
        }
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.kv.get(key).map(|s| s.kv(key))
    }

    /// The entries under `prefix`, in key order.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Stored)> + 'a {
        self.kv.range(prefix.to_owned()..).take_while(move |(k, _)| k.starts_with(prefix))
    }

    pub fn range(&self, prefix: &str) -> Vec<KeyValue> {
        self.under(prefix).map(|(k, v)| v.kv(k)).collect()
    }

    /// `range` with the values shared, not copied: what the caller turns into `KeyValue`s
    /// after letting go of the engine (a range of 50,000 endpoint records copied their values
    /// under the lock for 20 ms, and every write waited: issue 22).
    pub fn range_shared(&self, prefix: &str) -> Vec<SharedKv> {
        self.under(prefix).map(|(_, v)| SharedKv(v.clone())).collect()
    }

    fn holds(&self, c: &Compare) -> bool {
        let kv = self.kv.get(c.key());
        match c {
            Compare::CreateRevision(_, cmp, r) => cmp.holds(kv.map_or(0, |k| k.create_revision), *r),
            Compare::ModRevision(_, cmp, r) => cmp.holds(kv.map_or(0, |k| k.mod_revision), *r),
            Compare::Version(_, cmp, v) => cmp.holds(kv.map_or(0, |k| k.version), *v),
            Compare::Value(_, cmp, v) => kv.is_some_and(|k| cmp.holds(&k.value[..], v.as_slice())),
        }
    }

    /// Runs a transaction; returns its result and the change to log (if it wrote anything).
    pub fn txn(&mut self, txn: &Txn) -> Result<(TxnResult, Option<Change>)> {
        let succeeded = txn.compare.iter().all(|c| self.holds(c));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        for op in ops {
            match op {
                Op::Get { key } => reads.push(self.get(key).into_iter().collect()),
                Op::Range { prefix } => reads.push(self.range(prefix)),
                Op::Put { key, value, lease } => {
                    if *lease != 0 && !self.leases.contains_key(lease) {
                        return Err(StoreError::LeaseNotFound(*lease));
                    }
                    writes.push(Write::Put { key: key.clone(), value: value.clone(), lease: *lease });
                }
                Op::Delete { key } => {
                    if self.kv.contains_key(key) {
                        writes.push(Write::Delete { key: key.clone() });
                    }
                }
                Op::DeletePrefix { prefix } => {
                    writes.extend(self.under(prefix).map(|(k, _)| Write::Delete { key: k.clone() }));
                }
            }
        }
        if writes.is_empty() {
            return Ok((TxnResult { succeeded, revision: self.revision, reads }, None));
        }
        let revision = self.revision + 1;
        self.apply_writes(revision, &writes);
        Ok((TxnResult { succeeded, revision, reads }, Some(Change::Write { revision, writes })))
    }

    fn apply_writes(&mut self, revision: Revision, writes: &[Write]) {
        let mut events = Vec::with_capacity(writes.len());
        for w in writes {
            match w {
                Write::Put { key, value, lease } => {
                    let prev = self.kv.get(key);
                    let stored = Stored {
                        key: prev.map_or_else(|| Arc::from(key.as_str()), |p| p.key.clone()),
                        value: Arc::from(value.as_slice()),
                        create_revision: prev.map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: prev.map_or(1, |p| p.version + 1),
                        lease: *lease,
                    };
                    if let Some(old) = prev.map(|p| p.lease).filter(|l| *l != 0 && l != lease)
                        && let Some(l) = self.leases.get_mut(&old)
                    {
                        l.keys.remove(key);
                    }
                    if let Some(l) = self.leases.get_mut(lease) {
                        l.keys.insert(key.clone());
                    }
                    events.push(Event { kind: EventKind::Put, kv: stored.kv(key) });
                    self.kv.insert(key.clone(), stored);
                }
                Write::Delete { key } => {
                    if let Some(old) = self.kv.remove(key) {
                        if let Some(l) = self.leases.get_mut(&old.lease) {
                            l.keys.remove(key);
                        }
                        let kv = KeyValue { value: Vec::new(), mod_revision: revision, ..old.kv(key) };
                        events.push(Event { kind: EventKind::Delete, kv });
                    }
                }
            }
        }
        self.revision = revision;
        self.publish(events);
    }

    fn publish(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.watchers.retain(|w| {
            let mine: Vec<Event> =
                events.iter().filter(|e| e.kv.key.starts_with(&w.prefix)).cloned().collect();
            // A full queue ends the watch: the watcher stopped reading, or reads slower than
            // the writes come; it resumes from its last revision (or relists if that is gone).
            mine.is_empty() || w.tx.try_send(Ok(mine)).is_ok()
        });
        self.history_bytes += events.iter().map(event_bytes).sum::<usize>();
        self.history.extend(events);
        while self.history.len() > self.history_limit || self.history_bytes > HISTORY_MAX_BYTES {
            let Some(e) = self.history.pop_front() else { break };
            self.history_bytes -= event_bytes(&e);
            // A revision is resumable only if all of its events are still here.
            self.oldest = e.kv.mod_revision + 1;
        }
    }

    /// Replays a logged change.
    pub fn apply(&mut self, change: &Change, now: Instant) {
        match change {
            Change::Write { revision, writes } => self.apply_writes(*revision, writes),
            Change::LeaseGrant { id, ttl } => {
                self.leases
                    .insert(*id, Lease { ttl: *ttl, deadline: now + secs(*ttl), keys: BTreeSet::new() });
                self.next_lease = self.next_lease.max(id + 1);
            }
            Change::LeaseRevoke { id, revision } => {
                self.revoke_at(*id, *revision);
            }
        }
    }

    pub fn watch(&mut self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let mut replay: Vec<Vec<Event>> = Vec::new();
        if from != 0 && from <= self.revision {
            if from < self.oldest {
                return Err(StoreError::Compacted { requested: from, oldest: self.oldest });
            }
            let mut batch: Vec<Event> = Vec::new();
            for e in self.history.iter().filter(|e| e.kv.mod_revision >= from && e.kv.key.starts_with(prefix))
            {
                if batch.last().is_some_and(|l| l.kv.mod_revision != e.kv.mod_revision) {
                    replay.push(std::mem::take(&mut batch));
                }
                batch.push(e.clone());
            }
            if !batch.is_empty() {
                replay.push(batch);
            }
        }
        // The replay (bounded by the history) always fits; live batches get WATCH_QUEUE more.
        let (tx, rx) = mpsc::channel(replay.len() + crate::types::WATCH_QUEUE);
        for batch in replay {
            let _ = tx.try_send(Ok(batch));
        }
        self.watchers.push(Watcher { prefix: prefix.to_owned(), tx });
        Ok(rx)
    }

    /// Watchers still served (an ended watch is no longer counted).
    #[cfg(test)]
    fn watchers(&self) -> usize {
        self.watchers.len()
    }

    pub fn lease_grant(&mut self, ttl: i64, now: Instant) -> Result<(LeaseId, Change)> {
        if ttl <= 0 {
            return Err(StoreError::Invalid(format!("lease TTL must be positive, got {ttl}")));
        }
        let id = self.next_lease;
        let change = Change::LeaseGrant { id, ttl };
        self.apply(&change, now);
        Ok((id, change))
    }

    pub fn lease_keepalive(&mut self, id: LeaseId, now: Instant) -> Result<i64> {
        let lease = self.leases.get_mut(&id).ok_or(StoreError::LeaseNotFound(id))?;
        lease.deadline = now + secs(lease.ttl);
        Ok(lease.ttl)
    }

    /// Ends a lease, deleting its keys; `None` if it was unknown.
    pub fn lease_revoke(&mut self, id: LeaseId) -> Option<Change> {
        let lease = self.leases.get(&id)?;
        let revision = if lease.keys.is_empty() { self.revision } else { self.revision + 1 };
        self.revoke_at(id, revision);
        Some(Change::LeaseRevoke { id, revision })
    }

    fn revoke_at(&mut self, id: LeaseId, revision: Revision) {
        let Some(lease) = self.leases.remove(&id) else { return };
        let writes: Vec<Write> = lease.keys.into_iter().map(|key| Write::Delete { key }).collect();
        if !writes.is_empty() {
            self.apply_writes(revision, &writes);
        }
    }

    /// Revokes every lease whose deadline has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let due: Vec<LeaseId> =
            self.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        due.into_iter().filter_map(|id| self.lease_revoke(id)).collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.revision,
            next_lease: self.next_lease,
            leases: self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect(),
            kvs: self.kv.iter().map(|(k, v)| v.kv(k)).collect(),
        }
    }

    /// Rebuilds from a snapshot; leases restart their full TTL (as etcd does after a restart).
    pub fn restore(&mut self, s: &Snapshot, now: Instant) {
        self.kv = s
            .kvs
            .iter()
            .map(|kv| {
                let stored = Stored {
                    key: Arc::from(kv.key.as_str()),
                    value: Arc::from(kv.value.as_slice()),
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    lease: kv.lease,
                };
                (kv.key.clone(), stored)
            })
            .collect();
        self.revision = s.revision;
        self.oldest = s.revision + 1;
        self.history.clear();
        self.history_bytes = 0;
        self.next_lease = s.next_lease;
        self.leases = s
            .leases
            .iter()
            .map(|(id, ttl)| (*id, Lease { ttl: *ttl, deadline: now + secs(*ttl), keys: BTreeSet::new() }))
            .collect();
        for kv in &s.kvs {
            if let Some(l) = self.leases.get_mut(&kv.lease) {
                l.keys.insert(kv.key.clone());
            }
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod watch_queue_tests {
    use super::*;

    fn put(e: &mut Engine, key: &str, value: Vec<u8>) {
        let txn = Txn { compare: vec![], success: vec![Op::put(key, value)], failure: vec![] };
        e.txn(&txn).unwrap();
    }

    /// F7: a watcher that never reads holds at most WATCH_QUEUE batches; past that its watch is
    /// ended (the stream closes after what is queued), and a watcher that reads is unaffected.
    #[test]
    fn a_watcher_that_never_reads_is_ended_at_the_queue_limit() {
        let mut e = Engine::new();
        let mut idle = e.watch("/k/", 0).unwrap();
        let mut reader = e.watch("/k/", 0).unwrap();
        let writes = crate::types::WATCH_QUEUE + 500;
        let mut read = 0;
        for i in 0..writes {
            put(&mut e, &format!("/k/{i}"), vec![b'x'; 3000]);
            while let Ok(batch) = reader.try_recv() {
                read += batch.unwrap().len();
            }
        }
        assert_eq!(read, writes, "the reading watcher got every event");
        assert_eq!(e.watchers(), 1, "the idle watcher was ended");
        let mut queued = 0;
        while let Ok(batch) = idle.try_recv() {
            queued += batch.unwrap().len();
        }
        assert_eq!(queued, crate::types::WATCH_QUEUE);
        assert!(idle.is_closed() && idle.try_recv().is_err(), "the stream has ended");
        // It resumes from its last revision and gets the rest.
        let mut resumed = e.watch("/k/", queued as Revision + 1).unwrap();
        let mut rest = 0;
        while let Ok(batch) = resumed.try_recv() {
            rest += batch.unwrap().len();
        }
        assert_eq!(queued + rest, writes);
    }
}
