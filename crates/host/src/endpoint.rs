//! Endpoint plumbing for the CNI path: a veth pair whose host end carries Romana's name mark and a
//! /32 (/128) route of our protocol per address, and whose other end becomes the pod's interface
//! with its addresses (one per family: IPv4, IPv6 or both) and a default route per family.
//! Attach is idempotent (a complete endpoint is left as is, a partial one is rebuilt), detach
//! tolerates a vanished pod, check lists every difference it finds.
//!
//! The IPv4 gateway is an address of the host's gateway link, reached by a link route (the host
//! answers ARP for its own addresses on any link). The IPv6 gateway is `IPV6_GATEWAY`, the
//! link-local `fe80::1` on the host end of every veth: neighbour discovery answers only for
//! addresses of the receiving link, and a link-local address is valid on every veth at once, so
//! no proxy NDP (one `ip -6 neigh add proxy` entry per pod address and link, and a sysctl) is
//! needed, and the pod's default route is the same on every host. Both ends' IPv6 addresses are
//! added without duplicate address detection (a /128 on a point-to-point veth cannot collide,
//! and DAD would hold them tentative, unusable, for a second or more). The host end generates no
//! link-local address of its own (`addr_gen_mode` none, set before it comes up): it carries only
//! `fe80::1` (a pod with IPv6) or no IPv6 address (an IPv4-only pod), which spares the kernel a
//! DAD, multicast joins and MLD reports per pod; the pod's end keeps its own link-local.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use romana_dataplane::{LINK_PREFIX, LinkName, ROUTE_PROTOCOL};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::{NetnsError, in_netns_path};
use crate::nl::{EEXIST, ENODEV, errno, host_len, route_to, unspecified, valid_ifname};

/// One endpoint to plumb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Host end of the veth pair (see `host_link_name`).
    pub host_link: LinkName,
    /// The interface name inside the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// The pod's network namespace file (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The pod's addresses, at most one per family; the first is its primary.
    pub addresses: Vec<PodAddress>,
}

/// One address of a pod and its next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddress {
    pub ip: IpAddr,
    /// Same family as `ip`: an address of the host's gateway link (IPv4), or `IPV6_GATEWAY`.
    pub gateway: IpAddr,
}

/// The IPv6 gateway of every pod: a link-local address on the host end of its veth.
pub const IPV6_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

impl EndpointSpec {
    /// The primary address (the first).
    pub fn ip(&self) -> Option<IpAddr> {
        self.addresses.first().map(|a| a.ip)
    }
}

/// A gateway the host end of the veth carries itself (IPv6's link-local).
fn on_veth(gateway: IpAddr) -> bool {
    gateway == IpAddr::V6(IPV6_GATEWAY)
}

/// What attach made, for the CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host_link: String,
    pub host_mac: String,
    pub ifname: String,
    pub pod_mac: String,
    /// False when a complete endpoint was already there and nothing changed.
    pub created: bool,
    /// Where the attach spent its time (ADD's log line).
    pub times: PlumbTimes,
}

/// Where an attach spent its time: the veth pair's creation, the pod side (its namespace entered
/// on a thread of its own, the link up, each address and its routes) and the host side, with
/// the IPv6 address's share of each side, so that a dual-stack ADD's cost per family shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlumbTimes {
    pub veth: Duration,
    pub pod: Duration,
    pub pod_v6: Duration,
    pub host: Duration,
    pub host_v6: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{step}: {source}")]
    Netlink { step: String, source: rtnetlink::Error },
    #[error("opening a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("pod namespace {path} does not exist")]
    NoPodNamespace { path: String },
    #[error("{ip} and gateway {gateway} are not the same address family")]
    Family { ip: IpAddr, gateway: IpAddr },
    #[error("an endpoint takes one address of each family, got {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Addresses(Vec<IpAddr>),
    #[error("interface name {0:?} is not valid (1 to 15 characters, no '/' or whitespace)")]
    IfName(String),
    #[error("endpoint differs from what was configured: {}", .0.join("; "))]
    Mismatch(Vec<String>),
    #[error("turning IPv6 autoconfiguration off on the host end: {0}")]
    Autoconf(std::io::Error),
}

/// The host end's name for a container's interface: the Romana mark plus 9 hex digits of a stable
/// hash (FNV-1a, 36 bits) of container id and interface name: 15 characters, the kernel's limit.
pub fn host_link_name(container_id: &str, ifname: &str) -> LinkName {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    LinkName::new(&format!("{LINK_PREFIX}{:09x}", h & 0xf_ffff_ffff)).expect("15 characters with the mark")
}

fn connect() -> Result<Handle, EndpointError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(EndpointError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn nl(step: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> EndpointError {
    let step = step.into();
    move |source| EndpointError::Netlink { step, source }
}

/// A link as far as endpoints care.
#[derive(Debug, Clone)]
struct LinkFacts {
    index: u32,
    mac: String,
    up: bool,
    veth: bool,
}

fn facts(m: &LinkMessage) -> (Option<String>, LinkFacts) {
    let mut name = None;
    let mut f = LinkFacts {
        index: m.header.index,
        mac: String::new(),
        up: m.header.flags.contains(LinkFlags::Up),
        veth: false,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(mac) => {
                f.mac = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
            }
            LinkAttribute::LinkInfo(infos) => {
                f.veth = infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)))
            }
            _ => {}
        }
    }
    (name, f)
}

async fn link(handle: &Handle, name: &str) -> Result<Option<LinkFacts>, EndpointError> {
    match handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(Some(m)) => Ok(Some(facts(&m).1)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

async fn addresses_of(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, EndpointError> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    Ok(msgs
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Address(ip) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

/// (destination, prefix length, gateway, output link, protocol) of the main table's routes.
type RouteFacts = (IpAddr, u8, Option<IpAddr>, Option<u32>, u8);

async fn routes(handle: &Handle, v6: bool) -> Result<Vec<RouteFacts>, EndpointError> {
    let filter = if v6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    let msgs: Vec<_> = handle.route().get(filter).execute().try_collect().await.map_err(nl("list routes"))?;
    let unspecified = if v6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    Ok(msgs
        .iter()
        .filter(|m| m.header.table == 254)
        .map(|m| {
            let (mut dest, mut gw, mut oif) = (unspecified, None, None);
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = IpAddr::V4(*ip),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dest = IpAddr::V6(*ip),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gw = Some(IpAddr::V6(*ip)),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            (dest, m.header.destination_prefix_length, gw, oif, u8::from(m.header.protocol))
        })
        .collect())
}

/// Differences between the pod side and the spec (empty: complete). Runs in the pod namespace.
async fn pod_problems(spec: &EndpointSpec) -> Result<(Vec<String>, Option<LinkFacts>), EndpointError> {
    let handle = connect()?;
    let mut problems = Vec::new();
    let Some(l) = link(&handle, &spec.ifname).await? else {
        return Ok((vec![format!("interface {} is missing in the pod", spec.ifname)], None));
    };
    if !l.up {
        problems.push(format!("interface {} is down", spec.ifname));
    }
    let have = addresses_of(&handle, l.index).await?;
    for a in &spec.addresses {
        let want = (a.ip, host_len(a.ip));
        if !have.contains(&want) {
            problems.push(format!("address {}/{} is missing on {}", want.0, want.1, spec.ifname));
        }
        let rs = routes(&handle, a.ip.is_ipv6()).await?;
        let default = (unspecified(a.ip), 0, Some(a.gateway), Some(l.index));
        if !rs.iter().any(|r| (r.0, r.1, r.2, r.3) == default) {
            problems.push(format!("default route via {} dev {} is missing", a.gateway, spec.ifname));
        }
    }
    Ok((problems, Some(l)))
}

/// Differences on the host side: our veth end up, our /32 route through it.
async fn host_problems(handle: &Handle, spec: &EndpointSpec) -> Result<Vec<String>, EndpointError> {
    let name = spec.host_link.as_str();
    let Some(l) = link(handle, name).await? else {
        return Ok(vec![format!("host link {name} is missing")]);
    };
    let mut problems = Vec::new();
    if !l.up {
        problems.push(format!("host link {name} is down"));
    }
    for a in &spec.addresses {
        let rs = routes(handle, a.ip.is_ipv6()).await?;
        let want = (a.ip, host_len(a.ip), None, Some(l.index), ROUTE_PROTOCOL);
        if !rs.contains(&want) {
            problems.push(format!("route {}/{} dev {name} is missing", a.ip, host_len(a.ip)));
        }
        if on_veth(a.gateway) && !addresses_of(handle, l.index).await?.contains(&(a.gateway, 64)) {
            problems.push(format!("gateway {}/64 is missing on {name}", a.gateway));
        }
    }
    Ok(problems)
}

/// Configures the pod side (runs in the pod namespace): the veth end that was created there set
/// up, with the address, a link route to the gateway and the default route through it.
async fn plumb_pod(spec: EndpointSpec) -> Result<(String, Duration), EndpointError> {
    let handle = connect()?;
    let l = link(&handle, &spec.ifname)
        .await?
        .ok_or_else(|| EndpointError::Mismatch(vec![format!("{} did not appear in the pod", spec.ifname)]))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(l.index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {} up", spec.ifname)))?;
    if let Some(lo) = link(&handle, "lo").await?
        && !lo.up
    {
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo.index).up().build())
            .execute()
            .await
            .map_err(nl("set lo up"))?;
    }
    let mut v6 = Duration::ZERO;
    for a in &spec.addresses {
        let t = Instant::now();
        add_address(&handle, l.index, a.ip, host_len(a.ip), &spec.ifname).await?;
        // A link-local gateway is on-link by definition; another needs a link route.
        if !on_veth(a.gateway) {
            let gw = route_to(a.gateway, host_len(a.gateway))
                .output_interface(l.index)
                .scope(RouteScope::Link)
                .build();
            handle
                .route()
                .add(gw)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("route to gateway {}", a.gateway)))?;
        }
        let default = route_to(unspecified(a.ip), 0)
            .output_interface(l.index)
            .gateway(a.gateway)
            .map_err(|e| EndpointError::Netlink {
                step: "default route".into(),
                source: rtnetlink::Error::InvalidNla(e.to_string()),
            })?
            .build();
        handle
            .route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("default route via {}", a.gateway)))?;
        if a.ip.is_ipv6() {
            v6 += t.elapsed();
        }
    }
    Ok((l.mac, v6))
}

/// Adds `ip/len` to a link (present already is fine); IPv6 without duplicate address detection.
async fn add_address(
    handle: &Handle,
    index: u32,
    ip: IpAddr,
    len: u8,
    ifname: &str,
) -> Result<(), EndpointError> {
    let mut req = handle.address().add(index, ip, len);
    if ip.is_ipv6() {
        let m = req.message_mut();
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        r => r.map_err(nl(format!("add {ip}/{len} to {ifname}"))),
    }
}

async fn delete_link(handle: &Handle, name: &str) -> Result<bool, EndpointError> {
    let Some(l) = link(handle, name).await? else { return Ok(false) };
    match handle.link().del(l.index).execute().await {
        Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
        r => r.map(|()| true).map_err(nl(format!("delete link {name}"))),
    }
}

/// Attaches the endpoint. `host_ns` is the host's namespace file (`None`: the caller's own).
pub fn attach(host_ns: Option<&Path>, spec: &EndpointSpec) -> Result<Attachment, EndpointError> {
    if !valid_ifname(&spec.ifname) {
        return Err(EndpointError::IfName(spec.ifname.clone()));
    }
    validate(spec)?;
    let pod_ns = open_pod_ns(&spec.netns)?;
    let spec = spec.clone();
    in_netns_path(host_ns, move || async move {
        let handle = connect()?;
        let name = spec.host_link.as_str().to_owned();
        // Idempotent: a complete endpoint is reported, anything partial is rebuilt.
        if let Some(h) = link(&handle, &name).await? {
            let s = spec.clone();
            let (pod, pod_link) =
                in_netns_path(Some(&s.netns.clone()), move || async move { pod_problems(&s).await })??;
            if pod.is_empty() && host_problems(&handle, &spec).await?.is_empty() {
                return Ok(Attachment {
                    host_link: name,
                    host_mac: h.mac,
                    ifname: spec.ifname.clone(),
                    pod_mac: pod_link.map(|l| l.mac).unwrap_or_default(),
                    created: false,
                    times: PlumbTimes::default(),
                });
            }
            delete_link(&handle, &name).await?;
        }
        // The pod end is created directly in the pod's namespace: moving a link between
        // namespaces waits for an RCU grace period, which would dominate ADD's latency.
        let mut times = PlumbTimes::default();
        let t = Instant::now();
        let peer = LinkUnspec::new_with_name(&spec.ifname).setns_by_fd(pod_ns.as_raw_fd()).build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        handle.link().add(veth).execute().await.map_err(nl(format!(
            "create veth {name} with {} in {}",
            spec.ifname,
            spec.netns.display()
        )))?;
        times.veth = t.elapsed();
        let built = async {
            let s = spec.clone();
            let t = Instant::now();
            let (pod_mac, pod_v6) = in_netns_path(Some(&s.netns.clone()), move || plumb_pod(s))??;
            (times.pod, times.pod_v6) = (t.elapsed(), pod_v6);
            let t = Instant::now();
            let host = link(&handle, &name)
                .await?
                .ok_or_else(|| EndpointError::Mismatch(vec![format!("{name} vanished")]))?;
            // Before it comes up: the host end gets no link-local address of its own (only
            // `fe80::1` below, for a pod with IPv6), so no DAD and MLD work per pod.
            crate::sysctl::no_ipv6_autoconf(&name).map_err(EndpointError::Autoconf)?;
            for a in spec.addresses.iter().filter(|a| on_veth(a.gateway)) {
                let t6 = Instant::now();
                add_address(&handle, host.index, a.gateway, 64, &name).await?;
                times.host_v6 += t6.elapsed();
            }
            handle
                .link()
                .set(LinkUnspec::new_with_index(host.index).up().build())
                .execute()
                .await
                .map_err(nl(format!("set {name} up")))?;
            for a in &spec.addresses {
                let t6 = Instant::now();
                let route = route_to(a.ip, host_len(a.ip))
                    .output_interface(host.index)
                    .scope(RouteScope::Link)
                    .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
                    .build();
                // Exclusive: a route someone else holds for this address is an error, not
                // overwritten.
                handle.route().add(route).execute().await.map_err(nl(format!(
                    "route {}/{} dev {name}",
                    a.ip,
                    host_len(a.ip)
                )))?;
                if a.ip.is_ipv6() {
                    times.host_v6 += t6.elapsed();
                }
            }
            times.host = t.elapsed();
            Ok(Attachment {
                host_link: name.clone(),
                host_mac: host.mac,
                ifname: spec.ifname.clone(),
                pod_mac,
                created: true,
                times,
            })
        }
        .await;
        if built.is_err() {
            // Nothing half-made stays: deleting the host end takes the pod end with it.
            let _ = delete_link(&handle, &name).await;
        }
        built
    })?
}

/// One address per family at least one, each with a gateway of its family.
fn validate(spec: &EndpointSpec) -> Result<(), EndpointError> {
    let ips: Vec<IpAddr> = spec.addresses.iter().map(|a| a.ip).collect();
    let v4 = ips.iter().filter(|ip| ip.is_ipv4()).count();
    if ips.is_empty() || v4 > 1 || ips.len() - v4 > 1 {
        return Err(EndpointError::Addresses(ips));
    }
    match spec.addresses.iter().find(|a| a.ip.is_ipv4() != a.gateway.is_ipv4()) {
        Some(a) => Err(EndpointError::Family { ip: a.ip, gateway: a.gateway }),
        None => Ok(()),
    }
}

fn open_pod_ns(p: &Path) -> Result<std::fs::File, EndpointError> {
    std::fs::File::open(p).map_err(|_| EndpointError::NoPodNamespace { path: p.display().to_string() })
}

/// Removes the endpoint's veth pair (and with it the host route). True when something was removed.
pub fn detach(host_ns: Option<&Path>, host_link: &LinkName) -> Result<bool, EndpointError> {
    let name = host_link.as_str().to_owned();
    in_netns_path(host_ns, move || async move {
        let handle = connect()?;
        let removed = delete_link(&handle, &name).await?;
        Ok(removed)
    })?
}

/// Every difference between the endpoint and the spec, on both sides.
pub fn check(host_ns: Option<&Path>, spec: &EndpointSpec) -> Result<(), EndpointError> {
    validate(spec)?;
    open_pod_ns(&spec.netns)?;
    let spec = spec.clone();
    in_netns_path(host_ns, move || async move {
        let handle = connect()?;
        let mut problems = host_problems(&handle, &spec).await?;
        let s = spec.clone();
        let (pod, _) = in_netns_path(Some(&s.netns.clone()), move || async move { pod_problems(&s).await })??;
        problems.extend(pod);
        if problems.is_empty() { Ok(()) } else { Err(EndpointError::Mismatch(problems)) }
    })?
}

/// The host ends of every endpoint on the host (veth links carrying the mark), for GC.
pub fn endpoint_links(host_ns: Option<&Path>) -> Result<Vec<LinkName>, EndpointError> {
    in_netns_path(host_ns, move || async move {
        let handle = connect()?;
        let msgs: Vec<_> = handle.link().get().execute().try_collect().await.map_err(nl("list links"))?;
        Ok(msgs
            .iter()
            .map(facts)
            .filter(|(_, f)| f.veth)
            .filter_map(|(n, _)| n.and_then(|n| LinkName::new(&n).ok()))
            .collect())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_link_names_are_marked_stable_and_fit_the_kernel() {
        let a = host_link_name("0123456789abcdef", "eth0");
        assert_eq!(a, host_link_name("0123456789abcdef", "eth0"));
        assert_eq!(a.as_str().len(), 15);
        assert!(a.as_str().starts_with(LINK_PREFIX));
        assert_ne!(a, host_link_name("0123456789abcdef", "eth1"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(host_link_name("ab", "c"), host_link_name("a", "bc"));
    }

    #[test]
    fn interface_names_are_checked() {
        for ok in ["eth0", "net1", "a"] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in ["", "a/b", "has space", "sixteen-chars-xx", ".."] {
            assert!(!valid_ifname(bad), "{bad}");
        }
    }
}
