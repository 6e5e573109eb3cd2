//! Romana policies (romana-spec §5): the JSON format, and validation that lists every problem.
//!
//! Both Romana 1.x and 2.0 shapes are accepted: `applied_to` and peers by tenant/segment name, id,
//! external id or network id, by CIDR, or `any`/`host`/`local`; rules with protocol, ports, port
//! ranges and ICMP type/code; `ingress` and `egress` lists (2.0 put egress rules under `ingress`
//! with `direction: egress`, which is read the same way).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a policy applies, or a peer it allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyPeer {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub segment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant_external_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub segment_external_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_network_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_network_id: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_ranges: Vec<[u32; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u32>,
    #[serde(default)]
    pub is_stateful: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    #[serde(default)]
    pub peers: Vec<PolicyPeer>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `ingress` (default) or `egress`; with `egress`, rules given under `ingress` are egress rules (2.0).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub direction: String,
    #[serde(default)]
    pub applied_to: Vec<PolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<RuleSet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<RuleSet>,
}

fn id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

fn check_endpoint(at: &str, e: &PolicyPeer, peer: bool, out: &mut Vec<String>) {
    let tenant_set = !e.tenant.is_empty()
        || e.tenant_id.is_some()
        || !e.tenant_external_id.is_empty()
        || e.tenant_network_id.is_some();
    let segment_set = !e.segment.is_empty()
        || e.segment_id.is_some()
        || !e.segment_external_id.is_empty()
        || e.segment_network_id.is_some();
    let kinds = [!e.peer.is_empty(), !e.dest.is_empty(), !e.cidr.is_empty(), tenant_set]
        .iter()
        .filter(|x| **x)
        .count();
    if kinds == 0 {
        out.push(format!(
            "{at}: names nothing; use a tenant (and segment), a cidr, {}",
            if peer { "or peer any/host/local" } else { "or dest local/host" }
        ));
    } else if kinds > 1 {
        out.push(format!("{at}: give one of peer, dest, cidr or tenant, not several"));
    }
    if segment_set && !tenant_set {
        out.push(format!("{at}: a segment needs a tenant"));
    }
    if !e.peer.is_empty() && (!peer || !["any", "host", "local"].contains(&e.peer.as_str())) {
        out.push(format!(
            "{at}.peer: {:?} is not one of any, host, local{}",
            e.peer,
            if peer { "" } else { " (and peer belongs in peers)" }
        ));
    }
    if !e.dest.is_empty() && (peer || !["local", "host"].contains(&e.dest.as_str())) {
        out.push(format!(
            "{at}.dest: {:?} is not one of local, host{}",
            e.dest,
            if peer { " (and dest belongs in applied_to)" } else { "" }
        ));
    }
    if !e.cidr.is_empty()
        && let Err(err) = e.cidr.parse::<romana_model::Cidr>()
    {
        out.push(format!("{at}.cidr: {err}"));
    }
    if !e.tenant.is_empty()
        && let Err(err) = romana_model::TenantName::new(e.tenant.clone())
    {
        out.push(format!("{at}.tenant: {err}"));
    }
    if !e.segment.is_empty()
        && let Err(err) = romana_model::SegmentName::new(e.segment.clone())
    {
        out.push(format!("{at}.segment: {err}"));
    }
}

/// Codes allowed per ICMP type (as Romana 1.x validated them); other types take code 0.
fn max_icmp_code(t: u32) -> u32 {
    match t {
        3 => 15,
        5 => 3,
        11 => 1,
        12 => 1,
        _ => 0,
    }
}

/// Codes allowed per ICMPv6 type (RFC 4443 and its updates: destination unreachable 0-7, time
/// exceeded 0-1, parameter problem 0-10, router renumbering 0, 1 and 255, node information 0-2);
/// other types take code 0.
fn max_icmpv6_code(t: u32) -> u32 {
    match t {
        1 => 7,
        3 => 1,
        4 => 10,
        138 => 255,
        139 | 140 => 2,
        _ => 0,
    }
}

fn check_rule(at: &str, r: &Rule, out: &mut Vec<String>) {
    let proto = r.protocol.to_ascii_lowercase();
    if !["tcp", "udp", "sctp", "icmp", "icmpv6", "any"].contains(&proto.as_str()) {
        out.push(format!("{at}.protocol: {:?} is not one of tcp, udp, sctp, icmp, icmpv6, any", r.protocol));
        return;
    }
    let ported = matches!(proto.as_str(), "tcp" | "udp" | "sctp");
    if !ported && (!r.ports.is_empty() || !r.port_ranges.is_empty()) {
        out.push(format!("{at}: {proto} has no ports"));
    }
    for (i, p) in r.ports.iter().enumerate() {
        if *p == 0 || *p > 65535 {
            out.push(format!("{at}.ports[{i}]: {p} is not a port (1-65535)"));
        }
    }
    for (i, [a, b]) in r.port_ranges.iter().enumerate() {
        if *a == 0 || *b > 65535 || a > b {
            out.push(format!("{at}.port_ranges[{i}]: [{a}, {b}] is not an ordered range within 1-65535"));
        }
    }
    let v6 = proto == "icmpv6";
    if proto != "icmp" && !v6 && (r.icmp_type.is_some() || r.icmp_code.is_some()) {
        out.push(format!("{at}: icmp_type and icmp_code need protocol icmp or icmpv6"));
    }
    if let Some(t) = r.icmp_type {
        let (max, name) = if v6 { (max_icmpv6_code(t), "ICMPv6") } else { (max_icmp_code(t), "ICMP") };
        if t > 255 {
            out.push(format!("{at}.icmp_type: {t} is above 255"));
        } else if let Some(c) = r.icmp_code
            && c > max
        {
            out.push(format!("{at}.icmp_code: {c} is not a code of {name} type {t} (at most {max})"));
        }
    } else if r.icmp_code.is_some() {
        out.push(format!("{at}.icmp_code: needs an icmp_type"));
    }
}

impl Policy {
    /// Fills defaults (id from name and back, lower-case protocols, 2.0 egress shape) and lists every problem.
    pub fn normalize(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if self.id.is_empty() {
            self.id = if self.name.is_empty() { self.external_id.clone() } else { self.name.clone() };
        }
        if self.name.is_empty() {
            self.name = self.id.clone();
        }
        if !id_ok(&self.id) {
            out.push(format!(
                "id: {:?} must be 1 to 253 characters from A-Z a-z 0-9 - _ . : (or give a name)",
                self.id
            ));
        }
        let direction = if self.direction.is_empty() {
            "ingress".to_owned()
        } else {
            self.direction.to_ascii_lowercase()
        };
        if direction != "ingress" && direction != "egress" {
            out.push(format!("direction: {:?} is not ingress or egress", self.direction));
        }
        if direction == "egress" && self.egress.is_empty() {
            self.egress = std::mem::take(&mut self.ingress);
        }
        self.direction = direction;
        if self.applied_to.is_empty() {
            out.push("applied_to: is empty; name at least one tenant, segment, cidr or dest".into());
        }
        for (i, e) in self.applied_to.iter().enumerate() {
            check_endpoint(&format!("applied_to[{i}]"), e, false, &mut out);
        }
        if self.ingress.is_empty() && self.egress.is_empty() {
            out.push("ingress and egress: both empty; a policy must allow something".into());
        }
        for (dir, sets) in [("ingress", &mut self.ingress), ("egress", &mut self.egress)] {
            for (i, set) in sets.iter_mut().enumerate() {
                let at = format!("{dir}[{i}]");
                if set.peers.is_empty() {
                    out.push(format!("{at}.peers: is empty; use [{{\"peer\": \"any\"}}] to allow everyone"));
                }
                if set.rules.is_empty() {
                    out.push(format!(
                        "{at}.rules: is empty; use [{{\"protocol\": \"any\"}}] to allow everything"
                    ));
                }
                for (j, p) in set.peers.iter().enumerate() {
                    check_endpoint(&format!("{at}.peers[{j}]"), p, true, &mut out);
                }
                for (j, r) in set.rules.iter_mut().enumerate() {
                    r.protocol = r.protocol.to_ascii_lowercase();
                    check_rule(&format!("{at}.rules[{j}]"), r, &mut out);
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(json: &str, problems: &[&str]) {
        let mut p: Policy = serde_json::from_str(json).unwrap();
        let got = p.normalize();
        assert_eq!(got.len(), problems.len(), "{got:#?}");
        for (g, w) in got.iter().zip(problems) {
            assert!(g.contains(w), "{g:?} lacks {w:?}");
        }
    }

    #[test]
    fn validation() {
        check(
            r#"{"id":"kube.tenant-a.pol1","direction":"ingress","applied_to":[{"tenant_id":"tenant-a","segment_id":"backend"}],
                "ingress":[{"peers":[{"tenant_id":"tenant-a","segment_id":"frontend"}],"rules":[{"protocol":"TCP","ports":[80]}]}]}"#,
            &[],
        );
        check(
            r#"{"name":"bad","direction":"sideways","applied_to":[{"segment":"s"}],
                "ingress":[{"peers":[{"peer":"everyone"},{"cidr":"10.0.0.1/8"}],"rules":[{"protocol":"icmp","ports":[1]},{"protocol":"tcp","ports":[70000],"port_ranges":[[9,3]]},{"protocol":"icmp","icmp_type":3,"icmp_code":16},{"protocol":"gre"}]}]}"#,
            &[
                "direction: \"sideways\"",
                "applied_to[0]: names nothing",
                "applied_to[0]: a segment needs a tenant",
                "ingress[0].peers[0].peer: \"everyone\"",
                "ingress[0].peers[1].cidr: CIDR \"10.0.0.1/8\" has host bits set",
                "ingress[0].rules[0]: icmp has no ports",
                "ingress[0].rules[1].ports[0]: 70000",
                "ingress[0].rules[1].port_ranges[0]",
                "ingress[0].rules[2].icmp_code: 16",
                "ingress[0].rules[3].protocol: \"gre\"",
            ],
        );
        check(r#"{"applied_to":[],"ingress":[]}"#, &["id:", "applied_to: is empty", "both empty"]);
        // ICMPv6 with its own codes: echo request has code 0 only, parameter problem up to 10.
        check(
            r#"{"name":"v6","applied_to":[{"tenant":"t"}],
                "ingress":[{"peers":[{"cidr":"fd00::/8"}],"rules":[{"protocol":"ICMPv6","icmp_type":128,"icmp_code":0},{"protocol":"icmpv6","icmp_type":4,"icmp_code":10},{"protocol":"icmpv6","icmp_type":128,"icmp_code":1},{"protocol":"icmpv6","ports":[1]},{"protocol":"tcp","icmp_type":1}]}]}"#,
            &[
                "ingress[0].rules[2].icmp_code: 1 is not a code of ICMPv6 type 128",
                "ingress[0].rules[3]: icmpv6 has no ports",
                "ingress[0].rules[4]: icmp_type and icmp_code need protocol icmp or icmpv6",
            ],
        );
    }

    #[test]
    fn egress_in_the_2_0_shape() {
        let mut p: Policy = serde_json::from_str(
            r#"{"id":"e","direction":"egress","applied_to":[{"tenant":"t"}],"ingress":[{"peers":[{"peer":"any"}],"rules":[{"protocol":"udp","ports":[53]}]}]}"#,
        )
        .unwrap();
        assert!(p.normalize().is_empty());
        assert!(p.ingress.is_empty());
        assert_eq!(p.egress[0].rules[0].ports, vec![53]);
    }
}
