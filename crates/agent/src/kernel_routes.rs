//! The route loop's kernel side: a converge (observe the host's links, addresses and routes,
//! let the core plan, apply) or a plan the core made from the kernel as it knows it, applied in
//! the agent's target namespace; the outcome goes back to the core (`RoutesApplied`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use romana_agent::machine::{Action, Event};
use romana_agent::ports::KernelRoutes;
use romana_dataplane::{HostState, Plan};
use romana_host::{HostError, Kernel, in_netns};
use romana_store::BoxFut;

use crate::{ctx, metrics, shared};

/// The host's kernel as the core's port.
struct NsKernel(Kernel);

impl KernelRoutes for NsKernel {
    type Error = HostError;
    fn observe(&mut self) -> BoxFut<'_, Result<HostState, HostError>> {
        Box::pin(self.0.observe())
    }
    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFut<'a, Result<(), HostError>> {
        Box::pin(self.0.apply(plan))
    }
}

/// Runs `f` with the kernel of `netns` (the agent's own namespace when `None`), on one thread
/// there.
async fn with_kernel<T: Send + 'static>(
    netns: Option<String>,
    f: impl AsyncFnOnce(&mut NsKernel) -> Result<T> + Send + 'static,
) -> Result<T> {
    let run = async move || f(&mut NsKernel(Kernel::connect()?)).await;
    match netns {
        None => run().await,
        Some(ns) => {
            tokio::task::spawn_blocking(move || in_netns(&ns, run)).await.context("namespace thread")??
        }
    }
}

/// Performs `ObserveKernel` (observe, let the core plan, apply) or `ApplyRoutes` (a plan from
/// the kernel as known), tells the core how it went, and returns what the core asks next.
pub async fn perform(
    shared: &shared::Shared,
    host: &str,
    netns: Option<String>,
    action: Action,
) -> Vec<Action> {
    let m = &shared.metrics;
    metrics::Metrics::inc(&m.reconciles);
    let timer = m.converge_seconds.timer();
    let converged = match action {
        Action::ObserveKernel => {
            let ctx: Arc<ctx::Ctx> = shared.ctx.clone();
            with_kernel(netns, async move |k| {
                let plan = |observed| {
                    ctx.step(Event::KernelObserved(observed)).into_iter().find_map(|a| match a {
                        Action::ApplyRoutes(p) => Some(p),
                        _ => None,
                    })
                };
                Ok(romana_agent::drive::converge(k, plan).await?)
            })
            .await
        }
        // Nothing to change: no netlink socket, no namespace thread.
        Action::ApplyRoutes(plan) if plan.is_empty() => Ok(Some(plan)),
        Action::ApplyRoutes(plan) => {
            with_kernel(netns, async move |k| {
                romana_agent::drive::apply_known(k, &plan).await?;
                Ok(Some(plan))
            })
            .await
        }
        other => {
            tracing::debug!(action = ?other, "not the kernel's");
            return vec![];
        }
    };
    drop(timer);
    let next = shared.step(Event::RoutesApplied(converged.is_ok()));
    match converged {
        Ok(plan) => {
            // A change that arrived during this pass counts as in it: the lag is then short by
            // at most one pass (route_convergence_seconds says how long).
            m.routes_converged(Instant::now());
            shared.gateway_ready.store(true, Ordering::Relaxed);
            let steps = plan.map(|p| p.steps).unwrap_or_default();
            m.steps_applied.fetch_add(steps.len() as u64, Ordering::Relaxed);
            for step in &steps {
                tracing::info!(%host, "{step}");
            }
        }
        Err(e) => {
            metrics::Metrics::inc(&m.reconcile_errors);
            tracing::error!(%host, error = format!("{e:#}"), "reconcile failed")
        }
    }
    next
}
