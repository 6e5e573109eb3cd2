//! Policy enforcement on this host: keeps romanad's tenants, policies and endpoints (followed on
//! the watch), compiles the host's `inet romana` table with the policy core, and applies the
//! difference from the table as last applied as one nft transaction (through a libnftables
//! context kept open). CNI ADD registers its endpoint and syncs before it answers (fail-closed);
//! a periodic check compares nftables' generation id with the one the last transaction left and,
//! only when something else committed a change, reads the kernel's table and repairs it; a
//! restart converges without flushing (the table stays in force while the agent is away).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use romana_api::netpol::NetworkPolicy;
use romana_api::policy::Policy;
use romana_api::rest::{EndpointInfo, Tenant, WatchEvent};
use romana_client::{Client, ClientError};
use romana_host::nft::Nft;
use romana_policy::firewall::{CompileCache, FirewallInput, compile_cached, unfiltered_v4};
use romana_policy::nftplan::{Observed, PlanSummary, plan};
use romana_policy::{Endpoint, PolicyRules, cluster, nftjson};

use crate::metrics::Metrics;

fn lock(nft: &Mutex<Nft>) -> std::sync::MutexGuard<'_, Nft> {
    nft.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the table is compiled from, as romanad last told us, kept in the policy core's terms so
/// that a pass converts nothing it converted before.
#[derive(Debug, Default)]
struct Inputs {
    tenants: Vec<Tenant>,
    /// Romana policies by id, and NetworkPolicies by `namespace/name`, as rules.
    romana: BTreeMap<String, Vec<PolicyRules>>,
    netpols: BTreeMap<String, PolicyRules>,
    /// Every endpoint, as the slice the compiler takes, changed in place (no copy of 10,000
    /// endpoints per change: passes hold it only while they compile), and where each one is.
    endpoints: Arc<Vec<Endpoint>>,
    positions: BTreeMap<String, usize>,
    /// Inputs changed since the last successful sync.
    dirty: bool,
    /// Changes whenever tenants change or everything was re-read: the compile cache's validity.
    stamp: u64,
    /// Endpoint changes (old, new) since the last pass, which the compile cache takes in place.
    pending: Vec<(Option<Endpoint>, Option<Endpoint>)>,
    /// Everything was read from romanad at least once. Until then no pass runs: a restarted
    /// agent must not replace the table in force with one compiled from nothing.
    loaded: bool,
}

fn netpol_key(np: &NetworkPolicy) -> String {
    format!("{}/{}", np.metadata.namespace, np.metadata.name)
}

impl Inputs {
    fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.positions.get(name).map(|i| &self.endpoints[*i])
    }

    /// Sets (`Some`) or removes (`None`) an endpoint; returns what it was.
    fn put_endpoint(&mut self, name: &str, ep: Option<Endpoint>) -> Option<Endpoint> {
        let list = Arc::make_mut(&mut self.endpoints);
        match (self.positions.get(name).copied(), ep) {
            (Some(i), Some(ep)) => Some(std::mem::replace(&mut list[i], ep)),
            (None, Some(ep)) => {
                self.positions.insert(name.to_owned(), list.len());
                list.push(ep);
                None
            }
            (Some(i), None) => {
                self.positions.remove(name);
                let old = list.swap_remove(i);
                // The last endpoint took the removed one's place (the compiler does not care
                // about order).
                if let Some(moved) = list.get(i) {
                    self.positions.insert(moved.id.clone(), i);
                }
                Some(old)
            }
            (None, None) => None,
        }
    }

    fn changed(&mut self, old: Option<Endpoint>, new: Option<Endpoint>) {
        self.dirty = true;
        // Past a few thousand changes (a resync) starting the cache over is cheaper.
        if self.pending.len() < 2_000 {
            self.pending.push((old, new));
        } else {
            self.pending.clear();
            self.stamp += 1;
        }
    }

    fn set_romana(&mut self, p: &Policy) {
        match cluster::romana_rules(p) {
            Ok(r) => self.romana.insert(p.id.clone(), r),
            Err(e) => {
                tracing::warn!(problem = %e, "left out of the firewall");
                self.romana.remove(&p.id)
            }
        };
    }

    fn set_netpol(&mut self, np: &NetworkPolicy) {
        match cluster::netpol_rules(np) {
            Ok(r) => self.netpols.insert(netpol_key(np), r),
            Err(e) => {
                tracing::warn!(problem = %e, "left out of the firewall");
                self.netpols.remove(&netpol_key(np))
            }
        };
    }

    fn set_endpoint(&mut self, e: &EndpointInfo) {
        match cluster::endpoint(e) {
            Ok(ep) => {
                if self.endpoint(&e.name) != Some(&ep) {
                    let old = self.put_endpoint(&e.name, Some(ep.clone()));
                    self.changed(old, Some(ep));
                }
            }
            Err(p) => tracing::warn!(problem = %p, "left out of the firewall"),
        }
    }
}

#[derive(Debug)]
pub struct Firewall {
    host: String,
    host_ns: Option<PathBuf>,
    inputs: Mutex<Inputs>,
    /// One pass at a time; it holds the table as last applied (so that passes between repairs
    /// need not read the kernel) and the compile cache.
    pass: tokio::sync::Mutex<PassState>,
    /// Bumped by every pass that changed the table: a repair read taken before a change is stale.
    generation: std::sync::atomic::AtomicU64,
    /// How long the last repair read of the kernel's table took (it paces the next one).
    last_read_micros: std::sync::atomic::AtomicU64,
    /// Watch events seen: a full re-read that events overtook is dropped.
    events: std::sync::atomic::AtomicU64,
    /// Everything must be read again (at start, after an interrupted watch, after an overtaken
    /// read).
    stale: std::sync::atomic::AtomicBool,
    /// The kept nftables connections of the host's namespace (opened there on first use).
    nft: Arc<Mutex<Nft>>,
    /// The fast path, told which endpoints may skip the forward hook around each
    /// transaction.
    deliver: Option<Arc<crate::fastpath::Deliver>>,
}

#[derive(Debug, Default)]
struct PassState {
    /// The table as last applied; `None`: unknown, read the kernel.
    known: Option<Observed>,
    /// The nftables generation right after `known` was applied, when nothing else was committed
    /// around it: while the kernel reports the same, the table is exactly `known`.
    known_gen: Option<u32>,
    cache: CompileCache,
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("reading policies from romanad: {0}")]
    Fetch(#[from] ClientError),
    #[error("programming nftables: {0}")]
    Nft(#[from] romana_host::nft::NftError),
    #[error("reading the nftables table back: {0}")]
    Json(#[from] nftjson::JsonError),
    #[error("entering the host's namespace: {0}")]
    Netns(#[from] romana_host::NetnsError),
    #[error("firewall worker: {0}")]
    Join(String),
    #[error("policies have not been read from romanad yet")]
    NotLoaded,
    #[error("romanad's lists changed while they were read; reading again")]
    Overtaken,
    #[error("updating the fast path: {0}")]
    FastPath(#[from] romana_host::BpfError),
}

impl Firewall {
    pub fn new(
        host: String,
        host_ns: Option<PathBuf>,
        deliver: Option<Arc<crate::fastpath::Deliver>>,
    ) -> Firewall {
        Firewall {
            host,
            host_ns,
            inputs: Mutex::default(),
            pass: tokio::sync::Mutex::new(PassState::default()),
            generation: Default::default(),
            last_read_micros: Default::default(),
            events: Default::default(),
            stale: std::sync::atomic::AtomicBool::new(true),
            nft: Arc::default(),
            deliver,
        }
    }

    fn inputs(&self) -> std::sync::MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads tenants, policies and NetworkPolicies (and, with `endpoints`, every endpoint) from
    /// romanad, replacing what was known.
    pub async fn refresh(&self, client: &Client, endpoints: bool) -> Result<(), FirewallError> {
        // A watch event applied while the lists were being read may be newer than what they
        // say (a delete would come back): then the lists are dropped and read again.
        let before = self.events.load(Ordering::SeqCst);
        let (tenants, romana, netpols) =
            tokio::try_join!(client.tenants(), client.policies(), client.netpols())?;
        let eps = if endpoints { Some(client.endpoint_list().await?) } else { None };
        let mut i = self.inputs();
        if self.events.load(Ordering::SeqCst) != before {
            self.stale.store(true, Ordering::Relaxed);
            // Before the first load something is better than nothing (and under steady churn a
            // clean read might never come); afterwards the lists are dropped.
            if i.loaded {
                return Err(FirewallError::Overtaken);
            }
        }
        if i.tenants != tenants {
            i.tenants = tenants;
            i.stamp += 1;
        }
        i.romana.clear();
        i.netpols.clear();
        romana.iter().for_each(|p| i.set_romana(p));
        netpols.iter().for_each(|np| i.set_netpol(np));
        if let Some(eps) = eps {
            // As changes against what is known, so that a periodic re-read that finds nothing
            // new costs nothing.
            let names: std::collections::BTreeSet<&str> = eps.iter().map(|e| e.name.as_str()).collect();
            let gone: Vec<String> =
                i.positions.keys().filter(|k| !names.contains(k.as_str())).cloned().collect();
            for name in gone {
                if let Some(old) = i.put_endpoint(&name, None) {
                    i.changed(Some(old), None);
                }
            }
            eps.iter().for_each(|e| i.set_endpoint(e));
            i.loaded = true;
        }
        i.dirty = true;
        Ok(())
    }

    /// Only the tenants (their labels, segments and isolation) from romanad.
    pub async fn refresh_tenants(&self, client: &Client) -> Result<(), FirewallError> {
        let tenants = client.tenants().await?;
        let mut i = self.inputs();
        if i.tenants != tenants {
            i.tenants = tenants;
            i.stamp += 1;
            i.dirty = true;
        }
        Ok(())
    }

    pub fn upsert(&self, e: EndpointInfo) {
        self.inputs().set_endpoint(&e);
    }

    pub fn remove(&self, name: &str) {
        let mut i = self.inputs();
        if let Some(old) = i.put_endpoint(name, None) {
            i.changed(Some(old), None);
        }
    }

    /// A change seen on the watch. Endpoints and policies carry their value and are applied one
    /// by one; `true` when tenants must be read again.
    fn on_event(&self, ev: &WatchEvent) -> bool {
        // Under the inputs lock, so that `refresh` sees the count and the change together.
        let _i = self.inputs();
        self.events.fetch_add(1, Ordering::SeqCst);
        drop(_i);
        let put = ev.kind == "put";
        let value = ev.value.clone().filter(|_| put);
        if let Some(name) = ev.key.strip_prefix("endpoints/") {
            match value.map(serde_json::from_value::<EndpointInfo>) {
                Some(Ok(e)) => self.upsert(e),
                Some(Err(e)) => tracing::warn!(key = %ev.key, error = %e, "unreadable endpoint on the watch"),
                None => self.remove(name),
            }
            false
        } else if let Some(id) = ev.key.strip_prefix("policies/") {
            let mut i = self.inputs();
            match value.map(serde_json::from_value::<Policy>) {
                Some(Ok(p)) => i.set_romana(&p),
                Some(Err(e)) => tracing::warn!(key = %ev.key, error = %e, "unreadable policy on the watch"),
                None => {
                    i.romana.remove(id);
                }
            }
            i.dirty = true;
            false
        } else if let Some(key) = ev.key.strip_prefix("netpols/") {
            let mut i = self.inputs();
            match value.map(serde_json::from_value::<NetworkPolicy>) {
                Some(Ok(np)) => i.set_netpol(&np),
                Some(Err(e)) => {
                    tracing::warn!(key = %ev.key, error = %e, "unreadable NetworkPolicy on the watch")
                }
                None => {
                    i.netpols.remove(key);
                }
            }
            i.dirty = true;
            false
        } else {
            true
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.inputs().dirty
    }

    pub fn is_loaded(&self) -> bool {
        self.inputs().loaded
    }

    /// Whether nftables' generation in the host's namespace is still the one our last pass left:
    /// then nothing was committed since, by anyone, and the table is as last applied. Taken
    /// under the pass lock, so that a pass in flight is not mistaken for a foreign change.
    async fn unchanged(&self) -> bool {
        let state = self.pass.lock().await;
        let Some(known) = state.known_gen.filter(|_| state.known.is_some()) else { return false };
        let (ns, nft) = (self.host_ns.clone(), self.nft.clone());
        let now = tokio::task::spawn_blocking(move || {
            romana_host::in_netns_path(ns.as_deref(), move || async move { lock(&nft).generation() })
        })
        .await;
        matches!(now, Ok(Ok(Ok(g))) if g == known)
    }

    /// One pass: compile, take the table as last applied (or read the kernel's, with `read` or
    /// when unknown), apply the difference. Returns what changed.
    pub async fn sync(&self, metrics: &Metrics, read: bool) -> Result<PlanSummary, FirewallError> {
        // The kernel is read before taking the pass lock, so that a large table's listing never
        // delays a change; a read that a change overtook is dropped.
        let fresh = if read {
            let generation = self.generation.load(Ordering::SeqCst);
            let (ns, nft) = (self.host_ns.clone(), self.nft.clone());
            let t = Instant::now();
            let table = tokio::task::spawn_blocking(move || {
                romana_host::in_netns_path(ns.as_deref(), move || async move { read_table(&nft, true) })
            })
            .await
            .map_err(|e| FirewallError::Join(e.to_string()))??;
            Metrics::inc(&metrics.firewall_reads);
            self.last_read_micros.store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            Some((generation, table?))
        } else {
            None
        };
        let mut state = self.pass.lock().await;
        // `loaded` never goes back to false: checked once, before the known table is taken.
        if !self.is_loaded() {
            return Err(FirewallError::NotLoaded);
        }
        // `Some((table, generation))`: start from that table (`None` in it: no table), which
        // the kernel held at that generation; `None`: read the kernel.
        let known_gen = state.known_gen.take();
        let last: Option<(Option<Observed>, Option<u32>)> = match fresh {
            Some((g, table)) if g == self.generation.load(Ordering::SeqCst) => Some(table),
            _ => state.known.take().map(|k| (Some(k), known_gen)),
        };
        let started = Instant::now();
        let desired = {
            let mut i = self.inputs();
            i.dirty = false;
            let eps = i.endpoints.clone();
            let (world, implicit, problems) = cluster::tenancy(&i.tenants, &eps);
            for p in &problems {
                tracing::warn!(problem = %p, "left out of the firewall");
            }
            let policies: Vec<PolicyRules> =
                i.romana.values().flatten().chain(i.netpols.values()).chain(&implicit).cloned().collect();
            let stamp = i.stamp;
            let pending = std::mem::take(&mut i.pending);
            drop(i);
            for (old, new) in &pending {
                state.cache.endpoint_changed(&world, old.as_ref(), new.as_ref());
            }
            let input =
                FirewallInput { host: &self.host, policies: &policies, world: &world, endpoints: &eps };
            compile_cached(input, &mut state.cache, stamp)
        };
        let (rules, elements) = desired.counts();
        let compiled = started.elapsed();
        let unfiltered = unfiltered_v4(&desired);
        let deliver = self.deliver.clone();
        let (ns, nft) = (self.host_ns.clone(), self.nft.clone());
        let r = tokio::task::spawn_blocking(move || {
            romana_host::in_netns_path(ns.as_deref(), move || async move {
                let t = Instant::now();
                let (observed, at, listed) = match last {
                    Some((o, at)) => (o, at, false),
                    None => {
                        let (o, at) = read_table(&nft, false)?;
                        (o, at, true)
                    }
                };
                let read = t.elapsed();
                let p = plan(observed.as_ref(), &desired);
                let t = Instant::now();
                let mut nft = lock(&nft);
                let before = nft.generation().ok();
                // Endpoints this transaction isolates leave the fast path before their rules
                // come; endpoints it opens join only once it applied (fail closed both ways).
                if let Some(d) = &deliver {
                    d.narrow(&unfiltered)?;
                }
                if !p.is_empty() {
                    nft.apply(&p.script)?;
                }
                if let Some(d) = &deliver {
                    d.allow(unfiltered)?;
                }
                let after = nft.generation().ok();
                let library = nft.uses_library();
                drop(nft);
                static TOLD: std::sync::Once = std::sync::Once::new();
                match library {
                    Some(true) => TOLD.call_once(|| tracing::info!("nftables transactions go through libnftables")),
                    Some(false) => TOLD.call_once(|| {
                        tracing::warn!("libnftables.so.1 did not load; every transaction runs nft -f (about 20 ms more each)")
                    }),
                    None => {}
                }
                // The table is known at `after` when the kernel held `observed` right before our
                // transaction and nothing but it was committed since (an empty transaction
                // commits nothing).
                let known_at = match (at, before, after) {
                    (Some(at), Some(b), Some(a))
                        if at == b && (a == b || (!p.is_empty() && a == b.wrapping_add(1))) =>
                    {
                        Some(a)
                    }
                    _ => None,
                };
                tracing::debug!(
                    compile_ms = compiled.as_secs_f64() * 1e3,
                    read_ms = read.as_secs_f64() * 1e3,
                    apply_ms = t.elapsed().as_secs_f64() * 1e3,
                    "firewall pass"
                );
                Ok::<_, FirewallError>((p.summary, Observed::of(&desired), known_at, listed))
            })
        })
        .await
        .map_err(|e| FirewallError::Join(e.to_string()))?;
        let r = r.map_err(FirewallError::from).and_then(|x| x).map(|(summary, after, known_at, listed)| {
            state.known = Some(after);
            state.known_gen = known_at;
            if listed {
                Metrics::inc(&metrics.firewall_reads);
            }
            if summary != PlanSummary::default() {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            summary
        });
        Metrics::inc(&metrics.firewall_syncs);
        metrics.firewall_sync_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match &r {
            Ok(_) => {
                metrics.firewall_rules.store(rules as u64, Ordering::Relaxed);
                metrics.firewall_elements.store(elements as u64, Ordering::Relaxed);
            }
            Err(_) => {
                Metrics::inc(&metrics.firewall_errors);
                self.inputs().dirty = true;
            }
        }
        r
    }
}

/// Our table as the kernel holds it, with the nftables generation it was read at (`None` when
/// something was committed during the listing, or the generation could not be read).
fn read_table(nft: &Mutex<Nft>, background: bool) -> Result<(Option<Observed>, Option<u32>), FirewallError> {
    let before = lock(nft).generation().ok();
    let table = romana_host::nft::list_table(background)?.map(|j| nftjson::parse(&j)).transpose()?;
    let after = lock(nft).generation().ok();
    Ok((table, before.filter(|_| before == after)))
}

/// How often the repair check lists the kernel's table even though nftables' generation did not
/// move: a guard against what the generation cannot show, cheap at this interval.
const VERIFY_EVERY: Duration = Duration::from_secs(300);

/// Runs the firewall: follows romanad's watch for what the table depends on and syncs on every
/// change; beside it, the repair check (`repair`). Fails closed: when romanad is unreachable the
/// last table stays.
pub async fn run(fw: Arc<Firewall>, shared: Arc<crate::local::Shared>, repair: Duration) {
    let wake = Arc::new(tokio::sync::Notify::new());
    // Tenants are re-read on their events; everything is re-read at start, after a watch was
    // interrupted (deletes may have been missed) and once a minute.
    let tenants_stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for prefix in ["endpoints/", "policies/", "netpols/", "tenants/", "segments/"] {
        let (fw, shared, wake) = (fw.clone(), shared.clone(), wake.clone());
        let refetch = tenants_stale.clone();
        tokio::spawn(async move {
            loop {
                match shared.client().watch(prefix, 0).await {
                    Ok(mut rx) => {
                        // Read everything again now that the stream is in place: what changed
                        // while it was down (deletes above all) is in that read, and what changes
                        // from now on comes on the stream.
                        fw.stale.store(true, Ordering::Relaxed);
                        wake.notify_one();
                        while let Some(ev) = rx.recv().await {
                            match ev {
                                Ok(ev) => {
                                    if fw.on_event(&ev) {
                                        refetch.store(true, Ordering::Relaxed);
                                    }
                                    wake.notify_one();
                                }
                                Err(e) => {
                                    tracing::warn!(prefix, error = %e, "policy watch failed; retrying");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(prefix, error = %e, "cannot follow the policy watch; retrying"),
                }
                // Whatever was missed while away is read whole on the next pass.
                fw.stale.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    tokio::spawn(repair_loop(fw.clone(), shared.clone(), repair));
    let mut full = Instant::now();
    let m = &shared.metrics;
    loop {
        let refresh_in = Duration::from_secs(60).saturating_sub(full.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(refresh_in) => {}
            _ = wake.notified() => {}
        }
        let client = shared.client();
        if fw.stale.swap(false, Ordering::Relaxed) || full.elapsed() > Duration::from_secs(60) {
            tenants_stale.store(false, Ordering::Relaxed);
            full = Instant::now();
            if let Err(e) = fw.refresh(&client, true).await {
                tracing::warn!(error = %e, "cannot read policies; the current table stays in force");
                fw.stale.store(true, Ordering::Relaxed);
                // An overtaken read is retried soon; romanad being unreachable waits a second.
                let pause = if matches!(e, FirewallError::Overtaken) { 50 } else { 1_000 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                wake.notify_one();
                continue;
            }
        } else if tenants_stale.swap(false, Ordering::Relaxed)
            && let Err(e) = fw.refresh_tenants(&client).await
        {
            tracing::warn!(error = %e, "cannot read tenants; the current table stays in force");
            tenants_stale.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            wake.notify_one();
            continue;
        }
        if !fw.is_dirty() {
            continue;
        }
        match fw.sync(m, false).await {
            Ok(s) if s != PlanSummary::default() => tracing::info!(summary = ?s, "firewall updated"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "firewall pass failed"),
        }
    }
}

/// Every `every`, checks that the kernel's table is still the one last applied and repairs it
/// when not. The check is nftables' generation (microseconds); the table is listed (300 ms of
/// nft's CPU at 15,000 elements, at the lowest priority) only when the generation moved behind
/// the agent's back, or every `VERIFY_EVERY`. It runs beside the change passes: a listing never
/// delays a policy change.
async fn repair_loop(fw: Arc<Firewall>, shared: Arc<crate::local::Shared>, every: Duration) {
    let m = &shared.metrics;
    let mut verified = Instant::now();
    loop {
        // At most a tenth of the time goes to listing the table: the interval stretches with it.
        let last = Duration::from_micros(fw.last_read_micros.load(Ordering::Relaxed));
        tokio::time::sleep(every.max(last * 10)).await;
        if !fw.is_loaded() || (verified.elapsed() < VERIFY_EVERY && fw.unchanged().await) {
            continue;
        }
        verified = Instant::now();
        let was_dirty = fw.is_dirty();
        match fw.sync(m, true).await {
            Ok(s) if s != PlanSummary::default() => {
                if was_dirty {
                    tracing::info!(summary = ?s, "firewall updated");
                } else {
                    Metrics::inc(&m.firewall_repairs);
                    tracing::warn!(summary = ?s, "the romana table was changed by someone else; repaired");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "firewall repair pass failed"),
        }
    }
}
