//! Egress NAT on this host (docs/fabric.md, "Egress NAT"): asks once whether the kernel can hold
//! a nat chain in our table, then reads the topology and the VIPs every interval and, when what
//! NAT depends on changed (networks, `nat_outgoing`, `no_nat`, hosts, VIP ranges and addresses,
//! which are never masqueraded destinations), runs a firewall pass, which adds the
//! `nat-out` chain to the table it applies (`romana_policy::nat`, pure). NAT lives in the
//! firewall's table and transaction, so it needs the firewall (not `--no-policy`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use romana_policy::nat::NatConfig;

use crate::ctx::Ctx;
use crate::firewall::Firewall;

/// The VIP ranges and every VIP's address (`romana_policy::nat::vip_destinations`).
async fn vip_destinations(ctx: &Ctx) -> Result<Vec<romana_model::Cidr>, String> {
    let config = ctx.client().vip_config().await.map_err(|e| format!("cannot read the VIP ranges: {e}"))?;
    let vips = ctx.client().vips().await.map_err(|e| format!("cannot read the VIPs: {e}"))?;
    Ok(romana_policy::nat::vip_destinations(&config, &vips))
}

/// Runs forever (or returns at once when this kernel cannot do NAT, saying why).
pub async fn run(fw: Arc<Firewall>, ctx: Arc<Ctx>, host_ns: Option<PathBuf>, every: Duration) {
    let probe = tokio::task::spawn_blocking(move || {
        romana_host::in_netns_path(host_ns.as_deref(), || async { romana_host::nat::probe() })
    })
    .await;
    match probe {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "egress NAT is off on this host: endpoints reach other networks with their own addresses");
            return;
        }
        Ok(Err(e)) => {
            return tracing::error!(error = %e, "egress NAT is off: cannot enter the host's namespace");
        }
        Err(e) => return tracing::error!(error = %e, "egress NAT is off: the probe failed"),
    }
    let mut trouble: Option<String> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let read = ctx.client().topology().await.map_err(|e| format!("cannot read the topology: {e}"));
        let cfg = read.and_then(|t| NatConfig::from_topology(&t).map_err(|e| format!("the topology: {e}")));
        let cfg = match cfg {
            Ok(cfg) => vip_destinations(&ctx).await.map(|v| cfg.with_vips(v)),
            Err(e) => Err(e),
        };
        match cfg {
            Ok(cfg) => {
                trouble = None;
                let summary = (cfg.masquerade.len(), cfg.no_nat.len(), cfg.hosts.len());
                if fw.nat.set(cfg) {
                    tracing::info!(
                        masqueraded_networks = summary.0,
                        no_nat = summary.1,
                        hosts = summary.2,
                        "egress NAT inputs changed"
                    );
                    // Through the firewall's loop and its core, like any other change: the
                    // inputs are dirty, the loop's next wake runs the pass.
                    // The chain is a rule change: a full pass, not an endpoint pass.
                    {
                        let mut core = ctx.core();
                        core.inputs.dirty = true;
                        core.inputs.rules_dirty = true;
                    }
                    fw.wake.notify_one();
                }
            }
            Err(e) if trouble.as_deref() != Some(&e) => {
                tracing::warn!("egress NAT: {e} (the last rules stay; retrying quietly)");
                trouble = Some(e);
            }
            Err(_) => {}
        }
    }
}
