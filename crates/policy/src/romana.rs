//! Romana policies (romana-spec §5, 1.x and 2.0 shapes) -> the rule model. Targets are tenants or
//! their segments, the endpoints in a CIDR (any tenant), every endpoint (`dest: local`), or the
//! host itself for what its endpoints open to it (`dest: host`, ingress only); peers are `any`, `host`, `local`, CIDRs, or tenants/segments by name; rules
//! are protocols with ports, port ranges, or ICMP type and code. Validation is `Policy::normalize`'s
//! (every problem listed), plus what this compiler does not take yet.

use romana_api::Problems;
use romana_api::policy::{Policy, PolicyPeer, Rule as RomanaRule};
use romana_model::Cidr;

use crate::model::{
    Peer, PolicyRules, Port, PortRule, Protocol, Rule, SEGMENT_LABEL, Scope, Selector, TENANT_LABEL,
};

/// The tenant and segment names of an endpoint: `tenant`/`segment`, or 2.0's string ids.
fn names(e: &PolicyPeer) -> Option<(String, String)> {
    let tenant = if !e.tenant.is_empty() {
        e.tenant.clone()
    } else {
        e.tenant_id.as_ref().and_then(|v| v.as_str()).map(str::to_owned)?
    };
    let segment = if !e.segment.is_empty() {
        e.segment.clone()
    } else {
        e.segment_id.as_ref().and_then(|v| v.as_str()).map(str::to_owned).unwrap_or_default()
    };
    Some((tenant, segment))
}

fn peer(at: &str, e: &PolicyPeer, out: &mut Vec<String>) -> Option<Peer> {
    match e.peer.as_str() {
        "any" => return Some(Peer::Any),
        "host" => return Some(Peer::Host),
        "local" => return Some(Peer::Local),
        _ => {}
    }
    if !e.cidr.is_empty() {
        // normalize() already reported a bad CIDR.
        return e.cidr.parse::<Cidr>().ok().map(|cidr| Peer::Cidr { cidr, except: vec![] });
    }
    match names(e) {
        Some((tenant, segment)) => Some(Peer::Endpoints {
            tenants: Some(Selector::label_is(TENANT_LABEL, &tenant)),
            endpoints: (!segment.is_empty()).then(|| Selector::label_is(SEGMENT_LABEL, &segment)),
        }),
        None => {
            out.push(format!(
                "{at}: tenants by numeric id, external id or network id must be resolved to names first"
            ));
            None
        }
    }
}

/// The ports of a rule set: `None` when any rule allows every protocol.
fn ports(rules: &[RomanaRule]) -> Option<Vec<PortRule>> {
    let mut out = Vec::new();
    for r in rules {
        let protocol = match r.protocol.as_str() {
            "any" => return None,
            proto @ ("icmp" | "icmpv6") => {
                let port = r
                    .icmp_type
                    .map(|t| Port::Icmp { icmp_type: t as u8, code: r.icmp_code.map(|c| c as u8) });
                let protocol = if proto == "icmp" { Protocol::Icmp } else { Protocol::Icmpv6 };
                out.push(PortRule { protocol, port });
                continue;
            }
            // normalize() refused anything else; skipping fails closed.
            p => match Protocol::parse(p) {
                Some(pr) => pr,
                None => continue,
            },
        };
        if r.ports.is_empty() && r.port_ranges.is_empty() {
            out.push(PortRule { protocol, port: None });
        }
        out.extend(
            r.ports.iter().map(|p| PortRule { protocol, port: Some(Port::Range(*p as u16, *p as u16)) }),
        );
        out.extend(
            r.port_ranges
                .iter()
                .map(|[a, b]| PortRule { protocol, port: Some(Port::Range(*a as u16, *b as u16)) }),
        );
    }
    Some(out)
}

/// Compiles one Romana policy: one `PolicyRules` per target (`applied_to` entry).
pub fn from_romana(p: &Policy) -> Result<Vec<PolicyRules>, Problems> {
    let mut p = p.clone();
    let mut out = p.normalize();
    let sets = |dir: &str, list: &[romana_api::policy::RuleSet], out: &mut Vec<String>| -> Vec<Rule> {
        list.iter()
            .enumerate()
            .map(|(i, set)| Rule {
                peers: Some(
                    set.peers
                        .iter()
                        .enumerate()
                        .filter_map(|(j, e)| peer(&format!("{dir}[{i}].peers[{j}]"), e, out))
                        .collect(),
                ),
                ports: ports(&set.rules),
            })
            .collect()
    };
    let ingress = sets("ingress", &p.ingress, &mut out);
    let egress = sets("egress", &p.egress, &mut out);
    let mut policies = Vec::new();
    for (i, target) in p.applied_to.iter().enumerate() {
        let (tenant, scope, selector) = if target.dest == "host" {
            if !p.egress.is_empty() {
                out.push(format!(
                    "applied_to[{i}]: dest host takes ingress rules only (what the host itself sends is not policed)"
                ));
                continue;
            }
            (String::new(), Scope::Host, Selector::all())
        } else if target.dest == "local" {
            (String::new(), Scope::All, Selector::all())
        } else if !target.cidr.is_empty() {
            // normalize() already reported a bad CIDR.
            let Ok(cidr) = target.cidr.parse::<Cidr>() else { continue };
            (String::new(), Scope::Cidr(cidr), Selector::all())
        } else {
            let Some((tenant, segment)) = names(target) else {
                out.push(format!("applied_to[{i}]: tenants by numeric id, external id or network id must be resolved to names first"));
                continue;
            };
            let selector = if segment.is_empty() {
                Selector::all()
            } else {
                Selector::label_is(SEGMENT_LABEL, &segment)
            };
            (tenant, Scope::Tenant, selector)
        };
        policies.push(PolicyRules {
            id: if p.applied_to.len() == 1 {
                format!("romana:{}", p.id)
            } else {
                format!("romana:{}#{i}", p.id)
            },
            tenant,
            scope,
            target: selector,
            ingress: (!p.ingress.is_empty()).then(|| ingress.clone()),
            egress: (!p.egress.is_empty()).then(|| egress.clone()),
        });
    }
    if out.is_empty() { Ok(policies) } else { Err(Problems(out)) }
}
