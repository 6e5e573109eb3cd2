//! The IPAM replica: the pure `Ipam` kept in step with the store, and the one task that changes it.
//!
//! Every replica loads the IPAM from the store, then follows the store's watch. Changes go through
//! one actor task per replica: it decides with the pure core, writes the result in one store
//! transaction guarded by compare-and-swap on the touched keys (the name, the block), and rolls
//! back and refreshes on a conflict with another replica. Concurrent allocations are batched into
//! one transaction (one log sync on the embedded store, one round trip on etcd).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use romana_api::records::{BlockRecord, HostRecord, NameRecord, SegmentRecord, TenantRecord, TokenRecord};
use romana_api::topology::TopologyRequest;
use romana_ipam::spec::{HostSpec, TopologySpec};
use romana_ipam::{
    AllocRequest, Allocation, HostOrigin, HostPlacement, Ipam, IpamError, Released, ReleasedAddress,
    TopologyChange,
};
use romana_model::{Cidr, HostName, NetworkName, SegmentName, TenantName};
use romana_store::{Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn, WatchStream};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, ApiResult};
use crate::keys::Keys;

/// Most operations in one store transaction (etcd allows 128 by default).
const MAX_TXN_OPS: usize = 120;
/// Allocations batched into one transaction.
const MAX_BATCH: usize = 32;
const MAX_ATTEMPTS: usize = 40;

/// A short random pause before retrying after a conflict, so that two replicas racing for the
/// same blocks stop colliding (up to about 1 ms times the attempt number).
fn backoff(attempt: usize) -> std::time::Duration {
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos()) as u64;
    let cap = 1_000 * attempt.min(20) as u64;
    std::time::Duration::from_micros(noise % cap.max(1))
}

/// The replica's view: readers take it briefly; only the actor writes.
#[derive(Debug)]
pub struct Synced {
    pub ipam: Ipam,
    /// The highest store revision applied.
    pub revision: Revision,
    /// Block records as stored, with their revision: the base of every write to a block.
    committed: HashMap<String, (Revision, BlockRecord)>,
    /// Revision applied per key, so that a late watch event never undoes a newer refresh.
    applied: HashMap<String, Revision>,
    tenant_numbers: HashMap<String, u32>,
    segment_numbers: HashMap<(String, String), u32>,
    topology_json: Option<TopologyRequest>,
}

type Reply<T> = oneshot::Sender<ApiResult<T>>;
/// An allocation waiting in a batch: the request, a pinned address, a request token, the reply.
type PendingAlloc = (AllocRequest, Option<IpAddr>, Option<String>, Reply<Allocation>);

#[derive(Debug)]
enum Command {
    Allocate { req: AllocRequest, ip: Option<IpAddr>, token: Option<String>, reply: Reply<Allocation> },
    Release { key: String, reply: Reply<Released> },
    AddHost { spec: HostSpec, reply: Reply<HostPlacement> },
    RemoveHost { name: HostName, reply: Reply<Vec<ReleasedAddress>> },
    Tags { name: HostName, tags: BTreeMap<String, String>, reply: Reply<()> },
    Blackout { cidr: Cidr, add: bool, reply: Reply<()> },
    Topology { request: TopologyRequest, spec: TopologySpec, reply: Reply<TopologyChange> },
    Ping { reply: Reply<Revision> },
}

impl Command {
    /// Answers the command with `e` without doing anything (the replica cannot serve it now).
    fn refuse(self, e: ApiError) {
        match self {
            Command::Allocate { reply, .. } => drop(reply.send(Err(e))),
            Command::Release { reply, .. } => drop(reply.send(Err(e))),
            Command::AddHost { reply, .. } => drop(reply.send(Err(e))),
            Command::RemoveHost { reply, .. } => drop(reply.send(Err(e))),
            Command::Tags { reply, .. } => drop(reply.send(Err(e))),
            Command::Blackout { reply, .. } => drop(reply.send(Err(e))),
            Command::Topology { reply, .. } => drop(reply.send(Err(e))),
            Command::Ping { reply } => drop(reply.send(Err(e))),
        }
    }
}

/// The handle services use.
#[derive(Debug, Clone)]
pub struct IpamHandle {
    tx: mpsc::Sender<Command>,
    view: Arc<RwLock<Synced>>,
    /// Signalled after every batch of store events applied to the replica (so after every
    /// change, local or another replica's): the route manager recomputes on it.
    changed: Arc<tokio::sync::Notify>,
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

fn read_lock(l: &RwLock<Synced>) -> RwLockReadGuard<'_, Synced> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl IpamHandle {
    /// Loads the IPAM from the store (seeding `initial` as the topology if there is none) and
    /// starts the actor.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: Keys,
        initial: Option<TopologyRequest>,
    ) -> ApiResult<IpamHandle> {
        if let Some(req) = initial {
            let spec = req.to_spec().map_err(|p| ApiError::invalid("invalid initial topology", p.0))?;
            Ipam::new(spec)?;
            let key = keys.topology();
            store.txn(Txn::when(vec![Compare::absent(&key)], vec![Op::put(&key, encode(&req))])).await?;
        }
        let (synced, rev) = load(&*store, &keys).await?;
        let watch = store.watch(keys.root(), rev + 1).await?;
        let view = Arc::new(RwLock::new(synced));
        let (tx, rx) = mpsc::channel(4096);
        let changed = Arc::new(tokio::sync::Notify::new());
        let actor = Actor { store, keys, view: Arc::clone(&view), changed: Arc::clone(&changed) };
        tokio::spawn(actor.run(rx, watch));
        Ok(IpamHandle { tx, view, changed })
    }

    /// Waits until the replica has applied a change since the last wait returned (changes in
    /// between coalesce into one wake-up). One waiter per replica: the route manager.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn read<R>(&self, f: impl FnOnce(&Synced) -> R) -> R {
        f(&read_lock(&self.view))
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> ApiResult<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| ApiError::unavailable("IPAM is shutting down"))?;
        rx.await.map_err(|_| ApiError::unavailable("IPAM stopped before answering"))?
    }

    pub async fn allocate(
        &self,
        req: AllocRequest,
        ip: Option<IpAddr>,
        token: Option<String>,
    ) -> ApiResult<Allocation> {
        self.call(|reply| Command::Allocate { req, ip, token, reply }).await
    }
    pub async fn release(&self, key: String) -> ApiResult<Released> {
        self.call(|reply| Command::Release { key, reply }).await
    }
    pub async fn add_host(&self, spec: HostSpec) -> ApiResult<HostPlacement> {
        self.call(|reply| Command::AddHost { spec, reply }).await
    }
    pub async fn remove_host(&self, name: HostName) -> ApiResult<Vec<ReleasedAddress>> {
        self.call(|reply| Command::RemoveHost { name, reply }).await
    }
    pub async fn set_tags(&self, name: HostName, tags: BTreeMap<String, String>) -> ApiResult<()> {
        self.call(|reply| Command::Tags { name, tags, reply }).await
    }
    pub async fn blackout(&self, cidr: Cidr, add: bool) -> ApiResult<()> {
        self.call(|reply| Command::Blackout { cidr, add, reply }).await
    }
    pub async fn update_topology(&self, request: TopologyRequest) -> ApiResult<TopologyChange> {
        let spec = request.to_spec().map_err(|p| ApiError::invalid("invalid topology", p.0))?;
        self.call(|reply| Command::Topology { request, spec, reply }).await
    }

    /// Whether the replica serves changes now: its revision, or 503 saying why not (reloading
    /// after a lost watch, or stopped). A `Ping` through the actor, so it also shows it is not stuck.
    pub async fn ready(&self) -> ApiResult<Revision> {
        self.call(|reply| Command::Ping { reply }).await
    }
}

impl Synced {
    fn empty() -> Synced {
        Synced {
            ipam: Ipam::new(TopologySpec::default()).expect("the empty topology is valid"),
            revision: 0,
            committed: HashMap::new(),
            applied: HashMap::new(),
            tenant_numbers: HashMap::new(),
            segment_numbers: HashMap::new(),
            topology_json: None,
        }
    }

    /// The topology as posted (not as rendered), if any.
    pub fn topology_request(&self) -> Option<&TopologyRequest> {
        self.topology_json.as_ref()
    }

    fn record_for(&self, a: &Allocation, keys: &Keys) -> (String, Revision, BlockRecord) {
        let key = keys.block(a.network.as_str(), &a.block);
        match self.committed.get(&key) {
            Some((rev, rec)) => (key, *rev, rec.clone()),
            None => (
                key,
                0,
                BlockRecord {
                    network: a.network.to_string(),
                    cidr: a.block.to_string(),
                    tenant: a.tenant.to_string(),
                    segment: a.segment.to_string(),
                    host: a.host.to_string(),
                    addresses: BTreeMap::new(),
                },
            ),
        }
    }

    fn host_record(&self, name: &HostName) -> Option<HostRecord> {
        let h = self.ipam.hosts().into_iter().find(|h| &h.name == name)?;
        Some(HostRecord {
            name: h.name.to_string(),
            ip: h.ip.to_string(),
            agent_port: h.agent_port,
            tags: h.tags,
            origin: match h.origin {
                HostOrigin::Topology => "topology".into(),
                HostOrigin::Dynamic => "dynamic".into(),
            },
            placements: h.placement.networks.iter().map(|(n, p, _)| (n.to_string(), p.clone())).collect(),
        })
    }

    /// Applies one stored key-value (a watch event, a refresh or the initial load).
    fn apply(&mut self, keys: &Keys, kind: EventKind, kv: &KeyValue) {
        self.revision = self.revision.max(kv.mod_revision);
        let rel = keys.relative(&kv.key);
        // Only these keys shape the IPAM; names, tokens, policies and the rest are not tracked.
        let tracked =
            ["ipam/topology", "ipam/hosts/", "ipam/blocks/", "ipam/blackouts/", "tenants/", "segments/"];
        if !tracked.iter().any(|t| rel.starts_with(t)) {
            return;
        }
        if self.applied.get(&kv.key).is_some_and(|r| *r >= kv.mod_revision) {
            return;
        }
        self.applied.insert(kv.key.clone(), kv.mod_revision);
        let put = kind == EventKind::Put;
        let result: Result<(), String> = if rel == "ipam/topology" {
            self.apply_topology(put, &kv.value)
        } else if let Some(name) = rel.strip_prefix("ipam/hosts/") {
            self.apply_host(name, put, &kv.value)
        } else if rel.starts_with("ipam/blocks/") {
            self.apply_block(&kv.key, put, &kv.value)
        } else if let Some(c) = rel.strip_prefix("ipam/blackouts/") {
            let cidr: Result<Cidr, _> = c.replacen('_', "/", 1).parse();
            match cidr {
                Ok(cidr) if put => self.ipam.blackout(cidr).map_err(|e| e.to_string()),
                Ok(cidr) => self
                    .ipam
                    .unblackout(cidr)
                    .or_else(|e| if matches!(e, IpamError::NotBlackedOut { .. }) { Ok(()) } else { Err(e) })
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        } else if let Some(t) = rel.strip_prefix("tenants/") {
            if put && let Ok(rec) = serde_json::from_slice::<TenantRecord>(&kv.value) {
                self.tenant_numbers.insert(t.to_owned(), rec.number);
                self.push_numbers(t, None);
            }
            Ok(())
        } else if rel.starts_with("segments/") {
            if put && let Ok(rec) = serde_json::from_slice::<SegmentRecord>(&kv.value) {
                self.segment_numbers.insert((rec.tenant.clone(), rec.name.clone()), rec.number);
                self.push_numbers(&rec.tenant, Some(&rec.name));
            }
            Ok(())
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(key = %kv.key, error = %e, "could not apply a stored change to the IPAM replica");
        }
    }

    fn push_numbers(&mut self, tenant: &str, segment: Option<&str>) {
        let Some(tn) = self.tenant_numbers.get(tenant).copied() else { return };
        let (Ok(t), seg) = (TenantName::new(tenant), segment.and_then(|s| SegmentName::new(s).ok())) else {
            return;
        };
        let sn =
            seg.as_ref().and_then(|s| self.segment_numbers.get(&(tenant.to_owned(), s.to_string())).copied());
        for (net, _) in self.ipam.classic_networks() {
            let pair = seg.as_ref().zip(sn);
            let _ = self.ipam.set_classic_numbers(&net, &t, tn, pair);
        }
    }

    fn apply_topology(&mut self, put: bool, value: &[u8]) -> Result<(), String> {
        if !put {
            return Ok(());
        }
        let req: TopologyRequest = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        let spec = req.to_spec().map_err(|e| e.to_string())?;
        let (next, _) = self.ipam.update_topology(spec).map_err(|e| e.to_string())?;
        self.ipam = next;
        self.topology_json = Some(req);
        let tenants: Vec<String> = self.tenant_numbers.keys().cloned().collect();
        for t in tenants {
            self.push_numbers(&t, None);
        }
        let segs: Vec<(String, String)> = self.segment_numbers.keys().cloned().collect();
        for (t, s) in segs {
            self.push_numbers(&t, Some(&s));
        }
        Ok(())
    }

    fn apply_host(&mut self, name: &str, put: bool, value: &[u8]) -> Result<(), String> {
        let host = HostName::new(name).map_err(|e| e.to_string())?;
        if !put {
            return match self.ipam.remove_host(&host) {
                Ok(_) | Err(IpamError::UnknownHost(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
        }
        let rec: HostRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if let Some(p) = self.ipam.hosts().into_iter().find(|h| h.name == host) {
            if p.tags != rec.tags {
                self.ipam.update_host_tags(&host, rec.tags).map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let mut spec = HostSpec::new(host, rec.ip.parse().map_err(|_| format!("bad address {}", rec.ip))?);
        spec.agent_port = rec.agent_port;
        spec.tags = rec.tags;
        let paths: BTreeMap<NetworkName, String> = rec
            .placements
            .into_iter()
            .filter_map(|(n, p)| NetworkName::new(n).ok().map(|n| (n, p)))
            .collect();
        let origin = if rec.origin == "topology" { HostOrigin::Topology } else { HostOrigin::Dynamic };
        self.ipam.add_host_at(spec, origin, &paths).map(|_| ()).map_err(|e| e.to_string())
    }

    fn apply_block(&mut self, key: &str, put: bool, value: &[u8]) -> Result<(), String> {
        let rec: Option<BlockRecord> =
            if put { Some(serde_json::from_slice(value).map_err(|e| e.to_string())?) } else { None };
        let cidr: Cidr = match (&rec, self.committed.get(key)) {
            (Some(r), _) => r.cidr.parse().map_err(|e: romana_model::CidrError| e.to_string())?,
            (None, Some((_, old))) => old.cidr.parse().map_err(|e: romana_model::CidrError| e.to_string())?,
            (None, None) => return Ok(()),
        };
        let want: BTreeMap<String, String> = rec.as_ref().map(|r| r.addresses.clone()).unwrap_or_default();
        for a in self.ipam.block_allocations(cidr) {
            if want.get(&a.ip.to_string()) != Some(&a.name.to_string()) {
                let _ = self.ipam.release(&a.ip.to_string());
            }
        }
        if let Some(r) = &rec {
            let mut problems = Vec::new();
            for (ip, name) in &r.addresses {
                let Ok(ip_addr) = ip.parse::<IpAddr>() else { continue };
                if self.ipam.lookup(name).is_some_and(|a| a.ip == ip_addr) {
                    continue;
                }
                if self.ipam.lookup(name).is_some() {
                    let _ = self.ipam.release(name);
                }
                let req = match request(name, &r.host, &r.tenant, &r.segment) {
                    Ok(req) => req,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                if let Err(e) = self.ipam.allocate_specific(&req, ip_addr) {
                    problems.push(format!("{name} {ip}: {e}"));
                }
            }
            self.committed.insert(key.to_owned(), (self.applied.get(key).copied().unwrap_or(0), r.clone()));
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
        } else {
            self.committed.remove(key);
        }
        Ok(())
    }
}

fn request(name: &str, host: &str, tenant: &str, segment: &str) -> Result<AllocRequest, String> {
    Ok(AllocRequest {
        name: name.parse().map_err(|e: romana_model::NameError| e.to_string())?,
        host: host.parse().map_err(|e: romana_model::NameError| e.to_string())?,
        tenant: tenant.parse().map_err(|e: romana_model::NameError| e.to_string())?,
        segment: segment.parse().map_err(|e: romana_model::NameError| e.to_string())?,
    })
}

/// Loads everything under the prefix, applying it in dependency order.
async fn load(store: &dyn Store, keys: &Keys) -> ApiResult<(Synced, Revision)> {
    let (kvs, rev) = store.range(keys.root()).await?;
    let mut s = Synced::empty();
    let rank = |kv: &KeyValue| {
        let rel = keys.relative(&kv.key);
        if rel == "ipam/topology" {
            0
        } else if rel.starts_with("tenants/") {
            1
        } else if rel.starts_with("segments/") {
            2
        } else if rel.starts_with("ipam/hosts/") {
            3
        } else if rel.starts_with("ipam/blackouts/") {
            4
        } else {
            5
        }
    };
    let mut ordered: Vec<&KeyValue> = kvs.iter().collect();
    ordered.sort_by_key(|kv| (rank(kv), kv.key.clone()));
    for kv in ordered {
        s.apply(keys, EventKind::Put, kv);
    }
    s.revision = rev;
    Ok((s, rev))
}

/// Runs `work` while answering every command that arrives with `refusal()`; `None` when the
/// command channel closed (the replica is shut down).
async fn refusing<T>(
    rx: &mut mpsc::Receiver<Command>,
    refusal: impl Fn() -> ApiError,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Some(out),
            cmd = rx.recv() => cmd?.refuse(refusal()),
        }
    }
}

struct Actor {
    store: Arc<dyn Store>,
    keys: Keys,
    view: Arc<RwLock<Synced>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Actor {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Synced> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self, mut rx: mpsc::Receiver<Command>, mut watch: WatchStream) {
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    let mut batch = vec![cmd];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    self.handle(batch).await;
                }
                events = watch.recv() => match events {
                    Some(Ok(events)) => self.apply_events(&events),
                    other => {
                        let cause = match other {
                            Some(Err(e)) => e.to_string(),
                            _ => "the store closed the watch".to_owned(),
                        };
                        tracing::warn!(error = %cause, "store watch ended; reloading the IPAM replica");
                        match self.reload(&mut rx, &cause).await {
                            Some(w) => watch = w,
                            None => return,
                        }
                    }
                }
            }
        }
    }

    fn apply_events(&self, events: &[Event]) {
        {
            let mut s = self.write();
            for e in events {
                s.apply(&self.keys, e.kind, &e.kv);
            }
        }
        self.changed.notify_one();
    }

    /// Full reload after a lost watch; retries until the store answers. Meanwhile every command
    /// is answered at once with 503 naming the cause (nothing is changed, so the client may retry),
    /// instead of waiting in the queue until the request times out. `None`: the replica is shut down.
    async fn reload(&self, rx: &mut mpsc::Receiver<Command>, cause: &str) -> Option<WatchStream> {
        let started = std::time::Instant::now();
        let mut last = cause.to_owned();
        for attempt in 1u32.. {
            let refusal = |last: &str| {
                ApiError::unavailable(format!(
                    "the IPAM replica is reloading from the store after: {cause} (for {:.1} s, attempt \
                     {attempt}, last error: {last}); nothing was changed, try again",
                    started.elapsed().as_secs_f64()
                ))
            };
            let loaded = refusing(rx, || refusal(&last), self.load_and_watch()).await?;
            match loaded {
                Ok((synced, w)) => {
                    let (revision, addresses) = (synced.revision, synced.ipam.address_count());
                    *self.write() = synced;
                    self.changed.notify_one();
                    tracing::info!(
                        revision,
                        addresses,
                        seconds = started.elapsed().as_secs_f64(),
                        attempt,
                        "IPAM replica reloaded"
                    );
                    return Some(w);
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "cannot reload the IPAM replica from the store");
                    last = e;
                }
            }
            refusing(rx, || refusal(&last), tokio::time::sleep(std::time::Duration::from_millis(500)))
                .await?;
        }
        None
    }

    /// One reload attempt: the whole state, and a watch from just after it.
    async fn load_and_watch(&self) -> Result<(Synced, WatchStream), String> {
        let (synced, rev) = load(&*self.store, &self.keys).await.map_err(|e| e.message)?;
        let w = self.store.watch(self.keys.root(), rev + 1).await.map_err(|e| e.to_string())?;
        Ok((synced, w))
    }

    /// Re-reads keys from the store and applies them (after a conflict with another replica).
    async fn refresh(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            let kv = self.store.get(key).await?;
            match kv {
                Some(kv) => self.write().apply(&self.keys, EventKind::Put, &kv),
                None => {
                    let rev = self.store.revision().await?;
                    let gone = KeyValue {
                        key: key.clone(),
                        value: vec![],
                        create_revision: 0,
                        mod_revision: rev,
                        version: 0,
                        lease: 0,
                    };
                    self.write().apply(&self.keys, EventKind::Delete, &gone);
                }
            }
        }
        Ok(())
    }

    async fn handle(&self, batch: Vec<Command>) {
        let mut allocs = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Allocate { req, ip, token, reply } => allocs.push((req, ip, token, reply)),
                other => {
                    if !allocs.is_empty() {
                        self.allocate(std::mem::take(&mut allocs)).await;
                    }
                    self.one(other).await;
                }
            }
        }
        if !allocs.is_empty() {
            self.allocate(allocs).await;
        }
    }

    /// Tenant and segment numbers for classic networks, created on first use.
    async fn numbers(&self, allocs: &[PendingAlloc]) -> ApiResult<()> {
        let missing: Vec<(String, String)> = {
            let s = read_lock(&self.view);
            if s.ipam.classic_networks().is_empty() {
                return Ok(());
            }
            allocs
                .iter()
                .map(|(r, ..)| (r.tenant.to_string(), r.segment.to_string()))
                .filter(|(t, sg)| {
                    !s.tenant_numbers.contains_key(t)
                        || !s.segment_numbers.contains_key(&(t.clone(), sg.clone()))
                })
                .collect()
        };
        for (t, sg) in missing {
            let limits = crate::tenants::limits(&read_lock(&self.view).ipam);
            let ts = crate::tenants::TenantStore { store: &*self.store, keys: &self.keys, limits };
            let (tn, sn) = ts.ensure(&t, &sg).await?;
            let mut s = self.write();
            s.tenant_numbers.insert(t.clone(), tn);
            s.segment_numbers.insert((t.clone(), sg.clone()), sn);
            s.push_numbers(&t, Some(&sg));
        }
        Ok(())
    }

    async fn allocate(&self, mut allocs: Vec<PendingAlloc>) {
        if let Err(e) = self.numbers(&allocs).await {
            for (.., reply) in allocs {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        // Request tokens seen before (by the same tenant) resolve to the name they created.
        for (req, _, token, _) in &mut allocs {
            if let Some(t) = token {
                let holder = |name: &str| {
                    let v = self.view.read().unwrap_or_else(|p| p.into_inner());
                    v.ipam.lookup(name).map(|a| a.tenant.to_string())
                };
                if let Some(name) = token_name(&*self.store, &self.keys, req.tenant.as_str(), t, holder).await
                    && let Ok(name) = name.parse()
                {
                    req.name = name;
                }
            }
        }
        for attempt in 1..=MAX_ATTEMPTS {
            // At most 3 operations per allocation (name, token, block): a batch fits one transaction.
            let mut results: Vec<ApiResult<Allocation>> = Vec::with_capacity(allocs.len());
            let mut fresh: Vec<Allocation> = Vec::new();
            let mut blocks: BTreeMap<String, (Revision, BlockRecord)> = BTreeMap::new();
            let mut ops = Vec::new();
            let mut compares = Vec::new();
            {
                let mut s = self.write();
                for (req, ip, token, _) in &allocs {
                    let got = match ip {
                        Some(ip) => s.ipam.allocate_specific(req, *ip),
                        None => s.ipam.allocate(req),
                    };
                    match got {
                        Ok(a) if a.fresh => {
                            let (key, rev, mut rec) = blocks
                                .get(&self.keys.block(a.network.as_str(), &a.block))
                                .map(|(r, rec)| {
                                    (self.keys.block(a.network.as_str(), &a.block), *r, rec.clone())
                                })
                                .unwrap_or_else(|| s.record_for(&a, &self.keys));
                            rec.addresses.insert(a.ip.to_string(), a.name.to_string());
                            blocks.insert(key, (rev, rec));
                            let name_key = self.keys.name(a.name.as_str());
                            compares.push(Compare::absent(&name_key));
                            let nr = NameRecord {
                                ip: a.ip.to_string(),
                                network: a.network.to_string(),
                                block: a.block.to_string(),
                            };
                            ops.push(Op::put(name_key, encode(&nr)));
                            if let Some(t) = token {
                                ops.push(Op::put(
                                    self.keys.tenant_token(a.tenant.as_str(), t),
                                    encode(&TokenRecord { name: a.name.to_string() }),
                                ));
                            }
                            fresh.push(a.clone());
                            results.push(Ok(a));
                        }
                        Ok(a) => results.push(Ok(a)),
                        Err(e) => results.push(Err(e.into())),
                    }
                }
            }
            if fresh.is_empty() {
                return self.finish(allocs, results);
            }
            for (key, (rev, rec)) in &blocks {
                compares.push(Compare::unchanged(key, *rev));
                ops.push(Op::put(key, encode(rec)));
            }
            let outcome = self.store.txn(Txn { compare: compares, success: ops, failure: vec![] }).await;
            match outcome {
                Ok(r) if r.succeeded => {
                    let mut s = self.write();
                    for (key, (_, rec)) in blocks {
                        s.applied.insert(key.clone(), r.revision);
                        s.committed.insert(key, (r.revision, rec));
                    }
                    drop(s);
                    return self.finish(allocs, results);
                }
                Ok(_) => {
                    self.rollback(&fresh);
                    let mut stale: Vec<String> = blocks.keys().cloned().collect();
                    for a in &fresh {
                        // A name taken elsewhere points at the block to refresh.
                        if let Ok(Some(kv)) = self.store.get(&self.keys.name(a.name.as_str())).await
                            && let Ok(nr) = serde_json::from_slice::<NameRecord>(&kv.value)
                            && let Ok(c) = nr.block.parse::<Cidr>()
                        {
                            stale.push(self.keys.block(&nr.network, &c));
                        }
                    }
                    stale.sort();
                    stale.dedup();
                    if let Err(e) = self.refresh(&stale).await {
                        return self.fail_fresh(allocs, results, &fresh, e.into());
                    }
                    tracing::debug!(attempt, "allocation conflicted with another replica; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    // A batch that collided goes on one allocation at a time: smaller transactions
                    // collide less with another replica working on the same blocks.
                    if allocs.len() > 1 {
                        for one in allocs {
                            Box::pin(self.allocate(vec![one])).await;
                        }
                        return;
                    }
                }
                Err(e) => {
                    self.rollback(&fresh);
                    return self.fail_fresh(allocs, results, &fresh, e.into());
                }
            }
        }
        let results: Vec<_> = allocs
            .iter()
            .map(|_| Err(ApiError::unavailable("too much contention on the IPAM; try again")))
            .collect();
        self.finish(allocs, results)
    }

    fn rollback(&self, fresh: &[Allocation]) {
        let mut s = self.write();
        for a in fresh.iter().rev() {
            let _ = s.ipam.release(a.name.as_str());
        }
    }

    fn fail_fresh(
        &self,
        allocs: Vec<PendingAlloc>,
        mut results: Vec<ApiResult<Allocation>>,
        fresh: &[Allocation],
        e: ApiError,
    ) {
        for r in &mut results {
            if let Ok(a) = r
                && fresh.iter().any(|f| f.name == a.name)
            {
                *r = Err(e.clone());
            }
        }
        self.finish(allocs, results);
    }

    fn finish(&self, allocs: Vec<PendingAlloc>, results: Vec<ApiResult<Allocation>>) {
        for ((.., reply), r) in allocs.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }

    async fn one(&self, cmd: Command) {
        match cmd {
            Command::Allocate { .. } => unreachable!("allocations are batched"),
            Command::Release { key, reply } => {
                let _ = reply.send(self.release(&key).await);
            }
            Command::AddHost { spec, reply } => {
                let _ = reply.send(self.add_host(spec).await);
            }
            Command::RemoveHost { name, reply } => {
                let _ = reply.send(self.remove_host(&name).await);
            }
            Command::Tags { name, tags, reply } => {
                let _ = reply.send(self.tags(&name, tags).await);
            }
            Command::Blackout { cidr, add, reply } => {
                let _ = reply.send(self.blackout(cidr, add).await);
            }
            Command::Topology { request, spec, reply } => {
                let _ = reply.send(self.topology(request, spec).await);
            }
            Command::Ping { reply } => {
                let _ = reply.send(Ok(read_lock(&self.view).revision));
            }
        }
    }

    async fn release(&self, key: &str) -> ApiResult<Released> {
        for attempt in 1..=MAX_ATTEMPTS {
            let (released, allocation, block_key, rev, rec) = {
                let mut s = self.write();
                let a = s.ipam.lookup(key).or_else(|| key.parse().ok().and_then(|ip| s.ipam.lookup_ip(ip)));
                let Some(a) = a else {
                    return Err(ApiError::not_found(format!("no allocated address named or numbered {key}")));
                };
                let (block_key, rev, mut rec) = s.record_for(&a, &self.keys);
                let released = s.ipam.release(a.name.as_str())?;
                rec.addresses.remove(&a.ip.to_string());
                (released, a, block_key, rev, rec)
            };
            let mut ops = vec![Op::delete(self.keys.name(allocation.name.as_str()))];
            ops.push(if rec.addresses.is_empty() {
                Op::delete(&block_key)
            } else {
                Op::put(&block_key, encode(&rec))
            });
            match self.store.txn(Txn::when(vec![Compare::unchanged(&block_key, rev)], ops)).await {
                Ok(r) if r.succeeded => {
                    let mut s = self.write();
                    s.applied.insert(block_key.clone(), r.revision);
                    if rec.addresses.is_empty() {
                        s.committed.remove(&block_key);
                    } else {
                        s.committed.insert(block_key, (r.revision, rec));
                    }
                    return Ok(released);
                }
                outcome => {
                    let req = AllocRequest {
                        name: allocation.name.clone(),
                        host: allocation.host.clone(),
                        tenant: allocation.tenant.clone(),
                        segment: allocation.segment.clone(),
                    };
                    let _ = self.write().ipam.allocate_specific(&req, allocation.ip);
                    if let Err(e) = outcome {
                        return Err(e.into());
                    }
                    self.refresh(&[block_key]).await?;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(ApiError::unavailable("too much contention on the IPAM; try again"))
    }

    async fn add_host(&self, spec: HostSpec) -> ApiResult<HostPlacement> {
        let name = spec.name.clone();
        let key = self.keys.host(name.as_str());
        let ip_key = self.keys.host_ip(&spec.ip.to_string());
        for _ in 0..MAX_ATTEMPTS {
            let (placement, rec, existed) = {
                let mut s = self.write();
                let existed = s.ipam.host_placement(&name).is_some();
                let placement = s.ipam.add_host(spec.clone())?;
                let rec = s.host_record(&name).expect("just added");
                (placement, rec, existed)
            };
            if existed {
                return Ok(placement);
            }
            let txn = Txn::when(
                vec![Compare::absent(&key), Compare::absent(&ip_key)],
                vec![Op::put(&key, encode(&rec)), Op::put(&ip_key, name.as_str())],
            );
            match self.store.txn(txn).await {
                Ok(r) if r.succeeded => {
                    let mut s = self.write();
                    s.applied.insert(key.clone(), r.revision);
                    return Ok(placement);
                }
                outcome => {
                    let _ = self.write().ipam.remove_host(&name);
                    outcome?;
                    self.refresh(std::slice::from_ref(&key)).await?;
                    if let Ok(Some(kv)) = self.store.get(&ip_key).await
                        && kv.value != name.as_str().as_bytes()
                    {
                        return Err(ApiError::conflict(format!(
                            "address {} is already used by host {}",
                            spec.ip,
                            String::from_utf8_lossy(&kv.value)
                        )));
                    }
                }
            }
        }
        Err(ApiError::unavailable("too much contention adding hosts; try again"))
    }

    async fn remove_host(&self, name: &HostName) -> ApiResult<Vec<ReleasedAddress>> {
        let (rec, held) = {
            let s = read_lock(&self.view);
            let rec =
                s.host_record(name).ok_or_else(|| ApiError::not_found(format!("unknown host {name}")))?;
            let held: Vec<Allocation> =
                s.ipam.allocations().into_iter().filter(|a| &a.host == name).collect();
            (rec, held)
        };
        let key = self.keys.host(name.as_str());
        let r = self
            .store
            .txn(Txn::when(vec![], vec![Op::delete(&key), Op::delete(self.keys.host_ip(&rec.ip))]))
            .await?;
        // Release the host's addresses block by block, in transactions etcd accepts.
        let mut by_block: BTreeMap<String, Vec<Allocation>> = BTreeMap::new();
        for a in held {
            by_block.entry(self.keys.block(a.network.as_str(), &a.block)).or_default().push(a);
        }
        for (block_key, addresses) in by_block {
            for chunk in addresses.chunks(MAX_TXN_OPS - 2) {
                for _ in 0..MAX_ATTEMPTS {
                    let (rev, mut rec) = {
                        let s = read_lock(&self.view);
                        match s.committed.get(&block_key) {
                            Some(c) => c.clone(),
                            None => break,
                        }
                    };
                    for a in chunk {
                        rec.addresses.remove(&a.ip.to_string());
                    }
                    let mut ops: Vec<Op> =
                        chunk.iter().map(|a| Op::delete(self.keys.name(a.name.as_str()))).collect();
                    ops.push(if rec.addresses.is_empty() {
                        Op::delete(&block_key)
                    } else {
                        Op::put(&block_key, encode(&rec))
                    });
                    let out =
                        self.store.txn(Txn::when(vec![Compare::unchanged(&block_key, rev)], ops)).await?;
                    if out.succeeded {
                        let mut s = self.write();
                        s.applied.insert(block_key.clone(), out.revision);
                        if rec.addresses.is_empty() {
                            s.committed.remove(&block_key);
                        } else {
                            s.committed.insert(block_key.clone(), (out.revision, rec));
                        }
                        break;
                    }
                    self.refresh(std::slice::from_ref(&block_key)).await?;
                }
            }
        }
        let mut s = self.write();
        s.applied.insert(key, r.revision);
        match s.ipam.remove_host(name) {
            Ok(released) => Ok(released),
            Err(IpamError::UnknownHost(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn tags(&self, name: &HostName, tags: BTreeMap<String, String>) -> ApiResult<()> {
        let key = self.keys.host(name.as_str());
        let (rev, old_tags, rec) = {
            let mut s = self.write();
            let old = s.ipam.hosts().into_iter().find(|h| &h.name == name).map(|h| h.tags);
            let old = old.ok_or_else(|| ApiError::not_found(format!("unknown host {name}")))?;
            s.ipam.update_host_tags(name, tags)?;
            (s.applied.get(&key).copied().unwrap_or(0), old, s.host_record(name).expect("known host"))
        };
        match self
            .store
            .txn(Txn::when(vec![Compare::unchanged(&key, rev)], vec![Op::put(&key, encode(&rec))]))
            .await
        {
            Ok(r) if r.succeeded => {
                self.write().applied.insert(key, r.revision);
                Ok(())
            }
            outcome => {
                let _ = self.write().ipam.update_host_tags(name, old_tags);
                outcome?;
                self.refresh(&[key]).await?;
                Err(ApiError::conflict(format!("host {name} changed meanwhile; try again")))
            }
        }
    }

    async fn blackout(&self, cidr: Cidr, add: bool) -> ApiResult<()> {
        let key = self.keys.blackout(&cidr);
        {
            let mut s = self.write();
            if add { s.ipam.blackout(cidr)? } else { s.ipam.unblackout(cidr)? }
        }
        let op = if add { Op::put(&key, cidr.to_string()) } else { Op::delete(&key) };
        match self.store.txn(Txn::when(vec![], vec![op])).await {
            Ok(r) => {
                self.write().applied.insert(key, r.revision);
                Ok(())
            }
            Err(e) => {
                let mut s = self.write();
                let _ = if add { s.ipam.unblackout(cidr) } else { s.ipam.blackout(cidr) };
                Err(e.into())
            }
        }
    }

    async fn topology(&self, request: TopologyRequest, spec: TopologySpec) -> ApiResult<TopologyChange> {
        let key = self.keys.topology();
        let (next, change, rev, hosts) = {
            let s = read_lock(&self.view);
            let (next, change) = s.ipam.update_topology(spec)?;
            let rev = s.applied.get(&key).copied().unwrap_or(0);
            // Hosts whose stored placement changes are rewritten with the topology.
            let mut hosts = Vec::new();
            let tmp = Synced { ipam: next, ..Synced::empty() };
            for h in tmp.ipam.hosts() {
                let new = tmp.host_record(&h.name).expect("listed host");
                if s.host_record(&h.name).as_ref() != Some(&new) && new.origin == "dynamic" {
                    hosts.push(new);
                }
            }
            (tmp.ipam, change, rev, hosts)
        };
        let mut ops = vec![Op::put(&key, encode(&request))];
        for h in hosts.iter().take(MAX_TXN_OPS - 1) {
            ops.push(Op::put(self.keys.host(&h.name), encode(h)));
        }
        let r = self.store.txn(Txn::when(vec![Compare::unchanged(&key, rev)], ops)).await?;
        if !r.succeeded {
            self.refresh(&[key]).await?;
            return Err(ApiError::conflict("the topology changed meanwhile; review and post again"));
        }
        for h in hosts.iter().skip(MAX_TXN_OPS - 1) {
            self.store.txn(Txn::when(vec![], vec![Op::put(self.keys.host(&h.name), encode(h))])).await?;
        }
        let mut s = self.write();
        s.ipam = next;
        s.topology_json = Some(request);
        s.applied.insert(key, r.revision);
        for h in &hosts {
            s.applied.insert(self.keys.host(&h.name), r.revision);
        }
        Ok(change)
    }
}

/// The name a request token created for `tenant`: under the tenant's key, or (a token written
/// before tokens were kept per tenant) under the old global key when that name is still held by
/// `tenant` (`holder` says which tenant holds a name), so an old token of another tenant is
/// never followed.
pub(crate) async fn token_name(
    store: &dyn romana_store::Store,
    keys: &crate::keys::Keys,
    tenant: &str,
    token: &str,
    holder: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let record = |kv: Option<romana_store::KeyValue>| {
        kv.and_then(|kv| serde_json::from_slice::<TokenRecord>(&kv.value).ok()).map(|r| r.name)
    };
    if let Some(name) = record(store.get(&keys.tenant_token(tenant, token)).await.ok().flatten()) {
        return Some(name);
    }
    record(store.get(&keys.token(token)).await.ok().flatten())
        .filter(|n| holder(n).as_deref() == Some(tenant))
}
