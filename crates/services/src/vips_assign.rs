//! Where each VIP is served, pure: from the VIPs as stored, the live hosts and the endpoint
//! registry, with the time as an argument. A VIP is served by a live host that has at least one
//! of the service's endpoints (the tenant's endpoints whose labels hold the selector): the
//! preferred host while it qualifies, else the host serving it now while it still qualifies,
//! else its standby (the fabric already sends traffic there once the old host's route is
//! withdrawn), else the qualifying host serving the fewest VIPs (then by name). The standby is a
//! second qualifying host, kept while it qualifies. Nothing moves without need. Knows nothing of
//! the store.

use std::collections::{BTreeMap, BTreeSet};

use romana_api::rest::EndpointInfo;
use romana_api::vip::VipInfo;

/// The service's endpoints by live host: each host's endpoint addresses, sorted.
pub fn backends(
    vip: &VipInfo,
    live: &BTreeSet<String>,
    endpoints: &[EndpointInfo],
) -> BTreeMap<String, Vec<String>> {
    let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in endpoints {
        let selected = e.tenant == vip.tenant
            && vip.selector.iter().all(|(k, v)| e.labels.get(k) == Some(v))
            && live.contains(&e.host);
        if selected {
            by_host.entry(e.host.clone()).or_default().push(e.ip.clone());
        }
    }
    for ips in by_host.values_mut() {
        ips.sort();
        ips.dedup();
    }
    by_host
}

/// Every VIP with its assignment now. `since_ms` changes only where the assigned host or the
/// standby changed; a caller writes back only the VIPs that differ from what it read.
pub fn assign(
    vips: &[VipInfo],
    live: &BTreeSet<String>,
    endpoints: &[EndpointInfo],
    now_ms: u64,
) -> Vec<VipInfo> {
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(vips.len());
    for vip in vips {
        let by_host = backends(vip, live, endpoints);
        let ok = |h: &str| !h.is_empty() && by_host.contains_key(h);
        let least = |load: &BTreeMap<String, usize>, not: &str| {
            by_host
                .keys()
                .filter(|h| h.as_str() != not)
                .min_by_key(|h| (load.get(*h).copied().unwrap_or(0), (*h).clone()))
                .cloned()
                .unwrap_or_default()
        };
        let assigned = [&vip.host, &vip.assigned, &vip.standby]
            .into_iter()
            .find(|h| ok(h))
            .cloned()
            .unwrap_or_else(|| least(&load, ""));
        let standby = if ok(&vip.standby) && vip.standby != assigned {
            vip.standby.clone()
        } else if ok(&vip.assigned) && vip.assigned != assigned {
            // The preferred host came back: the one that stood in stays ready.
            vip.assigned.clone()
        } else {
            least(&load, &assigned)
        };
        if !assigned.is_empty() {
            *load.entry(assigned.clone()).or_default() += 1;
        }
        let mut next = vip.clone();
        next.backends = [&assigned, &standby]
            .into_iter()
            .filter_map(|h| by_host.get(h).map(|ips| (h.clone(), ips.clone())))
            .collect();
        if assigned != vip.assigned || standby != vip.standby {
            next.since_ms = now_ms;
        }
        next.assigned = assigned;
        next.standby = standby;
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `eps`: "host:ip:app" endpoints of tenant red; `vips`: "address:preferred:assigned:standby"
    /// (service web, selector app=web); `expect`: "address:assigned:standby:backends" per VIP.
    fn check(vips: &[&str], live: &[&str], eps: &[&str], expect: &[&str]) {
        let endpoints: Vec<EndpointInfo> = eps
            .iter()
            .map(|e| {
                let f: Vec<&str> = e.split(':').collect();
                EndpointInfo {
                    name: format!("{}-{}", f[0], f[1]),
                    ip: f[1].into(),
                    tenant: if f[2] == "other" { "blue".into() } else { "red".into() },
                    host: f[0].into(),
                    labels: [("app".to_owned(), f[2].to_owned())].into(),
                    ..EndpointInfo::default()
                }
            })
            .collect();
        let vips: Vec<VipInfo> = vips
            .iter()
            .map(|v| {
                let f: Vec<&str> = v.split(':').collect();
                VipInfo {
                    address: f[0].into(),
                    service: "web".into(),
                    tenant: "red".into(),
                    selector: [("app".to_owned(), "web".to_owned())].into(),
                    host: f[1].into(),
                    assigned: f[2].into(),
                    standby: f[3].into(),
                    since_ms: 1,
                    ..VipInfo::default()
                }
            })
            .collect();
        let live: BTreeSet<String> = live.iter().map(|s| s.to_string()).collect();
        let got = assign(&vips, &live, &endpoints, 7);
        let shown: Vec<String> = got
            .iter()
            .map(|v| {
                let b: Vec<String> =
                    v.backends.iter().map(|(h, ips)| format!("{h}={}", ips.join("+"))).collect();
                format!("{}:{}:{}:{}", v.address, v.assigned, v.standby, b.join(","))
            })
            .collect();
        assert_eq!(shown, expect, "vips {vips:?} live {live:?}");
        // Deterministic, and a second pass over its own output changes nothing.
        assert_eq!(assign(&vips, &live, &endpoints, 7), got);
        let again = assign(&got, &live, &endpoints, 9);
        assert_eq!(again, got, "stable");
        for (before, after) in vips.iter().zip(&got) {
            let moved = before.assigned != after.assigned || before.standby != after.standby;
            assert_eq!(after.since_ms, if moved { 7 } else { 1 }, "{}", after.address);
        }
    }

    #[test]
    fn assignments() {
        let eps = ["h1:10.0.0.2:web", "h1:10.0.0.3:web", "h2:10.0.1.2:web", "h3:10.0.2.2:db"];
        // New VIPs: the least-loaded hosts with endpoints; the second VIP goes to the other host.
        check(
            &["v1:::", "v2:::"],
            &["h1", "h2", "h3"],
            &eps,
            &["v1:h1:h2:h1=10.0.0.2+10.0.0.3,h2=10.0.1.2", "v2:h2:h1:h1=10.0.0.2+10.0.0.3,h2=10.0.1.2"],
        );
        // Kept where it is while that host qualifies, even when another is less loaded.
        check(
            &["v1::h2:h1", "v2::h2:h1"],
            &["h1", "h2"],
            &eps,
            &["v1:h2:h1:h1=10.0.0.2+10.0.0.3,h2=10.0.1.2", "v2:h2:h1:h1=10.0.0.2+10.0.0.3,h2=10.0.1.2"],
        );
        // The assigned host dies: the standby takes over; no third host has endpoints.
        check(&["v1::h1:h2"], &["h2", "h3"], &eps, &["v1:h2::h2=10.0.1.2"]);
        // It comes back: it stands by, nothing moves again.
        check(&["v1::h2:"], &["h1", "h2"], &eps, &["v1:h2:h1:h1=10.0.0.2+10.0.0.3,h2=10.0.1.2"]);
        // The preferred host serves whenever it qualifies; the one that stood in stays ready.
        check(&["v1:h1:h2:"], &["h1", "h2"], &eps, &["v1:h1:h2:h1=10.0.0.2+10.0.0.3,h2=10.0.1.2"]);
        // A preferred host without endpoints of the service does not qualify.
        check(&["v1:h3::"], &["h1", "h3"], &eps, &["v1:h1::h1=10.0.0.2+10.0.0.3"]);
        // No live host has an endpoint: unassigned.
        check(&["v1::h1:h2"], &["h3"], &eps, &["v1:::"]);
        // Another tenant's endpoints with the same labels are not the service's.
        check(&["v1:::"], &["h4"], &["h4:10.0.3.2:other"], &["v1:::"]);
        // A host that is not live (never heard from, or lapsed) never serves.
        check(&["v1:::"], &[], &eps, &["v1:::"]);
    }
}
