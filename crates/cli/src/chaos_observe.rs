//! `romana chaos`: what it reads to check the invariants. romanad's lists, each host
//! namespace's routes of our protocol of both families (`ip -j -4|-6 route show proto 77`) and
//! `inet romana` table (`nft -j list table`), the agents' readiness (CNI STATUS through
//! romana-cni), each pod's interface, and ping between every pod pair over each family. Reads
//! only; `chaos_check.rs` judges.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use romana_client::Client;

use crate::chaos_check::{self, Family, Snapshot, Violation};
use crate::chaos_plan::Model;
use crate::sandbox_layout::Layout;

pub async fn snapshot(c: &Client) -> Result<Snapshot> {
    Ok(Snapshot {
        addresses: c.addresses("").await.context("listing addresses")?,
        endpoints: c.endpoint_list().await.context("listing endpoints")?,
        tenants: c.tenants().await.context("listing tenants")?,
        policies: c.policies().await.context("listing policies")?,
        netpols: c.netpols().await.context("listing NetworkPolicies")?,
    })
}

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    cmd.output().with_context(|| format!("running {cmd:?}"))
}

/// The host namespace's routes of protocol 77 (main table) of both families, as `chaos_check`
/// reads them.
pub fn kernel_routes(netns: &str) -> Result<BTreeSet<String>> {
    let mut all = BTreeSet::new();
    for family in ["-4", "-6"] {
        let out = run(Command::new("ip").args(["-j", family, "-n", netns, "route", "show", "proto", "77"]))?;
        if !out.status.success() {
            bail!("ip {family} -n {netns} route: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        all.extend(
            chaos_check::kernel_routes(&String::from_utf8_lossy(&out.stdout)).map_err(anyhow::Error::msg)?,
        );
    }
    Ok(all)
}

/// `nft -j list table inet romana` in the namespace; `None` when the table does not exist.
pub fn nft_table(netns: &str) -> Result<Option<String>> {
    let out = run(
        Command::new("ip").args(["netns", "exec", netns, "nft", "-j", "list", "table", "inet", "romana"])
    )?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such file or directory") {
        return Ok(None);
    }
    bail!("nft list table in {netns}: {}", err.trim())
}

/// Whether each host's agent answers CNI STATUS as ready.
pub fn agents_ready(layout: &Layout, sandbox_dir: &Path) -> Vec<Violation> {
    layout
        .hosts
        .iter()
        .filter_map(|h| {
            let sock = sandbox_dir.join(format!("{}.sock", h.name));
            crate::sandbox::cni(&sock, "STATUS", "", "", chaos_check::NETWORK, "")
                .err()
                .map(|e| Violation { kind: "agent-not-ready", detail: format!("{}: {e:#}", h.name) })
        })
        .collect()
}

/// Every host's kernel routes and table against what romanad's data makes of them.
pub async fn kernel(c: &Client, layout: &Layout, s: &Snapshot) -> Vec<Violation> {
    let inputs = chaos_check::policy_inputs(s);
    let mut out = inputs.3.clone();
    for h in &layout.hosts {
        let local: Vec<&str> =
            s.endpoints.iter().filter(|e| e.host == h.name).map(|e| e.ip.as_str()).collect();
        match (c.routes(&h.name).await, kernel_routes(&h.netns)) {
            (Ok(set), Ok(have)) => {
                out.extend(chaos_check::routes(&h.name, &chaos_check::expected_routes(&set, &local), &have))
            }
            (Err(e), _) => {
                out.push(Violation { kind: "unreadable", detail: format!("GET /routes/{}: {e}", h.name) })
            }
            (_, Err(e)) => out.push(Violation { kind: "unreadable", detail: format!("{e:#}") }),
        }
        match nft_table(&h.netns) {
            Ok(listing) => out.extend(chaos_check::firewall(&h.name, &inputs, listing.as_deref())),
            Err(e) => out.push(Violation { kind: "unreadable", detail: format!("{e:#}") }),
        }
    }
    out
}

/// Each live pod's interface holds the addresses (of both families) its ADD answered with.
pub fn pod_interfaces(model: &Model, layout: &Layout) -> Vec<Violation> {
    let mut found = Vec::new();
    for (name, p) in model.live() {
        let ns = layout.pod_netns(name);
        let out = Command::new("ip").args(["-n", &ns, "-o", "addr", "show", "dev", "eth0"]).output().ok();
        let shown = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        for (_, ip) in chaos_check::records(name, p) {
            if !shown.contains(&format!(" {ip}/")) {
                found.push(Violation {
                    kind: "lost-add",
                    detail: format!("pod {name}'s eth0 in {ns} does not hold {ip}"),
                });
            }
        }
    }
    found
}

/// Pings between every pair of live pods holding an address of `family` (all at once: a failing
/// pair costs its timeout once); `only`: probe just these pairs again.
pub fn ping(
    model: &Model,
    layout: &Layout,
    family: Family,
    only: Option<&[(String, String)]>,
) -> Result<Vec<(String, String, bool)>> {
    let pods: Vec<(&String, String, String)> = model
        .live()
        .filter_map(|(n, p)| {
            let ip = match family {
                Family::V4 => p.ip.clone(),
                Family::V6 => p.ipv6.clone(),
            };
            Some((n, layout.pod_netns(n), ip?))
        })
        .collect();
    let mut pairs = Vec::new();
    for (src, ns, _) in &pods {
        for (dst, _, ip) in pods.iter().filter(|(d, ..)| d != src) {
            if only.is_some_and(|o| !o.iter().any(|(s, d)| s == *src && d == *dst)) {
                continue;
            }
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "ping", "-c1", "-W1", ip])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("running ping (iputils-ping)")?;
            pairs.push(((*src).clone(), (*dst).clone(), child));
        }
    }
    Ok(pairs.into_iter().map(|(s, d, mut c)| (s, d, c.wait().is_ok_and(|x| x.success()))).collect())
}
