//! Who can reach an endpoint, and whom it can reach, on which ports: the policy evaluator
//! (`romana_policy::eval`) asked for every peer and every port class. Pure: takes romanad's
//! records as values, knows nothing of the store or HTTP (`reach_api.rs` is the handler).
//!
//! Ports are not probed one by one: every port range a policy names and every named port an
//! endpoint declares cuts 1-65535 into intervals inside which no rule can tell two ports apart,
//! so one probe per interval decides the whole interval exactly.

use std::collections::BTreeSet;
use std::net::IpAddr;

use romana_api::netpol::NetworkPolicy;
use romana_api::policy::Policy;
use romana_api::reach::{ReachInfo, ReachPeer, SelectingPolicy};
use romana_api::rest::{EndpointInfo, Tenant};
use romana_model::Cidr;
use romana_policy::eval::{Endpoint, Probe, World, allowed, selects};
use romana_policy::{Peer, PolicyRules, Port, Protocol, Scope, cluster};

/// The records the answer is computed from (what `GET /tenants`, `/policies`,
/// `/networkpolicies` and `/endpoints` hold).
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub tenants: &'a [Tenant],
    pub policies: &'a [Policy],
    pub netpols: &'a [NetworkPolicy],
    pub endpoints: &'a [EndpointInfo],
}

/// ICMP echo request (type 8, code 0) as the evaluator's probe port (`type * 256 + code`).
const ICMP_ECHO: u16 = 8 << 8;

const PORT_PROTOCOLS: [(Protocol, &str); 3] =
    [(Protocol::Tcp, "TCP"), (Protocol::Udp, "UDP"), (Protocol::Sctp, "SCTP")];

/// The effective ingress and egress of the endpoint named `name`, or `None` when there is no
/// such endpoint (or its record is unreadable).
pub fn reach(name: &str, inputs: Inputs<'_>) -> Option<ReachInfo> {
    let mut problems = Vec::new();
    let mut endpoints = Vec::new();
    for e in inputs.endpoints {
        match cluster::endpoint(e) {
            Ok(x) => endpoints.push(x),
            Err(p) => problems.push(p),
        }
    }
    let info = inputs.endpoints.iter().find(|e| e.name == name)?;
    let target = endpoints.iter().find(|e| e.id == name)?.clone();
    let mut rules: Vec<PolicyRules> = Vec::new();
    for p in inputs.policies {
        match cluster::romana_rules(p) {
            Ok(r) => rules.extend(r),
            Err(e) => problems.push(e),
        }
    }
    for np in inputs.netpols {
        match cluster::netpol_rules(np) {
            Ok(r) => rules.push(r),
            Err(e) => problems.push(e),
        }
    }
    let (world, implicit, more) = cluster::tenancy(inputs.tenants, &endpoints);
    problems.extend(more);
    rules.extend(implicit);

    let policies = selecting(&rules, &target);
    let isolated_ingress = policies.iter().any(|p| p.directions.iter().any(|d| d == "ingress"));
    let isolated_egress = policies.iter().any(|p| p.directions.iter().any(|d| d == "egress"));
    let cuts = cuts(&rules, &endpoints);
    let ctx = Ctx { rules: &rules, world: &world, cuts: &cuts };

    let own_host =
        Endpoint { id: target.host.clone(), host: target.host.clone(), is_host: true, ..Endpoint::default() };
    let mut others: Vec<&Endpoint> = endpoints.iter().filter(|e| e.id != target.id).collect();
    others.sort_by(|a, b| a.id.cmp(&b.id));
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    for peer in others {
        push(&mut ingress, endpoint_peer(peer), ctx.ports(peer, &target));
        push(&mut egress, endpoint_peer(peer), ctx.ports(&target, peer));
    }
    let host_peer = || ReachPeer {
        kind: "host".into(),
        name: target.host.clone(),
        tenant: String::new(),
        ip: String::new(),
        ports: vec![],
    };
    push(&mut ingress, host_peer(), ctx.ports(&own_host, &target));
    push(&mut egress, host_peer(), ctx.ports(&target, &own_host));
    // Addresses outside the cluster are modelled as a host that is not the endpoint's: no
    // endpoint selector, `local` or `host` peer matches it, only CIDRs (by its address) and `any`;
    // and no policy isolates it, so only the endpoint's side decides.
    for (dir, out) in [("ingress", &mut ingress), ("egress", &mut egress)] {
        for (peer, outside) in outside_peers(&rules, &target, dir) {
            let ports =
                if dir == "ingress" { ctx.ports(&outside, &target) } else { ctx.ports(&target, &outside) };
            push(out, peer, ports);
        }
    }
    Some(ReachInfo {
        endpoint: info.name.clone(),
        tenant: info.tenant.clone(),
        segment: info.segment.clone(),
        host: info.host.clone(),
        ip: info.ip.clone(),
        isolated_ingress,
        isolated_egress,
        policies,
        ingress,
        egress,
        problems,
    })
}

struct Ctx<'a> {
    rules: &'a [PolicyRules],
    world: &'a World,
    cuts: &'a [u32],
}

impl Ctx<'_> {
    /// What `src` may open to `dst`, one text per protocol (empty: nothing).
    fn ports(&self, src: &Endpoint, dst: &Endpoint) -> Vec<String> {
        let ok = |protocol, port| allowed(self.rules, self.world, src, dst, Probe { protocol, port });
        let mut out = Vec::new();
        for (protocol, label) in PORT_PROTOCOLS {
            let mut open: Vec<(u32, u32)> = Vec::new();
            for w in self.cuts.windows(2) {
                let (first, last) = (w[0], w[1] - 1);
                let port = u16::try_from(first).unwrap_or(u16::MAX);
                if ok(protocol, port) {
                    match open.last_mut() {
                        Some(r) if r.1 + 1 == first => r.1 = last,
                        _ => open.push((first, last)),
                    }
                }
            }
            if !open.is_empty() {
                out.push(format!("{label} {}", ranges_text(&open)));
            }
        }
        if ok(Protocol::Icmp, ICMP_ECHO) {
            out.push("ICMP echo".into());
        }
        out
    }
}

fn push(out: &mut Vec<ReachPeer>, mut peer: ReachPeer, ports: Vec<String>) {
    if !ports.is_empty() {
        peer.ports = ports;
        out.push(peer);
    }
}

fn endpoint_peer(e: &Endpoint) -> ReachPeer {
    ReachPeer {
        kind: "endpoint".into(),
        name: e.id.clone(),
        tenant: e.tenant.clone(),
        ip: e.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        ports: vec![],
    }
}

/// `80`, `8000-8080`, or `all` for the whole port space.
fn ranges_text(open: &[(u32, u32)]) -> String {
    if open == [(1, 65535)] {
        return "all".into();
    }
    let parts: Vec<String> =
        open.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    parts.join(", ")
}

/// The policies that select `target`, with the directions each isolates it in.
fn selecting(rules: &[PolicyRules], target: &Endpoint) -> Vec<SelectingPolicy> {
    let mut out: Vec<SelectingPolicy> = rules
        .iter()
        .filter(|p| selects(p, target))
        .map(|p| {
            let mut directions = Vec::new();
            if p.ingress.is_some() {
                directions.push("ingress".to_owned());
            }
            if p.egress.is_some() && p.scope != Scope::Host {
                directions.push("egress".to_owned());
            }
            SelectingPolicy { id: p.id.clone(), tenant: p.tenant.clone(), directions }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The interval starts: 1, 65536, and each place where a port range or a named port begins or
/// ends (ranges of every policy, ports of every endpoint, since named ports resolve on them).
fn cuts(rules: &[PolicyRules], endpoints: &[Endpoint]) -> Vec<u32> {
    let mut cuts = BTreeSet::from([1u32, 65536]);
    let mut add = |a: u16, b: u16| {
        cuts.insert(u32::from(a).max(1));
        cuts.insert(u32::from(b) + 1);
    };
    for p in rules {
        for rule in p.ingress.iter().chain(p.egress.iter()).flatten() {
            for pr in rule.ports.iter().flatten() {
                if let Some(Port::Range(a, b)) = pr.port {
                    add(a, b);
                }
            }
        }
    }
    for e in endpoints {
        for p in &e.ports {
            add(p.port, p.port);
        }
    }
    cuts.into_iter().collect()
}

/// The outside peers of one direction of `target`: one address in each CIDR its selecting
/// policies name in that direction (outside the CIDR's exceptions), and `*`, an address in none.
fn outside_peers(rules: &[PolicyRules], target: &Endpoint, dir: &str) -> Vec<(ReachPeer, Endpoint)> {
    let mut cidrs: BTreeSet<(Cidr, Vec<Cidr>)> = BTreeSet::new();
    for p in rules.iter().filter(|p| selects(p, target)) {
        let rs = if dir == "ingress" { &p.ingress } else { &p.egress };
        for rule in rs.iter().flatten() {
            for peer in rule.peers.iter().flatten() {
                if let Peer::Cidr { cidr, except } = peer {
                    cidrs.insert((*cidr, except.clone()));
                }
            }
        }
    }
    let outside = |ip: Option<IpAddr>| Endpoint { ip, is_host: true, ..Endpoint::default() };
    let mut out: Vec<(ReachPeer, Endpoint)> = cidrs
        .iter()
        .filter_map(|(cidr, except)| {
            let ip = representative(cidr, except)?;
            let peer = ReachPeer {
                kind: "cidr".into(),
                name: cidr.to_string(),
                tenant: String::new(),
                ip: String::new(),
                ports: vec![],
            };
            Some((peer, outside(Some(ip))))
        })
        .collect();
    let any = ReachPeer {
        kind: "outside".into(),
        name: "*".into(),
        tenant: String::new(),
        ip: String::new(),
        ports: vec![],
    };
    out.push((any, outside(None)));
    out
}

/// An address of `cidr` in none of `except` (the first such, skipping past each exception).
fn representative(cidr: &Cidr, except: &[Cidr]) -> Option<IpAddr> {
    let family = cidr.family();
    let mut v = cidr.first();
    loop {
        if !cidr.contains_value(family, v) {
            return None;
        }
        match except.iter().find(|x| x.contains_value(family, v)) {
            Some(x) => v = x.last().checked_add(1)?,
            None => return Some(family.addr(v)),
        }
    }
}

#[cfg(test)]
#[path = "reach_tests.rs"]
mod tests;
