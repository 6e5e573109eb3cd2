//! `romana chaos`'s last check: every live pod pings every other over each address family the
//! sandbox gives (IPv4, and IPv6 in a dual-stack one) and each answer is held against the policy
//! evaluator's for that family (ICMP echo, or ICMPv6 echo request to the pods' `#v6` records).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use romana_client::Client;

use crate::chaos_check::{self, Family, Violation};
use crate::chaos_observe;
use crate::chaos_plan::Model;
use crate::sandbox_layout::Layout;

/// What one family's probes found: pairs probed, pairs the evaluator allows, violations.
#[derive(Debug, Clone)]
pub struct FamilyProbes {
    pub family: Family,
    pub pairs: usize,
    pub allowed: usize,
    pub violations: Vec<Violation>,
}

/// Probes every family in `families`, after the racks' routers learned the pod blocks.
pub async fn probe(
    c: &Client,
    layout: &Layout,
    sb_dir: &Path,
    model: &Model,
    families: &[Family],
) -> Result<Vec<FamilyProbes>> {
    // With static routing the racks' routers learn pod blocks from the CLI, as `pod add` does;
    // one rack needs none (its hosts share a segment and route to each other directly).
    if layout.racks > 1 {
        crate::sandbox::sync_fabric(c, layout, sb_dir).await?;
    }
    let s = chaos_observe::snapshot(c).await?;
    let inputs = chaos_check::policy_inputs(&s);
    let mut out = Vec::new();
    for family in families {
        let found = probe_family(&inputs, model, layout, *family).await?;
        println!(
            "probes over {}: {} pod pairs, {} allowed by the evaluator, {} denied, {} violation(s)",
            family.name(),
            found.pairs,
            found.allowed,
            found.pairs - found.allowed,
            found.violations.len()
        );
        out.push(found);
    }
    Ok(out)
}

/// One family. A ping the policy allows that got no answer is tried twice more (a first packet
/// may wait for neighbour resolution); one that the policy denies and was answered is a
/// violation at once.
async fn probe_family(
    inputs: &chaos_check::PolicyInputs,
    model: &Model,
    layout: &Layout,
    family: Family,
) -> Result<FamilyProbes> {
    let allows = |s: &str, d: &str| chaos_check::allowed(inputs, family, s, d) == Some(true);
    let mut results = chaos_observe::ping(model, layout, family, None)?;
    for _ in 0..2 {
        let blocked: Vec<(String, String)> = results
            .iter()
            .filter(|(s, d, ok)| !ok && allows(s, d))
            .map(|(s, d, _)| (s.clone(), d.clone()))
            .collect();
        if blocked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (s, d, ok) in chaos_observe::ping(model, layout, family, Some(&blocked))? {
            if let Some(r) = results.iter_mut().find(|(s2, d2, _)| *s2 == s && *d2 == d) {
                r.2 = ok;
            }
        }
    }
    Ok(FamilyProbes {
        family,
        pairs: results.len(),
        allowed: results.iter().filter(|(s, d, _)| allows(s, d)).count(),
        violations: chaos_check::probes(inputs, family, &results),
    })
}
