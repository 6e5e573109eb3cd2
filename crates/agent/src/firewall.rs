//! Policy enforcement on this host: keeps romanad's tenants, policies and endpoints (followed on
//! the watch), compiles the host's `inet romana` table with the policy core, reads what the
//! kernel holds, and applies the difference as one nft transaction. CNI ADD registers its
//! endpoint and syncs before it answers (fail-closed); a periodic pass repairs foreign changes;
//! a restart converges without flushing (the table stays in force while the agent is away).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use romana_api::netpol::NetworkPolicy;
use romana_api::policy::Policy;
use romana_api::rest::{EndpointInfo, Tenant};
use romana_client::{Client, ClientError};
use romana_policy::firewall::{FirewallInput, compile};
use romana_policy::nftplan::{Observed, PlanSummary, plan};
use romana_policy::{cluster, nftjson};

use crate::metrics::Metrics;

/// What the table is compiled from, as romanad last told us.
#[derive(Debug, Default)]
struct Inputs {
    tenants: Vec<Tenant>,
    romana: Vec<Policy>,
    netpols: Vec<NetworkPolicy>,
    endpoints: BTreeMap<String, EndpointInfo>,
    /// Inputs changed since the last successful sync.
    dirty: bool,
    /// Everything was read from romanad at least once. Until then no pass runs: a restarted
    /// agent must not replace the table in force with one compiled from nothing.
    loaded: bool,
}

#[derive(Debug)]
pub struct Firewall {
    host: String,
    host_ns: Option<PathBuf>,
    inputs: Mutex<Inputs>,
    /// One pass at a time; it holds the table as last applied, so that passes between repairs
    /// need not read the kernel. `None`: read it.
    pass: tokio::sync::Mutex<Option<Observed>>,
    /// Bumped by every pass that changed the table: a repair read taken before a change is stale.
    generation: std::sync::atomic::AtomicU64,
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
}

impl Firewall {
    pub fn new(host: String, host_ns: Option<PathBuf>) -> Firewall {
        Firewall {
            host,
            host_ns,
            inputs: Mutex::default(),
            pass: tokio::sync::Mutex::new(None),
            generation: Default::default(),
        }
    }

    fn inputs(&self) -> std::sync::MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads tenants and policies (and, with `endpoints`, every endpoint) from romanad.
    pub async fn refresh(&self, client: &Client, endpoints: bool) -> Result<(), FirewallError> {
        let (tenants, romana, netpols) =
            tokio::try_join!(client.tenants(), client.policies(), client.netpols())?;
        let eps = if endpoints { Some(client.endpoint_list().await?) } else { None };
        let mut i = self.inputs();
        i.tenants = tenants;
        i.romana = romana;
        i.netpols = netpols;
        if let Some(eps) = eps {
            i.endpoints = eps.into_iter().map(|e| (e.name.clone(), e)).collect();
            i.loaded = true;
        }
        i.dirty = true;
        Ok(())
    }

    pub fn upsert(&self, e: EndpointInfo) {
        let mut i = self.inputs();
        if i.endpoints.get(&e.name) != Some(&e) {
            i.endpoints.insert(e.name.clone(), e);
            i.dirty = true;
        }
    }

    pub fn remove(&self, name: &str) {
        let mut i = self.inputs();
        if i.endpoints.remove(name).is_some() {
            i.dirty = true;
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.inputs().dirty
    }

    pub fn is_loaded(&self) -> bool {
        self.inputs().loaded
    }

    /// One pass: compile, take the table as last applied (or read the kernel's, with `read` or
    /// when unknown), apply the difference. Returns what changed.
    pub async fn sync(&self, metrics: &Metrics, read: bool) -> Result<PlanSummary, FirewallError> {
        // The kernel is read before taking the pass lock, so that a large table's listing never
        // delays a change; a read that a change overtook is dropped.
        let fresh = if read {
            let generation = self.generation.load(Ordering::SeqCst);
            let ns = self.host_ns.clone();
            let table = tokio::task::spawn_blocking(move || {
                romana_host::in_netns_path(ns.as_deref(), || async {
                    Ok::<_, FirewallError>(
                        romana_host::nft::list_table()?.map(|j| nftjson::parse(&j)).transpose()?,
                    )
                })
            })
            .await
            .map_err(|e| FirewallError::Join(e.to_string()))??;
            Some((generation, table?))
        } else {
            None
        };
        let mut known = self.pass.lock().await;
        // `Some(table)`: start from it (`Some(None)`: no table); `None`: read the kernel.
        let last: Option<Option<Observed>> = match fresh {
            Some((g, table)) if g == self.generation.load(Ordering::SeqCst) => Some(table),
            _ => known.take().map(Some),
        };
        let started = Instant::now();
        let desired = {
            let mut i = self.inputs();
            if !i.loaded {
                return Err(FirewallError::NotLoaded);
            }
            i.dirty = false;
            let eps: Vec<EndpointInfo> = i.endpoints.values().cloned().collect();
            let v = cluster::view(&i.tenants, &i.romana, &i.netpols, &eps);
            for p in &v.problems {
                tracing::warn!(problem = %p, "left out of the firewall");
            }
            compile(FirewallInput {
                host: &self.host,
                policies: &v.policies,
                world: &v.world,
                endpoints: &v.endpoints,
            })
        };
        let (rules, elements) = desired.counts();
        let compiled = started.elapsed();
        let ns = self.host_ns.clone();
        let r = tokio::task::spawn_blocking(move || {
            romana_host::in_netns_path(ns.as_deref(), move || async move {
                let t = Instant::now();
                let observed = match last {
                    Some(o) => o,
                    None => romana_host::nft::list_table()?.map(|j| nftjson::parse(&j)).transpose()?,
                };
                let read = t.elapsed();
                let p = plan(observed.as_ref(), &desired);
                let t = Instant::now();
                if !p.is_empty() {
                    romana_host::nft::apply(&p.script)?;
                }
                let after = Some(Observed::of(&desired));
                tracing::debug!(
                    compile_ms = compiled.as_secs_f64() * 1e3,
                    read_ms = read.as_secs_f64() * 1e3,
                    apply_ms = t.elapsed().as_secs_f64() * 1e3,
                    "firewall pass"
                );
                Ok::<_, FirewallError>((p.summary, after))
            })
        })
        .await
        .map_err(|e| FirewallError::Join(e.to_string()))?;
        let r = r.map_err(FirewallError::from).and_then(|x| x).map(|(summary, after)| {
            *known = after;
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

/// How a watch event changes the inputs.
fn on_event(fw: &Firewall, ev: &romana_api::rest::WatchEvent) -> bool {
    if let Some(name) = ev.key.strip_prefix("endpoints/") {
        match (ev.kind.as_str(), &ev.value) {
            ("put", Some(v)) => match serde_json::from_value::<EndpointInfo>(v.clone()) {
                Ok(e) => fw.upsert(e),
                Err(e) => tracing::warn!(key = %ev.key, error = %e, "unreadable endpoint on the watch"),
            },
            _ => fw.remove(name),
        }
        false
    } else {
        // Tenants, segments, policies: small lists, read again whole.
        true
    }
}

/// Runs the firewall: follows romanad's watch for what the table depends on, syncs on every
/// change, and every `repair` interval reads the kernel's table to put back what someone else
/// removed. Fails closed: when romanad is unreachable the last table stays.
pub async fn run(fw: Arc<Firewall>, shared: Arc<crate::local::Shared>, repair: Duration) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let refetch = Arc::new(std::sync::atomic::AtomicBool::new(true));
    for prefix in ["endpoints/", "policies/", "netpols/", "tenants/", "segments/"] {
        let (fw, shared, wake, refetch) = (fw.clone(), shared.clone(), wake.clone(), refetch.clone());
        tokio::spawn(async move {
            loop {
                match shared.client().watch(prefix, 0).await {
                    Ok(mut rx) => {
                        while let Some(ev) = rx.recv().await {
                            match ev {
                                Ok(ev) => {
                                    if on_event(&fw, &ev) {
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
                refetch.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let mut tick = tokio::time::interval(repair);
    let mut full = Instant::now();
    let m = &shared.metrics;
    loop {
        // The repair tick reads the kernel's table; a change on the watch works from the table
        // as last applied.
        let read = tokio::select! {
            _ = tick.tick() => true,
            _ = wake.notified() => false,
        };
        // Endpoints come incrementally on the watch; read whole at start and once a minute.
        let endpoints = !fw.is_loaded() || full.elapsed() > Duration::from_secs(60);
        if refetch.swap(false, Ordering::Relaxed) || endpoints {
            if let Err(e) = fw.refresh(&shared.client(), endpoints).await {
                tracing::warn!(error = %e, "cannot read policies; the current table stays in force");
                refetch.store(true, Ordering::Relaxed);
                continue;
            }
            if endpoints {
                full = Instant::now();
            }
        }
        let was_dirty = fw.is_dirty();
        if !was_dirty && !read {
            continue;
        }
        match fw.sync(m, read).await {
            Ok(s) if s != PlanSummary::default() => {
                if !was_dirty {
                    Metrics::inc(&m.firewall_repairs);
                    tracing::warn!(summary = ?s, "the romana table was changed by someone else; repaired");
                } else {
                    tracing::info!(summary = ?s, "firewall updated");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "firewall pass failed"),
        }
    }
}
