//! Policy enforcement on this host, the adapter around the core: follows romanad's watch for what
//! the table depends on (through the store's watch follower), feeds the core's `step` and
//! performs what it asks: reads of romanad's lists, and passes that compile the host's
//! `inet romana` table and apply the difference from the table as last applied as one nft
//! transaction (through a libnftables context kept open) in the host's namespace. CNI ADD syncs
//! before it answers (fail-closed); a periodic check compares nftables' generation id with the
//! one the last transaction left and, only when something else committed a change, reads the
//! kernel's table and repairs it; a restart converges without flushing.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use romana_agent::drive::{apply_transaction, read_table, run_pass};
use romana_agent::error::FirewallError;
use romana_agent::machine::pass::{
    Compiled, EndpointTransaction, PassState, compile_with, give_back, snapshot, take_endpoint_changes,
};
use romana_agent::machine::{Action, Event, Stream, repair_wait};
use romana_agent::ports::{Nftables, Romanad};
use romana_agent::rest_watch::SharedWatch;
use romana_policy::nftplan::{Observed, PlanSummary, plan};

use crate::ctx::Ctx;
use crate::fastpath::Deliver;
use crate::metrics::Metrics;
use confirm::off_runtime;

mod confirm;
mod kept;
mod saved;

use kept::{KeptNft, tell_library};

#[derive(Debug)]
pub struct Firewall {
    ctx: Arc<Ctx>,
    host_ns: Option<PathBuf>,
    /// One pass at a time; it holds the table as last applied and the compile cache.
    pass: tokio::sync::Mutex<PassState>,
    /// How long the last repair read of the kernel's table took (it paces the next one).
    last_read_micros: AtomicU64,
    nft: Arc<KeptNft>,
    /// The fast path, told which endpoints may skip the forward hook around each transaction.
    deliver: Option<Arc<Deliver>>,
    /// Egress NAT's inputs (`nat.rs`), once known and when this kernel can do it.
    pub nat: romana_agent::nat_slot::NatSlot,
    /// Wakes the loop in `run` (for changes that come from outside the watch, such as NAT's).
    pub wake: Arc<tokio::sync::Notify>,
    /// The VIPs' DNAT rules (`vip.rs`), added to every pass's table.
    vips: Mutex<Vec<romana_policy::vip::VipDnat>>,
    /// Where the table in force is saved for the next agent (`saved.rs`; `None`: not saved).
    saved_path: Option<PathBuf>,
    /// This boot and the host's namespace, once `restore` looked (`None` inside: unknown here).
    place: std::sync::OnceLock<Option<romana_agent::machine::saved_table::Place>>,
    /// Notified by every pass that leaves the table known: `keep_saving` saves once they stop.
    saved_wake: tokio::sync::Notify,
    /// Set once the saved table was looked at (`saved.rs`); every pass waits for it first.
    restored: tokio::sync::OnceCell<()>,
}

impl Firewall {
    pub fn new(
        ctx: Arc<Ctx>,
        host_ns: Option<PathBuf>,
        deliver: Option<Arc<Deliver>>,
        saved_path: Option<PathBuf>,
    ) -> Firewall {
        Firewall {
            ctx,
            host_ns,
            pass: tokio::sync::Mutex::new(PassState::default()),
            last_read_micros: AtomicU64::new(0),
            nft: Arc::new(KeptNft(Mutex::default(), saved::SaveGuard::new(saved_path.clone()))),
            deliver,
            nat: Default::default(),
            vips: Mutex::default(),
            wake: Default::default(),
            saved_path,
            place: Default::default(),
            saved_wake: Default::default(),
            restored: Default::default(),
        }
    }

    pub fn set_vips(&self, vips: Vec<romana_policy::vip::VipDnat>) {
        *self.vips.lock().unwrap_or_else(|e| e.into_inner()) = vips;
    }

    /// Reads tenants, policies and NetworkPolicies (and, with `endpoints`, every endpoint) from
    /// romanad and gives them to the core; returns what it asks next.
    pub async fn refresh<R: Romanad>(&self, r: &R, endpoints: bool) -> Result<Vec<Action>, FirewallError> {
        let events_before = self.ctx.core().events;
        let lists = r.lists(endpoints).await?;
        let actions = self.ctx.step(Event::ListsRead { lists, events_before });
        if actions.iter().any(|a| matches!(a, Action::RetryIn(_))) {
            return Err(FirewallError::Overtaken);
        }
        Ok(actions)
    }

    pub fn is_loaded(&self) -> bool {
        self.ctx.core().inputs.loaded
    }

    /// Runs `f` with the kept nftables connections in the host's namespace, on a blocking
    /// thread.
    async fn in_ns<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KeptNft) -> Result<T, FirewallError> + Send + 'static,
    ) -> Result<T, FirewallError> {
        self.in_ns_started(f).await
    }

    /// `in_ns`, started at once: the work runs while the caller does something else.
    fn in_ns_started<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KeptNft) -> Result<T, FirewallError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, FirewallError>> + Send + 'static {
        let (ns, nft) = (self.host_ns.clone(), self.nft.clone());
        let work = tokio::task::spawn_blocking(move || {
            romana_host::in_netns_path(ns.as_deref(), move || async move { f(&nft) })
        });
        async move {
            work.await
                .map_err(|e| FirewallError::Join(e.to_string()))?
                .map_err(FirewallError::from)
                .and_then(|x| x)
        }
    }

    /// The table as the last transaction left it, and the kernel's (for the diagnosis; `None`:
    /// not read this time). The kernel's is listed only when nftables' generation moved since
    /// that transaction (else it is the known one), and outside the pass lock: at 50,000
    /// endpoints a listing takes seconds, which no pass may wait for (an agent's first pass
    /// once did, behind the first diagnosis). A listing that a pass's change overtook is
    /// dropped (a pass in flight is not drift). Nothing is listed while no table is known: the
    /// pass that will know it reads the kernel itself.
    pub async fn tables(&self) -> (Option<Observed>, Option<Result<Option<Observed>, String>>) {
        let (known, pass_generation, unchanged) = {
            let state = self.pass.lock().await;
            let gen_now = self.in_ns(|nft| Ok(nft.generation().ok())).await.ok().flatten();
            (state.known.clone(), state.generation, state.unchanged(gen_now))
        };
        if known.is_none() {
            return (None, None);
        }
        if unchanged {
            return (known.clone(), Some(Ok(known)));
        }
        let kernel = self.in_ns(|nft| nft.list(true)).await.map_err(|e| e.to_string());
        if self.pass.lock().await.generation != pass_generation {
            return (known, None);
        }
        (known, Some(kernel))
    }

    /// Whether nftables' generation is still the one our last pass left. Taken under the pass
    /// lock, so that a pass in flight is not mistaken for a foreign change.
    async fn unchanged(&self) -> bool {
        let state = self.pass.lock().await;
        if !state.unchanged(state.known_gen) {
            return false;
        }
        let now = self.in_ns(|nft| Ok(nft.generation().ok())).await;
        matches!(now, Ok(g) if state.unchanged(g))
    }

    /// One pass: compile, take the table as last applied (or read the kernel's, with `read` or
    /// when unknown), apply the difference. Returns what changed.
    pub async fn sync(&self, metrics: &Metrics, read: bool) -> Result<PlanSummary, FirewallError> {
        let entered = Instant::now();
        tracing::debug!(read, "firewall pass entered");
        self.restored().await;
        // The kernel is read before taking the pass lock, so that a large table's listing never
        // delays a change; a read that a change overtook is dropped.
        let fresh = if read {
            let generation = self.pass.lock().await.generation;
            let t = Instant::now();
            let table = self.in_ns(|nft| read_table(nft, true)).await?;
            Metrics::inc(&metrics.firewall_reads);
            self.last_read_micros.store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            Some((generation, table))
        } else {
            None
        };
        let locking = Instant::now();
        let mut state = self.pass.lock().await;
        let lock_wait = locking.elapsed();
        let snapping = Instant::now();
        let snap = {
            let mut core = self.ctx.core();
            // `loaded` never goes back to false: checked once, before the known table is taken.
            if !core.inputs.loaded {
                return Err(FirewallError::NotLoaded);
            }
            let snap = snapshot(&mut core.inputs);
            for p in std::mem::take(&mut core.inputs.problems) {
                tracing::warn!(problem = %p, "left out of the firewall");
            }
            snap
        };
        let snapshot_in = snapping.elapsed();
        // A pass that starts from a fresh kernel read also plans from the table as last applied:
        // when the two plans differ, someone else changed our table (a repair, whichever loop
        // ran the pass and whatever else changed meanwhile).
        let prior = match &fresh {
            Some((g, _)) if *g == state.generation => state.known.clone(),
            _ => None,
        };
        let base = state.base(fresh);
        // Nothing known of the kernel's table (the first pass after a start, or after a failed
        // transaction): it is read beside the compile instead of after it; at 5,000 policies x
        // 50,000 endpoints each takes hundreds of ms (docs/benchmarks.md, issue 22).
        let beside = base.is_none().then(|| self.in_ns_started(|nft| read_table(nft, false)));
        let started = Instant::now();
        // The compile runs on a thread of its own with the cache taken out: the agent's runtime
        // (one thread) keeps serving CNI requests and their plumbing meanwhile. The pass lock
        // stays held: this compile's result is applied whatever comes meanwhile.
        let (cache, host) = (state.cache_taken(), self.ctx.host.clone());
        let done = off_runtime(false, move || {
            let mut cache = cache;
            let (c, world) = compile_with(&mut cache, &host, snap);
            (cache, c, world)
        })
        .await;
        let mut compiled = match done {
            Ok((cache, c, world)) => {
                state.compiled(cache, world);
                c
            }
            Err(e) => {
                // The cache went with the thread: the next compile starts it over.
                self.failed(metrics);
                return Err(e);
            }
        };
        self.finish(&mut compiled);
        let (rules, elements) = compiled.desired.counts();
        let (endpoints, policies, active) = (compiled.endpoints, compiled.policies, compiled.active);
        let expected = prior.map(|k| plan(Some(&k), &compiled.desired).summary);
        let compiled_in = started.elapsed();
        let waited = Instant::now();
        let base = match beside {
            Some(read) => match read.await {
                Ok(table) => {
                    Metrics::inc(&metrics.firewall_reads);
                    Some(table)
                }
                // The pass reads it again itself, and fails as it would have.
                Err(e) => {
                    tracing::debug!(error = %e, "reading the table beside the compile failed");
                    None
                }
            },
            None => base,
        };
        // How long the pass waited for that read once compiled (0 when there was none).
        let read_wait = waited.elapsed();
        let deliver = self.deliver.clone();
        let r = self
            .in_ns(move |nft| {
                let t = Instant::now();
                let r = run_pass(nft, deliver.as_deref(), base, &compiled);
                tell_library(nft.uses_library());
                tracing::debug!(
                    lock_ms = lock_wait.as_secs_f64() * 1e3,
                    snapshot_ms = snapshot_in.as_secs_f64() * 1e3,
                    compile_ms = compiled_in.as_secs_f64() * 1e3,
                    read_wait_ms = read_wait.as_secs_f64() * 1e3,
                    pass_ms = t.elapsed().as_secs_f64() * 1e3,
                    total_ms = entered.elapsed().as_secs_f64() * 1e3,
                    "firewall pass"
                );
                r
            })
            .await;
        let r = r.map(|a| {
            if a.listed {
                Metrics::inc(&metrics.firewall_reads);
            }
            state.applied(a.after, a.known_at, &a.summary);
            self.saved_wake.notify_one();
            if expected.is_some_and(|e| e != a.summary) {
                Metrics::inc(&metrics.firewall_repairs);
                tracing::warn!(summary = ?a.summary, "the romana table was changed by someone else; repaired");
            }
            a.summary
        });
        Metrics::inc(&metrics.firewall_syncs);
        metrics.firewall_sync_seconds.observe(started.elapsed());
        match &r {
            Ok(_) => {
                metrics.firewall_rules.store(rules as u64, Ordering::Relaxed);
                metrics.firewall_elements.store(elements as u64, Ordering::Relaxed);
                metrics.firewall_endpoints.store(endpoints as u64, Ordering::Relaxed);
                metrics.firewall_policies.store(policies as u64, Ordering::Relaxed);
                metrics.firewall_policies_active.store(active as u64, Ordering::Relaxed);
            }
            Err(_) => self.failed(metrics),
        }
        r
    }

    /// A pass failed: the next one compiles everything.
    fn failed(&self, metrics: &Metrics) {
        Metrics::inc(&metrics.firewall_errors);
        let mut core = self.ctx.core();
        core.inputs.dirty = true;
        core.inputs.rules_dirty = true;
    }

    /// What every compiled table gets beside the policy core's: egress NAT, the VIPs' DNAT.
    fn finish(&self, compiled: &mut Compiled) {
        self.nat.amend(compiled);
        // VIP traffic to an endpoint must come back through conntrack (un-DNAT): its endpoints
        // never take the fast path.
        let vips = self.vips.lock().unwrap_or_else(|e| e.into_inner());
        romana_policy::vip::with_dnat(&mut compiled.desired, &vips);
        for v in vips.iter() {
            for b in &v.backends {
                compiled.unfiltered.remove(&IpAddr::V4(*b));
            }
        }
    }
}

impl Firewall {
    /// An endpoint pass: the pending endpoint changes' own set elements (and base chains) in one
    /// small transaction on the table in force, without a compile: what CNI ADD waits for, in
    /// time independent of the cluster's size. Compiles instead (`sync`) when anything else
    /// changed too, the table in force is unknown, or the policy core refuses.
    pub async fn endpoint_pass(&self, metrics: &Metrics) -> Result<PlanSummary, FirewallError> {
        self.endpoint_pass_waited(metrics).await.0
    }

    /// `endpoint_pass`, with how long it waited for the pass lock (behind another pass).
    pub async fn endpoint_pass_waited(
        &self,
        metrics: &Metrics,
    ) -> (Result<PlanSummary, FirewallError>, Duration) {
        self.restored().await;
        let t = Instant::now();
        let state = self.pass.lock().await;
        let waited = t.elapsed();
        (self.endpoint_pass_locked(metrics, state).await, waited)
    }

    async fn endpoint_pass_locked(
        &self,
        metrics: &Metrics,
        mut state: tokio::sync::MutexGuard<'_, PassState>,
    ) -> Result<PlanSummary, FirewallError> {
        let taken = {
            let mut core = self.ctx.core();
            if !core.inputs.loaded {
                return Err(FirewallError::NotLoaded);
            }
            take_endpoint_changes(&mut core.inputs)
        };
        let Some(changes) = taken else {
            drop(state);
            return self.sync(metrics, false).await;
        };
        let started = Instant::now();
        let nat_changes = |state: &PassState, tx: &EndpointTransaction| {
            state.known.as_ref().is_some_and(|k| self.nat.changed_by(k, &tx.part))
        };
        let tx = match state.endpoint_transaction(&self.ctx.host, &changes) {
            Ok(tx) if nat_changes(&state, &tx) => {
                tracing::debug!("endpoint pass changes egress NAT's chain; compiling");
                give_back(&mut self.ctx.core().inputs, changes);
                drop(state);
                return self.sync(metrics, false).await;
            }
            Ok(mut tx) => {
                self.nat.keep_off_fast_path(&mut tx.transaction.narrow);
                self.nat.keep_off_fast_path(&mut tx.transaction.allow);
                tx
            }
            Err(refusal) => {
                tracing::debug!(%refusal, "endpoint pass refused; compiling");
                give_back(&mut self.ctx.core().inputs, changes);
                drop(state);
                return self.sync(metrics, false).await;
            }
        };
        let computed_in = started.elapsed();
        let (deliver, at) = (self.deliver.clone(), state.known_gen);
        let t = tx.transaction;
        let summary = t.plan.summary.clone();
        let r = self.in_ns(move |nft| apply_transaction(nft, deliver.as_deref(), &t, at)).await;
        match r {
            Ok(known_at) => {
                state.part_applied(&tx.part, known_at, &summary);
                self.saved_wake.notify_one();
                tracing::debug!(
                    compute_ms = computed_in.as_secs_f64() * 1e3,
                    pass_ms = started.elapsed().as_secs_f64() * 1e3,
                    summary = ?summary,
                    "endpoint pass"
                );
                Ok(summary)
            }
            Err(e) => {
                // The kernel's table is unknown now; the compile that follows reads it.
                state.part_failed();
                self.failed(metrics);
                Err(e)
            }
        }
    }
}

/// Follows what the table depends on, on the agent's shared watch stream.
pub fn watch(fw: &Firewall, watch: &mut SharedWatch) {
    let (ctx, wake) = (fw.ctx.clone(), fw.wake.clone());
    // The stream opens from revision 0: its first listing loads the inputs (`State::stream_loads`).
    ctx.core().stream_loads = true;
    watch.add(&["endpoints/", "policies/", "netpols/", "tenants/", "segments/"], move |f| {
        match &f {
            romana_store::follow::Followed::Lost { error, retry_in } => {
                tracing::warn!(%error, ?retry_in, "policy watch failed; retrying")
            }
            // When a change reached the agent (the policy bench's write -> enforced breakdown);
            // not the first listing's tens of thousands of events.
            romana_store::follow::Followed::Event(e) if ctx.core().inputs.loaded => {
                tracing::debug!(key = %e.key, revision = e.revision, "firewall watch event")
            }
            romana_store::follow::Followed::Event(_) => {}
            romana_store::follow::Followed::Synced { .. } => {}
            romana_store::follow::Followed::Current => {
                tracing::debug!("firewall watch: the stream's first listing is in")
            }
        }
        for a in ctx.step(Event::Watched(Stream::Firewall, f)) {
            if a == Action::WakeFirewall {
                wake.notify_one();
            }
        }
        true
    });
}

/// Runs the firewall: what the table depends on comes through `watch`; performs what
/// the core asks on each change; beside it, the repair check (`repair`). Fails closed: when
/// romanad is unreachable the last table stays.
pub async fn run(fw: Arc<Firewall>, repair: Duration) {
    let wake = fw.wake.clone();
    // Beside reading the cluster from romanad, before the first pass (which waits for it): a
    // table saved by the agent before this one, still in force, is taken as known instead of
    // read back.
    let restoring = fw.clone();
    tokio::spawn(async move { restoring.restored().await });
    let saver = fw.clone();
    tokio::spawn(async move { saver.keep_saving().await });
    tokio::spawn(repair_loop(fw.clone(), repair));
    let m = &fw.ctx.metrics;
    let mut next = vec![];
    loop {
        if next.is_empty() {
            let refresh_in = fw.ctx.core().refresh_in(Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(refresh_in) => {}
                _ = wake.notified() => {}
            }
            next = fw.ctx.step(Event::FirewallWake { now: Instant::now() });
        }
        let client = fw.ctx.client();
        for a in std::mem::take(&mut next) {
            match a {
                Action::ReadLists { endpoints } => match fw.refresh(&*client, endpoints).await {
                    Ok(more) => next.extend(more),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read policies; the current table stays in force");
                        let overtaken = matches!(e, FirewallError::Overtaken);
                        next.extend(fw.ctx.step(Event::ListsFailed { overtaken }));
                    }
                },
                Action::ReadTenants => match Romanad::tenants(&*client).await {
                    Ok(t) => next.extend(fw.ctx.step(Event::TenantsRead(t))),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read tenants; the current table stays in force");
                        next.extend(fw.ctx.step(Event::TenantsFailed));
                    }
                },
                Action::RetryIn(d) => {
                    tokio::time::sleep(d).await;
                    wake.notify_one();
                }
                Action::FirewallPass { read_kernel } => match fw.sync(m, read_kernel).await {
                    Ok(s) if s != PlanSummary::default() => tracing::info!(summary = ?s, "firewall updated"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "firewall pass failed"),
                },
                Action::ConfirmPass => match fw.confirm(m).await {
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "confirming compile failed"),
                },
                Action::EndpointPass => match fw.endpoint_pass(m).await {
                    Ok(s) if s != PlanSummary::default() => {
                        tracing::debug!(summary = ?s, "endpoints updated")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "endpoint pass failed"),
                },
                other => tracing::debug!(action = ?other, "not the firewall loop's"),
            }
        }
    }
}

/// Every `every`, checks that the kernel's table is still the one last applied and repairs it
/// when not. The check is nftables' generation (microseconds); the table is listed (300 ms of
/// nft's CPU at 15,000 elements, at the lowest priority) only when the generation moved behind
/// the agent's back, or every `VERIFY_EVERY`. It runs beside the change passes: a listing never
/// delays a policy change.
async fn repair_loop(fw: Arc<Firewall>, every: Duration) {
    let m = &fw.ctx.metrics;
    loop {
        let last = Duration::from_micros(fw.last_read_micros.load(Ordering::Relaxed));
        tokio::time::sleep(repair_wait(every, last)).await;
        if !fw.is_loaded() {
            continue;
        }
        let unchanged = fw.unchanged().await;
        let actions = fw.ctx.step(Event::RepairDue { now: Instant::now(), unchanged });
        if !actions.contains(&Action::FirewallPass { read_kernel: true }) {
            continue;
        }
        // `sync` counts the repair when the kernel's table was not the one last applied.
        match fw.sync(m, true).await {
            Ok(s) if s != PlanSummary::default() => tracing::info!(summary = ?s, "firewall updated"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "firewall repair pass failed"),
        }
    }
}
