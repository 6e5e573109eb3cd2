//! The fast path's kernel side: its maps and programs (`fastprog.rs`) loaded, attached at tcx
//! ingress (`romana_deliver` on the uplinks, `romana_send` on the endpoints' host-side veths),
//! and the endpoint map written from a diff. Programs are found by name: only ours are replaced
//! or detached, and they return "next" for what they do not handle, so programs of others on the
//! same device keep running. Also what the fast path is made from (`fast_path_view`) and what
//! forbids it (`fast_path_blockers`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use futures_util::TryStreamExt;
use romana_dataplane::fastpath::{Deliveries, EndpointRoute, FarEnd, MapDiff, Uplink};
use romana_dataplane::{LinkName, ROUTE_PROTOCOL};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkXdp, XdpAttached};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use rtnetlink::packet_route::tc::TcAttribute;

use crate::bpf::{self, BpfError};
use crate::fastprog;
use crate::kernel::{HostError, Kernel};

/// The uplinks' program.
pub const DELIVER: &str = "romana_deliver";
/// The endpoint links' program.
pub const SEND: &str = "romana_send";
/// More local endpoints than a host has: the map's bound (entries are allocated as added).
const MAX_ENTRIES: u32 = 65_536;

/// Which of the two programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Deliver,
    Send,
}

#[derive(Debug)]
struct Loaded {
    fd: OwnedFd,
    id: u32,
    name: &'static str,
}

fn load(name: &'static str, insns: &[u64]) -> Result<Loaded, BpfError> {
    let fd = bpf::prog_load(name, insns)?;
    let (id, _) = bpf::prog_info(&fd)?;
    Ok(Loaded { fd, id, name })
}

/// The two loaded programs (they hold their maps). Attaching needs nothing else, so callers can
/// attach without holding whatever guards the maps: a tcx attach waits for an RCU grace period.
#[derive(Debug)]
pub struct Programs {
    deliver: Loaded,
    send: Loaded,
}

/// The loaded programs and their maps, with the maps' content as last written.
#[derive(Debug)]
pub struct FastPath {
    endpoints: OwnedFd,
    uplinks: OwnedFd,
    programs: Arc<Programs>,
    entries: Deliveries,
    /// Uplink index -> the far end's MAC packets may be handed to.
    uplink_set: BTreeMap<u32, Option<[u8; 6]>>,
}

impl FastPath {
    /// Loads empty maps and both programs (not attached anywhere yet). Fails where the kernel
    /// has no BPF, no `bpf_redirect_peer` (before 5.10), or the caller lacks `CAP_BPF`.
    pub fn load() -> Result<FastPath, BpfError> {
        let endpoints = bpf::map_create("romana_eps", 4, 4, MAX_ENTRIES)?;
        let uplinks = bpf::map_create("romana_uplinks", 4, 8, 64)?;
        let deliver = load(DELIVER, &fastprog::deliver(&endpoints))?;
        let send = load(SEND, &fastprog::send(&endpoints, &uplinks))?;
        Ok(FastPath {
            endpoints,
            uplinks,
            programs: Arc::new(Programs { deliver, send }),
            entries: Deliveries::new(),
            uplink_set: BTreeMap::new(),
        })
    }

    /// The programs, to attach.
    pub fn programs(&self) -> Arc<Programs> {
        self.programs.clone()
    }

    /// The endpoint map's content as last written.
    pub fn entries(&self) -> &Deliveries {
        &self.entries
    }

    /// Applies a diff to the endpoint map: deletions first, so that an address never points
    /// anywhere it should not, even for a moment.
    pub fn apply(&mut self, d: &MapDiff) -> Result<(), BpfError> {
        for ip in &d.delete {
            bpf::map_delete(&self.endpoints, &ip.octets())?;
            self.entries.remove(ip);
        }
        for (ip, ifindex) in &d.put {
            bpf::map_update(&self.endpoints, &ip.octets(), &ifindex.to_ne_bytes())?;
            self.entries.insert(*ip, *ifindex);
        }
        Ok(())
    }

    /// The links `romana_send` may send out of, each with the far end's MAC it may hand packets
    /// to instead (`romana_dataplane::fastpath::handoff`).
    pub fn set_uplinks(&mut self, uplinks: &BTreeMap<u32, Option<[u8; 6]>>) -> Result<(), BpfError> {
        for gone in self.uplink_set.keys().filter(|i| !uplinks.contains_key(i)) {
            bpf::map_delete(&self.uplinks, &gone.to_ne_bytes())?;
        }
        for (i, far) in uplinks.iter().filter(|(i, far)| self.uplink_set.get(i) != Some(far)) {
            bpf::map_update(&self.uplinks, &i.to_ne_bytes(), &fastprog::uplink_value(*far))?;
        }
        self.uplink_set = uplinks.clone();
        Ok(())
    }
}

impl Programs {
    /// Makes `which` the one program of its name at `ifindex`'s tcx ingress (in the calling
    /// thread's namespace): replaces an older one in place (a restarted agent's: no packet goes
    /// without), removes duplicates, leaves everyone else's programs alone. Returns whether
    /// anything changed.
    pub fn attach(&self, which: Program, ifindex: u32) -> Result<bool, BpfError> {
        let prog = match which {
            Program::Deliver => &self.deliver,
            Program::Send => &self.send,
        };
        let ours = marked_programs(ifindex, |n| n == prog.name)?;
        let present = ours.iter().any(|(id, _)| *id == prog.id);
        if present && ours.len() == 1 {
            return Ok(false);
        }
        let mut others = ours.into_iter().filter(|(id, _)| *id != prog.id);
        if !present {
            match others.next() {
                Some((_, old)) => bpf::tcx_attach(ifindex, &prog.fd, Some(&old))?,
                None => bpf::tcx_attach(ifindex, &prog.fd, None)?,
            }
        }
        for (_, old) in others {
            bpf::tcx_detach(ifindex, &old)?;
        }
        Ok(true)
    }
}

/// The programs at `ifindex`'s tcx ingress (in the calling thread's namespace), in the order
/// they run: id, a descriptor, name.
fn programs_at(ifindex: u32) -> Result<Vec<(u32, OwnedFd, String)>, BpfError> {
    let mut out = vec![];
    for id in bpf::tcx_ingress_programs(ifindex)? {
        // A program detached between the query and here is simply gone.
        let Ok(fd) = bpf::prog_by_id(id) else { continue };
        let name = bpf::prog_info(&fd)?.1;
        out.push((id, fd, name));
    }
    Ok(out)
}

/// The programs at `ifindex`'s tcx ingress whose name `ours` accepts.
fn marked_programs(ifindex: u32, ours: impl Fn(&str) -> bool) -> Result<Vec<(u32, OwnedFd)>, BpfError> {
    Ok(programs_at(ifindex)?.into_iter().filter(|(_, _, n)| ours(n)).map(|(id, fd, _)| (id, fd)).collect())
}

/// Removes our programs (either name) from `ifindex`'s tcx ingress (the agent run with the fast
/// path off); returns how many.
pub fn detach_marked(ifindex: u32) -> Result<usize, BpfError> {
    let ours = marked_programs(ifindex, |n| n == DELIVER || n == SEND)?;
    for (_, fd) in &ours {
        bpf::tcx_detach(ifindex, fd)?;
    }
    Ok(ours.len())
}

/// What the fast path is made from, observed in the calling thread's namespace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FastPathView {
    /// The links holding the host's address: where other hosts' traffic arrives.
    pub uplinks: Vec<Uplink>,
    /// Our IPv4 /32 routes out of our veths.
    pub routes: Vec<EndpointRoute>,
}

/// A link as the fast path needs to know it.
#[derive(Default)]
struct LinkFacts {
    name: String,
    veth: bool,
    /// The peer's index and namespace id, when it is in another namespace.
    peer: Option<(u32, i32)>,
}

impl Kernel {
    /// The uplinks (links holding `host_ip`) and the endpoint routes the fast path may use.
    pub async fn fast_path_view(&self, host_ip: IpAddr) -> Result<FastPathView, HostError> {
        let fail = |step: &str| {
            let step = step.to_owned();
            move |source| HostError::Netlink { step, source }
        };
        let mut links: BTreeMap<u32, LinkFacts> = BTreeMap::new();
        for m in self.links().await? {
            let mut f = LinkFacts::default();
            let (mut peer, mut nsid) = (None, None);
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => f.name = n.clone(),
                    LinkAttribute::LinkInfo(infos) => {
                        f.veth = infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)))
                    }
                    LinkAttribute::Link(i) => peer = Some(*i),
                    LinkAttribute::LinkNetNsId(n) => nsid = Some(*n),
                    _ => {}
                }
            }
            f.peer = peer.zip(nsid);
            links.insert(m.header.index, f);
        }
        let veths: BTreeMap<u32, LinkName> = links
            .iter()
            .filter(|(_, f)| f.veth)
            .filter_map(|(i, f)| LinkName::new(&f.name).ok().map(|l| (*i, l)))
            .collect();
        let mut indexes = BTreeSet::new();
        let addrs: Vec<_> =
            self.handle.address().get().execute().try_collect().await.map_err(fail("list addresses"))?;
        for a in addrs {
            if a.attributes.iter().any(|x| matches!(x, AddressAttribute::Address(ip) if *ip == host_ip)) {
                indexes.insert(a.header.index);
            }
        }
        let mut uplinks = vec![];
        for i in indexes {
            let Some(f) = links.get(&i) else { continue };
            let far_end = match (f.veth, f.peer) {
                (true, Some((peer, nsid))) => self.far_end(peer, nsid).await,
                _ => None,
            };
            // What sits on the transmit side matters only where packets may be handed off: a NIC
            // uplink costs no query (nor the qdisc dump below).
            let egress_programs = match far_end {
                Some(_) => bpf::tcx_egress_programs(i).ok().map(|p| p.len()),
                None => None,
            };
            uplinks.push(Uplink {
                name: f.name.clone(),
                ifindex: i,
                far_end,
                qdiscs: vec![],
                egress_programs,
            });
        }
        if uplinks.iter().any(|u| u.far_end.is_some()) {
            let all: Vec<_> =
                self.handle.qdisc().get().execute().try_collect().await.map_err(fail("list qdiscs"))?;
            for q in all {
                let kind = q.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k),
                    _ => None,
                });
                let on = uplinks.iter_mut().find(|u| i64::from(u.ifindex) == i64::from(q.header.index));
                if let (Some(u), Some(k)) = (on, kind) {
                    u.qdiscs.push(k.clone());
                }
            }
        }
        let mut routes = vec![];
        let all: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(fail("list routes"))?;
        for r in all {
            if r.header.protocol != RouteProtocol::from(ROUTE_PROTOCOL)
                || r.header.table != crate::kernel::MAIN_TABLE
                || r.header.destination_prefix_length != 32
            {
                continue;
            }
            let (mut dest, mut oif, mut via) = (None, None, false);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Gateway(_) => via = true,
                    _ => {}
                }
            }
            if let (Some(ip), Some(i), false) = (dest, oif, via)
                && let Some(link) = veths.get(&i)
            {
                routes.push(EndpointRoute { ip, link: link.clone(), ifindex: i });
            }
        }
        Ok(FastPathView { uplinks, routes })
    }

    /// The peer `peer` of a veth in the namespace this one knows as `nsid`: its MAC and whether
    /// an XDP program is attached to it. `None` when it cannot be read (it went, or the
    /// namespace is not ours to look into): the uplink then transmits.
    async fn far_end(&self, peer: u32, nsid: i32) -> Option<FarEnd> {
        let mut req = self.handle.link().get().match_index(peer);
        req.message_mut().attributes.push(LinkAttribute::IfNetnsId(nsid));
        let msgs: Vec<_> = req.execute().try_collect().await.ok()?;
        let m = msgs.first()?;
        let mut mac = None;
        let mut xdp = false;
        for a in &m.attributes {
            match a {
                LinkAttribute::Address(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
                LinkAttribute::Xdp(x) => {
                    xdp |= x.iter().any(|x| matches!(x, LinkXdp::Attached(a) if *a != XdpAttached::None))
                }
                _ => {}
            }
        }
        Some(FarEnd { mac: mac?, xdp })
    }
}

/// What in the calling thread's namespace keeps the fast path off, or only its hand-off to veth
/// uplinks' far ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Blockers {
    /// What would miss the packets the fast path delivers (see
    /// `romana_dataplane::fastpath::foreign_hooks`): other nftables chains on the bypassed hooks,
    /// tables of legacy iptables (their rules cannot be read here, so any counts), IPVS virtual
    /// services. Empty: delivering past the forwarding path changes nothing but its cost.
    pub path: Vec<String>,
    /// nftables chains on the netdev egress hook, which a packet handed to an uplink's far end
    /// skips (`romana_dataplane::fastpath::handoff`).
    pub egress_chains: Vec<String>,
}

/// The blockers in the calling thread's namespace.
pub fn fast_path_blockers() -> Blockers {
    let (mut path, egress_chains) = match crate::nft::list_chains() {
        Ok(listing) => (
            romana_dataplane::fastpath::foreign_hooks(&listing),
            romana_dataplane::fastpath::egress_hooks(&listing),
        ),
        Err(e) => {
            let e = format!("cannot list nftables chains: {e}");
            (vec![e.clone()], vec![e])
        }
    };
    // /proc/thread-self/net is this thread's namespace (a setns'd thread's, not the process's).
    let read = |f: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).unwrap_or_default();
    let legacy: Vec<String> = read("ip_tables_names").lines().map(str::to_owned).collect();
    if !legacy.is_empty() {
        path.push(format!("legacy iptables tables {}", legacy.join(", ")));
    }
    // Three header lines, then one line per virtual service (and its real servers, indented).
    if read("ip_vs").lines().skip(3).any(|l| !l.starts_with(' ')) {
        path.push("IPVS virtual services".to_owned());
    }
    Blockers { path, egress_chains }
}

/// The names of the programs at `ifindex`'s tcx ingress (in the calling thread's namespace), in
/// the order they run: what an operator or a test sees there.
pub fn tcx_program_names(ifindex: u32) -> Result<Vec<String>, BpfError> {
    Ok(programs_at(ifindex)?.into_iter().map(|(_, _, n)| n).collect())
}
