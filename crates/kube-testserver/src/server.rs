//! `ApiServer`: the running server (its own runtime thread, a listener on 127.0.0.1), the
//! shared state the handlers use, and direct object access for tests.

use crate::ids;
use crate::resources::{RESOURCES, find_by_api};
use crate::shared::{ApiRequest, Shared};
use crate::status::ApiError;
use crate::store::{Key, Obj, Preconditions, Stamp, Store};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; port 0 picks one at run time.
    pub listen: SocketAddr,
    /// When set, every request needs `Authorization: Bearer <token>` (else 401).
    pub token: Option<String>,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK (the real server: about a
    /// minute; shorter here so tests see them).
    pub bookmark_interval: Duration,
    /// Events kept for watch resumption; older ones are compacted away.
    pub max_history: usize,
    /// When set, the state is loaded from this file at start and written to it after every
    /// change, so a restarted server keeps its objects and resourceVersion (like an API server
    /// restarted on the same etcd: old versions are compacted, clients relist).
    pub state_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            bookmark_interval: Duration::from_secs(1),
            max_history: 1_000_000,
            state_file: None,
        }
    }
}

/// A running test API server. Dropping it stops the server and its runtime.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Starts on 127.0.0.1 with a port chosen at run time, on its own runtime thread (usable
    /// from sync and async tests).
    pub fn start() -> std::io::Result<ApiServer> {
        ApiServer::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> std::io::Result<ApiServer> {
        let listener = std::net::TcpListener::bind(opts.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let store = match &opts.state_file {
            Some(p) if p.exists() => {
                let text = std::fs::read(p)?;
                let snap: Value = serde_json::from_slice(&text)
                    .map_err(|e| std::io::Error::other(format!("state file {}: {e}", p.display())))?;
                Store::restore(&snap, opts.max_history)
                    .map_err(|e| std::io::Error::other(format!("state file {}: {e}", p.display())))?
            }
            _ => Store::new(opts.max_history),
        };
        let (changes, _) = watch::channel((store.rv(), 0));
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            changes,
            requests: Mutex::new(Vec::new()),
            token: opts.token.clone(),
            bookmark_interval: opts.bookmark_interval,
            address: addr.to_string(),
            state_file: opts.state_file.clone(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let app = crate::http::router(shared.clone());
        let thread = std::thread::Builder::new().name("kube-testserver".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                // No graceful shutdown: open watches never finish by themselves. Leaving
                // block_on drops the runtime, which ends every connection.
                tokio::select! {
                    _ = axum::serve(listener, app).into_future() => {}
                    _ = stopped => {}
                }
            });
        })?;
        ready_rx.recv().map_err(|_| std::io::Error::other("the server thread died while starting"))??;
        Ok(ApiServer { shared, addr, token: opts.token, stop: Some(stop), thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig (cluster, user, context "test", current-context) pointing at the
    /// server, with the bearer token when one is set.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig(&self.url(), self.token.as_deref()))
    }

    /// Forgets the event history and closes every open watch: a client resuming from any
    /// resourceVersion it has seen gets 410 Expired and must relist.
    pub fn compact(&self) {
        self.shared.compact();
    }

    /// Every request seen so far (discovery excluded).
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared.requests.lock().expect("request log lock is never poisoned").clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().expect("store lock is never poisoned").rv()
    }

    fn key(api: &str, resource: &str, ns: Option<&str>, name: &str) -> Result<Key, ApiError> {
        let res = find_by_api(api, resource).ok_or_else(ApiError::no_route)?;
        let ns = if RESOURCES[res].namespaced { ns.unwrap_or("default") } else { "" };
        Ok(Key { res, ns: ns.to_string(), name: name.to_string() })
    }

    /// The object `name` of `resource` in API version `api` (`v1`, `networking.k8s.io/v1`).
    pub fn get_object(&self, api: &str, resource: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let key = Self::key(api, resource, ns, name).ok()?;
        let store = self.shared.store.lock().expect("store lock is never poisoned");
        store.get(&key).ok().map(|o| (*o).clone())
    }

    /// Creates or replaces (unconditionally) an object, exactly as POST or PUT would: the
    /// namespace must exist, metadata is maintained, watchers see the event.
    pub fn put_object(&self, api: &str, resource: &str, mut obj: Value) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let key = Self::key(api, resource, ns.as_deref(), &name)?;
        let stamp = Stamp { now: ids::now_rfc3339(), uid: ids::uid(), suffix: ids::name_suffix() };
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let out: Result<Obj, ApiError> = self.shared.mutate(|s| match s.get(&key) {
            Ok(_) => s.replace(&key, obj),
            Err(_) => s.create(key.res, &key.ns, obj, &stamp),
        });
        out.map(|o| (*o).clone())
    }

    /// Deletes an object as DELETE would (a namespace takes its objects with it).
    pub fn delete_object(
        &self,
        api: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let key = Self::key(api, resource, ns, name)?;
        self.shared.mutate(|s| s.delete(&key, &Preconditions::default())).map(|o| (*o).clone())
    }

    /// Every object of `resource` (all namespaces), in key order.
    pub fn list_objects(&self, api: &str, resource: &str) -> Vec<Value> {
        let Some(res) = find_by_api(api, resource) else { return Vec::new() };
        let store = self.shared.store.lock().expect("store lock is never poisoned");
        store.all(res).into_iter().map(|o| (*o).clone()).collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A kubeconfig (YAML) with cluster, user and context all named "test".
pub fn kubeconfig(server: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("    token: {}\n", serde_json::Value::from(t)),
        None => "    {}\n".to_string(),
    };
    let user_block = if token.is_some() { format!("  user:\n{user}") } else { "  user: {}\n".to_string() };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\nusers:\n- name: test\n{user_block}contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\n"
    )
}
