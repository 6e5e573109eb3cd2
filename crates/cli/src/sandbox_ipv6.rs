//! `romana sandbox up --ipv6 CIDR`, the dual-stack sandbox's IPv6 side: the IPv6 pod network
//! beside the IPv4 one for the same groups, an IPv6 underlay of unique local addresses on every
//! link the IPv4 underlay uses (inside the sandbox's namespaces only), each host's IPv6 address
//! (registered and given to its agent), the routers' IPv6 routes from the fabric view. Pure but
//! for `forwarding_on`.

use std::net::Ipv6Addr;
use std::process::Command;

use anyhow::{Result, bail};
use romana_api::rest::FabricGroup;
use serde_json::{Value, json};

use crate::sandbox_layout::{Host, Layout, Routing};

/// The underlay's addresses: one ULA /32 ("rms"), a /64 per link. Pod networks may not overlap
/// it: routers would hold a pod block and a link in the same space.
pub const UNDERLAY: &str = "fd72:6d73::/32";

/// `addr/len` of an IPv6 network, or the reason it is not one.
fn parse(cidr: &str) -> Result<(Ipv6Addr, u8), String> {
    let bad = || format!("--ipv6 {cidr:?}: not an IPv6 network (ADDRESS/LENGTH, e.g. fd00:10::/64)");
    let (a, l) = cidr.split_once('/').ok_or_else(bad)?;
    let a: Ipv6Addr = a.parse().map_err(|_| bad())?;
    let l: u8 = l.parse().ok().filter(|l| *l <= 128).ok_or_else(bad)?;
    Ok((a, l))
}

fn masked(a: Ipv6Addr, len: u8) -> u128 {
    let bits = u128::from(a);
    if len == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(len))) }
}

/// Refuses what is not an IPv6 network or overlaps the underlay.
pub fn check_cidr(cidr: &str) -> Result<(), String> {
    let (a, l) = parse(cidr)?;
    let (u, ul) = parse(UNDERLAY)?;
    let common = l.min(ul);
    if masked(a, common) == masked(u, common) {
        return Err(format!(
            "--ipv6 {cidr}: overlaps the sandbox's IPv6 underlay {UNDERLAY}; pick another range"
        ));
    }
    Ok(())
}

impl Layout {
    /// The IPv6 pod network (`None`: IPv4 only), checked.
    pub fn with_ipv6(mut self, cidr: Option<String>) -> Result<Layout, String> {
        if let Some(c) = &cidr {
            check_cidr(c)?;
        }
        self.ipv6 = cidr;
        Ok(self)
    }

    pub fn v6_network(&self) -> String {
        format!("sandbox-{}-v6", self.name)
    }
}

/// Host `h`'s IPv6 underlay address: its rack's /64, the same last number as its IPv4 one.
pub fn host_ip(h: &Host) -> String {
    let last = h.ip.rsplit('.').next().unwrap_or("0");
    format!("fd72:6d73:{}::{last}", h.rack)
}

/// The rack router's address toward its hosts.
pub fn rack_ip(rack: usize) -> String {
    format!("fd72:6d73:{rack}::1")
}

/// Static routing: the rack router's address on its spine link (`side` 2; the spine's is 1).
pub fn uplink_ip(rack: usize) -> String {
    format!("fd72:6d73:fe{rack:02}::2")
}

fn spine_link_ip(rack: usize) -> String {
    format!("fd72:6d73:fe{rack:02}::1")
}

/// BGP: spine s's (1 or 2) address on its segment with the rack routers, and rack r's there.
pub fn spine_ip(s: usize) -> String {
    format!("fd72:6d73:ff0{s}::1")
}

pub fn rack_uplink_ip(s: usize, rack: usize) -> String {
    format!("fd72:6d73:ff0{s}::{}", 10 + rack)
}

/// The host's registration and agent flag, when the sandbox is dual-stack.
pub fn host_ipv6(layout: &Layout, h: &Host) -> Option<String> {
    layout.ipv6.as_ref().map(|_| host_ip(h))
}

/// The agent's registration flags in a dual-stack sandbox (`up` registers the host first; an
/// agent registering it again, after it was removed, gives the same record). The agent takes
/// `--host-ipv6` only beside `--host-ip`.
pub fn agent_args(layout: &Layout, h: &Host) -> Vec<String> {
    let Some(v6) = host_ipv6(layout, h) else { return Vec::new() };
    let rack = format!("rack={}", h.rack);
    ["--host-ip", &h.ip, "--host-ipv6", &v6, "--tag", &rack].map(str::to_owned).to_vec()
}

/// The topology with the IPv6 network beside the IPv4 one, for the same groups.
pub fn topology(layout: &Layout, mut t: Value) -> Value {
    let Some(cidr) = &layout.ipv6 else { return t };
    let mut n = json!({"name": layout.v6_network(), "cidr": cidr});
    if !layout.egress.nat_outgoing {
        n["nat_outgoing"] = json!(false);
    }
    if let Some(nets) = t["networks"].as_array_mut() {
        nets.push(n);
    }
    if let Some(nets) = t["topologies"][0]["networks"].as_array_mut() {
        nets.push(json!(layout.v6_network()));
    }
    t
}

/// `ip` invocations that give every link the IPv4 wiring made an IPv6 address (no duplicate
/// address detection: the addresses are planned unique, and a tentative address would hold
/// the first packets back) and the IPv6 default routes the IPv4 ones have.
pub fn wiring(layout: &Layout) -> Vec<Vec<String>> {
    if layout.ipv6.is_none() {
        return Vec::new();
    }
    let mut cmds: Vec<String> = Vec::new();
    let spine = layout.spine();
    for (i, s) in layout.spines().iter().enumerate().filter(|_| layout.routing == Routing::Bgp) {
        cmds.push(format!("-n {s} addr add {}/64 dev fab0 nodad", spine_ip(i + 1)));
        for r in 1..=layout.racks {
            cmds.push(format!(
                "-n {} addr add {}/64 dev up{i} nodad",
                layout.router(r),
                rack_uplink_ip(i + 1, r)
            ));
        }
    }
    for r in 1..=layout.racks {
        let router = layout.router(r);
        cmds.push(format!("-n {router} addr add {}/64 dev rack0 nodad", rack_ip(r)));
        if layout.routing == Routing::Static {
            cmds.push(format!("-n {spine} addr add {}/64 dev r{r} nodad", spine_link_ip(r)));
            cmds.push(format!("-n {router} addr add {}/64 dev up0 nodad", uplink_ip(r)));
            cmds.push(format!("-n {router} -6 route add default via {}", spine_link_ip(r)));
        }
    }
    for h in &layout.hosts {
        cmds.push(format!("-n {} addr add {}/64 dev eth0 nodad", h.netns, host_ip(h)));
        cmds.push(format!("-n {} -6 route add default via {}", h.netns, rack_ip(h.rack)));
    }
    cmds.into_iter().map(|c| c.split_whitespace().map(str::to_owned).collect()).collect()
}

/// `revive-host`: the host's IPv6 address and default route back (a link set down loses its
/// IPv6 addresses, not only its routes); nothing when IPv4 only.
pub fn revive(layout: &Layout, h: &Host) -> Vec<Vec<String>> {
    if layout.ipv6.is_none() {
        return Vec::new();
    }
    [
        format!("-n {} addr replace {}/64 dev eth0 nodad", h.netns, host_ip(h)),
        format!("-n {} -6 route replace default via {}", h.netns, rack_ip(h.rack)),
    ]
    .iter()
    .map(|c| c.split_whitespace().map(str::to_owned).collect())
    .collect()
}

/// Static routing: the routers' IPv6 routes from the fabric view (as `Layout::fabric_routes`).
pub fn fabric_routes(layout: &Layout, fabric: &[FabricGroup]) -> Vec<(String, String, String)> {
    if layout.ipv6.is_none() {
        return Vec::new();
    }
    layout.network_routes(fabric, &layout.v6_network(), uplink_ip)
}

/// A CNI result's first IPv4 and first IPv6 address, without their lengths.
pub fn addresses(result: &Value) -> (String, Option<String>) {
    let ips: Vec<&str> = result["ips"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["address"].as_str()?.split('/').next()).collect())
        .unwrap_or_default();
    let v4 = ips.iter().find(|a| !a.contains(':')).map(|a| (*a).to_owned()).unwrap_or_default();
    (v4, ips.iter().find(|a| a.contains(':')).map(|a| (*a).to_owned()))
}

/// IPv6 forwarding on in a router namespace (the agents turn it on in the hosts').
pub fn forwarding_on(ns: &str) -> Result<()> {
    let ok = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        .status()?
        .success();
    if ok { Ok(()) } else { bail!("cannot turn IPv6 forwarding on in {ns}") }
}

#[cfg(test)]
#[path = "sandbox_ipv6_tests.rs"]
mod tests;
