//! The two pictures the plan compares: `Desired` (what the Kubernetes API holds, mapped) and
//! `Actual` (what romanad holds), and how watcher events change the desired one, relists
//! included. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use romana_api::netpol::NetworkPolicy;
use romana_api::rest::{PodInfo, TenantRequest};
use romana_api::vip::VipInfo;

use crate::map::{HostDesired, MANAGED_BY, MANAGER, NetpolDesired};
use crate::svc::ServiceDesired;

/// Namespace and name: pods and NetworkPolicies are keyed by both.
pub type Key = (String, String);

/// The kinds the controller follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    Node,
    NetworkPolicy,
    Service,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Namespace, Kind::Pod, Kind::Node, Kind::NetworkPolicy, Kind::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Pod => "pod",
            Kind::Node => "node",
            Kind::NetworkPolicy => "networkpolicy",
            Kind::Service => "service",
        }
    }
}

/// One mapped Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obj {
    Tenant(TenantRequest),
    Pod(PodInfo),
    Host(HostDesired),
    Netpol(Key, NetpolDesired),
    /// A Service annotated `romana.io/vip` (or still carrying the controller's report).
    Service(ServiceDesired),
}

/// What identifies an object of a kind, for deletions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjKey {
    Namespace(String),
    Pod(Key),
    Node(String),
    NetworkPolicy(Key),
    Service(Key),
}

/// What the Kubernetes side wants romanad to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub tenants: BTreeMap<String, TenantRequest>,
    pub pods: BTreeMap<Key, PodInfo>,
    pub hosts: BTreeMap<String, HostDesired>,
    pub netpols: BTreeMap<Key, NetpolDesired>,
    pub services: BTreeMap<Key, ServiceDesired>,
}

impl Desired {
    pub fn upsert(&mut self, o: Obj) {
        match o {
            Obj::Tenant(t) => {
                self.tenants.insert(t.name.clone(), t);
            }
            Obj::Pod(p) => {
                self.pods.insert((p.namespace.clone(), p.name.clone()), p);
            }
            Obj::Host(h) => {
                self.hosts.insert(h.name.clone(), h);
            }
            Obj::Netpol(k, n) => {
                self.netpols.insert(k, n);
            }
            Obj::Service(s) => {
                self.services.insert(s.key.clone(), s);
            }
        }
    }

    pub fn remove(&mut self, k: &ObjKey) {
        match k {
            ObjKey::Namespace(n) => drop(self.tenants.remove(n)),
            ObjKey::Pod(k) => drop(self.pods.remove(k)),
            ObjKey::Node(n) => drop(self.hosts.remove(n)),
            ObjKey::NetworkPolicy(k) => drop(self.netpols.remove(k)),
            ObjKey::Service(k) => drop(self.services.remove(k)),
        }
    }

    /// After a relist of `kind`, its objects are exactly those listed (`from`): what vanished
    /// while the watch was down is gone here too.
    pub fn replace_kind(&mut self, kind: Kind, from: &mut Desired) {
        match kind {
            Kind::Namespace => self.tenants = std::mem::take(&mut from.tenants),
            Kind::Pod => self.pods = std::mem::take(&mut from.pods),
            Kind::Node => self.hosts = std::mem::take(&mut from.hosts),
            Kind::NetworkPolicy => self.netpols = std::mem::take(&mut from.netpols),
            Kind::Service => self.services = std::mem::take(&mut from.services),
        }
    }

    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Namespace => self.tenants.len(),
            Kind::Pod => self.pods.len(),
            Kind::Node => self.hosts.len(),
            Kind::NetworkPolicy => self.netpols.len(),
            Kind::Service => self.services.len(),
        }
    }
}

/// A tenant as romanad holds it: the writable fields and its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantActual {
    pub req: TenantRequest,
    pub segments: BTreeSet<String>,
}

impl TenantActual {
    pub fn new(name: &str) -> TenantActual {
        let req = TenantRequest {
            name: name.to_owned(),
            external_id: String::new(),
            labels: BTreeMap::new(),
            isolation: "none".into(),
        };
        TenantActual { req, segments: BTreeSet::new() }
    }

    /// Made (or adopted) by this controller: deletable when its namespace is gone.
    pub fn owned(&self) -> bool {
        self.req.labels.get(MANAGED_BY).is_some_and(|v| v == MANAGER)
    }
}

/// An endpoint as the reclaim needs it: its tenant and the pod it was registered for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointActual {
    pub tenant: String,
    /// `namespace/name` from CNI ADD of a kubelet pod; `None` for other endpoints.
    pub pod: Option<Key>,
}

/// What romanad holds, as last read or written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    pub tenants: BTreeMap<String, TenantActual>,
    pub pods: BTreeMap<Key, PodInfo>,
    pub hosts: BTreeMap<String, HostDesired>,
    pub netpols: BTreeMap<Key, NetworkPolicy>,
    /// By endpoint name (which is also its address name).
    pub endpoints: BTreeMap<String, EndpointActual>,
    /// Every VIP, by address (the controller's carry the origin `k8s:<namespace>/<service>`).
    pub vips: BTreeMap<String, VipInfo>,
}

/// Hosts owned by this controller carry the ownership tag.
pub fn host_owned(h: &HostDesired) -> bool {
    h.tags.get(MANAGED_BY).is_some_and(|v| v == MANAGER)
}

/// `"ns/name"` as a key.
pub fn parse_pod_ref(s: &str) -> Option<Key> {
    let (ns, name) = s.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| (ns.to_owned(), name.to_owned()))
}
