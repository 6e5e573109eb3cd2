//! The VIP part of the reconcile plan, pure: annotated Services (desired) against romanad's VIPs
//! (actual) give the VIP writes, and the outcome each Service should carry (`romana.io/vip-status`
//! and, for type LoadBalancer, `status.loadBalancer.ingress`). Only VIPs whose origin is
//! `k8s:<namespace>/<service>` are this controller's: VIPs made by hand are never changed.

use std::collections::{BTreeMap, BTreeSet};

use romana_api::rest::PodInfo;
use romana_api::vip::{VipInfo, VipPort, VipRequest};

use crate::state::{Actual, Desired, Key, parse_pod_ref};
use crate::svc::{ServiceDesired, Target, VipWant};
use crate::write::Write;

/// The origin that marks a Service's VIP as this controller's.
pub fn origin(k: &Key) -> String {
    format!("k8s:{}/{}", k.0, k.1)
}

/// The Service a VIP was made for, when this controller made it.
pub fn owner(v: &VipInfo) -> Option<Key> {
    v.origin.strip_prefix("k8s:").and_then(parse_pod_ref)
}

/// A named target port through the pods the selector picks in the Service's namespace: the one
/// number they agree on, or why there is none.
fn resolve(
    ns: &str,
    selector: &BTreeMap<String, String>,
    protocol: &str,
    name: &str,
    pods: &BTreeMap<Key, PodInfo>,
) -> Result<u16, String> {
    let numbers: BTreeSet<u16> = pods
        .range((ns.to_owned(), String::new())..)
        .take_while(|(k, _)| k.0 == ns)
        .filter(|(_, p)| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .flat_map(|(_, p)| {
            p.ports.iter().filter(|x| x.name == name && x.protocol == protocol).map(|x| x.port)
        })
        .collect();
    match numbers.len() {
        1 => Ok(numbers.into_iter().next().unwrap_or_default()),
        0 => {
            Err(format!("targetPort {name:?}: no pod the selector picks has a {protocol} port of that name"))
        }
        _ => {
            let list: Vec<String> = numbers.iter().map(ToString::to_string).collect();
            Err(format!(
                "targetPort {name:?}: the selected pods disagree on its number ({})",
                list.join(", ")
            ))
        }
    }
}

/// The request a Service's VIP is, or why it cannot be one.
pub fn request(s: &ServiceDesired, w: &VipWant, pods: &BTreeMap<Key, PodInfo>) -> Result<VipRequest, String> {
    let mut ports = Vec::new();
    for p in &w.ports {
        let target_port = match &p.target {
            Target::Number(n) => *n,
            Target::Name(name) => resolve(&s.key.0, &w.selector, &p.protocol, name, pods)?,
        };
        ports.push(VipPort { protocol: p.protocol.clone(), port: p.port, target_port });
    }
    Ok(VipRequest {
        address: w.address.map(|a| a.to_string()).unwrap_or_default(),
        service: s.key.1.clone(),
        tenant: s.key.0.clone(),
        selector: w.selector.clone(),
        ports,
        host: w.host.clone(),
        origin: origin(&s.key),
    })
}

/// Every annotated Service's request (or reason), outside namespaces left alone (`skip`).
pub fn requests(d: &Desired, skip: &BTreeSet<&str>) -> BTreeMap<Key, Result<VipRequest, String>> {
    d.services
        .iter()
        .filter(|(k, _)| !skip.contains(k.0.as_str()))
        .filter_map(|(k, s)| {
            let want = s.want.as_ref()?;
            Some((k.clone(), want.clone().and_then(|w| request(s, &w, &d.pods))))
        })
        .collect()
}

/// Whether the VIP `v` is what `r` asks for, address aside.
fn same(v: &VipInfo, r: &VipRequest) -> bool {
    v.service == r.service
        && v.tenant == r.tenant
        && v.selector == r.selector
        && v.ports == r.ports
        && v.host == r.host
        && v.origin == r.origin
}

/// The VIP writes: deletions first (an address may move between Services), then creations.
pub fn writes(reqs: &BTreeMap<Key, Result<VipRequest, String>>, a: &Actual) -> Vec<Write> {
    let mut owned: BTreeMap<Key, Vec<&VipInfo>> = BTreeMap::new();
    for v in a.vips.values() {
        if let Some(k) = owner(v) {
            owned.entry(k).or_default().push(v);
        }
    }
    let (mut deletes, mut creates) = (Vec::new(), Vec::new());
    for (k, vips) in &owned {
        let Some(Ok(r)) = reqs.get(k) else {
            deletes.extend(vips.iter().map(|v| Write::DeleteVip(v.address.clone(), k.clone())));
            continue;
        };
        // `auto` keeps whichever address the Service holds; a given address only itself.
        let keep = vips.iter().copied().find(|v| r.address.is_empty() || v.address == r.address);
        for v in vips.iter().filter(|v| Some(v.address.as_str()) != keep.map(|x| x.address.as_str())) {
            deletes.push(Write::DeleteVip(v.address.clone(), k.clone()));
        }
        match keep {
            Some(v) if same(v, r) => {}
            Some(v) => {
                creates.push(Write::ReplaceVip(VipRequest { address: v.address.clone(), ..r.clone() }))
            }
            None => creates.push(Write::CreateVip(r.clone())),
        }
    }
    for (k, r) in reqs {
        if let Ok(r) = r
            && !owned.contains_key(k)
        {
            creates.push(Write::CreateVip(r.clone()));
        }
    }
    deletes.extend(creates);
    deletes
}

/// What the controller writes back on a Service: `status` `None` removes the annotation;
/// `ingress` `None` leaves `status.loadBalancer` as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub key: Key,
    pub uid: String,
    pub status: Option<String>,
    pub ingress: Option<Vec<String>>,
}

/// The reports that differ from what each Service carries. `refusals`: romanad's last refusal
/// of each Service's VIP (until it changes or succeeds). A Service whose VIP is still to be made
/// (or whose write failed for another reason) keeps its report.
pub fn reports(
    d: &Desired,
    reqs: &BTreeMap<Key, Result<VipRequest, String>>,
    a: &Actual,
    refusals: &BTreeMap<Key, String>,
) -> Vec<Report> {
    let mut out = Vec::new();
    for (k, s) in &d.services {
        let held = a.vips.values().find(|v| owner(v).as_ref() == Some(k));
        let (status, ingress) = match reqs.get(k) {
            // Not annotated (any more): clear our report, and the ingress we set.
            None => {
                let ours =
                    s.reported.status.as_deref().and_then(|t| t.strip_prefix("ok ")).map(str::to_owned);
                let ingress =
                    (s.load_balancer && ours.is_some_and(|a| s.reported.ingress == [a])).then(Vec::new);
                (None, ingress)
            }
            Some(Err(why)) => (Some(format!("error: {why}")), s.load_balancer.then(Vec::new)),
            Some(Ok(r)) => match (held, refusals.get(k)) {
                (Some(v), _) if r.address.is_empty() || r.address == v.address => {
                    (Some(format!("ok {}", v.address)), s.load_balancer.then(|| vec![v.address.clone()]))
                }
                (_, Some(msg)) => {
                    (Some(format!("error: romanad refused it: {msg}")), s.load_balancer.then(Vec::new))
                }
                _ => continue,
            },
        };
        let ingress = ingress.filter(|i| *i != s.reported.ingress);
        if status != s.reported.status || ingress.is_some() {
            out.push(Report { key: k.clone(), uid: s.uid.clone(), status, ingress });
        }
    }
    out
}

#[cfg(test)]
#[path = "vip_plan_tests.rs"]
mod tests;
