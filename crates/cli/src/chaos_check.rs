//! `romana chaos`, pure: the invariants after the churn, each a function from what the scenario
//! was told (the model) and what it read (romanad's lists, each host's kernel routes and nftables
//! listing, the probes) to the violations found. The expected kernel state is computed here from
//! romanad's data, not taken from the agent: an agent that believes something wrong is caught.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use romana_api::agent::v6_address_name;
use romana_api::netpol::NetworkPolicy;
use romana_api::policy::Policy;
use romana_api::rest::{Address, EndpointInfo, HostRoutesInfo, RouteKind, Tenant};
use romana_policy::{Endpoint, FirewallInput, PolicyRules, Probe, Protocol, World, cluster};

use crate::chaos_plan::Model;

/// The CNI network name the sandbox's pods are added to (their address names start with it).
pub const NETWORK: &str = "romana-sandbox";

/// A pod's IPAM address name and endpoint name.
pub fn address_name(pod: &str) -> String {
    format!("cni:{NETWORK}:{pod}:eth0")
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub kind: &'static str,
    pub detail: String,
}

fn v(kind: &'static str, detail: String) -> Violation {
    Violation { kind, detail }
}

/// romanad's lists, read once after convergence.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub addresses: Vec<Address>,
    pub endpoints: Vec<EndpointInfo>,
    pub tenants: Vec<Tenant>,
    pub policies: Vec<Policy>,
    pub netpols: Vec<NetworkPolicy>,
}

/// A pod's address names (IPAM's and the endpoint registry's) with the address each must hold:
/// its IPv4 one under the plain name and, dual-stack, its IPv6 one under `#v6`; an IPv6-only
/// pod's under the plain name.
pub fn records(pod: &str, p: &crate::chaos_plan::Pod) -> Vec<(String, String)> {
    let name = address_name(pod);
    match (&p.ip, &p.ipv6) {
        (Some(v4), Some(v6)) => {
            let v6_name = v6_address_name(&name);
            vec![(name, v4.clone()), (v6_name, v6.clone())]
        }
        (Some(ip), None) | (None, Some(ip)) => vec![(name, ip.clone())],
        (None, None) => vec![(name, "?".to_owned())],
    }
}

/// IPAM and the endpoint registry against the model: no address held twice, none leaked (every
/// sandbox allocation, of either family, belongs to a live pod that was given it), every
/// acknowledged ADD present with its addresses (both families in a dual-stack sandbox) and
/// registered on its host, every acknowledged DEL gone from both, `#v6` records included.
pub fn registry(model: &Model, hosts: &[String], s: &Snapshot) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut by_ip: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in &s.addresses {
        by_ip.entry(&a.ip).or_default().push(&a.name);
    }
    for (ip, names) in by_ip.iter().filter(|(_, n)| n.len() > 1) {
        out.push(v("double-allocation", format!("{ip} is held by {}", names.join(" and "))));
    }
    let addresses: BTreeMap<&str, &Address> = s.addresses.iter().map(|a| (a.name.as_str(), a)).collect();
    let endpoints: BTreeMap<&str, &EndpointInfo> = s.endpoints.iter().map(|e| (e.name.as_str(), e)).collect();
    // Every record name a live pod holds, with the pod.
    let live: BTreeMap<String, (&String, &crate::chaos_plan::Pod)> = model
        .live()
        .flat_map(|(n, p)| records(n, p).into_iter().map(move |(name, _)| (name, (n, p))))
        .collect();
    let prefix = format!("cni:{NETWORK}:");
    for a in s.addresses.iter().filter(|a| a.name.starts_with(&prefix) && !live.contains_key(&a.name)) {
        out.push(v("leak", format!("{} holds {} on {} but no live pod has it", a.name, a.ip, a.host)));
    }
    for e in s.endpoints.iter().filter(|e| e.name.starts_with(&prefix) && !live.contains_key(&e.name)) {
        out.push(v("leak", format!("endpoint {} ({} on {}) belongs to no live pod", e.name, e.ip, e.host)));
    }
    for (pod, p) in model.live() {
        let host = hosts.get(p.host).map_or("?", String::as_str);
        if model.dual_stack && (p.ip.is_none() || p.ipv6.is_none()) {
            let got = [&p.ip, &p.ipv6].into_iter().flatten().cloned().collect::<Vec<_>>().join(", ");
            out.push(v(
                "lost-add",
                format!(
                    "ADD of {pod} on {host} answered [{got}] in a dual-stack sandbox: one address of \
                     each family expected"
                ),
            ));
        }
        for (name, want) in records(pod, p) {
            let want = want.as_str();
            match addresses.get(name.as_str()) {
                None => out.push(v(
                    "lost-add",
                    format!("{name} was added ({want} on {host}) but IPAM has no address"),
                )),
                Some(a) if a.ip != want || a.host != host => out.push(v(
                    "lost-add",
                    format!("{name} was added as {want} on {host}; IPAM says {} on {}", a.ip, a.host),
                )),
                Some(_) => {}
            }
            match endpoints.get(name.as_str()) {
                None => out.push(v("lost-add", format!("{name} was added but has no endpoint record"))),
                Some(e) if e.ip != want || e.host != host || e.tenant != p.tenant => out.push(v(
                    "lost-add",
                    format!(
                        "endpoint {name} is {} on {} in {}; the pod is {want} on {host} in {}",
                        e.ip, e.host, e.tenant, p.tenant
                    ),
                )),
                Some(e) if e.labels != p.labels && !p.labels_unsure => out.push(v(
                    "lost-label",
                    format!(
                        "endpoint {name} has labels {:?}; the last acknowledged are {:?}",
                        e.labels, p.labels
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    let present: BTreeSet<(String, String)> =
        s.netpols.iter().map(|n| (n.metadata.namespace.clone(), n.metadata.name.clone())).collect();
    for (i, (ns, name, _)) in crate::chaos_plan::policy_templates().iter().enumerate() {
        if model.policies_unsure.contains(&i) {
            continue;
        }
        let (want, have) =
            (model.policies.contains(&i), present.contains(&(ns.to_string(), name.to_string())));
        if want != have {
            let what = if want { "was applied but is missing" } else { "was deleted but is still there" };
            out.push(v("lost-policy", format!("NetworkPolicy {ns}/{name} {what}")));
        }
    }
    for pod in &model.gone {
        let name = address_name(pod);
        for name in [name.clone(), v6_address_name(&name)] {
            if let Some(a) = addresses.get(name.as_str()) {
                out.push(v(
                    "del-not-gone",
                    format!("{name} was deleted but IPAM still holds {} for it", a.ip),
                ));
            }
            if endpoints.contains_key(name.as_str()) {
                out.push(v("del-not-gone", format!("{name} was deleted but its endpoint record remains")));
            }
        }
    }
    out
}

/// One kernel route as text: `throw DEST`, `DEST via GATEWAY`, or `DEST dev` (a local endpoint).
fn route_text(dst: &str, gateway: Option<&str>, throw: bool) -> String {
    // iproute2 prints a host route without its length: /32, or /128 for IPv6.
    let dst = match (dst.contains('/'), dst.contains(':')) {
        (true, _) => dst.to_owned(),
        (false, false) => format!("{dst}/32"),
        (false, true) => format!("{dst}/128"),
    };
    match (throw, gateway) {
        (true, _) => format!("throw {dst}"),
        (false, Some(g)) => format!("{dst} via {g}"),
        (false, None) => format!("{dst} dev"),
    }
}

/// What the host's main table should hold with our protocol: the route manager's set for it
/// plus a device route per local endpoint.
pub fn expected_routes(routes: &HostRoutesInfo, local_ips: &[&str]) -> BTreeSet<String> {
    let mut want: BTreeSet<String> = routes
        .routes
        .iter()
        .filter_map(|r| match &r.kind {
            RouteKind::Throw => Some(route_text(&r.dest, None, true)),
            RouteKind::Host { via_ip, .. } => Some(route_text(&r.dest, Some(via_ip), false)),
            RouteKind::Group { .. } => None,
        })
        .collect();
    want.extend(local_ips.iter().map(|ip| route_text(ip, None, false)));
    want
}

/// `ip -j route show proto 77` (either family) as the same texts.
pub fn kernel_routes(json: &str) -> Result<BTreeSet<String>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("unreadable ip -j output: {e}"))?;
    let list = v.as_array().ok_or("ip -j output is not a list")?;
    Ok(list
        .iter()
        .filter_map(|r| {
            let dst = r["dst"].as_str()?;
            Some(route_text(dst, r["gateway"].as_str(), r["type"].as_str() == Some("throw")))
        })
        .collect())
}

/// The host's routes against what the control plane says, both ways.
pub fn routes(host: &str, want: &BTreeSet<String>, have: &BTreeSet<String>) -> Vec<Violation> {
    let missing = want.difference(have).map(|r| format!("missing {r}"));
    let extra = have.difference(want).map(|r| format!("extra {r}"));
    let diffs: Vec<String> = missing.chain(extra).collect();
    if diffs.is_empty() {
        return Vec::new();
    }
    vec![v("route-drift", format!("{host}: {}", diffs.join(", ")))]
}

/// The evaluator's inputs: the policies, the tenants' world, the endpoints (both families'
/// records), and the records that would not compile.
pub type PolicyInputs = (Vec<PolicyRules>, World, Vec<Endpoint>, Vec<Violation>);

/// Every policy the agents compile, from romanad's lists (Romana policies by id, then
/// NetworkPolicies by namespace/name, then tenants' isolation, as the agent orders them), the
/// tenants' world and the endpoints; problems (a policy that does not compile) as violations.
pub fn policy_inputs(s: &Snapshot) -> PolicyInputs {
    let mut bad = Vec::new();
    let endpoints: Vec<Endpoint> = s
        .endpoints
        .iter()
        .filter_map(|e| cluster::endpoint(e).map_err(|p| bad.push(v("bad-record", p))).ok())
        .collect();
    let (world, implicit, problems) = cluster::tenancy(&s.tenants, &endpoints);
    bad.extend(problems.into_iter().map(|p| v("bad-record", p)));
    let mut romana: BTreeMap<&str, Vec<PolicyRules>> = BTreeMap::new();
    for p in &s.policies {
        match cluster::romana_rules(p) {
            Ok(r) => drop(romana.insert(&p.id, r)),
            Err(e) => bad.push(v("bad-record", e)),
        }
    }
    let mut netpols: BTreeMap<String, PolicyRules> = BTreeMap::new();
    for np in &s.netpols {
        match cluster::netpol_rules(np) {
            Ok(r) => drop(netpols.insert(format!("{}/{}", np.metadata.namespace, np.metadata.name), r)),
            Err(e) => bad.push(v("bad-record", e)),
        }
    }
    let policies = romana.into_values().flatten().chain(netpols.into_values()).chain(implicit).collect();
    (policies, world, endpoints, bad)
}

/// The host's `inet romana` table (`nft -j list table`; `None`: no table) against the table the
/// policy compiler makes from romanad's lists: the plan from one to the other must be empty.
pub fn firewall(host: &str, inputs: &PolicyInputs, listing: Option<&str>) -> Vec<Violation> {
    let (policies, world, endpoints, _) = inputs;
    let policies: Vec<Arc<PolicyRules>> = policies.iter().cloned().map(Arc::new).collect();
    let desired = romana_policy::compile(FirewallInput { host, policies: &policies, world, endpoints });
    let observed = match listing.map(romana_policy::nftjson::parse) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(e)) => return vec![v("nft-drift", format!("{host}: {e}"))],
    };
    let plan = romana_policy::plan(observed.as_ref(), &desired);
    if plan.is_empty() {
        return Vec::new();
    }
    let what =
        if observed.is_none() { "no inet romana table".to_owned() } else { format!("{:?}", plan.summary) };
    vec![v("nft-drift", format!("{host}: the kernel's table differs from romanad's policies: {what}"))]
}

/// The address family a probe runs over: the records it compares (a dual-stack pod's IPv6
/// record is `#v6`) and the ping it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The endpoint record of `pod`'s address of this family.
    pub fn record(self, pod: &str) -> String {
        match self {
            Family::V4 => address_name(pod),
            Family::V6 => v6_address_name(&address_name(pod)),
        }
    }

    /// ICMP echo (type 8) or ICMPv6 echo request (type 128), as `type * 256 + code`.
    pub fn ping(self) -> Probe {
        match self {
            Family::V4 => Probe { protocol: Protocol::Icmp, port: 8 * 256 },
            Family::V6 => Probe { protocol: Protocol::Icmpv6, port: 128 * 256 },
        }
    }

    /// The violation kinds of a probe against the evaluator: (blocked, leaked).
    fn kinds(self) -> (&'static str, &'static str) {
        match self {
            Family::V4 => ("probe-blocked", "probe-leaked"),
            Family::V6 => ("probe6-blocked", "probe6-leaked"),
        }
    }
}

/// Whether the policy evaluator lets pod `src` ping pod `dst` over `family`.
pub fn allowed(inputs: &PolicyInputs, family: Family, src: &str, dst: &str) -> Option<bool> {
    let (policies, world, endpoints, _) = inputs;
    let find = |pod: &str| {
        let id = family.record(pod);
        endpoints.iter().find(|e| e.id == id)
    };
    Some(romana_policy::allowed(policies, world, find(src)?, find(dst)?, family.ping()))
}

/// Probe results over `family` (source pod, destination pod, reached) against the evaluator's
/// answers.
pub fn probes(inputs: &PolicyInputs, family: Family, results: &[(String, String, bool)]) -> Vec<Violation> {
    let (blocked, leaked) = family.kinds();
    let ping = match family {
        Family::V4 => "ping",
        Family::V6 => "ping -6",
    };
    results
        .iter()
        .filter_map(|(src, dst, reached)| {
            let want = allowed(inputs, family, src, dst)?;
            (want != *reached).then(|| {
                let (kind, what) = if want {
                    (blocked, "is allowed but got no answer")
                } else {
                    (leaked, "is denied but was answered")
                };
                v(kind, format!("{ping} {src} -> {dst} {what}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
