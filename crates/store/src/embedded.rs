//! The embedded backend (the default): the engine in memory, every change appended to one
//! checksummed log file and synced before it is acknowledged, with group commit (one sync covers
//! every change queued meanwhile) and online compaction into a snapshot.
//!
//! Reads wait until what they saw is durable, so no client ever sees a change a crash could undo.
//! On open only a torn final write is cut off (logged); damage anywhere else refuses the open,
//! and [`EmbeddedStore::recover`] keeps the intact prefix after saving a copy. The directory and
//! every file in it are owner-only (0700/0600).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::engine::Engine;
use crate::local::{Batch, Local, Queue, Sink, commit_loop, lock};
use crate::private;
use crate::types::{
    BoxFut, KeyValue, LeaseId, Result, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};
use crate::wal::{self, End, Record};

const LOG: &str = "store.log";
const LOG_TMP: &str = "store.log.tmp";
const LOCK: &str = "LOCK";
/// Compact when the log outgrows this and four times the last snapshot.
const COMPACT_MIN: u64 = 64 << 20;

/// Tuning of the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Rewrite the log as a snapshot once it outgrows this many bytes and four times the last
    /// snapshot (default 64 MiB).
    pub compact_min_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { compact_min_bytes: COMPACT_MIN }
    }
}

/// What [`EmbeddedStore::recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub log: PathBuf,
    /// Bytes kept: the file header and every intact record before the first bad one.
    pub kept_bytes: u64,
    /// Bytes cut off (0: the log was intact and nothing changed).
    pub dropped_bytes: u64,
    /// Where the whole file was copied before it was cut (when something was cut).
    pub backup: Option<PathBuf>,
    /// What was wrong, at which offset (None: nothing).
    pub problem: Option<String>,
    /// Intact records after the damage, given up with it (they build on what was lost).
    pub intact_after: usize,
}

fn lock_dir(dir: &Path) -> Result<File> {
    for t in private::make_private(dir)? {
        tracing::warn!(path = %t.path.display(), was = format!("{:o}", t.was), now = format!("{:o}", t.now),
            "narrowed a data directory entry to owner-only access");
    }
    let lock_file =
        private::open(&dir.join(LOCK), OpenOptions::new().create(true).truncate(false).write(true))?;
    if lock_file.try_lock().is_err() {
        return Err(StoreError::Unavailable(format!("{} is in use by another process", dir.display())));
    }
    Ok(lock_file)
}

fn read_log(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::Io(format!("reading {}: {e}", path.display()))),
    }
}

/// The refusal for damage: the file, the offset, what is wrong, and how to recover.
fn damaged(
    path: &Path,
    dir: &Path,
    len: usize,
    valid: usize,
    offset: usize,
    what: &str,
    after: usize,
) -> StoreError {
    let why = if after > 0 {
        format!("{after} intact record(s) follow it, so this is not a write torn by a crash")
    } else {
        "it is the last record but was written whole, so it may have been acknowledged".to_owned()
    };
    StoreError::Corrupt(format!(
        "{} is damaged at offset {offset} (of {len} bytes): {what}; {why}. Nothing was changed. \
         To keep the {valid} bytes before the damage (a copy of the whole file is saved first), run \
         `romanad --data-dir {} --recover-store`; see docs/operations.md, \"A damaged store\"",
        path.display(),
        dir.display()
    ))
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
    /// A second process opening the same directory is refused, and so is a damaged log.
    pub async fn open(dir: &Path) -> Result<EmbeddedStore> {
        EmbeddedStore::open_with(dir, EmbeddedOptions::default()).await
    }

    /// [`EmbeddedStore::open`] with tuning.
    pub async fn open_with(dir: &Path, opts: EmbeddedOptions) -> Result<EmbeddedStore> {
        let lock_file = lock_dir(dir)?;
        let path = dir.join(LOG);
        let data = read_log(&path)?;
        let scan = wal::scan(&data).map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
        match &scan.end {
            End::Clean => {}
            End::Torn { offset, bytes, what } => {
                // A crash in the middle of a write: nothing in it was acknowledged.
                tracing::warn!(path = %path.display(), offset, bytes, %what,
                    "cutting off a torn final write (a crash during a write; it was never acknowledged)");
            }
            End::Damaged { offset, what, intact_after } => {
                return Err(damaged(&path, dir, data.len(), scan.valid, *offset, what, *intact_after));
            }
        }
        let now = Instant::now();
        let mut engine = Engine::new();
        for r in &scan.records {
            match r {
                Record::Snapshot(s) => engine.restore(s, now),
                Record::Change(c) => engine.apply(c, now),
            }
        }
        let (file, len) = if scan.version != wal::VERSION {
            // An older format: rewrite it now as one snapshot in the current one.
            let r = write_snapshot(&engine, dir)?;
            tracing::info!(path = %path.display(), from = scan.version, to = wal::VERSION, "upgraded the log format");
            r
        } else if scan.valid == 0 {
            // New (or only a torn header): start with the file header.
            let mut f = private::open(&path, OpenOptions::new().create(true).write(true).truncate(true))?;
            f.write_all(&wal::file_header())?;
            f.sync_all()?;
            File::open(dir)?.sync_all()?;
            (private::open(&path, OpenOptions::new().append(true))?, wal::file_header().len() as u64)
        } else {
            let file = private::open(&path, OpenOptions::new().append(true))?;
            if scan.valid < data.len() {
                file.set_len(scan.valid as u64)?;
                file.sync_all()?;
            }
            (file, scan.valid as u64)
        };
        let local = Local::new(engine, "embedded", Queue::Records);
        let min = opts.compact_min_bytes;
        let sink =
            LogSink { file, len, min, compact_at: min.max(len * 4), dir: dir.to_owned(), _lock: lock_file };
        let committer = spawn_committer(&local, sink)?;
        Ok(EmbeddedStore { local, path, committer: Some(committer) })
    }

    /// Makes a damaged log in `dir` openable again: copies the whole file beside it
    /// (`store.log.damaged-SECONDS`), then cuts it to its intact prefix. Records after the damage
    /// are given up too, even intact ones: they build on what was lost. An intact log is left
    /// as it is. Refused while another process holds the directory.
    pub fn recover(dir: &Path) -> Result<Recovery> {
        let _lock = lock_dir(dir)?;
        let path = dir.join(LOG);
        let data = read_log(&path)?;
        let scan = wal::scan(&data).map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
        let (problem, intact_after) = match scan.end {
            End::Clean => (None, 0),
            End::Torn { offset, what, .. } => (Some(format!("offset {offset}: torn final write: {what}")), 0),
            End::Damaged { offset, what, intact_after } => {
                (Some(format!("offset {offset}: {what}")), intact_after)
            }
        };
        let mut out = Recovery {
            log: path.clone(),
            kept_bytes: data.len() as u64,
            dropped_bytes: 0,
            backup: None,
            problem,
            intact_after,
        };
        if out.problem.is_none() {
            return Ok(out);
        }
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let backup = dir.join(format!("{LOG}.damaged-{secs}"));
        let mut b = private::open(&backup, OpenOptions::new().create_new(true).write(true))?;
        b.write_all(&data)?;
        b.sync_all()?;
        let f = private::open(&path, OpenOptions::new().write(true))?;
        f.set_len(scan.valid as u64)?;
        f.sync_all()?;
        File::open(dir)?.sync_all()?;
        out.kept_bytes = scan.valid as u64;
        out.dropped_bytes = (data.len() - scan.valid) as u64;
        out.backup = Some(backup);
        Ok(out)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn spawn_committer(local: &Arc<Local>, mut sink: impl Sink + 'static) -> Result<std::thread::JoinHandle<()>> {
    let local = Arc::clone(local);
    Ok(std::thread::Builder::new()
        .name("romana-store-log".into())
        .spawn(move || commit_loop(&local, &mut sink))?)
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

/// The log file as a committer's sink: appends and syncs each batch; compacts when it has grown.
struct LogSink {
    file: File,
    len: u64,
    min: u64,
    compact_at: u64,
    dir: PathBuf,
    _lock: File,
}

impl Sink for LogSink {
    fn persist(&mut self, batch: Batch) -> std::result::Result<(), String> {
        self.file
            .write_all(&batch.records)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| e.to_string())?;
        self.len += batch.records.len() as u64;
        Ok(())
    }

    fn after(&mut self, local: &Local) -> std::result::Result<(), String> {
        if self.len > self.compact_at {
            let (f, l) = compact(local, &self.dir).map_err(|e| format!("compaction: {e}"))?;
            self.file = f;
            self.len = l;
            self.compact_at = self.min.max(l * 4);
        }
        Ok(())
    }
}

/// Rewrites the log as one snapshot. Writers wait meanwhile (they need the engine lock).
fn compact(local: &Local, dir: &Path) -> std::io::Result<(File, u64)> {
    let engine = lock(&local.engine);
    let mut pending = lock(&local.pending);
    if !pending.batch.records.is_empty() {
        let mut f = private::open(&dir.join(LOG), OpenOptions::new().append(true))?;
        f.write_all(&pending.batch.records)?;
        f.sync_data()?;
        pending.batch.records.clear();
    }
    let out = write_snapshot(&engine, dir)?;
    local.durable_up_to(pending.seq);
    Ok(out)
}

/// Replaces the log with the file header and one snapshot of `engine` (through a synced
/// temporary and a rename, so a crash leaves the old log or the new one); returns the new log,
/// open for appending, and its length.
fn write_snapshot(engine: &Engine, dir: &Path) -> std::io::Result<(File, u64)> {
    let path = dir.join(LOG);
    let mut data = wal::file_header();
    data.extend(wal::encode_snapshot(&engine.snapshot()));
    let tmp = dir.join(LOG_TMP);
    let mut f = private::open(&tmp, OpenOptions::new().create(true).write(true).truncate(true))?;
    f.write_all(&data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    let file = private::open(&path, OpenOptions::new().append(true))?;
    Ok((file, data.len() as u64))
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
