//! A reference interpreter of the compiled ruleset, written from nftables' documented semantics
//! (base chains of a hook in priority order, `accept` final for its base chain only, `drop`
//! final for the packet, `jump` returning when the called chain ends), and the path a packet
//! takes between hosts. The property test holds it against the policy evaluator.

use std::net::IpAddr;

use romana_model::Family;
use romana_policy::Protocol;
use romana_policy::eval::Endpoint;
use romana_policy::ruleset::{Dir, Element, Hook, Match, Ruleset, Verdict};

/// A connection's first packet as one host's firewall sees it.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// For ICMP and ICMPv6: type * 256 + code.
    pub port: u16,
    pub src_local: bool,
    pub dst_local: bool,
}

fn addr(p: &Packet, d: Dir) -> IpAddr {
    match d {
        Dir::Src => p.src,
        Dir::Dst => p.dst,
    }
}

fn matches(rs: &Ruleset, m: &Match, p: &Packet) -> bool {
    match m {
        Match::Established => false,
        // A packet of its own, never part of a translated flow.
        Match::Dnated => false,
        Match::InSet { dir, family, set } => {
            let a = addr(p, *dir);
            Family::of(a) == *family && rs.sets[set].elements.contains(&Element::Addr(a))
        }
        Match::InNet { dir, cidr, except } => {
            let a = addr(p, *dir);
            cidr.contains_addr(a) && !except.iter().any(|x| x.contains_addr(a))
        }
        Match::LocalAddr(Dir::Src) => p.src_local,
        Match::LocalAddr(Dir::Dst) => p.dst_local,
        Match::Proto(proto) => p.protocol == *proto,
        Match::Ports { protocol, first, last } => {
            p.protocol == *protocol && (*first..=*last).contains(&p.port)
        }
        Match::DstPortIn { protocol, family, set } => {
            p.protocol == *protocol
                && Family::of(p.dst) == *family
                && rs.sets[set].elements.contains(&Element::AddrPort(p.dst, p.port))
        }
        // `icmp type` carries nft's dependency `meta l4proto icmp`, `icmpv6 type` `ipv6-icmp`.
        Match::Icmp { family, icmp_type, code } => {
            let proto = if *family == Family::V4 { Protocol::Icmp } else { Protocol::Icmpv6 };
            p.protocol == proto
                && Family::of(p.dst) == *family
                && p.port >> 8 == u16::from(*icmp_type)
                && code.is_none_or(|c| p.port & 0xff == u16::from(c))
        }
        Match::Icmpv6Types(types) => {
            p.protocol == Protocol::Icmpv6 && p.dst.is_ipv6() && types.contains(&((p.port >> 8) as u8))
        }
        Match::NotInNets { dir, family, nets } => {
            let a = addr(p, *dir);
            Family::of(a) == *family && !nets.iter().any(|n| n.contains_addr(a))
        }
    }
}

/// `Some(verdict)` when the chain (or one it jumped to) decided, `None` when it ran out.
fn run(rs: &Ruleset, chain: &str, p: &Packet, depth: usize) -> Option<bool> {
    assert!(depth < 16, "jump loop at {chain}");
    for line in rs.chains[chain].lines() {
        if !line.matches.iter().all(|m| matches(rs, m, p)) {
            continue;
        }
        match &line.verdict {
            Verdict::Accept => return Some(true),
            Verdict::Drop => return Some(false),
            // Address translation, not a filter: the packet passes (nat chains only).
            Verdict::Masquerade => return Some(true),
            // Only the VIPs' nat chain rewrites; as a filter it lets the packet on.
            Verdict::Dnat { .. } => return Some(true),
            Verdict::Jump(c) => {
                if let Some(v) = run(rs, c, p, depth + 1) {
                    return Some(v);
                }
            }
        }
    }
    None
}

/// Whether a hook of this ruleset lets the packet through (every base chain policy is accept).
pub fn hook_passes(rs: &Ruleset, hook: Hook, p: &Packet) -> bool {
    let mut bases: Vec<(&String, i32)> = rs
        .chains
        .iter()
        .filter_map(|(n, c)| c.base.filter(|(h, _)| *h == hook).map(|(_, prio)| (n, prio)))
        .collect();
    bases.sort_by_key(|(_, prio)| *prio);
    bases.into_iter().all(|(n, _)| run(rs, n, p, 0) != Some(false))
}

/// Whether `src` reaches `dst` through the firewalls of the hosts on the way: the source's host
/// (output for the host itself, input when the destination is that host, forward otherwise),
/// then the destination's host when it is another one. `ruleset(host)` gives a host's table.
pub fn path_allows(
    ruleset: &dyn Fn(&str) -> Ruleset,
    src: &Endpoint,
    dst: &Endpoint,
    protocol: Protocol,
    port: u16,
) -> bool {
    let (s, d) = (src.ip.expect("source address"), dst.ip.expect("destination address"));
    let at = |host: &str| Packet {
        src: s,
        dst: d,
        protocol,
        port,
        src_local: src.is_host && src.host == host,
        dst_local: dst.is_host && dst.host == host,
    };
    let first = ruleset(&src.host);
    let p = at(&src.host);
    let hook = if src.is_host {
        Hook::Output
    } else if dst.is_host && dst.host == src.host {
        Hook::Input
    } else {
        Hook::Forward
    };
    if !hook_passes(&first, hook, &p) {
        return false;
    }
    if dst.host == src.host {
        return true;
    }
    let second = ruleset(&dst.host);
    let hook = if dst.is_host { Hook::Input } else { Hook::Forward };
    hook_passes(&second, hook, &at(&dst.host))
}
