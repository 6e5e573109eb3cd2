//! OpenStack VM endpoints: the tap interface is made by nova/libvirt, not by us, so Romana only
//! adds what routing needs: the VM's /32 (/128) route of our protocol through the tap, the tap up,
//! and for IPv4 proxy ARP on it (the VM's DHCP-given gateway is answered by the host). For IPv6
//! the tap carries `IPV6_GATEWAY` (`fe80::1`, without duplicate address detection), the VM's
//! gateway as a pod's: neighbour discovery answers for the link's own addresses, so no proxy NDP.
//! The tap itself is never deleted by us; removing the endpoint removes only our route.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use romana_dataplane::{LINK_PREFIX, ROUTE_PROTOCOL};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol, RouteScope, RouteType};
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::IPV6_GATEWAY;
use crate::netns::{NetnsError, in_netns_path};
use crate::nl::{EEXIST, ENODEV, ESRCH, errno, host_len, route_to, valid_ifname};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("interface {0:?} did not appear within {1:?}")]
    NoInterface(String, Duration),
    #[error("interface name {0:?} is not valid (1 to 15 characters, no '/' or whitespace)")]
    IfName(String),
    #[error("{step}: {source}")]
    Netlink { step: String, source: rtnetlink::Error },
    #[error("{step}: a route for {ip} exists and is not Romana's; refusing to replace it")]
    ForeignRoute { step: String, ip: IpAddr },
    #[error(
        "{step}: {ip} is routed to the endpoint link {link}: the address is a local endpoint's, not a VM's"
    )]
    EndpointRoute { step: String, ip: IpAddr, link: String },
    #[error("cannot write {key}: {source}")]
    Sysctl { key: String, source: std::io::Error },
    #[error("opening a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

async fn index_of(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, VmError> {
    match handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(m) => Ok(m.map(|m| m.header.index)),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(source) => Err(VmError::Netlink { step: format!("look up {name}"), source }),
    }
}

/// Routes `ip` to the VM behind `tap` (waiting up to `wait` for the tap to appear).
pub fn attach_vm(host_ns: Option<&Path>, tap: &str, ip: IpAddr, wait: Duration) -> Result<(), VmError> {
    // Our own endpoint links are never a VM's tap: routing a VM through one would take a pod's
    // link (and proxy ARP on it) over.
    if !valid_ifname(tap) || tap.starts_with(LINK_PREFIX) {
        return Err(VmError::IfName(tap.to_owned()));
    }
    let tap = tap.to_owned();
    in_netns_path(host_ns, move || async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(VmError::Socket)?;
        tokio::spawn(conn);
        let start = Instant::now();
        let index = loop {
            if let Some(i) = index_of(&handle, &tap).await? {
                break i;
            }
            if start.elapsed() >= wait {
                return Err(VmError::NoInterface(tap.clone(), wait));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| VmError::Netlink { step: format!("set {tap} up"), source })?;
        if ip.is_ipv4() {
            let key = format!("/proc/sys/net/ipv4/conf/{tap}/proxy_arp");
            std::fs::write(&key, "1").map_err(|source| VmError::Sysctl { key, source })?;
        } else {
            gateway_v6(&handle, index, &tap).await?;
        }
        let step = format!("route {ip}/{} dev {tap}", host_len(ip));
        let route = route_to(ip, host_len(ip))
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .build();
        match handle.route().add(route.clone()).execute().await {
            Ok(()) => Ok(()),
            // Already there: ours (same protocol) is replaced in place, anyone else's is refused.
            // Ours through this tap (a re-plumb) or through a VM's earlier tap is replaced; ours
            // through an endpoint link is a pod's address, and anyone else's is refused.
            Err(e) if errno(&e) == Some(EEXIST) => match our_route_oif(&handle, ip).await? {
                Some(oif) if oif == Some(index) => replace(&handle, route, step).await,
                Some(oif) => match link_name(&handle, oif).await? {
                    Some(link) if link.starts_with(LINK_PREFIX) => {
                        Err(VmError::EndpointRoute { step, ip, link })
                    }
                    _ => replace(&handle, route, step).await,
                },
                None => Err(VmError::ForeignRoute { step, ip }),
            },
            Err(source) => Err(VmError::Netlink { step, source }),
        }
    })?
}

/// `IPV6_GATEWAY/64` on the tap (already there is fine), usable at once: no duplicate address
/// detection (nothing else on a VM's tap answers for the host's link-local gateway).
async fn gateway_v6(handle: &rtnetlink::Handle, index: u32, tap: &str) -> Result<(), VmError> {
    let mut req = handle.address().add(index, IpAddr::V6(IPV6_GATEWAY), 64);
    let m = req.message_mut();
    m.header.flags = AddressHeaderFlags::Nodad;
    m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    match req.execute().await {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        r => r.map_err(|source| VmError::Netlink { step: format!("add {IPV6_GATEWAY}/64 to {tap}"), source }),
    }
}

async fn replace(
    handle: &rtnetlink::Handle,
    route: rtnetlink::packet_route::route::RouteMessage,
    step: String,
) -> Result<(), VmError> {
    handle.route().add(route).replace().execute().await.map_err(|source| VmError::Netlink { step, source })
}

/// The name of link `index`, if it exists.
async fn link_name(handle: &rtnetlink::Handle, index: Option<u32>) -> Result<Option<String>, VmError> {
    let Some(index) = index else { return Ok(None) };
    match handle.link().get().match_index(index).execute().try_next().await {
        Ok(m) => Ok(m.and_then(|m| {
            m.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            })
        })),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(source) => Err(VmError::Netlink { step: format!("look up link {index}"), source }),
    }
}

/// The main table's route of our protocol for exactly `ip`: `Some(its output link)`, or `None`
/// when there is none of ours.
async fn our_route_oif(handle: &rtnetlink::Handle, ip: IpAddr) -> Result<Option<Option<u32>>, VmError> {
    // A plain dump of the family, as `Kernel::observe` reads routes: a request carrying the
    // destination did not find our own route (so re-plumbing after a restart failed).
    let filter = match ip {
        IpAddr::V4(_) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        IpAddr::V6(_) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    };
    let routes: Vec<_> = handle
        .route()
        .get(filter)
        .execute()
        .try_collect()
        .await
        .map_err(|source| VmError::Netlink { step: "list routes".into(), source })?;
    Ok(routes
        .iter()
        .find(|r| {
            r.header.destination_prefix_length == host_len(ip)
                && r.header.table == 254
                && r.header.protocol == RouteProtocol::from(ROUTE_PROTOCOL)
                && r.attributes.iter().any(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => IpAddr::V4(*d) == ip,
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => IpAddr::V6(*d) == ip,
                    _ => false,
                })
        })
        .map(|r| {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
        }))
}

/// Removes our route for `ip` through `tap`. True when there was one. A route through any other
/// link (a pod's endpoint link above all) is left alone, and with the tap gone the kernel has
/// already dropped the routes through it.
pub fn detach_vm(host_ns: Option<&Path>, tap: &str, ip: IpAddr) -> Result<bool, VmError> {
    if !valid_ifname(tap) {
        return Err(VmError::IfName(tap.to_owned()));
    }
    let tap = tap.to_owned();
    in_netns_path(host_ns, move || async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(VmError::Socket)?;
        tokio::spawn(conn);
        let Some(index) = index_of(&handle, &tap).await? else { return Ok(false) };
        if our_route_oif(&handle, ip).await? != Some(Some(index)) {
            return Ok(false);
        }
        let step = format!("delete route {ip}/{} dev {tap}", host_len(ip));
        let route = route_to(ip, host_len(ip))
            .output_interface(index)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .kind(RouteType::Unspec)
            .scope(RouteScope::NoWhere)
            .build();
        match handle.route().del(route).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ESRCH) => Ok(false),
            Err(source) => Err(VmError::Netlink { step, source }),
        }
    })?
}
