//! The confirming compile (the check of the table endpoint passes left) and the threads compiles
//! run on: off the agent's runtime (one thread), the confirming one at low priority and without
//! the pass lock, so that a pod's start neither waits behind it nor shares the CPU with it as an
//! equal.

use std::sync::atomic::Ordering;
use std::time::Instant;

use romana_agent::drive::run_pass;
use romana_agent::error::FirewallError;
use romana_agent::machine::pass::{compile_with, confirm_dropped, snapshot_confirm};
use romana_policy::nftplan::PlanSummary;

use super::Firewall;
use crate::metrics::Metrics;

impl Firewall {
    /// The compile that confirms the table endpoint passes left. It compiles from scratch (so
    /// it checks the cache too) on a low-priority thread of its own, without the pass lock: an
    /// ADD's endpoint pass meanwhile does not wait, and makes this compile stale (dropped, and
    /// due again). Runs as a locked pass (`sync`) when changes are waiting. Returns `None` when
    /// dropped.
    pub async fn confirm(&self, metrics: &Metrics) -> Result<Option<PlanSummary>, FirewallError> {
        self.restored().await;
        let taken = {
            let state = self.pass.lock().await;
            let mut core = self.ctx.core();
            if !core.inputs.loaded {
                return Err(FirewallError::NotLoaded);
            }
            match snapshot_confirm(&mut core.inputs) {
                Some(snap) if state.known.is_some() => Some((snap, state.epoch)),
                Some(_) => {
                    confirm_dropped(&mut core.inputs);
                    None
                }
                None => None,
            }
        };
        // Changes are waiting (or the table in force is unknown): a pass that applies whatever
        // it compiles.
        let Some((snap, epoch)) = taken else {
            return self.sync(metrics, false).await.map(Some);
        };
        let started = Instant::now();
        let host = self.ctx.host.clone();
        let (cache, mut compiled, world) = off_runtime(true, move || {
            let mut cache = romana_policy::firewall::CompileCache::default();
            let (c, world) = compile_with(&mut cache, &host, snap);
            (cache, c, world)
        })
        .await?;
        let compiled_in = started.elapsed();
        let mut state = self.pass.lock().await;
        if !state.lands(epoch) {
            confirm_dropped(&mut self.ctx.core().inputs);
            tracing::debug!(
                compile_ms = compiled_in.as_secs_f64() * 1e3,
                "confirming compile stale; dropped"
            );
            return Ok(None);
        }
        state.compiled(cache, world);
        self.finish(&mut compiled);
        let (rules, elements) = compiled.desired.counts();
        let (endpoints, policies, active) = (compiled.endpoints, compiled.policies, compiled.active);
        let base = state.base(None);
        let deliver = self.deliver.clone();
        let r = self.in_ns(move |nft| run_pass(nft, deliver.as_deref(), base, &compiled)).await;
        Metrics::inc(&metrics.firewall_syncs);
        metrics.firewall_sync_seconds.observe(started.elapsed());
        match r {
            Ok(a) => {
                state.applied(a.after, a.known_at, &a.summary);
                self.saved_wake.notify_one();
                metrics.firewall_rules.store(rules as u64, Ordering::Relaxed);
                metrics.firewall_elements.store(elements as u64, Ordering::Relaxed);
                metrics.firewall_endpoints.store(endpoints as u64, Ordering::Relaxed);
                metrics.firewall_policies.store(policies as u64, Ordering::Relaxed);
                metrics.firewall_policies_active.store(active as u64, Ordering::Relaxed);
                if a.summary != PlanSummary::default() {
                    // Endpoint passes are held equal to a compile (property test): a difference
                    // here is a bug of theirs, which this compile just repaired.
                    tracing::warn!(summary = ?a.summary, "the confirming compile changed the table");
                }
                tracing::debug!(compile_ms = compiled_in.as_secs_f64() * 1e3, "table confirmed");
                Ok(Some(a.summary))
            }
            Err(e) => {
                self.failed(metrics);
                Err(e)
            }
        }
    }
}

/// Runs `f` on a thread of its own (`low`: at nice 10, below the CNI path's plumbing), so that
/// the agent's runtime, one thread, is never held by a compile.
pub(super) async fn off_runtime<T: Send + 'static>(
    low: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FirewallError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("romana-compile".into())
        .spawn(move || {
            if low {
                lower_priority();
            }
            let _ = tx.send(f());
        })
        .map_err(|e| FirewallError::Join(e.to_string()))?;
    rx.await.map_err(|_| FirewallError::Join("the compile thread panicked".into()))
}

/// Lowers the calling thread's CPU priority to nice 10 (Linux: `PRIO_PROCESS` with 0 is the
/// calling thread). Best effort: without it, the compile competes with plumbing as an equal.
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
}
