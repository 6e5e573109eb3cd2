//! The in-memory backend: the embedded engine without a log. For tests and throwaway runs.

use std::sync::Arc;

use crate::engine::Engine;
use crate::local::{Local, Queue};
use crate::types::{BoxFut, KeyValue, LeaseId, Result, Revision, Store, Txn, TxnResult, WatchStream};

#[derive(Debug, Clone)]
pub struct MemStore(Arc<Local>);

impl MemStore {
    /// A new empty store; inside a tokio runtime, leases expire on their own.
    pub fn new() -> MemStore {
        MemStore(Local::new(Engine::new(), "memory", Queue::None))
    }
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl Store for MemStore {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Result<Option<KeyValue>>> {
        self.0.get(key)
    }
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Result<(Vec<KeyValue>, Revision)>> {
        self.0.range(prefix)
    }
    fn txn(&self, txn: Txn) -> BoxFut<'_, Result<TxnResult>> {
        self.0.txn(txn)
    }
    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFut<'a, Result<WatchStream>> {
        self.0.watch(prefix, from)
    }
    fn lease_grant(&self, ttl_secs: i64) -> BoxFut<'_, Result<LeaseId>> {
        self.0.lease_grant(ttl_secs)
    }
    fn lease_keepalive(&self, lease: LeaseId) -> BoxFut<'_, Result<i64>> {
        self.0.lease_keepalive(lease)
    }
    fn lease_revoke(&self, lease: LeaseId) -> BoxFut<'_, Result<()>> {
        self.0.lease_revoke(lease)
    }
    fn revision(&self) -> BoxFut<'_, Result<Revision>> {
        self.0.revision()
    }
}
