//! Kubernetes NetworkPolicy -> the rule model, with the API's defaulting (policyTypes) and every
//! validation problem listed, each naming its field.

use std::collections::BTreeSet;

use romana_api::Problems;
use romana_api::netpol::{IntOrString, LabelSelector, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use romana_model::Cidr;

use crate::model::{
    Operator, Peer, PolicyRules, Port, PortRule, Protocol, Requirement, Rule, Scope, Selector,
};

fn selector(at: &str, s: &LabelSelector, out: &mut Vec<String>) -> Selector {
    let mut requirements: Vec<Requirement> = s
        .match_labels
        .iter()
        .map(|(k, v)| Requirement { key: k.clone(), op: Operator::In, values: BTreeSet::from([v.clone()]) })
        .collect();
    for (i, e) in s.match_expressions.iter().enumerate() {
        let at = format!("{at}.matchExpressions[{i}]");
        let op = match e.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                out.push(format!("{at}.operator: {other:?} is not In, NotIn, Exists or DoesNotExist"));
                continue;
            }
        };
        if e.key.is_empty() {
            out.push(format!("{at}.key: must not be empty"));
        }
        match op {
            Operator::In | Operator::NotIn if e.values.is_empty() => {
                out.push(format!("{at}.values: {} needs at least one value", e.operator))
            }
            Operator::Exists | Operator::DoesNotExist if !e.values.is_empty() => {
                out.push(format!("{at}.values: {} takes no values", e.operator))
            }
            _ => {}
        }
        requirements.push(Requirement { key: e.key.clone(), op, values: e.values.iter().cloned().collect() });
    }
    Selector { requirements }
}

fn peer(at: &str, p: &NetworkPolicyPeer, out: &mut Vec<String>) -> Option<Peer> {
    match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
        (Some(b), None, None) => {
            let cidr = match b.cidr.parse::<Cidr>() {
                Ok(c) => c,
                Err(e) => {
                    out.push(format!("{at}.ipBlock.cidr: {e}"));
                    return None;
                }
            };
            let mut except = Vec::new();
            for (i, x) in b.except.iter().enumerate() {
                match x.parse::<Cidr>() {
                    Ok(c) if cidr.contains(&c) && c != cidr => except.push(c),
                    Ok(c) => out.push(format!("{at}.ipBlock.except[{i}]: {c} is not strictly inside {cidr}")),
                    Err(e) => out.push(format!("{at}.ipBlock.except[{i}]: {e}")),
                }
            }
            Some(Peer::Cidr { cidr, except })
        }
        (Some(_), _, _) => {
            out.push(format!("{at}: ipBlock cannot be combined with podSelector or namespaceSelector"));
            None
        }
        (None, None, None) => {
            out.push(format!("{at}: a peer needs podSelector, namespaceSelector or ipBlock"));
            None
        }
        (None, pods, namespaces) => Some(Peer::Endpoints {
            tenants: namespaces.as_ref().map(|s| selector(&format!("{at}.namespaceSelector"), s, out)),
            endpoints: pods.as_ref().map(|s| selector(&format!("{at}.podSelector"), s, out)),
        }),
    }
}

/// Kubernetes' name rules (what the API server enforces, so a policy `kubectl` accepts is one we
/// accept): 1 to `max` of a-z 0-9 '-' (and '.' in a subdomain, between labels), each label
/// starting and ending with a letter or digit. The name is echoed only when short enough to read.
fn dns1123(what: &str, name: &str, max: usize, dots: bool) -> Result<(), String> {
    let len = name.chars().count();
    if len > max {
        return Err(format!("{len} characters, at most {max}"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = if dots { name.split('.').all(label_ok) } else { label_ok(name) };
    if ok {
        return Ok(());
    }
    let allowed = if dots { "a-z 0-9 '-' '.'" } else { "a-z 0-9 '-'" };
    Err(format!("{name:?} is not {what} (lowercase {allowed}, starting and ending with a letter or digit)"))
}

/// IANA service names: 1 to 15 of a-z 0-9 and '-', at least one letter, no leading, trailing or
/// double '-'.
fn port_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && n.chars().any(|c| c.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}

fn port(at: &str, p: &NetworkPolicyPort, out: &mut Vec<String>) -> Option<PortRule> {
    let protocol = match p.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(s) => match Protocol::parse(s) {
            Some(pr) => pr,
            None => {
                out.push(format!("{at}.protocol: {s:?} is not TCP, UDP or SCTP"));
                return None;
            }
        },
    };
    let port = match (&p.port, p.end_port) {
        (None, Some(_)) => {
            out.push(format!("{at}.endPort: needs a numeric port"));
            return None;
        }
        (None, None) => None,
        (Some(IntOrString::Int(n)), end) => {
            let Ok(first) =
                u16::try_from(*n).map_err(|_| ()).and_then(|v| if v == 0 { Err(()) } else { Ok(v) })
            else {
                out.push(format!("{at}.port: {n} is not between 1 and 65535"));
                return None;
            };
            let last = match end {
                None => first,
                Some(e) => match u16::try_from(e) {
                    Ok(l) if l >= first => l,
                    _ => {
                        out.push(format!("{at}.endPort: {e} is not between port ({first}) and 65535"));
                        return None;
                    }
                },
            };
            Some(Port::Range(first, last))
        }
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                out.push(format!("{at}.endPort: not allowed with a named port"));
                return None;
            }
            if !port_name_ok(name) {
                out.push(format!("{at}.port: {name:?} is not a valid port name (1 to 15 of a-z 0-9 -)"));
                return None;
            }
            Some(Port::Named(name.clone()))
        }
    };
    Some(PortRule { protocol, port })
}

fn rule(
    at: &str,
    peers: &Option<Vec<NetworkPolicyPeer>>,
    ports: &Option<Vec<NetworkPolicyPort>>,
    key: &str,
    out: &mut Vec<String>,
) -> Rule {
    // An absent or empty list means all (the API treats both the same).
    let peers = peers.as_ref().filter(|l| !l.is_empty()).map(|l| {
        l.iter().enumerate().filter_map(|(i, p)| peer(&format!("{at}.{key}[{i}]"), p, out)).collect()
    });
    let ports = ports.as_ref().filter(|l| !l.is_empty()).map(|l| {
        l.iter().enumerate().filter_map(|(i, p)| port(&format!("{at}.ports[{i}]"), p, out)).collect()
    });
    Rule { peers, ports }
}

/// Compiles one NetworkPolicy (tenant = its namespace). Every problem is listed.
pub fn from_k8s(p: &NetworkPolicy) -> Result<PolicyRules, Problems> {
    let mut out = Vec::new();
    if !p.api_version.is_empty() && p.api_version != "networking.k8s.io/v1" {
        out.push(format!("apiVersion: {:?} is not networking.k8s.io/v1", p.api_version));
    }
    if !p.kind.is_empty() && p.kind != "NetworkPolicy" {
        out.push(format!("kind: {:?} is not NetworkPolicy", p.kind));
    }
    if p.metadata.name.is_empty() {
        out.push("metadata.name: required".into());
    } else if let Err(why) = dns1123("a DNS-1123 subdomain", &p.metadata.name, 253, true) {
        out.push(format!("metadata.name: {why}"));
    }
    if p.metadata.namespace.is_empty() {
        out.push("metadata.namespace: required (it is the policy's tenant)".into());
    } else if let Err(why) = dns1123("a DNS-1123 label", &p.metadata.namespace, 63, false) {
        out.push(format!("metadata.namespace: {why}"));
    }
    let spec = &p.spec;
    let target = selector("spec.podSelector", &spec.pod_selector, &mut out);
    // Defaulting: Ingress always, Egress when there are egress rules.
    let types: Vec<String> = match &spec.policy_types {
        Some(t) => t.clone(),
        None => {
            let mut t = vec!["Ingress".to_owned()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".into());
            }
            t
        }
    };
    for (i, t) in types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            out.push(format!("spec.policyTypes[{i}]: {t:?} is not Ingress or Egress"));
        }
    }
    let ingress = types.iter().any(|t| t == "Ingress").then(|| {
        spec.ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| rule(&format!("spec.ingress[{i}]"), &r.from, &r.ports, "from", &mut out))
            .collect()
    });
    let egress = types.iter().any(|t| t == "Egress").then(|| {
        spec.egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| rule(&format!("spec.egress[{i}]"), &r.to, &r.ports, "to", &mut out))
            .collect()
    });
    if !out.is_empty() {
        return Err(Problems(out));
    }
    Ok(PolicyRules {
        id: format!("k8s:{}/{}", p.metadata.namespace, p.metadata.name),
        tenant: p.metadata.namespace.clone(),
        scope: Scope::Tenant,
        target,
        ingress,
        egress,
    })
}
