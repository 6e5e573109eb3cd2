//! Default tenant isolation (Romana's layer-3 tenancy model) as implicit policies, so that the
//! evaluator and the firewall compiler need no second mechanism.
//!
//! Semantics: isolation closes *ingress* to a tenant's endpoints.
//! - `None` (the default; Kubernetes behaviour): nothing is closed.
//! - `Tenant`: an endpoint accepts connections only from endpoints of its own tenant and from its
//!   own host (kubelet's probes, the node's services).
//! - `Segment`: only from endpoints of its own tenant *and* segment (endpoints without a segment
//!   form one segment of their own), and from its own host.
//!
//! Policies open what isolation closes: an implicit policy is one more policy selecting the
//! tenant's endpoints for ingress, and Kubernetes semantics make policies additive. Egress is
//! never closed by isolation (the destination's own isolation decides).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Operator, Peer, PolicyRules, Requirement, Rule, SEGMENT_LABEL, Scope, Selector};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isolation {
    #[default]
    None,
    Tenant,
    Segment,
}

impl Isolation {
    pub fn parse(s: &str) -> Option<Isolation> {
        match s {
            "none" | "" => Some(Isolation::None),
            "tenant" => Some(Isolation::Tenant),
            "segment" => Some(Isolation::Segment),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Tenant => "tenant",
            Isolation::Segment => "segment",
        }
    }
}

/// The prefix of implicit policies' ids; user policies cannot use it (their ids are validated).
pub const IMPLICIT_PREFIX: &str = "romana.isolation.";

fn segment_selector(segment: Option<&str>) -> Selector {
    match segment {
        Some(s) => Selector::label_is(SEGMENT_LABEL, s),
        None => Selector {
            requirements: vec![Requirement {
                key: SEGMENT_LABEL.into(),
                op: Operator::DoesNotExist,
                values: BTreeSet::new(),
            }],
        },
    }
}

/// The implicit policies for `tenants` (name -> mode). `segments` lists, per tenant, the segments
/// its endpoints may carry (the tenant's segments and any seen on endpoints); the endpoints
/// without one are covered too.
pub fn implicit_policies(
    tenants: &BTreeMap<String, Isolation>,
    segments: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<PolicyRules> {
    let mut out = Vec::new();
    for (tenant, mode) in tenants {
        let open_to = |peers: Selector| {
            Some(vec![Rule {
                peers: Some(vec![Peer::Endpoints { tenants: None, endpoints: Some(peers) }, Peer::Host]),
                ports: None,
            }])
        };
        match mode {
            Isolation::None => {}
            Isolation::Tenant => out.push(PolicyRules {
                id: format!("{IMPLICIT_PREFIX}{tenant}"),
                tenant: tenant.clone(),
                scope: Scope::Tenant,
                target: Selector::all(),
                ingress: open_to(Selector::all()),
                egress: None,
            }),
            Isolation::Segment => {
                let named = segments.get(tenant).into_iter().flatten().map(|s| Some(s.as_str()));
                for seg in std::iter::once(None).chain(named) {
                    out.push(PolicyRules {
                        id: format!("{IMPLICIT_PREFIX}{tenant}.{}", seg.unwrap_or("-")),
                        tenant: tenant.clone(),
                        scope: Scope::Tenant,
                        target: segment_selector(seg),
                        ingress: open_to(segment_selector(seg)),
                        egress: None,
                    });
                }
            }
        }
    }
    out
}
