//! `romana ipam plan`: carve a topology file offline and show what Romana would do with it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use romana_api::rest::{FabricGroup, RouteInfo};
use romana_ipam::spec::{HostSpec, LayoutSpec};
use romana_ipam::{AllocRequest, Ipam, RouteTarget};
use romana_model::{AddressName, HostName, SegmentName, TenantName};
use serde_json::json;

use crate::Format;
use crate::text_table::Table;

#[derive(Debug)]
pub struct Options {
    pub file: PathBuf,
    pub hosts_per_group: usize,
    pub endpoints_per_host: usize,
    pub tenants: Vec<String>,
    pub limit: usize,
}

/// Simulated host addresses come from 198.18.0.0/15, the range set aside for benchmarks.
fn sim_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc612_0000u32 + 1 + i as u32))
}

fn host_name_for(path: &str, n: usize) -> Result<HostName> {
    let base: String = path
        .trim_start_matches('/')
        .replace('/', ".")
        .replace('#', "g")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    let base = if base.is_empty() { "host".to_owned() } else { base };
    Ok(HostName::new(format!("{base}.h{n}"))?)
}

/// Adds simulated hosts to every leaf (tagged with the assignments on its path) and endpoints to every host.
fn simulate(ipam: &mut Ipam, o: &Options) -> Result<()> {
    let mut added = 0usize;
    let mut assignments: Vec<BTreeMap<String, String>> = Vec::new();
    let groups = ipam.groups();
    for g in &groups {
        assignments.truncate(g.depth);
        let mut tags = assignments.last().cloned().unwrap_or_default();
        tags.extend(g.assignment.clone());
        assignments.push(tags.clone());
        if !g.leaf || g.padding {
            continue;
        }
        for n in 0..o.hosts_per_group {
            let mut spec = HostSpec::new(host_name_for(&g.path, n)?, sim_ip(added));
            spec.tags = tags.clone();
            if ipam.host_placement(&spec.name).is_none() {
                added += 1;
            }
            ipam.add_host(spec).with_context(|| format!("adding a simulated host to group {}", g.path))?;
        }
    }
    let classic_only =
        groups.is_empty() && ipam.networks().iter().any(|n| matches!(n.layout, LayoutSpec::Classic(_)));
    if classic_only {
        for n in 0..o.hosts_per_group {
            ipam.add_host(HostSpec::new(host_name_for("", n)?, sim_ip(n)))?;
        }
    }
    let tenants: Vec<TenantName> =
        o.tenants.iter().map(|t| TenantName::new(t.clone())).collect::<Result<_, _>>()?;
    anyhow::ensure!(!tenants.is_empty(), "--tenants needs at least one tenant");
    for h in ipam.hosts() {
        for i in 0..o.endpoints_per_host {
            let req = AllocRequest {
                name: AddressName::new(format!("{}.ep{i}", h.name))?,
                host: h.name.clone(),
                tenant: tenants[i % tenants.len()].clone(),
                segment: SegmentName::default(),
            };
            ipam.allocate(&req).with_context(|| format!("allocating endpoint {i} on host {}", h.name))?;
        }
    }
    Ok(())
}

fn target_text(t: &RouteTarget) -> String {
    match t {
        RouteTarget::Host { name, ip } => format!("via {name} ({ip})"),
        RouteTarget::Group { path } => format!("via group {path}"),
        RouteTarget::Throw => "throw".into(),
    }
}

pub fn run(o: &Options, format: Format) -> Result<()> {
    let text = std::fs::read_to_string(&o.file).with_context(|| format!("reading {}", o.file.display()))?;
    let spec = romana_api::topology::parse(&text).with_context(|| format!("parsing {}", o.file.display()))?;
    let mut ipam = Ipam::new(spec).with_context(|| format!("checking {}", o.file.display()))?;
    simulate(&mut ipam, o)?;
    match format {
        Format::Json | Format::Yaml => print_json(&ipam, format),
        Format::Table => print_tables(&ipam, o),
    }
}

fn print_json(ipam: &Ipam, format: Format) -> Result<()> {
    let hosts: Vec<_> = ipam
        .hosts()
        .iter()
        .map(|h| {
            let r = ipam.host_routes(&h.name).expect("listed hosts are known");
            json!({
                "name": h.name.as_str(), "ip": h.ip.to_string(),
                "groups": h.placement.networks.iter().map(|(n, p, c)| json!({"network": n.as_str(), "group": p, "cidr": c.to_string()})).collect::<Vec<_>>(),
                "routes": r.routes.iter().map(RouteInfo::from).collect::<Vec<_>>(),
                "per_block_routes": r.per_block, "per_endpoint_routes": r.per_endpoint,
            })
        })
        .collect();
    let out = json!({
        "topology": serde_json::to_value(romana_api::topology::render(ipam))?,
        "blocks": ipam.blocks().iter().map(|b| json!({
            "network": b.network.as_str(), "cidr": b.cidr.to_string(), "allocated": b.allocated, "capacity": b.capacity,
            "owner": b.owner.as_ref().map(|(t, s, h)| json!({"tenant": t.as_str(), "segment": s.as_str(), "host": h.as_str()})),
        })).collect::<Vec<_>>(),
        "hosts": hosts,
        // The shapes of `GET /routes/{host}` and `GET /fabric`, from the same conversions.
        "fabric": ipam.fabric_routes().iter().map(FabricGroup::from).collect::<Vec<_>>(),
    });
    match format {
        Format::Yaml => print!("{}", serde_saphyr::to_string(&out)?),
        _ => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(())
}

fn print_tables(ipam: &Ipam, o: &Options) -> Result<()> {
    let mut t = Table::new(&["NETWORK", "CIDR", "LAYOUT", "BLOCK", "TENANTS", "NAT", "ALLOCATED"]);
    for n in ipam.networks() {
        let layout = match n.layout {
            LayoutSpec::Blocks => "blocks".to_owned(),
            LayoutSpec::Classic(b) => format!(
                "classic {}/{}/{}/{}+{}",
                b.host_bits, b.tenant_bits, b.segment_bits, b.endpoint_bits, b.endpoint_space_bits
            ),
        };
        let tenants = if n.tenants.is_empty() {
            "*".to_owned()
        } else {
            n.tenants.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        };
        t.row(vec![
            n.name.to_string(),
            n.cidr.to_string(),
            layout,
            format!("/{}", n.block_mask),
            tenants,
            nat_column(ipam, &n.name),
            n.allocated.to_string(),
        ]);
    }
    println!("Networks\n{}", t.render(o.limit));
    if !ipam.spec().no_nat.is_empty() {
        let list: Vec<String> = ipam.spec().no_nat.iter().map(ToString::to_string).collect();
        println!("Reached without NAT: {}\n", list.join(", "));
    }

    let mut t = Table::new(&["NETWORK", "GROUP", "CIDR", "HOSTS", "BLOCKS", "ADDRESSES", "ASSIGNMENT"]);
    for g in ipam.groups() {
        let path = if g.padding { format!("{} (padding)", g.path) } else { g.path.clone() };
        let assignment = g.assignment.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let indent = "  ".repeat(g.depth);
        let counts = if g.leaf {
            (g.hosts.len().to_string(), g.blocks.to_string(), g.allocated.to_string())
        } else {
            Default::default()
        };
        t.row(vec![
            g.network.to_string(),
            format!("{indent}{path}"),
            g.cidr.to_string(),
            counts.0,
            counts.1,
            counts.2,
            assignment,
        ]);
    }
    println!("Prefix groups\n{}", t.render(o.limit));

    let mut t = Table::new(&["NETWORK", "BLOCK", "TENANT:SEGMENT", "HOST", "USED"]);
    for b in ipam.blocks() {
        let (owner, host) = match &b.owner {
            Some((tn, s, h)) => (format!("{tn}:{s}"), h.to_string()),
            None => ("(reusable)".into(), String::new()),
        };
        t.row(vec![
            b.network.to_string(),
            b.cidr.to_string(),
            owner,
            host,
            format!("{}/{}", b.allocated, b.capacity),
        ]);
    }
    println!("Blocks ({})\n{}", t.len(), t.render(o.limit));

    let mut t = Table::new(&["HOST", "ROUTES", "PER-BLOCK", "PER-ENDPOINT", "FIRST ROUTES"]);
    let (mut ours, mut blocks, mut endpoints) = (0, 0, 0);
    for h in ipam.hosts() {
        let r = ipam.host_routes(&h.name)?;
        ours += r.routes.len();
        blocks += r.per_block;
        endpoints += r.per_endpoint;
        let first: Vec<String> =
            r.routes.iter().take(3).map(|x| format!("{} {}", x.dest, target_text(&x.target))).collect();
        t.row(vec![
            h.name.to_string(),
            r.routes.len().to_string(),
            r.per_block.to_string(),
            r.per_endpoint.to_string(),
            first.join("; "),
        ]);
    }
    println!(
        "Host routes: {ours} in all, against {blocks} with one route per block and {endpoints} with one per endpoint\n{}",
        t.render(o.limit)
    );

    let mut t = Table::new(&["NETWORK", "GROUP", "ANNOUNCES", "ROUTER NEEDS"]);
    for g in ipam.fabric_routes() {
        let needs: Vec<String> =
            g.routes.iter().take(4).map(|x| format!("{} {}", x.dest, target_text(&x.target))).collect();
        let more = if g.routes.len() > 4 { format!(" (+{})", g.routes.len() - 4) } else { String::new() };
        t.row(vec![
            g.network.to_string(),
            g.path.clone(),
            g.announce.map_or("-".into(), |c| c.to_string()),
            format!("{}{more}", needs.join("; ")),
        ]);
    }
    println!("Fabric\n{}", t.render(o.limit));
    Ok(())
}

/// Egress NAT of a network's endpoints (docs/fabric.md, "Egress NAT").
fn nat_column(ipam: &Ipam, network: &romana_model::NetworkName) -> String {
    let on = ipam.spec().networks.iter().find(|s| &s.name == network).is_none_or(|s| s.nat_outgoing);
    (if on { "outgoing" } else { "off" }).to_owned()
}
