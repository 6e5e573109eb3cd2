//! The embedded backend (the default): the engine in memory, every change appended to one
//! checksummed log file and synced before it is acknowledged, with group commit (one sync covers
//! every change queued meanwhile) and online compaction into a snapshot.
//!
//! Reads wait until what they saw is durable, so no client ever sees a change a crash could undo.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::engine::{Change, Engine};
use crate::types::{
    BoxFut, KeyValue, LeaseId, Result, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};
use crate::wal::{self, Record};

const LOG: &str = "store.log";
const LOCK: &str = "LOCK";
/// Compact when the log outgrows this and four times the last snapshot.
const COMPACT_MIN: u64 = 64 << 20;

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    seq: u64,
    shutdown: bool,
}

#[derive(Debug, Clone, Default)]
struct Durable {
    seq: u64,
    failed: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Local {
    engine: Mutex<Engine>,
    pending: Mutex<Pending>,
    wake: Condvar,
    durable: watch::Sender<Durable>,
    backend: &'static str,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (every step completes or returns early).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Local {
    pub(crate) fn new(engine: Engine, backend: &'static str) -> Arc<Local> {
        let local = Arc::new(Local {
            engine: Mutex::new(engine),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            durable: watch::channel(Durable::default()).0,
            backend,
        });
        spawn_expiry(Arc::downgrade(&local));
        local
    }

    fn persistent(&self) -> bool {
        self.backend == "embedded"
    }

    /// Queues changes for the log; returns the sequence number to wait for. Called with the
    /// engine locked, so the log order is the revision order.
    fn enqueue(&self, changes: &[Change]) -> u64 {
        let mut p = lock(&self.pending);
        if self.persistent() && !changes.is_empty() {
            for c in changes {
                p.buf.extend(wal::encode_change(c));
            }
            p.seq += 1;
            self.wake.notify_one();
        }
        p.seq
    }

    async fn wait_durable(&self, seq: u64) -> Result<()> {
        if !self.persistent() {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        loop {
            {
                let d = rx.borrow_and_update();
                if let Some(e) = &d.failed {
                    return Err(StoreError::Unavailable(format!("log write failed: {e}")));
                }
                if d.seq >= seq {
                    return Ok(());
                }
            }
            rx.changed().await.map_err(|_| StoreError::Unavailable("store closed".into()))?;
        }
    }

    fn failed(&self) -> Result<()> {
        match &self.durable.borrow().failed {
            Some(e) => Err(StoreError::Unavailable(format!("log write failed: {e}"))),
            None => Ok(()),
        }
    }

    async fn run<T>(&self, f: impl FnOnce(&mut Engine) -> Result<(T, Vec<Change>)>) -> Result<T> {
        self.failed()?;
        let (value, seq) = {
            let mut engine = lock(&self.engine);
            let (value, changes) = f(&mut engine)?;
            (value, self.enqueue(&changes))
        };
        self.wait_durable(seq).await?;
        Ok(value)
    }

    fn shutdown(&self) {
        lock(&self.pending).shutdown = true;
        self.wake.notify_all();
    }
}

fn spawn_expiry(local: Weak<Local>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let Some(local) = local.upgrade() else { return };
            let mut engine = lock(&local.engine);
            let changes = engine.expire(Instant::now());
            local.enqueue(&changes);
        }
    });
}

impl Store for Local {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Result<Option<KeyValue>>> {
        Box::pin(self.run(move |e| Ok((e.get(key), vec![]))))
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Result<(Vec<KeyValue>, Revision)>> {
        Box::pin(self.run(move |e| Ok(((e.range(prefix), e.revision()), vec![]))))
    }

    fn txn(&self, txn: Txn) -> BoxFut<'_, Result<TxnResult>> {
        Box::pin(self.run(move |e| {
            let (r, c) = e.txn(&txn)?;
            Ok((r, c.into_iter().collect()))
        }))
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFut<'a, Result<WatchStream>> {
        Box::pin(self.run(move |e| Ok((e.watch(prefix, from)?, vec![]))))
    }

    fn lease_grant(&self, ttl_secs: i64) -> BoxFut<'_, Result<LeaseId>> {
        Box::pin(self.run(move |e| {
            let (id, c) = e.lease_grant(ttl_secs, Instant::now())?;
            Ok((id, vec![c]))
        }))
    }

    fn lease_keepalive(&self, lease: LeaseId) -> BoxFut<'_, Result<i64>> {
        Box::pin(self.run(move |e| Ok((e.lease_keepalive(lease, Instant::now())?, vec![]))))
    }

    fn lease_revoke(&self, lease: LeaseId) -> BoxFut<'_, Result<()>> {
        Box::pin(self.run(move |e| Ok(((), e.lease_revoke(lease).into_iter().collect()))))
    }

    fn revision(&self) -> BoxFut<'_, Result<Revision>> {
        Box::pin(self.run(|e| Ok((e.revision(), vec![]))))
    }
}

/// The default store: one crash-safe log file in a data directory.
#[derive(Debug)]
pub struct EmbeddedStore {
    local: Arc<Local>,
    path: PathBuf,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, replaying its log. Must run inside a tokio runtime.
    /// A second process opening the same directory is refused.
    pub async fn open(dir: &Path) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(dir)?;
        let lock_file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK))?;
        if lock_file.try_lock().is_err() {
            return Err(StoreError::Unavailable(format!("{} is in use by another process", dir.display())));
        }
        let path = dir.join(LOG);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let (records, valid) = wal::read_all(&data);
        let now = Instant::now();
        let mut engine = Engine::new();
        for r in &records {
            match r {
                Record::Snapshot(s) => engine.restore(s, now),
                Record::Change(c) => engine.apply(c, now),
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if valid < data.len() {
            // A torn write from a crash: nothing in it was acknowledged.
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        let local = Local::new(engine, "embedded");
        let committer = Arc::clone(&local);
        let dir_owned = dir.to_owned();
        let committer = std::thread::Builder::new()
            .name("romana-store-log".into())
            .spawn(move || commit_loop(&committer, file, valid as u64, &dir_owned, lock_file))?;
        Ok(EmbeddedStore { local, path, committer: Some(committer) })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EmbeddedStore {
    /// Flushes what is queued and releases the data directory.
    fn drop(&mut self) {
        self.local.shutdown();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

fn commit_loop(local: &Local, mut file: File, mut len: u64, dir: &Path, _lock: File) {
    let mut compact_at = COMPACT_MIN.max(len * 4);
    loop {
        let (buf, seq) = {
            let mut p = lock(&local.pending);
            while p.buf.is_empty() && !p.shutdown {
                p = local.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.buf.is_empty() {
                return;
            }
            (std::mem::take(&mut p.buf), p.seq)
        };
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            local.durable.send_modify(|d| d.failed = Some(e.to_string()));
            return;
        }
        len += buf.len() as u64;
        local.durable.send_modify(|d| d.seq = seq);
        if len > compact_at {
            match compact(local, dir) {
                Ok((f, l)) => {
                    file = f;
                    len = l;
                    compact_at = COMPACT_MIN.max(l * 4);
                }
                Err(e) => {
                    local.durable.send_modify(|d| d.failed = Some(format!("compaction: {e}")));
                    return;
                }
            }
        }
    }
}

/// Rewrites the log as one snapshot. Writers wait meanwhile (they need the engine lock).
fn compact(local: &Local, dir: &Path) -> std::io::Result<(File, u64)> {
    let engine = lock(&local.engine);
    let mut pending = lock(&local.pending);
    let path = dir.join(LOG);
    if !pending.buf.is_empty() {
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(&pending.buf)?;
        f.sync_data()?;
        pending.buf.clear();
    }
    let snapshot = wal::encode_snapshot(&engine.snapshot());
    let tmp = dir.join("store.log.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&snapshot)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    let seq = pending.seq;
    local.durable.send_modify(|d| d.seq = seq);
    let file = OpenOptions::new().append(true).open(&path)?;
    Ok((file, snapshot.len() as u64))
}

impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        self.local.backend()
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Result<Option<KeyValue>>> {
        self.local.get(key)
    }
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Result<(Vec<KeyValue>, Revision)>> {
        self.local.range(prefix)
    }
    fn txn(&self, txn: Txn) -> BoxFut<'_, Result<TxnResult>> {
        self.local.txn(txn)
    }
    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFut<'a, Result<WatchStream>> {
        self.local.watch(prefix, from)
    }
    fn lease_grant(&self, ttl_secs: i64) -> BoxFut<'_, Result<LeaseId>> {
        self.local.lease_grant(ttl_secs)
    }
    fn lease_keepalive(&self, lease: LeaseId) -> BoxFut<'_, Result<i64>> {
        self.local.lease_keepalive(lease)
    }
    fn lease_revoke(&self, lease: LeaseId) -> BoxFut<'_, Result<()>> {
        self.local.lease_revoke(lease)
    }
    fn revision(&self) -> BoxFut<'_, Result<Revision>> {
        self.local.revision()
    }
}
