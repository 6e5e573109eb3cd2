//! BIRD 2 configuration text from the fabric, pure: a host's include file (its aggregates
//! announced to its group's routers, imports checked against the fabric view) and a router's
//! configuration for one prefix group (accept each member's aggregates, re-announce the group's
//! aggregate upward, pass the rest down). Every name it defines starts with `romana_`, so the
//! host file can sit beside an operator's own configuration.
//!
//! IPv6 rides the same sessions (multiprotocol BGP, RFC 4760): every session is over IPv4 and
//! carries an `ipv6` channel beside its `ipv4` one when the fabric has an IPv6 pod network, with
//! filters and statics of its own (`romana_in6_*`, `romana_aggregates6`, `romana_kernel6`: a BIRD
//! prefix set holds one family). A host announces its IPv6 aggregates with its IPv6 underlay
//! address as the next hop (`next hop address`); a host without one has no `ipv6` channel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use romana_model::{Cidr, Family};

use crate::FabricError;
use crate::reflect::Reflection;
use crate::view::Fabric;

/// What the rendering may add beside sessions and filters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// BFD on every session, with a `romana_bfd` protocol (100 ms x 3: a dead peer is seen in
    /// about 0.3 s instead of the BGP hold time).
    pub bfd: bool,
    /// Hosts: a `romana_kernel` protocol exporting what the fabric sends (for hosts without a
    /// default route toward their routers). Routers always have one.
    pub kernel: bool,
}

/// One BGP session, with what goes each way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    name: String,
    description: String,
    local: IpAddr,
    local_asn: u32,
    neighbor: IpAddr,
    asn: u32,
    /// Prefixes accepted from the peer exactly; the rest inside a pod network is refused, logged.
    accept: BTreeSet<Cidr>,
    /// Whether routes outside every pod network are accepted (from upstream) or refused.
    foreign: bool,
    export: Export,
    /// The router side of a session toward a member speaking iBGP (same AS).
    next_hop_self: bool,
    /// VIP /32s accepted from the peer (any inside these ranges), and passed on upward.
    vips: Vec<Cidr>,
    /// A host's VIPs: announced as they are, or (standby) with a longer path.
    host_vips: Vec<crate::vip::HostVip>,
    /// The peer is our route reflector client, in this cluster (`reflect.rs`).
    rr_cluster: Option<IpAddr>,
    /// A reflecting host's session toward a router: also pass on what its clients announced.
    reflect: bool,
    /// The session's `ipv6` channel, when it carries one.
    ipv6: Option<Ipv6Channel>,
}

/// An `ipv6` channel on an IPv4 session (multiprotocol BGP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ipv6Channel {
    /// The IPv6 next hop of what this side announces (a host's IPv6 underlay address). `None`
    /// on routers: BIRD takes the IPv6 address of the interface toward the peer, as it does for
    /// any direct session.
    next_hop: Option<IpAddr>,
}

/// The prefix of a reflecting host's sessions with its clients (`romana_c1`, ...).
const CLIENT: &str = "c";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Export {
    /// Exactly these prefixes of `romana_aggregates`.
    Aggregates(BTreeSet<Cidr>),
    /// What the named protocols learned.
    LearnedFrom(Vec<String>),
    /// Everything learned over BGP.
    AllLearned,
}

fn of(family: Family, set: &BTreeSet<Cidr>) -> Vec<Cidr> {
    set.iter().filter(|c| c.family() == family).copied().collect()
}

/// The suffix of a family's BIRD names: none for IPv4 (the names IPv4-only fabrics always had),
/// `6` for IPv6.
fn suffix(family: Family) -> &'static str {
    match family {
        Family::V4 => "",
        Family::V6 => "6",
    }
}

fn prefix_set(list: &[Cidr], plus: bool) -> String {
    let items: Vec<String> = list.iter().map(|c| format!("{c}{}", if plus { "+" } else { "" })).collect();
    format!("[ {} ]", items.join(", "))
}

fn check_v4(what: &str, addr: IpAddr) -> Result<(), FabricError> {
    match addr {
        IpAddr::V4(_) => Ok(()),
        IpAddr::V6(_) => Err(FabricError::Ipv6Session { what: what.to_owned(), addr }),
    }
}

/// `without_v6`: why IPv6 pod networks are not announced here, when they are not.
fn header(out: &mut String, title: &str, f: &Fabric, without_v6: Option<&str>) {
    let _ = writeln!(out, "# {title}");
    let _ =
        writeln!(out, "# Rendered by Romana from the fabric view; do not edit: it is rewritten as a whole.");
    for n in f.networks.iter().filter(|n| n.family() == Family::V6) {
        match without_v6 {
            Some(why) => {
                let _ = writeln!(out, "# Pod network {n} is IPv6: not announced ({why}).");
            }
            None => {
                let _ =
                    writeln!(out, "# Pod network {n} is IPv6: in the ipv6 channels of the IPv4 sessions.");
            }
        }
    }
}

fn pod_nets(f: &Fabric, family: Family) -> Vec<Cidr> {
    of(family, &f.networks.iter().copied().collect())
}

fn has_v6(f: &Fabric) -> bool {
    f.networks.iter().any(|n| n.family() == Family::V6)
}

fn render_filters(out: &mut String, s: &Session, pods: &[Cidr], family: Family) {
    let sx = suffix(family);
    let _ = writeln!(out, "filter romana_in{sx}_{} {{", s.name);
    let accept = of(family, &s.accept);
    if !accept.is_empty() {
        let _ = writeln!(out, "\tif net ~ {} then accept;", prefix_set(&accept, false));
    }
    if family == Family::V4 {
        crate::vip::accept_line(out, &s.vips);
    }
    let why = "inside a pod network but not announced by this peer in the fabric view";
    if !pods.is_empty() {
        let _ = writeln!(out, "\tif net ~ {} then {{", prefix_set(pods, true));
        let _ = writeln!(
            out,
            "\t\tprint \"romana: refused \", net, \" from {}: {why}\";",
            bird_text(&s.description)
        );
        let _ = writeln!(out, "\t\treject;");
        let _ = writeln!(out, "\t}}");
    }
    if s.foreign {
        let _ = writeln!(out, "\taccept;");
    } else {
        let _ = writeln!(
            out,
            "\tprint \"romana: refused \", net, \" from {}: not in the fabric view\";",
            bird_text(&s.description)
        );
        let _ = writeln!(out, "\treject;");
    }
    let _ = writeln!(out, "}}");
    let _ = writeln!(out, "filter romana_out{sx}_{} {{", s.name);
    match &s.export {
        Export::Aggregates(set) => {
            if family == Family::V4 {
                crate::vip::export_lines(out, &s.vips, &s.host_vips, s.local_asn == s.asn, s.local_asn);
            }
            if s.reflect {
                // Reflected: what the clients announced (their import filters checked it).
                let _ = writeln!(out, "\tif source = RTS_BGP && proto ~ \"romana_{CLIENT}*\" then accept;");
            }
            let list = of(family, set);
            if !list.is_empty() {
                let _ = writeln!(
                    out,
                    "\tif proto = \"romana_aggregates{sx}\" && net ~ {} then accept;",
                    prefix_set(&list, false)
                );
            }
        }
        Export::LearnedFrom(protos) => {
            if !protos.is_empty() {
                let cond: Vec<String> = protos.iter().map(|p| format!("proto = \"{p}\"")).collect();
                let _ = writeln!(out, "\tif {} then accept;", cond.join(" || "));
            }
        }
        Export::AllLearned => {
            let _ = writeln!(out, "\tif source = RTS_BGP then accept;");
        }
    }
    let _ = writeln!(out, "\treject;");
    let _ = writeln!(out, "}}");
}

fn render_session(out: &mut String, s: &Session, o: Options) {
    let _ = writeln!(out, "protocol bgp romana_{} {{", s.name);
    let _ = writeln!(out, "\tdescription \"{}\";", bird_text(&s.description));
    let _ = writeln!(out, "\tlocal {} as {};", s.local, s.local_asn);
    let _ = writeln!(out, "\tneighbor {} as {};", s.neighbor, s.asn);
    if s.local_asn == s.asn {
        // iBGP to a peer on the same segment: its next hop is the peer itself.
        let _ = writeln!(out, "\tdirect;");
    }
    if let Some(id) = s.rr_cluster {
        let _ = writeln!(out, "\trr client;");
        let _ = writeln!(out, "\trr cluster id {id};");
    }
    if o.bfd {
        let _ = writeln!(out, "\tbfd on;");
        // After BFD declares the peer dead, retry in 1 s (doubling to 10 s) rather than BIRD's
        // 60 s (doubling to 300 s): a peer back from the dead is taken back at once.
        let _ = writeln!(out, "\terror wait time 1, 10;");
        let _ = writeln!(out, "\tconnect retry time 5;");
    }
    let _ = write!(out, "\tipv4 {{ import filter romana_in_{}; export filter romana_out_{};", s.name, s.name);
    if s.next_hop_self {
        let _ = write!(out, " next hop self;");
    }
    let _ = writeln!(out, " }};");
    if let Some(c) = s.ipv6 {
        let _ = write!(
            out,
            "\tipv6 {{ import filter romana_in6_{}; export filter romana_out6_{};",
            s.name, s.name
        );
        if s.next_hop_self {
            let _ = write!(out, " next hop self;");
        }
        if let Some(a) = c.next_hop {
            let _ = write!(out, " next hop address {a};");
        }
        let _ = writeln!(out, " }};");
    }
    let _ = writeln!(out, "}}");
}

/// `kernel_from`: the kernel protocol exports only what these sessions (a name pattern) learned;
/// all BGP routes when `None`.
/// `families`: IPv4, and IPv6 when the sessions carry it; each has its own static and kernel
/// protocol (a BIRD protocol of these kinds has one channel).
fn render_common(
    out: &mut String,
    aggregates: &BTreeSet<Cidr>,
    families: &[Family],
    kernel: bool,
    kernel_from: Option<&str>,
    o: Options,
) {
    for &family in families {
        let (sx, channel) = (suffix(family), if family == Family::V4 { "ipv4" } else { "ipv6" });
        let _ = writeln!(out);
        // Blackholes: the kernel drops what no more specific route (an endpoint's /32) takes,
        // instead of bouncing it back up the default route.
        let _ = writeln!(out, "protocol static romana_aggregates{sx} {{");
        let _ = writeln!(out, "\t{channel};");
        for a in of(family, aggregates) {
            let _ = writeln!(out, "\troute {a} blackhole;");
        }
        let _ = writeln!(out, "}}");
        if kernel {
            let _ = writeln!(out);
            let _ = writeln!(out, "protocol kernel romana_kernel{sx} {{");
            let from = kernel_from.map(|p| format!(" && proto ~ \"{p}\"")).unwrap_or_default();
            let _ = writeln!(
                out,
                "\t{channel} {{ import none; export filter {{ if source = RTS_BGP{from} then accept; reject; }}; }};"
            );
            // Equal routes from several peers (two spines) become one multipath route: ECMP.
            let _ = writeln!(out, "\tmerge paths on;");
            let _ = writeln!(out, "}}");
        }
    }
    if o.bfd {
        let _ = writeln!(out);
        let _ = writeln!(out, "protocol bfd romana_bfd {{");
        let _ = writeln!(
            out,
            "\tinterface \"*\" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }};"
        );
        let _ = writeln!(out, "}}");
    }
}

/// Host `host`'s include file: its aggregates, one session per router of each of its leaves that
/// routes with BGP (merged across networks), imports limited to what the fabric view says each
/// router passes down.
pub fn render_host(f: &Fabric, host: &str, o: Options) -> Result<String, FabricError> {
    render_host_with(f, host, o, &[])
}

/// `render_host` with the VIPs this host serves (or stands by for) announced as /32s.
pub fn render_host_with(
    f: &Fabric,
    host: &str,
    o: Options,
    vips: &[crate::vip::HostVip],
) -> Result<String, FabricError> {
    let leaves = f.leaves_of(host);
    if leaves.is_empty() {
        return Err(FabricError::UnknownHost(host.to_owned()));
    }
    let mut sessions: BTreeMap<(IpAddr, u32, u32), Session> = BTreeMap::new();
    let mut clients: Vec<Session> = Vec::new();
    let host_v6 = f.host_ipv6.get(host).copied();
    let ipv6 = host_v6.filter(|_| has_v6(f)).map(|a| Ipv6Channel { next_hop: Some(a) });
    let mut aggregates = BTreeSet::new();
    for g in leaves {
        let group = &f.groups[g];
        let Some(bgp) = &group.bgp else { continue };
        let local = group.hosts.iter().find(|(h, _)| h == host).map(|(_, a)| *a).expect("a leaf of the host");
        check_v4(&format!("host {host}"), local)?;
        let mine = f.from_member(g, host);
        aggregates.extend(mine.iter().copied());
        let upstream = f.from_upstream(g);
        let reflection = crate::reflect::reflection(f, g)?;
        // A client of reflecting hosts peers with them instead of the routers (same AS).
        let (peers, what) = match &reflection {
            Reflection::Hosts(r) if !reflection.is_reflector(host) => {
                (r.iter().map(|(_, a)| *a).collect::<Vec<_>>(), "reflector")
            }
            _ => (bgp.routers.clone(), "router"),
        };
        for r in &peers {
            check_v4(&format!("{what} of {}", group.path), *r)?;
            let n = sessions.len() + 1;
            let s = sessions.entry((*r, bgp.asn, bgp.host_asn)).or_insert_with(|| Session {
                name: format!("peer{n}"),
                description: format!("{what} {r} of {}", group.path),
                local,
                local_asn: bgp.host_asn,
                neighbor: *r,
                asn: bgp.asn,
                accept: BTreeSet::new(),
                foreign: true,
                export: Export::Aggregates(BTreeSet::new()),
                next_hop_self: false,
                vips: Vec::new(),
                host_vips: vips.to_vec(),
                rr_cluster: None,
                reflect: false,
                ipv6,
            });
            s.accept.extend(upstream.iter().copied());
            if let Export::Aggregates(a) = &mut s.export {
                a.extend(mine.iter().copied());
            }
        }
        if reflection.is_reflector(host) {
            // This host reflects for the group's other hosts: each announces its aggregates (and
            // VIPs) to it alone, and learns from it what came from the routers.
            for (c, addr) in group.hosts.iter().filter(|(h, _)| !reflection.is_reflector(h)) {
                check_v4(&format!("host {c}"), *addr)?;
                let n = clients.len() + 1;
                clients.push(Session {
                    name: format!("{CLIENT}{n}"),
                    description: format!("client {c} {addr}"),
                    local,
                    local_asn: bgp.host_asn,
                    neighbor: *addr,
                    asn: bgp.host_asn,
                    accept: f.from_member(g, c),
                    foreign: false,
                    export: Export::LearnedFrom(Vec::new()),
                    next_hop_self: false,
                    vips: f.vip_ranges.clone(),
                    host_vips: Vec::new(),
                    rr_cluster: Some(local),
                    reflect: false,
                    ipv6,
                });
            }
        }
    }
    if !clients.is_empty() {
        let peers: Vec<String> = sessions.values().map(|s| format!("romana_{}", s.name)).collect();
        for c in &mut clients {
            c.export = Export::LearnedFrom(peers.clone());
        }
        for s in sessions.values_mut() {
            s.reflect = true;
            s.vips = f.vip_ranges.clone();
        }
    }
    let mut out = String::new();
    let without_v6 = ipv6.is_none().then_some("this host has no IPv6 underlay address");
    header(&mut out, &format!("Romana BGP for host {host}: include it from bird.conf."), f, without_v6);
    if sessions.is_empty() {
        let _ = writeln!(out, "# Host {host} sits in no group that routes with bgp: nothing to announce.");
        return Ok(out);
    }
    // A reflector's kernel takes only what its routers sent, not its clients' aggregates (the
    // route manager's host routes reach those).
    let kernel_from = (!clients.is_empty()).then_some("romana_peer*");
    let families: &[Family] = if ipv6.is_some() { &[Family::V4, Family::V6] } else { &[Family::V4] };
    render_common(&mut out, &aggregates, families, o.kernel, kernel_from, o);
    crate::vip::statics(&mut out, vips);
    for s in sessions.values().chain(&clients) {
        let _ = writeln!(out);
        for &family in families {
            render_filters(&mut out, s, &pod_nets(f, family), family);
        }
        render_session(&mut out, s, o);
    }
    Ok(out)
}

/// The configuration of one router of group `path` (`router`: which of the group's routers;
/// needed only when it has several): a session with each member (host of a leaf, child group's
/// router otherwise) accepting exactly its aggregates, a session with each parent router
/// announcing the group's aggregate, the kernel protocol with multipath.
pub fn render_router(
    f: &Fabric,
    path: &str,
    router: Option<IpAddr>,
    o: Options,
) -> Result<String, FabricError> {
    let found = f.groups_at(path);
    let bgp_groups: Vec<usize> = found.iter().copied().filter(|g| f.groups[*g].bgp.is_some()).collect();
    let Some(&first) = bgp_groups.first() else {
        return Err(if found.is_empty() {
            FabricError::UnknownGroup(path.to_owned())
        } else {
            FabricError::NotBgp(path.to_owned())
        });
    };
    let bgp = f.groups[first].bgp.clone().expect("filtered on bgp");
    let k = match router {
        Some(r) => bgp.routers.iter().position(|x| *x == r).ok_or_else(|| FabricError::NotARouter {
            group: path.to_owned(),
            router: r,
            routers: bgp.routers.clone(),
        })?,
        None if bgp.routers.len() == 1 => 0,
        None => {
            return Err(FabricError::WhichRouter { group: path.to_owned(), routers: bgp.routers.clone() });
        }
    };
    let me = bgp.routers[k];
    check_v4(&format!("router of {path}"), me)?;
    let ipv6 = has_v6(f).then_some(Ipv6Channel { next_hop: None });
    let families: &[Family] = if ipv6.is_some() { &[Family::V4, Family::V6] } else { &[Family::V4] };
    let mut out = String::new();
    header(
        &mut out,
        &format!("Romana BGP for router {me} of group {} (AS {}).", f.groups[first].path, bgp.asn),
        f,
        None,
    );
    let _ = writeln!(out, "router id {me};");
    let _ = writeln!(out, "protocol device romana_device {{ }}");
    let mut aggregates = BTreeSet::new();
    let mut up: Vec<Session> = Vec::new();
    let mut members: BTreeMap<(IpAddr, u32), Session> = BTreeMap::new();
    for &g in &bgp_groups {
        let group = &f.groups[g];
        let gb = group.bgp.as_ref().expect("filtered on bgp");
        let parent = group.parent.and_then(|p| f.groups[p].bgp.as_ref().map(|b| (p, b)));
        if let Some((p, pb)) = parent {
            aggregates.extend(group.announce);
            let upstream = f.from_upstream(g);
            for (i, (local, neighbor)) in gb.uplinks.iter().zip(&pb.routers).enumerate() {
                check_v4(&format!("uplink of {path}"), *local)?;
                check_v4(&format!("router of {}", f.groups[p].path), *neighbor)?;
                let name = format!("up{}", i + 1);
                match up.iter_mut().find(|s| s.name == name) {
                    Some(s) => s.accept.extend(upstream.iter().copied()),
                    None => up.push(Session {
                        name,
                        description: format!("router {neighbor} of {}", f.groups[p].path),
                        local: *local,
                        local_asn: gb.asn,
                        neighbor: *neighbor,
                        asn: pb.asn,
                        accept: upstream.clone(),
                        foreign: true,
                        export: Export::Aggregates(BTreeSet::new()),
                        next_hop_self: false,
                        vips: f.vip_ranges.clone(),
                        host_vips: Vec::new(),
                        rr_cluster: None,
                        reflect: false,
                        ipv6,
                    }),
                }
            }
        }
        let mut add_member =
            |neighbor: IpAddr, asn: u32, what: String, accept: BTreeSet<Cidr>, rr_cluster: Option<IpAddr>| {
                let n = members.len() + 1;
                let s = members.entry((neighbor, asn)).or_insert_with(|| Session {
                    name: format!("m{n}"),
                    description: what,
                    local: me,
                    local_asn: gb.asn,
                    neighbor,
                    asn,
                    accept: BTreeSet::new(),
                    foreign: false,
                    export: Export::AllLearned,
                    next_hop_self: asn == gb.asn,
                    vips: f.vip_ranges.clone(),
                    host_vips: Vec::new(),
                    rr_cluster,
                    reflect: false,
                    ipv6,
                });
                s.accept.extend(accept);
            };
        if group.hosts.is_empty() {
            for c in f.children(g) {
                let Some(cb) = &f.groups[c].bgp else { continue };
                let Some(neighbor) = cb.uplinks.get(k) else { continue };
                check_v4(&format!("uplink of {}", f.groups[c].path), *neighbor)?;
                let accept = f.from_member(g, &f.groups[c].path);
                add_member(
                    *neighbor,
                    cb.asn,
                    format!("group {} router {neighbor}", f.groups[c].path),
                    accept,
                    None,
                );
            }
        } else {
            match crate::reflect::reflection(f, g)? {
                // The router peers with the reflecting hosts only, accepting from each every
                // host's aggregates (what its clients announced, reflected, and its own).
                Reflection::Hosts(reflectors) => {
                    let all: BTreeSet<Cidr> =
                        group.hosts.iter().flat_map(|(h, _)| f.from_member(g, h)).collect();
                    for (h, addr) in reflectors {
                        check_v4(&format!("host {h}"), addr)?;
                        add_member(addr, gb.host_asn, format!("reflector {h} {addr}"), all.clone(), None);
                    }
                }
                reflection => {
                    let rr = matches!(&reflection, Reflection::Routers(r) if r.contains(&me)).then_some(me);
                    for (h, addr) in &group.hosts {
                        check_v4(&format!("host {h}"), *addr)?;
                        add_member(*addr, gb.host_asn, format!("host {h} {addr}"), f.from_member(g, h), rr);
                    }
                }
            }
        }
    }
    // A leaf's hosts reach each other directly (the route manager's host routes): they get only
    // what came from above. Above leaves, members also get each other's aggregates.
    if bgp_groups.iter().any(|g| !f.groups[*g].hosts.is_empty()) {
        let names: Vec<String> = up.iter().map(|s| format!("romana_{}", s.name)).collect();
        for s in members.values_mut() {
            s.export = Export::LearnedFrom(names.clone());
        }
    }
    for s in &mut up {
        s.export = Export::Aggregates(aggregates.clone());
    }
    render_common(&mut out, &aggregates, families, true, None, o);
    for s in up.iter().chain(members.values()) {
        let _ = writeln!(out);
        for &family in families {
            render_filters(&mut out, s, &pod_nets(f, family), family);
        }
        render_session(&mut out, s, o);
    }
    Ok(out)
}

/// `text` as the inside of a BIRD string: group names come from the topology and may hold
/// quotes, semicolons or braces (`GroupName` allows them), which would end the string and inject
/// configuration; anything but letters, digits and ` ._:/-` becomes `_`.
fn bird_text(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || " ._:/-".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::bird_text;

    #[test]
    fn a_name_cannot_end_a_bird_string() {
        for (name, want) in [
            ("/rack-1", "/rack-1"),
            ("rack\"; protocol static x { }", "rack__ protocol static x _ _"),
            ("a\\b\nc", "a_b_c"),
        ] {
            assert_eq!(bird_text(name), want, "{name:?}");
        }
    }
}
