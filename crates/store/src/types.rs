//! The store's vocabulary: key-values with revisions, compares, operations, events, errors, and the trait.

use std::future::Future;
use std::pin::Pin;

/// A store-wide, monotonically increasing version; every change bumps it by one.
pub type Revision = i64;
/// A lease; 0 means "no lease".
pub type LeaseId = i64;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the change that created the key (0 for an absent key).
    pub create_revision: Revision,
    /// Revision of the last change to the key.
    pub mod_revision: Revision,
    /// Number of changes since creation.
    pub version: i64,
    pub lease: LeaseId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

impl Cmp {
    pub fn holds<T: Ord>(self, left: T, right: T) -> bool {
        match self {
            Cmp::Equal => left == right,
            Cmp::NotEqual => left != right,
            Cmp::Less => left < right,
            Cmp::Greater => left > right,
        }
    }
}

/// A condition on one key. An absent key has create, mod revision and version 0 and no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    CreateRevision(String, Cmp, Revision),
    ModRevision(String, Cmp, Revision),
    Version(String, Cmp, i64),
    Value(String, Cmp, Vec<u8>),
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Compare {
        Compare::CreateRevision(key.into(), Cmp::Equal, 0)
    }

    /// The key is unchanged since `rev` (0: still absent).
    pub fn unchanged(key: impl Into<String>, rev: Revision) -> Compare {
        Compare::ModRevision(key.into(), Cmp::Equal, rev)
    }

    pub fn key(&self) -> &str {
        match self {
            Compare::CreateRevision(k, ..)
            | Compare::ModRevision(k, ..)
            | Compare::Version(k, ..)
            | Compare::Value(k, ..) => k,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8>, lease: LeaseId },
    Delete { key: String },
    DeletePrefix { prefix: String },
    Get { key: String },
    Range { prefix: String },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put { key: key.into(), value: value.into(), lease: 0 }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }
}

/// If every compare holds, the success ops run, else the failure ops; all at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn when(compare: Vec<Compare>, success: Vec<Op>) -> Txn {
        Txn { compare, success, failure: Vec::new() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    /// One entry per `Get` or `Range` op that ran, in order.
    pub reads: Vec<Vec<KeyValue>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv` carries the key and the deleting revision (`mod_revision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// Batches of events in revision order; an `Err` ends the stream (resubscribe from the last revision seen + 1).
/// Batches of a watch, one per revision. The queue is bounded (`WATCH_QUEUE` batches beyond a
/// resume's replay): a watcher that falls that far behind is ended (the stream ends after what
/// is queued) and resumes from its last revision, rather than growing the server's memory.
pub type WatchStream = tokio::sync::mpsc::Receiver<std::result::Result<Vec<Event>, StoreError>>;

/// Batches a watcher may have unread before its watch is ended.
pub const WATCH_QUEUE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error(
        "revision {requested} is compacted (oldest available {oldest}); list again and watch from the list's revision"
    )]
    Compacted { requested: Revision, oldest: Revision },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("store I/O: {0}")]
    Io(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What every backend provides. Futures are boxed so that services can hold `Arc<dyn Store>`.
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and metrics ("memory", "embedded", "etcd").
    fn backend(&self) -> &'static str;
    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Result<Option<KeyValue>>>;
    /// Every key starting with `prefix`, in key order, and the revision they were read at.
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Result<(Vec<KeyValue>, Revision)>>;
    fn txn(&self, txn: Txn) -> BoxFut<'_, Result<TxnResult>>;
    /// Changes to keys under `prefix` from revision `from` on (inclusive).
    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFut<'a, Result<WatchStream>>;
    fn lease_grant(&self, ttl_secs: i64) -> BoxFut<'_, Result<LeaseId>>;
    /// Renews a lease; returns its TTL.
    fn lease_keepalive(&self, lease: LeaseId) -> BoxFut<'_, Result<i64>>;
    /// Ends a lease and deletes its keys. Revoking an unknown lease is success.
    fn lease_revoke(&self, lease: LeaseId) -> BoxFut<'_, Result<()>>;
    fn revision(&self) -> BoxFut<'_, Result<Revision>>;
}

/// Helpers every backend gets.
pub trait StoreExt: Store {
    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>) -> BoxFut<'a, Result<Revision>> {
        Box::pin(async move { Ok(self.txn(Txn::when(vec![], vec![Op::put(key, value)])).await?.revision) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, Result<Revision>> {
        Box::pin(async move { Ok(self.txn(Txn::when(vec![], vec![Op::delete(key)])).await?.revision) })
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
