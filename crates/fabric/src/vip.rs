//! VIPs in the BIRD text, pure: a host announces each VIP it serves as a /32 (a `romana_vips`
//! static, exported to its routers), and each VIP it stands by for with its AS prepended three
//! times (iBGP: a lower local preference), so routers prefer the serving host and fall back to
//! the standby the moment BFD withdraws the serving host's route; routers accept /32s inside
//! the VIP ranges from any member and pass them up. The rest of the fabric stays aggregates.

use std::fmt::Write;
use std::net::Ipv4Addr;

use romana_model::{Cidr, Family};

/// A VIP a host announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostVip {
    pub address: Ipv4Addr,
    /// Announced with a longer path: the fallback while another host serves it.
    pub standby: bool,
}

fn ranges(list: &[Cidr]) -> Option<String> {
    let v: Vec<String> =
        list.iter().filter(|c| c.family() == Family::V4).map(|c| format!("{c}{{32,32}}")).collect();
    (!v.is_empty()).then(|| format!("[ {} ]", v.join(", ")))
}

fn hosts(list: &[HostVip], standby: bool) -> Option<String> {
    let v: Vec<String> =
        list.iter().filter(|h| h.standby == standby).map(|h| format!("{}/32", h.address)).collect();
    (!v.is_empty()).then(|| format!("[ {} ]", v.join(", ")))
}

/// An import filter's line accepting VIP /32s inside `vip_ranges` (nothing when there are none).
pub fn accept_line(out: &mut String, vip_ranges: &[Cidr]) {
    if let Some(set) = ranges(vip_ranges) {
        let _ = writeln!(out, "\tif net ~ {set} then accept;");
    }
}

/// An export filter's lines: a router passes learned VIP /32s on (`vip_ranges`); a host
/// announces its own (`host_vips`), standbys with a longer path.
pub fn export_lines(out: &mut String, vip_ranges: &[Cidr], host_vips: &[HostVip], ibgp: bool, asn: u32) {
    if let Some(set) = ranges(vip_ranges) {
        let _ = writeln!(out, "\tif source = RTS_BGP && net ~ {set} then accept;");
    }
    if let Some(set) = hosts(host_vips, false) {
        let _ = writeln!(out, "\tif proto = \"romana_vips\" && net ~ {set} then accept;");
    }
    if let Some(set) = hosts(host_vips, true) {
        let longer = if ibgp {
            "bgp_local_pref = 50;".to_owned()
        } else {
            format!("bgp_path.prepend({asn}); bgp_path.prepend({asn}); bgp_path.prepend({asn});")
        };
        let _ = writeln!(out, "\tif proto = \"romana_vips\" && net ~ {set} then {{ {longer} accept; }}");
    }
}

/// The host's `romana_vips` static protocol (nothing without VIPs). Blackholes only in BIRD's
/// table: the kernel protocol exports nothing but BGP routes, and the address itself sits on
/// the host's gateway link.
pub fn statics(out: &mut String, vips: &[HostVip]) {
    if vips.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "protocol static romana_vips {{");
    let _ = writeln!(out, "\tipv4;");
    for v in vips {
        let _ = writeln!(out, "\troute {}/32 blackhole;", v.address);
    }
    let _ = writeln!(out, "}}");
}
