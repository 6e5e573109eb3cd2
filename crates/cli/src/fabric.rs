//! `romana fabric`: BIRD configuration rendered from romanad's topology and fabric view, for a
//! router of a prefix group (`bird-config GROUP`) or a host (`bird-host HOST`, what its agent
//! writes). Fetches, hands to the pure renderer (`romana_fabric`), prints.

use std::net::IpAddr;

use anyhow::{Context, Result};
use romana_client::Client;
use romana_fabric::{Fabric, Options};

/// The fabric as romanad sees it now, with where VIPs may be (the external ranges and every
/// VIP's own address): what routers accept /32s inside.
pub async fn load(c: &Client) -> Result<Fabric> {
    let topology = c.topology().await.context("reading the topology")?;
    let view = c.fabric().await.context("reading the fabric view")?;
    let mut f = Fabric::new(&topology, &view).context("joining the topology and the fabric view")?;
    let cfg = c.vip_config().await.context("reading the VIP ranges (GET /config/vips)")?;
    let mut ranges: Vec<romana_model::Cidr> = cfg.ranges.iter().filter_map(|r| r.parse().ok()).collect();
    for v in c.vips().await.context("reading the VIPs")? {
        if let Ok(ip) = v.address.parse::<IpAddr>()
            && !ranges.iter().any(|r| r.contains_addr(ip))
        {
            ranges.push(romana_model::Cidr::host(ip));
        }
    }
    f.vip_ranges = ranges;
    Ok(f)
}

/// The configuration of router `router` (or the only one) of prefix group `group`.
pub async fn bird_config(c: &Client, group: &str, router: Option<IpAddr>, o: Options) -> Result<String> {
    let f = load(c).await?;
    Ok(romana_fabric::render_router(&f, group, router, o)?)
}

/// Host `host`'s include file.
pub async fn bird_host(c: &Client, host: &str, o: Options) -> Result<String> {
    let f = load(c).await?;
    Ok(romana_fabric::render_host(&f, host, o)?)
}
