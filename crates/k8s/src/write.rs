//! One change to romanad (`Write`), what it is for in logs and metrics, and its modelled effect
//! on the actual picture (`Write::apply_to`), so that the loop keeps `Actual` current without
//! reading romanad again and tests can check that a plan converges. Pure.

use std::collections::BTreeMap;

use romana_api::rest::{PodInfo, TenantRequest};
use romana_api::vip::{VipInfo, VipRequest};

use crate::map::{HostDesired, NetpolDesired};
use crate::state::{Actual, Key, TenantActual};

/// One change to romanad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create (`create`) or update a tenant.
    PutTenant {
        create: bool,
        req: TenantRequest,
    },
    AddSegment {
        tenant: String,
        segment: String,
    },
    AddHost(HostDesired),
    SetTags {
        host: String,
        tags: BTreeMap<String, String>,
    },
    ApplyNetpol(Key, NetpolDesired),
    PutPod(PodInfo),
    DeletePod(Key),
    DeleteNetpol(Key),
    /// The endpoint (and its address, of the same name) of a pod deleted from the API whose CNI
    /// DEL never came.
    Reclaim(String),
    DeleteTenant(String),
    RemoveHost(String),
    /// A Service's VIP (`origin` marks it ours; an empty address draws one from the ranges).
    CreateVip(VipRequest),
    /// A Service's VIP whose selector, ports or host changed: deleted and made again at the same
    /// address (romanad has no update of a VIP).
    ReplaceVip(VipRequest),
    /// A VIP of ours (address) that its Service (key) no longer wants.
    DeleteVip(String, Key),
}

impl Write {
    /// The kind label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Write::PutTenant { .. } | Write::DeleteTenant(_) => "tenant",
            Write::AddSegment { .. } => "segment",
            Write::AddHost(_) | Write::SetTags { .. } | Write::RemoveHost(_) => "host",
            Write::ApplyNetpol(..) | Write::DeleteNetpol(_) => "networkpolicy",
            Write::PutPod(_) | Write::DeletePod(_) => "pod",
            Write::Reclaim(_) => "endpoint",
            Write::CreateVip(_) | Write::ReplaceVip(_) | Write::DeleteVip(..) => "vip",
        }
    }

    /// What romanad holds after this write succeeded.
    pub fn apply_to(&self, a: &mut Actual) {
        match self {
            Write::PutTenant { req, .. } => {
                a.tenants.entry(req.name.clone()).or_insert_with(|| TenantActual::new(&req.name)).req =
                    req.clone();
            }
            Write::AddSegment { tenant, segment } => {
                a.tenants
                    .entry(tenant.clone())
                    .or_insert_with(|| TenantActual::new(tenant))
                    .segments
                    .insert(segment.clone());
            }
            Write::AddHost(h) => {
                a.hosts.insert(h.name.clone(), h.clone());
            }
            Write::SetTags { host, tags } => {
                if let Some(h) = a.hosts.get_mut(host) {
                    h.tags = tags.clone();
                }
            }
            Write::ApplyNetpol(k, n) => {
                a.netpols.insert(k.clone(), n.policy.clone());
            }
            Write::PutPod(p) => {
                a.pods.insert((p.namespace.clone(), p.name.clone()), p.clone());
            }
            Write::DeletePod(k) => drop(a.pods.remove(k)),
            Write::DeleteNetpol(k) => drop(a.netpols.remove(k)),
            Write::Reclaim(e) => drop(a.endpoints.remove(e)),
            Write::DeleteTenant(t) => drop(a.tenants.remove(t)),
            Write::RemoveHost(h) => drop(a.hosts.remove(h)),
            // A drawn address is known only from romanad's answer (the loop records it).
            Write::CreateVip(r) | Write::ReplaceVip(r) if !r.address.is_empty() => {
                a.vips.insert(r.address.clone(), vip_info(r));
            }
            Write::CreateVip(_) | Write::ReplaceVip(_) => {}
            Write::DeleteVip(addr, _) => drop(a.vips.remove(addr)),
        }
    }

    /// The Service a VIP write is for.
    pub fn vip_service(&self) -> Option<Key> {
        match self {
            Write::CreateVip(r) | Write::ReplaceVip(r) => Some((r.tenant.clone(), r.service.clone())),
            Write::DeleteVip(_, k) => Some(k.clone()),
            _ => None,
        }
    }
}

/// The record romanad stores for a request (its assignment aside).
pub fn vip_info(r: &VipRequest) -> VipInfo {
    VipInfo {
        address: r.address.clone(),
        service: r.service.clone(),
        tenant: r.tenant.clone(),
        selector: r.selector.clone(),
        ports: r.ports.clone(),
        host: r.host.clone(),
        origin: r.origin.clone(),
        ..VipInfo::default()
    }
}

/// One line for logs: what is written, by name (no whole objects).
impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::PutTenant { create: true, req } => write!(f, "create tenant {}", req.name),
            Write::PutTenant { create: false, req } => write!(f, "update tenant {}", req.name),
            Write::AddSegment { tenant, segment } => write!(f, "add segment {segment} of tenant {tenant}"),
            Write::AddHost(h) => write!(f, "add host {} ({})", h.name, h.ip),
            Write::SetTags { host, .. } => write!(f, "set tags of host {host}"),
            Write::ApplyNetpol((ns, n), _) => write!(f, "apply networkpolicy {ns}/{n}"),
            Write::PutPod(p) => write!(f, "put pod {}/{}", p.namespace, p.name),
            Write::DeletePod((ns, n)) => write!(f, "delete pod {ns}/{n}"),
            Write::DeleteNetpol((ns, n)) => write!(f, "delete networkpolicy {ns}/{n}"),
            Write::Reclaim(e) => write!(f, "reclaim endpoint {e}"),
            Write::DeleteTenant(t) => write!(f, "delete tenant {t}"),
            Write::RemoveHost(h) => write!(f, "remove host {h}"),
            Write::CreateVip(r) if r.address.is_empty() => {
                write!(f, "create a VIP for service {}/{}", r.tenant, r.service)
            }
            Write::CreateVip(r) => {
                write!(f, "create VIP {} for service {}/{}", r.address, r.tenant, r.service)
            }
            Write::ReplaceVip(r) => {
                write!(f, "replace VIP {} of service {}/{}", r.address, r.tenant, r.service)
            }
            Write::DeleteVip(a, (ns, n)) => write!(f, "delete VIP {a} of service {ns}/{n}"),
        }
    }
}
