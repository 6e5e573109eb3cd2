//! The delivery fast path's kernel side: a tcx ingress program on the host's uplink that hands an
//! IPv4 packet for a local endpoint straight into the endpoint's namespace (`bpf_redirect_peer`
//! into the veth's pod end), so the receiving host skips `ip_rcv`, the forward path and one veth
//! crossing. Everything else (other hosts' traffic, the host's own, IPv6, TTL 1, IP options, an
//! address not in the map) continues to the next program and the kernel's routing untouched.
//!
//! The program decrements TTL like a router would and fixes the header checksum. It is named
//! `romana_deliver`; only programs of that name are replaced or detached, and it returns "next"
//! for what it does not handle, so programs of others on the same device keep running.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;

use futures_util::TryStreamExt;
use romana_dataplane::fastpath::{Deliveries, EndpointRoute, MapDiff};
use romana_dataplane::{LinkName, ROUTE_PROTOCOL};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};

use crate::bpf::{self, Asm, BpfError, Cond, Size};
use crate::kernel::{HostError, Kernel};

/// The program's name: the mark by which our attachments are found.
pub const PROGRAM_NAME: &str = "romana_deliver";
/// More local endpoints than a host has: the map's bound (entries are allocated as added).
const MAX_ENTRIES: u32 = 65_536;

// Kernel helpers (`enum bpf_func_id`).
const MAP_LOOKUP_ELEM: i32 = 1;
const L3_CSUM_REPLACE: i32 = 10;
const REDIRECT_PEER: i32 = 155;
// `struct __sk_buff` fields.
const SKB_PKT_TYPE: i16 = 4;
const SKB_PROTOCOL: i16 = 16;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
// tcx verdicts: go on to the next program (and then the stack); drop.
const TCX_NEXT: i32 = -1;
const TC_ACT_SHOT: i32 = 2;
/// `htons(ETH_P_IP)` as the 32-bit `protocol` field reads on a little-endian machine.
const ETH_P_IP_BE: i32 = 0x0008;
// Offsets in the frame: Ethernet header, then IPv4.
const IP: i16 = 14;
const IP_TTL: i16 = IP + 8;
const IP_CSUM: i32 = (IP + 10) as i32;
const IP_DADDR: i16 = IP + 16;
const IP_END: i32 = (IP + 20) as i32;

/// The program, for `map`. Registers: r6 the packet's context, r7/r8 its data and end, r9 the
/// target link.
fn program(map: &OwnedFd) -> Vec<u64> {
    let mut a = Asm::default();
    a.mov(6, 1);
    // Only frames addressed to this host (not seen promiscuously), IPv4.
    a.load(Size::W, 2, 6, SKB_PKT_TYPE);
    a.jump_imm(Cond::Ne, 2, 0, "next");
    a.load(Size::W, 2, 6, SKB_PROTOCOL);
    a.jump_imm(Cond::Ne, 2, ETH_P_IP_BE, "next");
    a.load(Size::W, 7, 6, SKB_DATA);
    a.load(Size::W, 8, 6, SKB_DATA_END);
    a.mov(2, 7);
    a.add_imm(2, IP_END);
    a.jump_reg(Cond::Gt, 2, 8, "next");
    // Version 4 without options; TTL left to forward (the kernel answers TTL 1 with ICMP).
    a.load(Size::B, 2, 7, IP);
    a.jump_imm(Cond::Ne, 2, 0x45, "next");
    a.load(Size::B, 2, 7, IP_TTL);
    a.jump_imm(Cond::Le, 2, 1, "next");
    // Look the destination up.
    a.load(Size::W, 2, 7, IP_DADDR);
    a.store(Size::W, 10, -4, 2);
    a.load_map(1, map);
    a.mov(2, 10);
    a.add_imm(2, -4);
    a.call(MAP_LOOKUP_ELEM);
    a.jump_imm(Cond::Eq, 0, 0, "next");
    a.load(Size::W, 9, 0, 0);
    // TTL - 1 and the checksum with it: TTL is the low byte of the 16-bit word it shares with
    // the protocol (as loaded little-endian), and it is at least 2, so no borrow.
    a.load(Size::H, 3, 7, IP_TTL);
    a.mov(4, 3);
    a.add_imm(4, -1);
    a.store(Size::H, 7, IP_TTL, 4);
    a.mov(1, 6);
    a.mov_imm(2, IP_CSUM);
    a.mov_imm(5, 2);
    a.call(L3_CSUM_REPLACE);
    a.jump_imm(Cond::Ne, 0, 0, "drop");
    // Into the pod end of the endpoint's veth.
    a.mov(1, 9);
    a.mov_imm(2, 0);
    a.call(REDIRECT_PEER);
    a.exit();
    a.label("next");
    a.mov_imm(0, TCX_NEXT);
    a.exit();
    // Only after the TTL was changed and its checksum could not be: the packet is corrupt.
    a.label("drop");
    a.mov_imm(0, TC_ACT_SHOT);
    a.exit();
    a.finish()
}

/// A loaded program and its map, with the map's content as last written.
#[derive(Debug)]
pub struct FastPath {
    map: OwnedFd,
    prog: OwnedFd,
    prog_id: u32,
    entries: Deliveries,
}

impl FastPath {
    /// Loads an empty map and the program (not attached anywhere yet). Fails where the kernel has
    /// no BPF, no `bpf_redirect_peer` (before 5.10), or the caller lacks `CAP_BPF`.
    pub fn load() -> Result<FastPath, BpfError> {
        let map = bpf::map_create("romana_deliver", 4, 4, MAX_ENTRIES)?;
        let prog = bpf::prog_load(PROGRAM_NAME, &program(&map))?;
        let (prog_id, _) = bpf::prog_info(&prog)?;
        Ok(FastPath { map, prog, prog_id, entries: Deliveries::new() })
    }

    /// The map's content as last written.
    pub fn entries(&self) -> &Deliveries {
        &self.entries
    }

    /// Applies a diff to the map: deletions first, so that an address never points anywhere it
    /// should not, even for a moment.
    pub fn apply(&mut self, d: &MapDiff) -> Result<(), BpfError> {
        for ip in &d.delete {
            bpf::map_delete(&self.map, &ip.octets())?;
            self.entries.remove(ip);
        }
        for (ip, ifindex) in &d.put {
            bpf::map_update(&self.map, &ip.octets(), &ifindex.to_ne_bytes())?;
            self.entries.insert(*ip, *ifindex);
        }
        Ok(())
    }

    /// Makes this program the one `romana_deliver` at `ifindex`'s tcx ingress (in the calling
    /// thread's namespace): replaces an older one in place (a restarted agent's: no packet goes
    /// without), removes duplicates, leaves everyone else's programs alone. Returns whether
    /// anything changed.
    pub fn attach(&self, ifindex: u32) -> Result<bool, BpfError> {
        let ours = marked_programs(ifindex)?;
        let present = ours.iter().any(|(id, _)| *id == self.prog_id);
        if present && ours.len() == 1 {
            return Ok(false);
        }
        let mut others = ours.into_iter().filter(|(id, _)| *id != self.prog_id);
        if !present {
            match others.next() {
                Some((_, old)) => bpf::tcx_attach(ifindex, &self.prog, Some(&old))?,
                None => bpf::tcx_attach(ifindex, &self.prog, None)?,
            }
        }
        for (_, old) in others {
            bpf::tcx_detach(ifindex, &old)?;
        }
        Ok(true)
    }
}

/// Our programs (by name) at `ifindex`'s tcx ingress.
fn marked_programs(ifindex: u32) -> Result<Vec<(u32, OwnedFd)>, BpfError> {
    let mut out = vec![];
    for id in bpf::tcx_ingress_programs(ifindex)? {
        // A program detached between the query and here is simply gone.
        let Ok(fd) = bpf::prog_by_id(id) else { continue };
        if bpf::prog_info(&fd)?.1 == PROGRAM_NAME {
            out.push((id, fd));
        }
    }
    Ok(out)
}

/// Removes every `romana_deliver` from `ifindex`'s tcx ingress (the agent run with the fast path
/// off); returns how many.
pub fn detach_marked(ifindex: u32) -> Result<usize, BpfError> {
    let ours = marked_programs(ifindex)?;
    for (_, fd) in &ours {
        bpf::tcx_detach(ifindex, fd)?;
    }
    Ok(ours.len())
}

/// What the fast path is made from, observed in the calling thread's namespace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FastPathView {
    /// The links holding the host's address: where other hosts' traffic arrives.
    pub uplinks: Vec<(String, u32)>,
    /// Our IPv4 /32 routes out of our veths.
    pub routes: Vec<EndpointRoute>,
}

impl Kernel {
    /// The uplinks (links holding `host_ip`) and the endpoint routes the fast path may use.
    pub async fn fast_path_view(&self, host_ip: IpAddr) -> Result<FastPathView, HostError> {
        let fail = |step: &str| {
            let step = step.to_owned();
            move |source| HostError::Netlink { step, source }
        };
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        let mut veths: BTreeMap<u32, LinkName> = BTreeMap::new();
        for m in self.links().await? {
            let mut name = None;
            let mut veth = false;
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::LinkInfo(infos) => {
                        veth = infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)))
                    }
                    _ => {}
                }
            }
            let Some(name) = name else { continue };
            if veth && let Ok(l) = LinkName::new(&name) {
                veths.insert(m.header.index, l);
            }
            names.insert(m.header.index, name);
        }
        let mut uplinks = BTreeSet::new();
        let addrs: Vec<_> =
            self.handle.address().get().execute().try_collect().await.map_err(fail("list addresses"))?;
        for a in addrs {
            if a.attributes.iter().any(|x| matches!(x, AddressAttribute::Address(ip) if *ip == host_ip)) {
                uplinks.insert(a.header.index);
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
        Ok(FastPathView {
            uplinks: uplinks.into_iter().filter_map(|i| names.get(&i).map(|n| (n.clone(), i))).collect(),
            routes,
        })
    }
}

/// What in the calling thread's namespace would miss the packets the fast path delivers (see
/// `romana_dataplane::fastpath::foreign_hooks`): other nftables chains on the bypassed hooks,
/// tables of legacy iptables (their rules cannot be read here, so any counts), IPVS virtual
/// services. Empty: delivering past the forwarding path changes nothing but its cost.
pub fn fast_path_blockers() -> Vec<String> {
    let mut out = match crate::nft::list_chains() {
        Ok(listing) => romana_dataplane::fastpath::foreign_hooks(&listing),
        Err(e) => vec![format!("cannot list nftables chains: {e}")],
    };
    // /proc/thread-self/net is this thread's namespace (a setns'd thread's, not the process's).
    let read = |f: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).unwrap_or_default();
    let legacy: Vec<String> = read("ip_tables_names").lines().map(str::to_owned).collect();
    if !legacy.is_empty() {
        out.push(format!("legacy iptables tables {}", legacy.join(", ")));
    }
    // Three header lines, then one line per virtual service (and its real servers, indented).
    if read("ip_vs").lines().skip(3).any(|l| !l.starts_with(' ')) {
        out.push("IPVS virtual services".to_owned());
    }
    out
}

/// The names of the programs at `ifindex`'s tcx ingress (in the calling thread's namespace), in
/// the order they run: what an operator or a test sees there.
pub fn tcx_program_names(ifindex: u32) -> Result<Vec<String>, BpfError> {
    let mut out = vec![];
    for id in bpf::tcx_ingress_programs(ifindex)? {
        let Ok(fd) = bpf::prog_by_id(id) else { continue };
        out.push(bpf::prog_info(&fd)?.1);
    }
    Ok(out)
}
