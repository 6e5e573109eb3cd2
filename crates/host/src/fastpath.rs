//! The fast path's kernel side: its object (`fastprog.rs`) loaded with aya (maps and both
//! programs), the programs attached at tcx ingress (`romana_deliver` on the uplinks,
//! `romana_send` on the endpoints' host-side veths; `bpf.rs`), and the maps written from a diff.
//! Programs are found by name: only ours are replaced or detached, and they return "next" for
//! what they do not handle, so programs of others on the same device keep running. Also what the
//! fast path is made from (`fast_path_view`) and what forbids it (`fast_path_blockers`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
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
use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use aya::programs::{ProgramError, SchedClassifier};
use aya::sys::SyscallError;

use crate::fastprog::{self, Endpoint6Key, EndpointKey, EndpointValue, UplinkKey, UplinkValue};
use crate::kernel::{HostError, Kernel};

pub use crate::fastprog::{DELIVER, SEND};

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

/// Loads program `name` of the object; the verifier's log is in the error when it refuses. The
/// program stays loaded as long as the returned descriptor (or an attachment) holds it.
fn load(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<Loaded, BpfError> {
    let program = |source: ProgramError| BpfError::Program { name, source: Box::new(source) };
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| BpfError::Layout(format!("no program {name}")))?
        .try_into()
        .map_err(program)?;
    prog.load().map_err(|e| match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            BpfError::Verifier { name: name.to_owned(), source: io_error, log: verifier_log.to_string() }
        }
        e => program(e),
    })?;
    let fd = prog.fd().map_err(program)?;
    let fd = fd.as_fd().try_clone_to_owned().map_err(|source| BpfError::Sys { call: "dup", source })?;
    let (id, _) = bpf::prog_info(&fd)?;
    Ok(Loaded { fd, id, name })
}

/// The object's map `name` as a hash map of `K` to `V`; aya checks that the sizes are the C
/// structs'.
fn map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, BpfError> {
    let m = ebpf.take_map(name).ok_or_else(|| BpfError::Layout(format!("no map {name}")))?;
    BpfHashMap::try_from(m).map_err(|e| map_error(name, e))
}

fn map_error(map: &'static str, source: MapError) -> BpfError {
    BpfError::Map { map, source: Box::new(source) }
}

/// Removes `key` from `m`; a key that is not there is success.
fn remove<K: aya::Pod, V: aya::Pod>(
    m: &mut BpfHashMap<MapData, K, V>,
    name: &'static str,
    key: &K,
) -> Result<(), BpfError> {
    match m.remove(key) {
        Err(MapError::SyscallError(SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        r => r.map_err(|e| map_error(name, e)),
    }
}

/// The two loaded programs (they hold their maps). Attaching needs nothing else, so callers can
/// attach without holding whatever guards the maps: a tcx attach waits for an RCU grace period.
#[derive(Debug)]
pub struct Programs {
    deliver: Loaded,
    send: Loaded,
}

/// The loaded programs and their maps, with the maps' content as last written.
pub struct FastPath {
    endpoints: BpfHashMap<MapData, EndpointKey, EndpointValue>,
    endpoints6: BpfHashMap<MapData, Endpoint6Key, EndpointValue>,
    uplinks: BpfHashMap<MapData, UplinkKey, UplinkValue>,
    programs: Arc<Programs>,
    entries: Deliveries,
    /// Uplink index -> the far end's MAC packets may be handed to.
    uplink_set: BTreeMap<u32, Option<[u8; 6]>>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("programs", &self.programs)
            .field("entries", &self.entries)
            .field("uplink_set", &self.uplink_set)
            .finish_non_exhaustive()
    }
}

impl FastPath {
    /// Loads the object: empty maps and both programs (not attached anywhere yet). Fails where
    /// the kernel has no BPF, no `bpf_redirect_peer` (before 5.10), no tcx (before 6.6), or the
    /// caller lacks `CAP_BPF`.
    pub fn load() -> Result<FastPath, BpfError> {
        // Asked first, so that a kernel without tcx says so rather than failing each attach:
        // loopback is index 1 in every namespace.
        bpf::tcx_ingress_programs(1).map_err(|e| match e {
            BpfError::Sys { source, .. } if source.raw_os_error() == Some(libc::EINVAL) => {
                BpfError::NoTcx(source)
            }
            e => e,
        })?;
        let mut ebpf = aya::Ebpf::load(fastprog::OBJECT).map_err(|e| BpfError::object(&e))?;
        let endpoints = map(&mut ebpf, fastprog::ENDPOINTS_MAP)?;
        let endpoints6 = map(&mut ebpf, fastprog::ENDPOINTS6_MAP)?;
        let uplinks = map(&mut ebpf, fastprog::UPLINKS_MAP)?;
        let deliver = load(&mut ebpf, DELIVER)?;
        let send = load(&mut ebpf, SEND)?;
        // The maps and programs are held by their own descriptors now (and the programs by their
        // maps): aya's copies go.
        drop(ebpf);
        bpf::release_freed_memory();
        Ok(FastPath {
            endpoints,
            endpoints6,
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

    /// The endpoint maps' content (both families) as last written.
    pub fn entries(&self) -> &Deliveries {
        &self.entries
    }

    /// Applies a diff to the endpoint maps (each address to its family's): deletions first, so
    /// that an address never points anywhere it should not, even for a moment.
    pub fn apply(&mut self, d: &MapDiff) -> Result<(), BpfError> {
        for ip in &d.delete {
            match ip {
                IpAddr::V4(v4) => {
                    remove(&mut self.endpoints, fastprog::ENDPOINTS_MAP, &fastprog::endpoint_key(*v4))
                }
                IpAddr::V6(v6) => {
                    remove(&mut self.endpoints6, fastprog::ENDPOINTS6_MAP, &fastprog::endpoint6_key(*v6))
                }
            }?;
            self.entries.remove(ip);
        }
        for (ip, ifindex) in &d.put {
            match ip {
                IpAddr::V4(v4) => self
                    .endpoints
                    .insert(fastprog::endpoint_key(*v4), *ifindex, 0)
                    .map_err(|e| map_error(fastprog::ENDPOINTS_MAP, e)),
                IpAddr::V6(v6) => self
                    .endpoints6
                    .insert(fastprog::endpoint6_key(*v6), *ifindex, 0)
                    .map_err(|e| map_error(fastprog::ENDPOINTS6_MAP, e)),
            }?;
            self.entries.insert(*ip, *ifindex);
        }
        Ok(())
    }

    /// The links `romana_send` may send out of, each with the far end's MAC it may hand packets
    /// to instead (`romana_dataplane::fastpath::handoff`).
    pub fn set_uplinks(&mut self, uplinks: &BTreeMap<u32, Option<[u8; 6]>>) -> Result<(), BpfError> {
        for gone in self.uplink_set.keys().filter(|i| !uplinks.contains_key(i)) {
            remove(&mut self.uplinks, fastprog::UPLINKS_MAP, gone)?;
        }
        for (i, far) in uplinks.iter().filter(|(i, far)| self.uplink_set.get(i) != Some(far)) {
            self.uplinks
                .insert(*i, fastprog::uplink_value(*far), 0)
                .map_err(|e| map_error(fastprog::UPLINKS_MAP, e))?;
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
    /// The links holding one of the host's addresses: where other hosts' traffic arrives.
    pub uplinks: Vec<Uplink>,
    /// Our IPv4 /32 and IPv6 /128 routes out of our veths.
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
    /// The uplinks (links holding one of `host_ips`: the host's IPv4 and IPv6 underlay addresses)
    /// and the endpoint routes (both families) the fast path may use.
    pub async fn fast_path_view(&self, host_ips: &[IpAddr]) -> Result<FastPathView, HostError> {
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
            if a.attributes
                .iter()
                .any(|x| matches!(x, AddressAttribute::Address(ip) if host_ips.contains(ip)))
            {
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
        let v4 = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let v6 = self.handle.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build()).execute();
        let mut all: Vec<_> = v4.try_collect().await.map_err(fail("list routes"))?;
        all.extend(v6.try_collect::<Vec<_>>().await.map_err(fail("list IPv6 routes"))?);
        for r in all {
            if r.header.protocol != RouteProtocol::from(ROUTE_PROTOCOL)
                || r.header.table != crate::kernel::MAIN_TABLE
            {
                continue;
            }
            let (mut dest, mut oif, mut via) = (None, None, false);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dest = Some(IpAddr::V6(*ip)),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => via = true,
                    _ => {}
                }
            }
            // Host routes only: /32, /128.
            let host_len = if dest.is_some_and(|d| d.is_ipv6()) { 128 } else { 32 };
            if let (Some(ip), Some(i), false) = (dest, oif, via)
                && r.header.destination_prefix_length == host_len
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
