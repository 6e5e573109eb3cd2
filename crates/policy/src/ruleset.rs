//! The nftables ruleset the firewall compiler produces, as data: sets with elements, chains with
//! rules. Rendering it to `nft -f` text lives here too, so the compiler never builds strings and
//! tests can interpret the same structure the kernel gets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write};
use std::net::IpAddr;
use std::sync::Arc;

use romana_model::{Cidr, Family};

use crate::model::Protocol;

/// Our table: `table inet romana`. Nothing outside it is ever touched.
pub const TABLE: &str = "romana";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    /// Single addresses (`ipv4_addr` / `ipv6_addr`).
    Addr(Family),
    /// Address . destination port (`ipv4_addr . inet_service`), for named ports.
    AddrPort(Family),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    Addr(IpAddr),
    AddrPort(IpAddr, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub ty: SetType,
    pub elements: BTreeSet<Element>,
}

impl Set {
    pub fn new(ty: SetType) -> Set {
        Set { ty, elements: BTreeSet::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    Forward,
    Input,
    Output,
    /// Destination NAT (`type nat`, the VIPs' DNAT: `vip.rs`).
    Prerouting,
    /// Source NAT (`type nat`, egress NAT: `nat.rs`).
    Postrouting,
}

impl Hook {
    /// The chain type a base chain of ours on this hook has.
    pub fn chain_type(self) -> &'static str {
        match self {
            Hook::Prerouting | Hook::Postrouting => "nat",
            Hook::Forward | Hook::Input | Hook::Output => "filter",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Forward => "forward",
            Hook::Input => "input",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
            Hook::Prerouting => "prerouting",
        })
    }
}

/// Which address of the packet a match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    Src,
    Dst,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Match {
    /// `ct state established,related`.
    Established,
    /// The address (of the set's family) is in a named set.
    InSet { dir: Dir, family: Family, set: String },
    /// The address is in `cidr` and in none of `except`.
    InNet { dir: Dir, cidr: Cidr, except: Vec<Cidr> },
    /// The address is one of this host's own (`fib daddr type local`).
    LocalAddr(Dir),
    /// `meta l4proto`.
    Proto(Protocol),
    /// Destination port in an inclusive range, of a port protocol.
    Ports { protocol: Protocol, first: u16, last: u16 },
    /// Destination address and port in a named `AddrPort` set, of a port protocol.
    DstPortIn { protocol: Protocol, family: Family, set: String },
    /// ICMP (`V4`) or ICMPv6 (`V6`) type, and code when given.
    Icmp { family: Family, icmp_type: u8, code: Option<u8> },
    /// ICMPv6 of any of these types (the ones no policy may block: `ICMPV6_ALWAYS_ALLOWED`).
    Icmpv6Types(Vec<u8>),
    /// The address (of `family`) is in none of `nets` (an anonymous interval set; the list
    /// holds no net inside another, which nft would refuse as overlapping).
    NotInNets { dir: Dir, family: Family, nets: Vec<Cidr> },
    /// `ct status dnat`: the packet's flow was DNATed (a VIP's, by `vip-dnat`).
    Dnated,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(String),
    /// Source NAT to the outgoing interface's address (nat chains only).
    Masquerade,
    /// `dnat ip to` one of the addresses (spread by `numgen random` over several), with the port
    /// rewritten when given.
    Dnat {
        to: Vec<std::net::Ipv4Addr>,
        port: Option<u16>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Line {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

/// A chain. Base chains (with a hook) are ordered; every other chain of ours holds only accepts
/// or jumps whose order does not change the outcome, which lets a change add or delete single
/// rules instead of rewriting the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub base: Option<(Hook, i32)>,
    lines: Vec<Line>,
    /// Each line's `Line::key`, computed once: planning compares keys on every pass. Shared with
    /// the table the agent keeps as applied (`Observed::of`), so the planner skips a chain whose
    /// keys are the very same object without comparing them.
    keys: Arc<Vec<String>>,
}

impl Chain {
    pub fn new(base: Option<(Hook, i32)>, lines: Vec<Line>) -> Chain {
        let keys = Arc::new(lines.iter().map(Line::key).collect());
        Chain { base, lines, keys }
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The keys as shared with an `ObservedChain` made from this chain.
    pub fn shared_keys(&self) -> &Arc<Vec<String>> {
        &self.keys
    }

    pub fn push(&mut self, line: Line) {
        let key = line.key();
        self.push_keyed(line, key);
    }

    /// Appends a line whose key the caller already has (it must be `line.key()`).
    pub fn push_keyed(&mut self, line: Line, key: String) {
        debug_assert_eq!(key, line.key());
        self.lines.push(line);
        Arc::make_mut(&mut self.keys).push(key);
    }
}

/// Sets and chains are shared (`Arc`) between the compiler's cache, the table the agent keeps as
/// applied and the next compile: a pass copies only what changed, and the planner skips a set or
/// chain that is the very same object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub sets: BTreeMap<String, Arc<Set>>,
    pub chains: BTreeMap<String, Arc<Chain>>,
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
        Protocol::Icmp => "icmp",
        Protocol::Icmpv6 => "ipv6-icmp",
    }
}

fn addr_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn dir_kw(d: Dir) -> &'static str {
    match d {
        Dir::Src => "saddr",
        Dir::Dst => "daddr",
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = |fam| if fam == Family::V4 { "ipv4_addr" } else { "ipv6_addr" };
        match self {
            SetType::Addr(fam) => write!(f, "{}", a(*fam)),
            SetType::AddrPort(fam) => write!(f, "{} . inet_service", a(*fam)),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Addr(a) => write!(f, "{a}"),
            Element::AddrPort(a, p) => write!(f, "{a} . {p}"),
        }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Established => f.write_str("ct state established,related"),
            Match::Dnated => f.write_str("ct status dnat"),
            Match::InSet { dir, family, set } => write!(f, "{} {} @{set}", addr_kw(*family), dir_kw(*dir)),
            Match::InNet { dir, cidr, except } => {
                let kw = addr_kw(cidr.family());
                write!(f, "{kw} {} {cidr}", dir_kw(*dir))?;
                if !except.is_empty() {
                    let list: Vec<String> = except.iter().map(ToString::to_string).collect();
                    write!(f, " {kw} {} != {{ {} }}", dir_kw(*dir), list.join(", "))?;
                }
                Ok(())
            }
            Match::LocalAddr(dir) => write!(f, "fib {} type local", dir_kw(*dir)),
            Match::Proto(p) => write!(f, "meta l4proto {}", proto_name(*p)),
            Match::Ports { protocol, first, last } if first == last => {
                write!(f, "{} dport {first}", proto_name(*protocol))
            }
            Match::Ports { protocol, first, last } => {
                write!(f, "{} dport {first}-{last}", proto_name(*protocol))
            }
            Match::DstPortIn { protocol, family, set } => {
                write!(
                    f,
                    "meta l4proto {} {} daddr . th dport @{set}",
                    proto_name(*protocol),
                    addr_kw(*family)
                )
            }
            Match::Icmp { family, icmp_type, code } => {
                let kw = match family {
                    Family::V4 => "icmp",
                    Family::V6 => "icmpv6",
                };
                write!(f, "{kw} type {icmp_type}")?;
                match code {
                    Some(c) => write!(f, " {kw} code {c}"),
                    None => Ok(()),
                }
            }
            Match::Icmpv6Types(types) => {
                let list: Vec<String> = types.iter().map(ToString::to_string).collect();
                write!(f, "icmpv6 type {{ {} }}", list.join(", "))
            }
            Match::NotInNets { dir, family, nets } => {
                let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
                write!(f, "{} {} != {{ {} }}", addr_kw(*family), dir_kw(*dir), list.join(", "))
            }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Masquerade => f.write_str("masquerade"),
            Verdict::Dnat { to, port } => {
                match to.as_slice() {
                    [one] => write!(f, "dnat ip to {one}")?,
                    many => {
                        let map: Vec<String> =
                            many.iter().enumerate().map(|(i, a)| format!("{i} : {a}")).collect();
                        write!(f, "dnat ip to numgen random mod {} map {{ {} }}", many.len(), map.join(", "))?
                    }
                }
                match port {
                    Some(p) => write!(f, ":{p}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Line {
    /// The rule's text without its comment.
    pub fn body(&self) -> String {
        let mut s = String::new();
        for m in &self.matches {
            let _ = write!(s, "{m} ");
        }
        let _ = write!(s, "{}", self.verdict);
        s
    }

    /// A short stable key of the rule's text; it travels as the rule's comment so that what the
    /// kernel holds can be compared with what we want without parsing nft's rule syntax back.
    pub fn key(&self) -> String {
        format!("{:016x}", fnv1a(self.body().as_bytes()))
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} comment \"{}\"", self.body(), self.key())
    }
}

/// FNV-1a, 64 bits: stable across runs and builds (std's hasher is not).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// `add set` with its elements (elements in one statement: one netlink batch entry).
pub fn set_decl(out: &mut String, name: &str, set: &Set) {
    let _ = writeln!(out, "add set inet {TABLE} {name} {{ type {}; }}", set.ty);
    elements(out, "add", name, set.elements.iter());
}

/// `add element` / `delete element` statements, in chunks so one line stays reasonable.
pub fn elements<'a>(out: &mut String, verb: &str, set: &str, elems: impl Iterator<Item = &'a Element>) {
    let all: Vec<String> = elems.map(ToString::to_string).collect();
    for chunk in all.chunks(1024) {
        let _ = writeln!(out, "{verb} element inet {TABLE} {set} {{ {} }}", chunk.join(", "));
    }
}

pub fn chain_decl(out: &mut String, name: &str, chain: &Chain) {
    match chain.base {
        Some((hook, prio)) => {
            let _ = writeln!(
                out,
                "add chain inet {TABLE} {name} {{ type {} hook {hook} priority {prio}; policy accept; }}",
                hook.chain_type()
            );
        }
        None => {
            let _ = writeln!(out, "add chain inet {TABLE} {name}");
        }
    }
}

/// `add rule`, with the line's key (`line.key()`) as its comment.
pub fn rule(out: &mut String, chain: &str, line: &Line, key: &str) {
    let _ = writeln!(out, "add rule inet {TABLE} {chain} {} comment \"{key}\"", line.body());
}

impl Ruleset {
    /// The whole table as one transaction that replaces whatever table of ours is there (the
    /// first statement makes sure there is one to delete). Atomic: no packet sees a half table.
    pub fn render_replace(&self) -> String {
        let mut out = format!("add table inet {TABLE}\ndelete table inet {TABLE}\nadd table inet {TABLE}\n");
        for (name, set) in &self.sets {
            set_decl(&mut out, name, set);
        }
        // Declare every chain first: jumps may point at chains declared later.
        for (name, chain) in &self.chains {
            chain_decl(&mut out, name, chain);
        }
        for (name, chain) in &self.chains {
            for (line, key) in chain.lines.iter().zip(chain.keys.iter()) {
                rule(&mut out, name, line, key);
            }
        }
        out
    }

    /// Rules and set elements, for the growth numbers.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.chains.values().map(|c| c.lines.len()).sum(),
            self.sets.values().map(|s| s.elements.len()).sum(),
        )
    }
}
