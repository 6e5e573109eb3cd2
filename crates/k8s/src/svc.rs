//! Pure mapping of a Kubernetes Service to the VIP it asks for through the annotation
//! `romana.io/vip` (`auto` or an IPv4 address), and to what it reports now (`romana.io/vip-status`,
//! `status.loadBalancer.ingress`). What the VIP model cannot express is kept as the reason, so
//! the controller reports it on the Service instead of guessing. No I/O, no clock.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::map::MapError;

/// The annotation that asks for a VIP: `auto` (drawn from romanad's VIP ranges) or an address.
pub const VIP_ANNOTATION: &str = "romana.io/vip";
/// The preferred host (node name) of the VIP; optional.
pub const VIP_HOST_ANNOTATION: &str = "romana.io/vip-host";
/// Written by the controller: `ok <address>` or `error: <why>`.
pub const VIP_STATUS_ANNOTATION: &str = "romana.io/vip-status";

/// Where a Service port's traffic goes on the endpoints: a number, or a container port's name
/// (resolved against the selected pods' named ports when the plan runs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Number(u16),
    Name(String),
}

/// One Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SvcPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    pub port: u16,
    pub target: Target,
}

/// The VIP a Service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipWant {
    /// `None`: `auto`.
    pub address: Option<Ipv4Addr>,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<SvcPort>,
    /// The preferred host, or empty.
    pub host: String,
}

/// What the Service carries now of the controller's reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    pub status: Option<String>,
    /// `status.loadBalancer.ingress[*].ip`.
    pub ingress: Vec<String>,
}

/// A Service the controller cares about: annotated, or still carrying its report from before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDesired {
    /// Namespace and name.
    pub key: (String, String),
    pub uid: String,
    /// `None`: not annotated (only its old report is to clear); `Some(Err)`: annotated, but the
    /// annotation or the Service cannot be a VIP (the reason).
    pub want: Option<Result<VipWant, String>>,
    pub load_balancer: bool,
    pub reported: Reported,
}

/// A Service's VIP request, `Ok(None)` when the Service neither asks for a VIP nor carries a
/// report of ours (nothing to do).
pub fn service(s: &Service) -> Result<Option<ServiceDesired>, MapError> {
    let name =
        s.metadata.name.clone().filter(|n| !n.is_empty()).ok_or(MapError::NoName { kind: "service" })?;
    let namespace = s
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| MapError::NoNamespace { kind: "service", name: name.clone() })?;
    let ann = s.metadata.annotations.clone().unwrap_or_default();
    let ingress: Vec<String> = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    let reported = Reported { status: ann.get(VIP_STATUS_ANNOTATION).cloned(), ingress };
    let spec = s.spec.clone().unwrap_or_default();
    let want = ann.get(VIP_ANNOTATION).map(|v| want(v, &ann, &spec));
    if want.is_none() && reported.status.is_none() {
        return Ok(None);
    }
    Ok(Some(ServiceDesired {
        key: (namespace, name),
        uid: s.metadata.uid.clone().unwrap_or_default(),
        want,
        load_balancer: spec.type_.as_deref() == Some("LoadBalancer"),
        reported,
    }))
}

fn want(
    value: &str,
    ann: &BTreeMap<String, String>,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
) -> Result<VipWant, String> {
    let value = value.trim();
    let address = match value {
        "auto" => None,
        v => Some(v.parse::<Ipv4Addr>().map_err(|_| {
            format!("annotation {VIP_ANNOTATION}={v:?} is neither \"auto\" nor an IPv4 address")
        })?),
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err("an ExternalName Service has no endpoints to forward a VIP to".into());
    }
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        return Err("the Service has no selector: a VIP forwards to the pods a selector picks (Services \
                    with hand-made Endpoints are not supported)"
            .into());
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let port = u16::try_from(p.port)
            .ok()
            .filter(|x| *x > 0)
            .ok_or_else(|| format!("spec.ports[{i}].port {} is outside 1-65535", p.port))?;
        let target = match &p.target_port {
            None => Target::Number(port),
            Some(IntOrString::Int(n)) => Target::Number(
                u16::try_from(*n)
                    .ok()
                    .filter(|x| *x > 0)
                    .ok_or_else(|| format!("spec.ports[{i}].targetPort {n} is outside 1-65535"))?,
            ),
            Some(IntOrString::String(s)) => match s.parse::<u16>() {
                Ok(n) if n > 0 => Target::Number(n),
                _ => Target::Name(s.clone()),
            },
        };
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into()).to_ascii_uppercase();
        ports.push(SvcPort { protocol, port, target });
    }
    ports.sort();
    let host = ann.get(VIP_HOST_ANNOTATION).map(|h| h.trim().to_owned()).unwrap_or_default();
    Ok(VipWant { address, selector, ports, host })
}
