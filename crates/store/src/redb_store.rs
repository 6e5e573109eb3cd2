//! The embedded store's state kept in redb instead of our log: the current keys, leases and
//! revision in redb tables, each committed batch one redb write transaction (durable on commit).
//! Same engine, same group commit; only the sink differs. Knows nothing about watches or history.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Instant;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

use crate::engine::{Change, Engine, Snapshot, Write};
use crate::local::{Batch, Sink};
use crate::private;
use crate::types::{KeyValue, LeaseId, Result, Revision, StoreError};

/// The database file in the data directory.
pub(crate) const FILE: &str = "store.redb";
/// Key -> `[create][mod][version][lease]` (i64 little endian each), then the value.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Lease -> TTL in seconds.
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
/// (lease, key): the keys each lease holds, so that a revoke finds them without a scan.
const LEASE_KEYS: TableDefinition<(i64, &str), ()> = TableDefinition::new("lease_keys");
/// "revision", "next_lease".
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

fn fail(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

struct Meta {
    create: Revision,
    version: i64,
    lease: LeaseId,
}

fn encode(create: Revision, modified: Revision, version: i64, lease: LeaseId, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + value.len());
    for n in [create, modified, version, lease] {
        v.extend_from_slice(&n.to_le_bytes());
    }
    v.extend_from_slice(value);
    v
}

fn field(b: &[u8], i: usize) -> Option<i64> {
    Some(i64::from_le_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?))
}

fn decode(key: &str, b: &[u8]) -> Result<KeyValue> {
    let bad =
        || StoreError::Corrupt(format!("redb value of key {key:?} is {} bytes, shorter than 32", b.len()));
    Ok(KeyValue {
        key: key.to_owned(),
        create_revision: field(b, 0).ok_or_else(bad)?,
        mod_revision: field(b, 1).ok_or_else(bad)?,
        version: field(b, 2).ok_or_else(bad)?,
        lease: field(b, 3).ok_or_else(bad)?,
        value: b[32..].to_vec(),
    })
}

fn meta_of(b: &[u8]) -> Meta {
    Meta {
        create: field(b, 0).unwrap_or(0),
        version: field(b, 2).unwrap_or(0),
        lease: field(b, 3).unwrap_or(0),
    }
}

/// The committer's sink: one redb write transaction per batch.
pub(crate) struct RedbSink {
    db: Database,
    _lock: File,
}

/// Opens (or creates) `DIR/store.redb` (0600) and loads its state into an engine.
pub(crate) fn open(dir: &Path, lock: File) -> Result<(Engine, RedbSink)> {
    let path = dir.join(FILE);
    // Created here first, so that it is owner-only whatever the umask (redb would use 0666).
    drop(private::open(&path, OpenOptions::new().create(true).truncate(false).write(true))?);
    let db = Database::create(&path).map_err(|e| fail("opening", &path, e))?;
    let w = db.begin_write().map_err(|e| fail("writing", &path, e))?;
    {
        w.open_table(KV).map_err(|e| fail("opening a table in", &path, e))?;
        w.open_table(LEASES).map_err(|e| fail("opening a table in", &path, e))?;
        w.open_table(LEASE_KEYS).map_err(|e| fail("opening a table in", &path, e))?;
        w.open_table(META).map_err(|e| fail("opening a table in", &path, e))?;
    }
    w.commit().map_err(|e| fail("committing to", &path, e))?;
    let snapshot = load(&db).map_err(|e| fail("reading", &path, e))??;
    let mut engine = Engine::new();
    engine.restore(&snapshot, Instant::now());
    Ok((engine, RedbSink { db, _lock: lock }))
}

fn load(db: &Database) -> std::result::Result<Result<Snapshot>, redb::Error> {
    let r = db.begin_read()?;
    let meta = r.open_table(META)?;
    let revision = meta.get("revision")?.map_or(0, |v| v.value());
    let next_lease = meta.get("next_lease")?.map_or(1, |v| v.value());
    let mut leases = Vec::new();
    for row in r.open_table(LEASES)?.iter()? {
        let (id, ttl) = row?;
        leases.push((id.value(), ttl.value()));
    }
    let mut kvs = Vec::new();
    for row in r.open_table(KV)?.iter()? {
        let (k, v) = row?;
        match decode(k.value(), v.value()) {
            Ok(kv) => kvs.push(kv),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(Snapshot { revision, next_lease, leases, kvs }))
}

type Kv<'t> = Table<'t, &'static str, &'static [u8]>;
type LeaseKeys<'t> = Table<'t, (i64, &'static str), ()>;

fn put(
    kv: &mut Kv,
    lk: &mut LeaseKeys,
    revision: Revision,
    key: &str,
    value: &[u8],
    lease: LeaseId,
) -> std::result::Result<(), redb::Error> {
    let prev = kv.get(key)?.map(|g| meta_of(g.value()));
    let (create, version) = prev.as_ref().map_or((revision, 1), |p| (p.create, p.version + 1));
    if let Some(old) = prev.map(|p| p.lease).filter(|l| *l != 0 && *l != lease) {
        lk.remove((old, key))?;
    }
    if lease != 0 {
        lk.insert((lease, key), ())?;
    }
    kv.insert(key, encode(create, revision, version, lease, value).as_slice())?;
    Ok(())
}

fn delete(kv: &mut Kv, lk: &mut LeaseKeys, key: &str) -> std::result::Result<(), redb::Error> {
    let old = kv.remove(key)?.map(|g| meta_of(g.value()).lease);
    if let Some(l) = old.filter(|l| *l != 0) {
        lk.remove((l, key))?;
    }
    Ok(())
}

impl RedbSink {
    fn write(&mut self, changes: &[Change]) -> std::result::Result<(), redb::Error> {
        let w = self.db.begin_write()?;
        {
            let mut kv = w.open_table(KV)?;
            let mut leases = w.open_table(LEASES)?;
            let mut lk = w.open_table(LEASE_KEYS)?;
            let mut meta = w.open_table(META)?;
            let mut revision = meta.get("revision")?.map_or(0, |v| v.value());
            let mut next_lease = meta.get("next_lease")?.map_or(1, |v| v.value());
            for c in changes {
                match c {
                    Change::Write { revision: r, writes } => {
                        for wr in writes {
                            match wr {
                                Write::Put { key, value, lease } => {
                                    put(&mut kv, &mut lk, *r, key, value, *lease)?
                                }
                                Write::Delete { key } => delete(&mut kv, &mut lk, key)?,
                            }
                        }
                        revision = revision.max(*r);
                    }
                    Change::LeaseGrant { id, ttl } => {
                        leases.insert(*id, *ttl)?;
                        next_lease = next_lease.max(id + 1);
                    }
                    Change::LeaseRevoke { id, revision: r } => {
                        leases.remove(*id)?;
                        let mut keys = Vec::new();
                        for row in lk.range((*id, "")..)? {
                            let (k, _) = row?;
                            let (l, key) = k.value();
                            if l != *id {
                                break;
                            }
                            keys.push(key.to_owned());
                        }
                        for key in &keys {
                            delete(&mut kv, &mut lk, key)?;
                        }
                        revision = revision.max(*r);
                    }
                }
            }
            meta.insert("revision", revision)?;
            meta.insert("next_lease", next_lease)?;
        }
        w.commit()?;
        Ok(())
    }
}

impl Sink for RedbSink {
    fn persist(&mut self, batch: Batch) -> std::result::Result<(), String> {
        self.write(&batch.changes).map_err(|e| format!("redb: {e}"))
    }
}
