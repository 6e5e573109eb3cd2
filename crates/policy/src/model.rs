//! The rule model every front end compiles into. A policy selects target endpoints in its tenant
//! and, per direction it isolates, lists rules; a rule allows traffic from (ingress) or to
//! (egress) any of its peers on any of its ports. Absent peers or ports mean all.

use std::collections::{BTreeMap, BTreeSet};

use romana_model::Cidr;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// NotIn and DoesNotExist hold when the key is absent (Kubernetes semantics).
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    pub fn all() -> Selector {
        Selector::default()
    }

    /// `key` equal to `value` (`matchLabels` with one entry).
    pub fn label_is(key: &str, value: &str) -> Selector {
        Selector {
            requirements: vec![Requirement {
                key: key.into(),
                op: Operator::In,
                values: BTreeSet::from([value.to_owned()]),
            }],
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    /// ICMP for IPv4: matches IPv4 packets only.
    Icmp,
    /// ICMPv6 (`ipv6-icmp`, next header 58): matches IPv6 packets only.
    Icmpv6,
}

/// ICMPv6 types no policy can block (RFC 4890's "must not be dropped" for a link, as Calico
/// allows them on workload interfaces): multicast listener query, report and done (130-132),
/// router solicitation and advertisement (133-134), neighbour solicitation and advertisement
/// (135-136), and MLDv2 reports (143). Without neighbour discovery a pod cannot resolve its
/// gateway, so an isolated pod would lose even what its policies allow. Every base chain of ours
/// accepts these before any policy (docs/policy.md); the evaluator allows them too.
pub const ICMPV6_ALWAYS_ALLOWED: [u8; 8] = [130, 131, 132, 133, 134, 135, 136, 143];

impl Protocol {
    /// ICMP or ICMPv6: types and codes, no ports.
    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::Icmp | Protocol::Icmpv6)
    }

    /// The one address family the protocol is carried in (ICMP in IPv4, ICMPv6 in IPv6), or
    /// `None` for the port protocols, which both carry.
    pub fn family(self) -> Option<romana_model::Family> {
        match self {
            Protocol::Icmp => Some(romana_model::Family::V4),
            Protocol::Icmpv6 => Some(romana_model::Family::V6),
            Protocol::Tcp | Protocol::Udp | Protocol::Sctp => None,
        }
    }

    /// The port protocols (TCP, UDP, SCTP), any case; ICMP and ICMPv6 are named by Romana
    /// policies only.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// An inclusive range (a single port is `first == last`).
    Range(u16, u16),
    /// A named port, resolved against the destination endpoint's ports.
    Named(String),
    /// ICMP or ICMPv6 (the rule's protocol says which): a type, and a code or every code of the
    /// type.
    Icmp { icmp_type: u8, code: Option<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRule {
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<Port>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Endpoints whose tenant matches `tenants` (`None`: the policy's own tenant) and whose labels
    /// match `endpoints` (`None`: any endpoint).
    Endpoints { tenants: Option<Selector>, endpoints: Option<Selector> },
    /// Addresses in `cidr` but in none of `except`.
    Cidr { cidr: Cidr, except: Vec<Cidr> },
    /// Anything, inside the cluster or not (Romana's `peer: any`).
    Any,
    /// The host the target endpoint is on (Romana's `peer: host`).
    Host,
    /// Endpoints on the same host as the target (Romana's `peer: local`).
    Local,
}

/// Labels every tenant and endpoint has implicitly: the tenant's name, and the endpoint's segment
/// (set by the CNI path). Romana policies select by them.
pub const TENANT_LABEL: &str = "romana.io/tenant";
pub const SEGMENT_LABEL: &str = "romana.io/segment";

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `None`: all peers.
    pub peers: Option<Vec<Peer>>,
    /// `None`: all ports and protocols.
    pub ports: Option<Vec<PortRule>>,
}

/// Which endpoints a policy's selector picks among.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The policy's tenant's endpoints (Kubernetes: the namespace; Romana: `applied_to` a tenant
    /// and segment).
    #[default]
    Tenant,
    /// Endpoints of any tenant whose address is in the block (Romana's `applied_to: {cidr}`).
    Cidr(Cidr),
    /// Every endpoint, of any tenant (Romana's `applied_to: {dest: local}`: the endpoints local to
    /// the host that enforces the policy, and every host enforces it for its own).
    All,
    /// The host itself (Romana's `applied_to: {dest: host}`), for connections its own endpoints
    /// open to it: ingress rules only (what the host sends, and what reaches it from elsewhere,
    /// stays the host firewall's business).
    Host,
}

/// One policy in the model. `ingress`/`egress` are `Some` for each direction the policy isolates
/// its targets in (an empty list isolates and allows nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRules {
    pub id: String,
    pub tenant: String,
    /// Targets: the endpoints in `scope` whose labels `target` matches.
    pub scope: Scope,
    pub target: Selector,
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}
