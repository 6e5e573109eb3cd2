//! `romana chaos`, pure: the invariants after the churn, each a function from what the scenario
//! was told (the model) and what it read (romanad's lists, each host's kernel routes and nftables
//! listing, the probes) to the violations found. The expected kernel state is computed here from
//! romanad's data, not taken from the agent: an agent that believes something wrong is caught.

use std::collections::{BTreeMap, BTreeSet};

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

/// IPAM and the endpoint registry against the model: no address held twice, none leaked (every
/// sandbox allocation belongs to a live pod), every acknowledged ADD present with its address
/// and registered on its host, every acknowledged DEL gone from both.
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
    let live: BTreeMap<String, &crate::chaos_plan::Pod> =
        model.live().map(|(n, p)| (address_name(n), p)).collect();
    let prefix = format!("cni:{NETWORK}:");
    for a in s.addresses.iter().filter(|a| a.name.starts_with(&prefix) && !live.contains_key(&a.name)) {
        out.push(v("leak", format!("{} holds {} on {} but no live pod has it", a.name, a.ip, a.host)));
    }
    for e in s.endpoints.iter().filter(|e| e.name.starts_with(&prefix) && !live.contains_key(&e.name)) {
        out.push(v("leak", format!("endpoint {} ({} on {}) belongs to no live pod", e.name, e.ip, e.host)));
    }
    for (name, p) in &live {
        let host = hosts.get(p.host).map_or("?", String::as_str);
        let want = p.ip.as_deref().unwrap_or("?");
        match addresses.get(name.as_str()) {
            None => out
                .push(v("lost-add", format!("{name} was added ({want} on {host}) but IPAM has no address"))),
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
        if let Some(a) = addresses.get(name.as_str()) {
            out.push(v("del-not-gone", format!("{name} was deleted but IPAM still holds {} for it", a.ip)));
        }
        if endpoints.contains_key(name.as_str()) {
            out.push(v("del-not-gone", format!("{name} was deleted but its endpoint record remains")));
        }
    }
    out
}

/// One kernel route as text: `throw DEST`, `DEST via GATEWAY`, or `DEST dev` (a local endpoint).
fn route_text(dst: &str, gateway: Option<&str>, throw: bool) -> String {
    let dst = if dst.contains('/') { dst.to_owned() } else { format!("{dst}/32") };
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

/// `ip -j route show proto 77` as the same texts.
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

/// Every policy the agents compile, from romanad's lists (Romana policies by id, then
/// NetworkPolicies by namespace/name, then tenants' isolation, as the agent orders them), the
/// tenants' world and the endpoints; problems (a policy that does not compile) as violations.
pub fn policy_inputs(s: &Snapshot) -> (Vec<PolicyRules>, World, Vec<Endpoint>, Vec<Violation>) {
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
pub fn firewall(
    host: &str,
    inputs: &(Vec<PolicyRules>, World, Vec<Endpoint>, Vec<Violation>),
    listing: Option<&str>,
) -> Vec<Violation> {
    let (policies, world, endpoints, _) = inputs;
    let desired = romana_policy::compile(FirewallInput { host, policies, world, endpoints });
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

/// ICMP echo, the probe the scenario sends (`type * 256 + code`).
pub const PING: Probe = Probe { protocol: Protocol::Icmp, port: 8 * 256 };

/// Whether the policy evaluator lets endpoint `src` ping `dst`.
pub fn allowed(
    inputs: &(Vec<PolicyRules>, World, Vec<Endpoint>, Vec<Violation>),
    src: &str,
    dst: &str,
) -> Option<bool> {
    let (policies, world, endpoints, _) = inputs;
    let find = |n: &str| endpoints.iter().find(|e| e.id == n);
    Some(romana_policy::allowed(policies, world, find(src)?, find(dst)?, PING))
}

/// Probe results (source pod, destination pod, reached) against the evaluator's answers.
pub fn probes(
    inputs: &(Vec<PolicyRules>, World, Vec<Endpoint>, Vec<Violation>),
    results: &[(String, String, bool)],
) -> Vec<Violation> {
    results
        .iter()
        .filter_map(|(src, dst, reached)| {
            let want = allowed(inputs, &address_name(src), &address_name(dst))?;
            (want != *reached).then(|| {
                let (kind, what) = if want {
                    ("probe-blocked", "is allowed but got no answer")
                } else {
                    ("probe-leaked", "is denied but was answered")
                };
                v(kind, format!("ping {src} -> {dst} {what}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
