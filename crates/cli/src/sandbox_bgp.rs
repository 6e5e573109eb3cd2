//! The sandbox on BGP: BIRD in every router and host namespace, routers configured only from
//! configuration rendered from romanad's fabric view (`romana_fabric`), hosts through their
//! agents (`--bird-config`); BGP status from birdc; `kill-host` / `revive-host`. Every BIRD has
//! its own files in the sandbox's directory (`<ns>.bird.conf`, `.romana.conf`, `.ctl`, `.pid`,
//! `.log`) and is found again by its pid file, so `down` stops them even after a crash.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use romana_client::Client;
use romana_fabric::Options;

use crate::bird_status;
use crate::sandbox_layout::{Layout, Routing};

/// BFD everywhere in the sandbox: failover in a fraction of a second, not the hold time.
const OPTIONS: Options = Options { bfd: true, kernel: false };

fn file(d: &Path, ns: &str, ext: &str) -> PathBuf {
    d.join(format!("{ns}.{ext}"))
}

pub fn pid_alive(pid: u32, what: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(what))
}

fn bird_pid(d: &Path, ns: &str) -> Option<u32> {
    let pid = std::fs::read_to_string(file(d, ns, "pid")).ok()?.trim().parse().ok()?;
    pid_alive(pid, "bird").then_some(pid)
}

fn birdc(d: &Path, ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(file(d, ns, "ctl"))
        .args(args)
        .output()
        .context("running birdc (Debian's bird2; scripts/setup.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "birdc {} in {ns}: {}{}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

/// Starts BIRD in namespace `ns` with a configuration that logs to the sandbox directory and
/// includes `<ns>.romana.conf` (created empty when absent; the renderer or the agent fills it).
fn start_bird(d: &Path, ns: &str, router_id: Option<&str>) -> Result<()> {
    if bird_pid(d, ns).is_some() {
        return Ok(());
    }
    let include = file(d, ns, "romana.conf");
    if !include.exists() {
        std::fs::write(&include, "").with_context(|| format!("creating {}", include.display()))?;
    }
    let mut conf = String::new();
    if let Some(id) = router_id {
        conf.push_str(&format!("router id {id};\nprotocol device romana_hostdevice {{ }}\n"));
    }
    conf.push_str(&format!(
        "log \"{}\" all;\ninclude \"{}\";\n",
        file(d, ns, "log").display(),
        include.display()
    ));
    std::fs::write(file(d, ns, "bird.conf"), conf)?;
    let ok = Command::new("ip")
        .args(["netns", "exec", ns, "bird", "-c"])
        .arg(file(d, ns, "bird.conf"))
        .arg("-s")
        .arg(file(d, ns, "ctl"))
        .arg("-P")
        .arg(file(d, ns, "pid"))
        .status()
        .context("running bird (Debian's bird2; scripts/setup.sh installs it)")?
        .success();
    if !ok {
        bail!("bird did not start in {ns} (log: {})", file(d, ns, "log").display());
    }
    Ok(())
}

/// A host's BIRD, before its agent starts: the agent renders the include and reloads it.
pub fn start_host_bird(layout: &Layout, host: &str, d: &Path) -> Result<()> {
    let h = layout.hosts.iter().find(|h| h.name == host).context("no such host")?;
    start_bird(d, &h.netns, Some(&h.ip))
}

/// The agent's flags that make it drive its host's BIRD (none with static routing).
pub fn agent_args(layout: &Layout, netns: &str, d: &Path) -> Vec<String> {
    if layout.routing != Routing::Bgp {
        return Vec::new();
    }
    vec![
        "--bird-config".into(),
        file(d, netns, "romana.conf").display().to_string(),
        "--bird-socket".into(),
        file(d, netns, "ctl").display().to_string(),
        "--bird-bfd".into(),
        "--bird-interval-ms".into(),
        "300".into(),
    ]
}

/// Each router's rendered configuration: (namespace, text).
async fn rendered(c: &Client, layout: &Layout) -> Result<Vec<(String, String)>> {
    let f = crate::fabric::load(c).await?;
    let mut out = Vec::new();
    for (i, spine) in layout.spines().iter().enumerate() {
        let ip = Layout::spine_ip(i + 1).parse().context("spine address")?;
        out.push((spine.clone(), romana_fabric::render_router(&f, "/", Some(ip), OPTIONS)?));
    }
    for r in 1..=layout.racks {
        out.push((layout.router(r), romana_fabric::render_router(&f, &format!("/rack-{r}"), None, OPTIONS)?));
    }
    Ok(out)
}

/// Brings every router's BIRD to the configuration rendered from the fabric view now: started
/// with it, or the file rewritten and `birdc configure` when it changed.
pub async fn sync_routers(c: &Client, layout: &Layout, d: &Path) -> Result<()> {
    for (ns, text) in rendered(c, layout).await? {
        let include = file(d, &ns, "romana.conf");
        let changed = std::fs::read_to_string(&include).ok().as_deref() != Some(text.as_str());
        if changed {
            let tmp = file(d, &ns, "romana.conf.tmp");
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, &include)?;
        }
        if bird_pid(d, &ns).is_none() {
            start_bird(d, &ns, None)?;
        } else if changed {
            birdc(d, &ns, &["configure"])?;
        }
    }
    Ok(())
}

/// Waits until every router's sessions are established (up to `limit`): what `up` reports.
pub async fn wait_sessions(layout: &Layout, d: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut waiting = Vec::new();
        for ns in layout.routers() {
            let text = birdc(d, &ns, &["show", "protocols"]).unwrap_or_default();
            let (up, all) = bird_status::bgp_sessions(&bird_status::protocols(&text));
            if all == 0 || up < all {
                waiting.push(format!("{ns} {up}/{all}"));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("BGP sessions not established after {limit:?}: {}", waiting.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One router's BGP state, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterStatus {
    pub ns: String,
    pub sessions_up: usize,
    pub sessions: usize,
    /// Networks learned from members (hosts of a rack; racks at a spine).
    pub from_members: usize,
    /// Networks learned from above (other racks' aggregates, at a rack router).
    pub from_above: usize,
    /// Kernel routes with several next hops.
    pub multipath: usize,
    pub per_endpoint: usize,
}

pub fn router_status(layout: &Layout, d: &Path) -> Vec<RouterStatus> {
    layout
        .routers()
        .into_iter()
        .map(|ns| {
            let protocols = birdc(d, &ns, &["show", "protocols"]).unwrap_or_default();
            let (sessions_up, sessions) = bird_status::bgp_sessions(&bird_status::protocols(&protocols));
            let routes = bird_status::routes(&birdc(d, &ns, &["show", "route"]).unwrap_or_default());
            let kernel = Command::new("ip")
                .args(["-n", &ns, "-o", "route", "show", "proto", "bird"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("nexthop")).count())
                .unwrap_or(0);
            RouterStatus {
                ns,
                sessions_up,
                sessions,
                from_members: bird_status::count_from(&routes, "romana_m"),
                from_above: bird_status::count_from(&routes, "romana_up"),
                multipath: kernel,
                per_endpoint: bird_status::per_endpoint(&routes),
            }
        })
        .collect()
}

pub fn print_status(layout: &Layout, d: &Path) {
    println!();
    println!(
        "{:<16} {:>8} {:>12} {:>10} {:>10} {:>13}",
        "ROUTER", "BGP UP", "FROM-BELOW", "FROM-ABOVE", "MULTIPATH", "PER-ENDPOINT"
    );
    for s in router_status(layout, d) {
        println!(
            "{:<16} {:>8} {:>12} {:>10} {:>10} {:>13}",
            s.ns,
            format!("{}/{}", s.sessions_up, s.sessions),
            s.from_members,
            s.from_above,
            s.multipath,
            s.per_endpoint
        );
    }
}

/// Kills every BIRD of the sandbox: by pid file, then any `bird -c <dir>/...` left.
pub fn stop_birds(d: &Path) {
    if let Ok(entries) = std::fs::read_dir(d) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(ns) = name.strip_suffix(".pid")
                && let Some(pid) = bird_pid(d, ns)
            {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
    if let Ok(out) = Command::new("pgrep").args(["-f", &format!("^bird -c {}/", d.display())]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

/// A host's death: its link down first (so nothing it sends on the way out, not even a TCP
/// FIN, tells its peers), then its agent and BIRD killed (SIGKILL).
pub fn kill_host(layout: &Layout, host: &str, agent: Option<u32>, d: &Path) -> Result<()> {
    let h = layout.hosts.iter().find(|h| h.name == host).context("no such host")?;
    let ok = Command::new("ip").args(["-n", &h.netns, "link", "set", "eth0", "down"]).status()?.success();
    if !ok {
        bail!("cannot set eth0 down in {}", h.netns);
    }
    if let Some(pid) = agent.filter(|p| pid_alive(*p, "romana-agent")) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    if let Some(pid) = bird_pid(d, &h.netns) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    Ok(())
}

/// The host's link up and its default route back (a link set down loses its routes); its BIRD
/// is started again here, its agent by the caller.
pub fn revive_links(layout: &Layout, host: &str, d: &Path) -> Result<()> {
    let h = layout.hosts.iter().find(|h| h.name == host).context("no such host")?;
    let ns = &h.netns;
    let ok = Command::new("ip").args(["-n", ns, "link", "set", "eth0", "up"]).status()?.success()
        && Command::new("ip")
            .args(["-n", ns, "route", "replace", "default", "via", &Layout::rack_ip(h.rack)])
            .status()?
            .success();
    if !ok {
        bail!("cannot bring eth0 and the default route back in {ns}");
    }
    for cmd in crate::sandbox_ipv6::revive(layout, h) {
        if !Command::new("ip").args(&cmd).status()?.success() {
            bail!("ip {}: failed", cmd.join(" "));
        }
    }
    if layout.routing == Routing::Bgp {
        start_host_bird(layout, host, d)?;
    }
    Ok(())
}
