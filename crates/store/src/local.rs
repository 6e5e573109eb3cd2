//! The engine shared by the memory and persistent backends: one engine behind a lock, changes
//! queued for a committer that makes them durable in batches (group commit), and the `Store`
//! calls, which wait until what they saw is durable. Knows nothing about files: a `Sink` does.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::engine::{Change, Engine};
use crate::types::{
    BoxFut, KeyValue, LeaseId, Result, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};
use crate::wal;

/// What a backend queues for its committer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// Nothing: the memory backend.
    None,
    /// Encoded log records (encoded here, under the engine lock, so the log order is the
    /// revision order).
    Records,
}

/// Changes made but not yet durable, taken as one batch by the committer.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub records: Vec<u8>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub batch: Batch,
    pub seq: u64,
    shutdown: bool,
}

#[derive(Debug, Clone, Default)]
struct Durable {
    seq: u64,
    failed: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Local {
    pub engine: Mutex<Engine>,
    pub pending: Mutex<Pending>,
    wake: Condvar,
    durable: watch::Sender<Durable>,
    backend: &'static str,
    queue: Queue,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (every step completes or returns early).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Local {
    pub(crate) fn new(engine: Engine, backend: &'static str, queue: Queue) -> Arc<Local> {
        let local = Arc::new(Local {
            engine: Mutex::new(engine),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            durable: watch::channel(Durable::default()).0,
            backend,
            queue,
        });
        spawn_expiry(Arc::downgrade(&local));
        local
    }

    /// Queues changes for the log; returns the sequence number to wait for. Called with the
    /// engine locked, so the log order is the revision order.
    fn enqueue(&self, changes: &[Change]) -> u64 {
        let mut p = lock(&self.pending);
        if self.queue == Queue::None || changes.is_empty() {
            return p.seq;
        }
        for c in changes {
            p.batch.records.extend(wal::encode_change(c));
        }
        p.seq += 1;
        self.wake.notify_one();
        p.seq
    }

    async fn wait_durable(&self, seq: u64) -> Result<()> {
        if self.queue == Queue::None {
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

    pub(crate) fn shutdown(&self) {
        lock(&self.pending).shutdown = true;
        self.wake.notify_all();
    }

    /// Marks everything queued up to `seq` durable (readers and writers waiting for it go on).
    pub(crate) fn durable_up_to(&self, seq: u64) {
        self.durable.send_modify(|d| d.seq = seq);
    }
}

/// Where a committer makes batches durable.
pub(crate) trait Sink: Send {
    /// Makes `batch` durable with one sync.
    fn persist(&mut self, batch: Batch) -> std::result::Result<(), String>;
    /// Runs after each durable batch (compaction).
    fn after(&mut self, _local: &Local) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// The committer: takes everything queued as one batch, makes it durable with one sync (group
/// commit), reports it durable, repeats; after a failure every later call fails.
pub(crate) fn commit_loop(local: &Local, sink: &mut dyn Sink) {
    loop {
        let (batch, seq) = {
            let mut p = lock(&local.pending);
            while p.batch.is_empty() && !p.shutdown {
                p = local.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.batch.is_empty() {
                return;
            }
            (std::mem::take(&mut p.batch), p.seq)
        };
        if let Err(e) = sink.persist(batch) {
            local.durable.send_modify(|d| d.failed = Some(e));
            return;
        }
        local.durable_up_to(seq);
        if let Err(e) = sink.after(local) {
            local.durable.send_modify(|d| d.failed = Some(e));
            return;
        }
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
        Box::pin(async move {
            // The values are copied after the engine's lock is let go (`range_shared`).
            let (shared, revision) =
                self.run(move |e| Ok(((e.range_shared(prefix), e.revision()), vec![]))).await?;
            Ok((shared.into_iter().map(crate::engine::SharedKv::into_kv).collect(), revision))
        })
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
