//! State the HTTP handlers, the watch streams and `ApiServer` share: the object store, the
//! change signal watchers wake on, and the log of requests as RBAC sees them.

use crate::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// One request as RBAC sees it: Kubernetes verb (`get`, `list`, `watch`, `create`, `update`,
/// `patch`, `delete`, `deletecollection`), API group ("" for core), resource (plural) and
/// namespace (None for cluster-scoped and all-namespaces requests).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiRequest {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
}

/// State shared by the handlers and `ApiServer`.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// (current resourceVersion, compaction epoch): watchers wake on every change and end
    /// when the epoch moves.
    pub changes: watch::Sender<(u64, u64)>,
    pub requests: Mutex<Vec<ApiRequest>>,
    pub token: Option<String>,
    pub bookmark_interval: Duration,
    pub address: String,
    pub state_file: Option<PathBuf>,
}

impl Shared {
    /// Runs `f` on the store and wakes the watchers.
    pub fn mutate<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.store.lock().expect("store lock is never poisoned");
        let before = store.rv();
        let out = f(&mut store);
        let rv = store.rv();
        if rv != before
            && let Some(path) = &self.state_file
            && let Err(e) = save_state(path, &store.snapshot())
        {
            // Tests that persist state rely on it: losing a write must not pass silently.
            panic!("writing the state file {}: {e}", path.display());
        }
        drop(store);
        self.changes.send_modify(|c| c.0 = rv);
        out
    }

    pub fn compact(&self) {
        let mut store = self.store.lock().expect("store lock is never poisoned");
        store.compact();
        let rv = store.rv();
        drop(store);
        self.changes.send_modify(|c| *c = (rv, c.1 + 1));
    }

    pub fn record(&self, r: ApiRequest) {
        self.requests.lock().expect("request log lock is never poisoned").push(r);
    }
}

/// Writes the snapshot next to `path`, then renames it over `path` (a crash leaves the old or
/// the new state, never half of one).
pub(crate) fn save_state(path: &Path, snapshot: &Value) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(snapshot).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}
