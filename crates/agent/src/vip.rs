//! The VIPs this host serves or stands by for, from romanad's assignment (`GET /vips` on each
//! change the watch shows under `vips/`, and every 2 s regardless): each address on the gateway
//! link (through the reconcile loop's desired state), announced over BGP by the BIRD include
//! (`bird.rs`: a /32, with a longer path when standing by), and DNATed to the service's
//! endpoints on this host in our nftables table (`firewall.rs` adds the policy core's `vip-dnat`
//! chain to each pass). The decision is `served`, pure; the loop only reads, compares and hands
//! over.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use romana_api::vip::VipInfo;
use romana_fabric::HostVip;
use romana_policy::Protocol;
use romana_policy::vip::{DnatPort, VipDnat};

use romana_agent::machine::Event;
use romana_agent::rest_watch::SharedWatch;

use crate::shared::Shared;

/// What this host does for VIPs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    /// Announced over BGP.
    pub announce: Vec<HostVip>,
    /// DNATed to local endpoints.
    pub dnat: Vec<VipDnat>,
}

impl Served {
    /// The addresses the gateway link holds.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.announce.iter().map(|v| IpAddr::V4(v.address)).collect()
    }
}

/// What `host` does for `vips`: those it serves or stands by for, with their endpoints here.
/// A VIP with no endpoint here (or an unreadable address) is left out and reported.
pub fn served(host: &str, vips: &[VipInfo]) -> (Served, Vec<String>) {
    let mut out = Served::default();
    let mut problems = Vec::new();
    for v in vips {
        let standby = if v.assigned == host {
            false
        } else if v.standby == host {
            true
        } else {
            continue;
        };
        let Ok(address) = v.address.parse::<Ipv4Addr>() else {
            problems.push(format!("VIP {:?} is not an IPv4 address; left out", v.address));
            continue;
        };
        let backends: Vec<Ipv4Addr> =
            v.backends.get(host).into_iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
        if backends.is_empty() {
            problems
                .push(format!("VIP {address}: no endpoint of service {} on this host; left out", v.service));
            continue;
        }
        let mut ports = Vec::new();
        for p in &v.ports {
            match Protocol::parse(&p.protocol) {
                Some(protocol) => ports.push(DnatPort { protocol, port: p.port, target: p.target_port }),
                None => problems.push(format!("VIP {address}: protocol {:?} left out", p.protocol)),
            }
        }
        out.announce.push(HostVip { address, standby });
        out.dnat.push(VipDnat { vip: address, ports, backends });
    }
    out.announce.sort();
    out.dnat.sort();
    (out, problems)
}

/// Follows `vips/` on the agent's shared watch; what it returns is notified on each change
/// (and on the stream's breaks and resumes), for `run`.
pub fn watch(watch: &mut SharedWatch) -> Arc<tokio::sync::Notify> {
    let changed = Arc::new(tokio::sync::Notify::new());
    let c = changed.clone();
    watch.add(&["vips/"], move |_| {
        c.notify_one();
        true
    });
    changed
}

/// Reads romanad's VIPs whenever the watch shows a change under `vips/` (and every `every`
/// regardless, the fallback while the watch is down) and hands what changed to the reconcile
/// loop (`wake`), the firewall and the BIRD loop.
pub async fn run(
    shared: Arc<Shared>,
    every: Duration,
    wake: Arc<tokio::sync::Notify>,
    changed: Arc<tokio::sync::Notify>,
) {
    let mut last: Option<Served> = None;
    let mut told: BTreeMap<String, ()> = BTreeMap::new();
    let mut dnat_pending = false;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = changed.notified() => {}
        }
        let vips = match shared.client().vips().await {
            Ok(v) => v,
            Err(e) => {
                // What is served stays served: romanad unreachable is not a reason to drop a VIP.
                tracing::debug!(error = %e, "cannot read VIPs; keeping the current ones");
                continue;
            }
        };
        let (now, problems) = served(&shared.host, &vips);
        for p in problems {
            if told.insert(p.clone(), ()).is_none() {
                tracing::warn!(problem = %p, "VIP");
            }
        }
        if last.as_ref() != Some(&now) {
            tracing::info!(announce = ?now.announce, "VIPs of this host changed");
            shared.step(Event::VipsChanged(now.addresses()));
            *shared.vips.lock().unwrap_or_else(|e| e.into_inner()) = now.announce.clone();
            wake.notify_one();
            dnat_pending = true;
            last = Some(now.clone());
        }
        if dnat_pending {
            dnat_pending = !set_dnat(&shared, now.dnat).await;
        }
    }
}

/// Gives the firewall the DNAT rules and wakes its loop; `false` while it cannot yet (not loaded).
/// The pass runs in the firewall's own loop, through the core, like every other change: a pass
/// of our own here could interleave with that loop's (egress NAT met exactly that race).
async fn set_dnat(shared: &Shared, dnat: Vec<VipDnat>) -> bool {
    let Some(fw) = &shared.firewall else {
        if !dnat.is_empty() {
            tracing::warn!("policy is off (--no-policy): VIP traffic is not DNATed to endpoints");
        }
        return true;
    };
    fw.set_vips(dnat);
    if !fw.is_loaded() {
        tracing::debug!("VIP DNAT waits for the firewall's first pass");
        return false;
    }
    {
        // DNAT rules are rule changes: a full pass, not an endpoint pass.
        let mut core = shared.core();
        core.inputs.dirty = true;
        core.inputs.rules_dirty = true;
    }
    fw.wake.notify_one();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(address: &str, assigned: &str, standby: &str, backends: &[(&str, &str)]) -> VipInfo {
        VipInfo {
            address: address.into(),
            service: "web".into(),
            assigned: assigned.into(),
            standby: standby.into(),
            ports: vec![romana_api::vip::VipPort { protocol: "TCP".into(), port: 80, target_port: 8080 }],
            backends: backends.iter().map(|(h, ip)| (h.to_string(), vec![ip.to_string()])).collect(),
            ..VipInfo::default()
        }
    }

    #[test]
    fn what_a_host_serves() {
        let vips = [
            vip("198.51.100.2", "h1", "h2", &[("h1", "10.0.0.2"), ("h2", "10.0.1.2")]),
            vip("198.51.100.1", "h2", "h1", &[("h1", "10.0.0.3"), ("h2", "10.0.1.3")]),
            vip("198.51.100.3", "h3", "h2", &[("h3", "10.0.2.2")]),
            vip("198.51.100.4", "h1", "", &[]),
        ];
        let (s, problems) = served("h1", &vips);
        let shown: Vec<String> = s
            .announce
            .iter()
            .map(|v| format!("{}{}", v.address, if v.standby { " standby" } else { "" }))
            .collect();
        assert_eq!(shown, ["198.51.100.1 standby", "198.51.100.2"]);
        assert_eq!(s.dnat[1].backends, ["10.0.0.2".parse::<Ipv4Addr>().expect("ip")]);
        assert_eq!(s.dnat[1].ports, [DnatPort { protocol: Protocol::Tcp, port: 80, target: 8080 }]);
        assert_eq!(problems, ["VIP 198.51.100.4: no endpoint of service web on this host; left out"]);
        assert_eq!(s.addresses().len(), 2);
        let (none, _) = served("h9", &vips);
        assert_eq!(none, Served::default());
    }
}
