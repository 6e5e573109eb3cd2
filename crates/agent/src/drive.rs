//! The runners that perform the core's actions through the ports: converge the routes (observe,
//! let the core plan, apply; or apply a plan made from the kernel as known), read our nftables
//! table with its generation, and run one firewall transaction with the fast path around it. Generic over the ports so that tests run
//! them with fakes; the binary gives them the real kernel, nftables and BPF map.

use romana_dataplane::{HostState, Plan};
use romana_policy::nftplan::{Observed, PlanSummary};

use crate::error::FirewallError;
use crate::machine::pass::{Compiled, Table, Transaction, known_at, transaction};
use crate::ports::{FastPathMap, KernelRoutes, Nftables};

/// Observes the kernel, asks `plan` (the core's step on `KernelObserved`) what to do about it,
/// applies that. Returns the plan applied (`None`: the core asked for nothing).
pub async fn converge<K: KernelRoutes>(
    k: &mut K,
    plan: impl FnOnce(HostState) -> Option<Plan>,
) -> Result<Option<Plan>, K::Error> {
    let t = std::time::Instant::now();
    let observed = k.observe().await?;
    let observe_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    let Some(plan) = plan(observed) else { return Ok(None) };
    let plan_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    k.apply(&plan).await?;
    // A route pass's times (the kernel's routes read, the plan under the core's lock, its
    // steps applied): `RUST_LOG=romana_agent::drive=debug`.
    tracing::debug!(
        observe_ms,
        plan_ms,
        apply_ms = t.elapsed().as_secs_f64() * 1e3,
        steps = plan.steps.len(),
        "route pass"
    );
    Ok(Some(plan))
}

/// Applies a plan the core made from the kernel as it knows it (no observation).
pub async fn apply_known<K: KernelRoutes>(k: &mut K, plan: &Plan) -> Result<(), K::Error> {
    let t = std::time::Instant::now();
    k.apply(plan).await?;
    tracing::debug!(
        apply_ms = t.elapsed().as_secs_f64() * 1e3,
        steps = plan.steps.len(),
        "route pass, known kernel"
    );
    Ok(())
}

/// Our table as the kernel holds it, with the generation it was read at (`None` when something
/// was committed during the listing, or the generation could not be read).
pub fn read_table<N: Nftables>(nft: &N, background: bool) -> Result<Table, FirewallError> {
    let before = nft.generation().ok();
    let table = nft.list(background)?;
    let after = nft.generation().ok();
    Ok((table, before.filter(|_| before == after)))
}

/// What one transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub summary: PlanSummary,
    /// The table now in force.
    pub after: Observed,
    /// The generation at which it is known exactly (`None`: read the kernel next time).
    pub known_at: Option<u32>,
    /// The kernel's table was listed for this pass.
    pub listed: bool,
}

/// One pass's I/O: read the kernel's table unless `base` says what it holds, plan, narrow the
/// fast path, apply the script, widen the fast path, note the generation.
pub fn run_pass<N: Nftables, F: FastPathMap>(
    nft: &N,
    fast_path: Option<&F>,
    base: Option<Table>,
    c: &Compiled,
) -> Result<Applied, FirewallError> {
    let (observed, at, listed) = match base {
        Some((o, at)) => (o, at, false),
        None => {
            let (o, at) = read_table(nft, false)?;
            (o, at, true)
        }
    };
    let planning = std::time::Instant::now();
    let t = transaction(observed.as_ref(), c);
    tracing::debug!(plan_ms = planning.elapsed().as_secs_f64() * 1e3, summary = ?t.plan.summary, "firewall plan");
    let known_at = apply_transaction(nft, fast_path, &t, at)?;
    Ok(Applied { summary: t.plan.summary, after: Observed::of(&c.desired), known_at, listed })
}

/// One transaction with the fast path around it: narrow, apply the script (unless empty),
/// widen. Returns the generation at which the result is known exactly, given that the table
/// planned from was known at `at`.
pub fn apply_transaction<N: Nftables, F: FastPathMap>(
    nft: &N,
    fast_path: Option<&F>,
    t: &Transaction,
    at: Option<u32>,
) -> Result<Option<u32>, FirewallError> {
    let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
    let start = std::time::Instant::now();
    let before = nft.generation().ok();
    let narrowing = std::time::Instant::now();
    if let Some(f) = fast_path {
        f.narrow(&t.narrow)?;
    }
    let (narrow_ms, applying) = (ms(narrowing), std::time::Instant::now());
    let applied = !t.plan.is_empty();
    if applied {
        nft.apply_plan(&t.plan)?;
    }
    let (nft_ms, allowing) = (ms(applying), std::time::Instant::now());
    if let Some(f) = fast_path {
        f.allow(t.allow.clone())?;
    }
    let after = nft.generation().ok();
    // Where a transaction's time goes (the policy bench reads these): the fast path's narrowing
    // and widening around nftables' own commit, and the generation reads.
    tracing::debug!(
        narrow_ms,
        nft_ms,
        allow_ms = ms(allowing),
        elements_only = t.plan.elements.is_some(),
        transaction_ms = ms(start),
        "firewall transaction"
    );
    Ok(known_at(at, before, after, applied))
}

#[cfg(test)]
mod tests;
