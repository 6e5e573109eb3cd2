//! `romana fabric`: BIRD configuration rendered from romanad's topology and fabric view, for a
//! router of a prefix group (`bird-config GROUP`) or a host (`bird-host HOST`, what its agent
//! writes). Fetches, hands to the pure renderer (`romana_fabric`), prints.

use std::net::IpAddr;

use anyhow::{Context, Result};
use romana_client::Client;
use romana_fabric::{Fabric, Options};

/// The fabric as romanad sees it now.
pub async fn load(c: &Client) -> Result<Fabric> {
    let topology = c.topology().await.context("reading the topology")?;
    let view = c.fabric().await.context("reading the fabric view")?;
    Fabric::new(&topology, &view).context("joining the topology and the fabric view")
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
