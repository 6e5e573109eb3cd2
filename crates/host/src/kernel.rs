//! Netlink adapter: observes the links, addresses and routes that carry Romana's marks (link name
//! prefix, route protocol) and applies plan steps. Everything else on the host is invisible to it,
//! so it cannot change or delete what it does not own.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use romana_dataplane::{HostState, LinkKind, LinkName, NextHop, Plan, ROUTE_PROTOCOL, Step};
use romana_model::Cidr;

use crate::nl::{EADDRNOTAVAIL, EEXIST, ENOENT, EOPNOTSUPP, ESRCH, errno};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec, RouteMessageBuilder};

/// The main routing table; Romana's routes live there, marked by protocol.
pub(crate) const MAIN_TABLE: u8 = 254;

/// How the gateway link is made: a `dummy` link where the kernel has the module, otherwise a
/// bridge without ports (same effect for routing: an always-up link holding the gateway address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayFlavor {
    Dummy,
    Bridge,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{step}: {source}")]
    Netlink { step: String, source: rtnetlink::Error },
    #[error("{step}: route exists and is not Romana's (protocol {ROUTE_PROTOCOL}); refusing to replace it")]
    ForeignRoute { step: String },
    #[error("{step}: link {link} does not exist")]
    NoLink { step: String, link: String },
    #[error("opening a netlink socket: {0}")]
    Socket(std::io::Error),
}

/// A netlink connection to the current thread's network namespace.
#[derive(Debug)]
pub struct Kernel {
    pub(crate) handle: Handle,
    /// The same namespace with strict dump checking: route dumps filtered by the kernel.
    strict: Handle,
    /// Which gateway flavour worked, once one was made.
    pub gateway_flavor: Option<GatewayFlavor>,
    /// Link indexes while a plan is applied (one dump per plan, not per step); dropped when a
    /// step adds or deletes a link, and after the plan.
    index_cache: Option<BTreeMap<LinkName, u32>>,
}

impl Kernel {
    /// Connects; must be called inside a Tokio runtime with I/O enabled.
    pub fn connect() -> Result<Kernel, HostError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(HostError::Socket)?;
        tokio::spawn(conn);
        // A second socket with strict dump checking: the kernel then filters a route dump by
        // the request's table and protocol (Linux 4.20 and later), so that `observe` is sent
        // our routes in the main table instead of every route of every link (a host with many
        // pods has several IPv6 routes per veth: prefix, local, anycast, multicast). Its own
        // socket, because strict checking turns every field of a dump request into a filter
        // (the fast path's view dumps all routes). An older kernel refuses the option and
        // sends everything; `observe` filters again either way.
        let (mut conn, strict, _) = rtnetlink::new_connection().map_err(HostError::Socket)?;
        let _ = netlink_sys::AsyncSocket::socket_ref(conn.socket_mut()).set_netlink_get_strict_chk(true);
        tokio::spawn(conn);
        Ok(Kernel { handle, strict, gateway_flavor: None, index_cache: None })
    }

    pub(crate) async fn links(&self) -> Result<Vec<LinkMessage>, HostError> {
        let step = || "list links".to_owned();
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| HostError::Netlink { step: step(), source })
    }

    /// Our links by name with their index.
    async fn marked_links(&self) -> Result<BTreeMap<LinkName, (u32, LinkKind)>, HostError> {
        let mut out = BTreeMap::new();
        for m in self.links().await? {
            let mut name = None;
            let mut kind = None;
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = LinkName::new(n).ok(),
                    LinkAttribute::LinkInfo(infos) => {
                        for i in infos {
                            if let LinkInfo::Kind(k) = i {
                                kind = Some(match k {
                                    InfoKind::Dummy | InfoKind::Bridge => LinkKind::Gateway,
                                    _ => LinkKind::Endpoint,
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(name) = name {
                out.insert(name, (m.header.index, kind.unwrap_or(LinkKind::Endpoint)));
            }
        }
        Ok(out)
    }

    /// Romana's part of the kernel state: marked links, their host addresses, our routes.
    pub async fn observe(&self) -> Result<HostState, HostError> {
        let links = self.marked_links().await?;
        let by_index: BTreeMap<u32, &LinkName> = links.iter().map(|(n, (i, _))| (*i, n)).collect();
        let mut state = HostState {
            links: links.iter().map(|(n, (_, k))| (n.clone(), *k)).collect(),
            ..HostState::default()
        };
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| HostError::Netlink { step: "list addresses".into(), source })?;
        for a in addrs {
            let Some(link) = by_index.get(&a.header.index) else { continue };
            for attr in &a.attributes {
                // Only host addresses are ours (the gateway's /32 and /128); others on a marked
                // link are left alone.
                if let AddressAttribute::Address(ip) = attr
                    && Cidr::host(*ip).prefix_len() == a.header.prefix_len
                {
                    state.addresses.insert(((*link).clone(), Cidr::host(*ip)));
                }
            }
        }
        for family in [
            ours(RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()),
            ours(RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()),
        ] {
            let routes: Vec<RouteMessage> = self
                .strict
                .route()
                .get(family)
                .execute()
                .try_collect()
                .await
                .map_err(|source| HostError::Netlink { step: "list routes".into(), source })?;
            for r in routes {
                if r.header.protocol != RouteProtocol::from(ROUTE_PROTOCOL) || r.header.table != MAIN_TABLE {
                    continue;
                }
                if let Some((dest, next)) = parse_route(&r, &by_index) {
                    state.routes.insert(dest, next);
                }
            }
        }
        Ok(state)
    }

    /// Applies every step in order; the first failure stops and names the step.
    pub async fn apply(&mut self, plan: &Plan) -> Result<(), HostError> {
        let mut result = Ok(());
        for step in &plan.steps {
            if matches!(step, Step::AddLink { .. } | Step::DelLink { .. }) {
                self.index_cache = None;
            }
            result = self.apply_step(step).await;
            if result.is_err() {
                break;
            }
        }
        self.index_cache = None;
        result
    }

    async fn index_of(&mut self, link: &LinkName) -> Result<Option<u32>, HostError> {
        if self.index_cache.is_none() {
            let links = self.marked_links().await?;
            self.index_cache = Some(links.into_iter().map(|(n, (i, _))| (n, i)).collect());
        }
        Ok(self.index_cache.as_ref().and_then(|c| c.get(link).copied()))
    }

    async fn apply_step(&mut self, step: &Step) -> Result<(), HostError> {
        let fail = |source| HostError::Netlink { step: step.to_string(), source };
        let no_link = |l: &LinkName| HostError::NoLink { step: step.to_string(), link: l.to_string() };
        match step {
            Step::MissingEndpoint { .. } => Ok(()),
            Step::AddLink { name, kind: _ } => {
                let dummy =
                    self.handle.link().add(LinkDummy::new(name.as_str()).up().build()).execute().await;
                match dummy {
                    Ok(()) => self.gateway_flavor = Some(GatewayFlavor::Dummy),
                    // This kernel has no dummy links: a bridge without ports does the same job.
                    Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                        self.handle
                            .link()
                            .add(LinkBridge::new(name.as_str()).build())
                            .execute()
                            .await
                            .map_err(fail)?;
                        self.gateway_flavor = Some(GatewayFlavor::Bridge);
                    }
                    Err(e) => return Err(fail(e)),
                }
                let index = self.index_of(name).await?.ok_or_else(|| no_link(name))?;
                self.handle
                    .link()
                    .set(LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await
                    .map_err(fail)
            }
            Step::DelLink { name } => match self.index_of(name).await? {
                None => Ok(()),
                Some(index) => match self.handle.link().del(index).execute().await {
                    Err(e) if errno(&e) == Some(ENOENT) => Ok(()),
                    r => r.map_err(fail),
                },
            },
            Step::AddAddress { link, addr } => {
                let index = self.index_of(link).await?.ok_or_else(|| no_link(link))?;
                match self.handle.address().add(index, addr.network(), addr.prefix_len()).execute().await {
                    Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
                    r => r.map_err(fail),
                }
            }
            Step::DelAddress { link, addr } => {
                let Some(index) = self.index_of(link).await? else { return Ok(()) };
                let found: Vec<AddressMessage> = self
                    .handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .set_address_filter(addr.network())
                    .execute()
                    .try_collect()
                    .await
                    .map_err(fail)?;
                for m in found.into_iter().filter(|m| m.header.prefix_len == addr.prefix_len()) {
                    match self.handle.address().del(m).execute().await {
                        Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                        r => r.map_err(fail)?,
                    }
                }
                Ok(())
            }
            Step::AddRoute { dest, next } | Step::ReplaceRoute { dest, to: next, .. } => {
                let msg = self.route_message(step, dest, Some(next)).await?;
                let req = self.handle.route().add(msg);
                // A new route is added exclusively: if someone else's route holds the prefix we
                // fail rather than overwrite it. Only a route we observed as ours is replaced.
                let req = if matches!(step, Step::ReplaceRoute { .. }) { req.replace() } else { req };
                match req.execute().await {
                    Err(e) if errno(&e) == Some(EEXIST) => {
                        Err(HostError::ForeignRoute { step: step.to_string() })
                    }
                    r => r.map_err(fail),
                }
            }
            Step::DelRoute { dest } => {
                let msg = self.route_message(step, dest, None).await?;
                match self.handle.route().del(msg).execute().await {
                    Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
                    r => r.map_err(fail),
                }
            }
        }
    }

    /// A route message for `dest` carrying our protocol (deletion matches on it, so a delete can
    /// only ever remove our route).
    async fn route_message(
        &mut self,
        step: &Step,
        dest: &Cidr,
        next: Option<&NextHop>,
    ) -> Result<RouteMessage, HostError> {
        let bad = |e: String| HostError::Netlink {
            step: step.to_string(),
            source: rtnetlink::Error::InvalidNla(e),
        };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .map_err(|e| bad(e.to_string()))?
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
        match next {
            Some(NextHop::Via(ip)) => b = b.gateway(*ip).map_err(|e| bad(e.to_string()))?,
            Some(NextHop::Dev(l)) => {
                let index = self
                    .index_of(l)
                    .await?
                    .ok_or_else(|| HostError::NoLink { step: step.to_string(), link: l.to_string() })?;
                // Directly attached: the endpoint is on the other end of the link.
                b = b.output_interface(index).scope(RouteScope::Link);
            }
            Some(NextHop::Throw) => b = b.kind(RouteType::Throw),
            // A delete matches any type and scope (as `ip route del` does), but only our protocol.
            None => b = b.kind(RouteType::Unspec).scope(RouteScope::NoWhere),
        }
        Ok(b.build())
    }
}

fn parse_route(r: &RouteMessage, by_index: &BTreeMap<u32, &LinkName>) -> Option<(Cidr, NextHop)> {
    let mut dest = None;
    let mut via = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dest = Some(IpAddr::V6(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dest = Cidr::new(dest?, r.header.destination_prefix_length).ok()?;
    let next = if r.header.kind == RouteType::Throw {
        NextHop::Throw
    } else if let Some(ip) = via {
        NextHop::Via(ip)
    } else {
        // Our protocol through a link that is not ours: we never make such a route, and a link
        // we do not own is not ours to reason about, so it stays out of the observed state.
        match oif.and_then(|i| by_index.get(&i)) {
            Some(l) => NextHop::Dev((*l).clone()),
            None => return None,
        }
    };
    Some((dest, next))
}

/// A route dump request for our routes in the main table, which a socket with strict dump
/// checking makes the kernel filter by (table and protocol; any route type: aggregation may
/// program other types than unicast; scope zero, as strict checking requires of a dump).
fn ours(mut m: RouteMessage) -> RouteMessage {
    m.header.table = MAIN_TABLE;
    m.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    m.header.kind = RouteType::Unspec;
    m.header.scope = RouteScope::Universe;
    m
}
