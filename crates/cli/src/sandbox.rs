//! `romana sandbox`: simulated hosts as network namespaces on this machine, wired as the layout
//! says (racks of hosts on one L2 segment each, behind rack routers and a spine), a real
//! romana-agent per host and real romana-cni calls for pods. State lives in a directory
//! (`/run/romana/sandbox/<name>`); `down` also works from namespace names alone after a crash.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use romana_api::rest::{HostRequest, TenantRequest};
use romana_client::Client;
use serde::{Deserialize, Serialize};

use crate::sandbox_layout::{Egress, Layout, Routing, prefix};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub host: String,
    pub netns: String,
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    pub tenant: String,
    pub segment: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What `up` made, for the other commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub racks: usize,
    pub hosts_per_rack: usize,
    pub cidr: String,
    pub block_mask: u8,
    pub agents: BTreeMap<String, u32>,
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default, flatten)]
    pub egress: Egress,
    #[serde(default)]
    pub reflectors: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

impl State {
    pub(crate) fn layout(&self) -> Result<Layout> {
        Layout::new(&self.name, self.racks, self.hosts_per_rack, &self.cidr, self.block_mask)
            .map(|l| l.with_routing(self.routing).with_egress(self.egress.clone()))
            .and_then(|l| l.with_reflectors(self.reflectors))
            .and_then(|l| l.with_ipv6(self.ipv6.clone()))
            .map_err(anyhow::Error::msg)
    }
}

pub fn dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(name)
}

pub(crate) fn load(state_dir: &Path, name: &str) -> Result<State> {
    let p = dir(state_dir, name).join("state.json");
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("sandbox {name:?} is not up ({} missing)", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

pub(crate) fn save(state_dir: &Path, s: &State) -> Result<()> {
    let p = dir(state_dir, &s.name).join("state.json");
    std::fs::write(&p, serde_json::to_string_pretty(s)?).with_context(|| format!("writing {}", p.display()))
}

fn ip(args: &[String]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ipn(ns: &str, args: &str) -> Result<String> {
    let mut v = vec!["-n".to_owned(), ns.to_owned()];
    v.extend(args.split_whitespace().map(str::to_owned));
    ip(&v)
}

/// Another Romana binary: next to this one, else on PATH.
pub(crate) fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name(name))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn forwarding_on(ns: &str) -> Result<()> {
    let ok = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .status()
        .context("running sysctl")?
        .success();
    if ok { Ok(()) } else { bail!("cannot turn forwarding on in {ns}") }
}

#[derive(Debug)]
pub struct UpOptions {
    pub name: String,
    pub racks: usize,
    pub hosts_per_rack: usize,
    pub cidr: String,
    pub block_mask: u8,
    pub state_dir: PathBuf,
    pub routing: Routing,
    pub egress: Egress,
    pub reflectors: usize,
    /// The IPv6 pod network of a dual-stack sandbox (`sandbox_ipv6.rs`).
    pub ipv6: Option<String>,
    /// With static routing, the environment of the router follower (`sandbox_static.rs`).
    pub follower_env: Vec<(String, String)>,
}

pub async fn up(c: &Client, o: &UpOptions) -> Result<()> {
    let layout = Layout::new(&o.name, o.racks, o.hosts_per_rack, &o.cidr, o.block_mask)
        .map_err(anyhow::Error::msg)?
        .with_routing(o.routing)
        .with_egress(o.egress.clone())
        .with_reflectors(o.reflectors)
        .and_then(|l| l.with_ipv6(o.ipv6.clone()))
        .map_err(anyhow::Error::msg)?;
    if !leftovers(&o.name)?.is_empty() {
        bail!(
            "sandbox {:?} has namespaces already; run `romana sandbox down --name {}` first",
            o.name,
            o.name
        );
    }
    let d = dir(&o.state_dir, &o.name);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let topology = serde_json::from_value(crate::sandbox_ipv6::topology(&layout, layout.topology()))?;
    c.apply_topology(&topology).await.context("applying the sandbox topology")?;
    let built = build(c, &layout, o, &d).await;
    if let Err(e) = built {
        let _ = down(&o.state_dir, &o.name, Some(c)).await;
        return Err(e.context("sandbox up failed; everything it made was removed"));
    }
    Ok(())
}

/// Creates host `host`'s agent credential: a service user bound to that host alone, not the
/// admin's credentials nor one shared by every agent. Returns its credentials file.
async fn agent_credentials(c: &Client, sandbox: &str, host: &str, d: &Path) -> Result<std::path::PathBuf> {
    let path = d.join(format!("{host}.credentials"));
    let user = format!(
        "sandbox-{sandbox}-{host}-{}",
        &crate::commands::random_password()?[..6].to_ascii_lowercase()
    );
    let new = crate::commands::NewUser {
        name: &user,
        roles: &["service".into()],
        tenants: &[],
        hosts: &[host.to_owned()],
    };
    let out = crate::commands::CredentialsOut { path: &path, ca: None };
    crate::commands::create_user(c, &new, None, Some(out))
        .await
        .with_context(|| format!("creating the agent user of host {host}"))?;
    Ok(path)
}

async fn build(c: &Client, layout: &Layout, o: &UpOptions, d: &Path) -> Result<()> {
    for cmd in layout.wiring().into_iter().chain(crate::sandbox_ipv6::wiring(layout)) {
        ip(&cmd)?;
    }
    for r in layout.routers() {
        forwarding_on(&r)?;
        if layout.ipv6.is_some() {
            crate::sandbox_ipv6::forwarding_on(&r)?;
        }
    }
    let mut state = State {
        name: o.name.clone(),
        racks: o.racks,
        hosts_per_rack: o.hosts_per_rack,
        cidr: o.cidr.clone(),
        block_mask: o.block_mask,
        agents: BTreeMap::new(),
        pods: Vec::new(),
        routing: o.routing,
        egress: o.egress.clone(),
        reflectors: o.reflectors,
        ipv6: o.ipv6.clone(),
    };
    for h in &layout.hosts {
        let req = HostRequest {
            name: h.name.clone(),
            ip: h.ip.clone(),
            ipv6: crate::sandbox_ipv6::host_ipv6(layout, h),
            agent_port: None,
            tags: BTreeMap::from([("rack".to_owned(), h.rack.to_string())]),
            k8s_info: None,
        };
        match c.add_host(&req).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(409) => {}
            Err(e) => return Err(e).with_context(|| format!("registering host {}", h.name)),
        }
        agent_credentials(c, &o.name, &h.name, d).await?;
        if layout.routing == Routing::Bgp {
            crate::sandbox_bgp::start_host_bird(layout, &h.name, d)?;
        }
        state.agents.insert(h.name.clone(), start_agent(layout, &h.name, d)?);
    }
    save(&o.state_dir, &state)?;
    let start = Instant::now();
    for h in &layout.hosts {
        let sock = d.join(format!("{}.sock", h.name));
        while cni(&sock, "STATUS", "", "", "romana-sandbox", "").is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the agent of {} is not ready after 30 s (log: {})",
                    h.name,
                    d.join(format!("{}.log", h.name)).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    crate::vip::sandbox_range(c).await?;
    sync_fabric(c, layout, d).await?;
    if layout.routing == Routing::Bgp {
        crate::sandbox_bgp::wait_sessions(layout, d, Duration::from_secs(30)).await?;
    } else {
        crate::sandbox_static::start_follower(&o.state_dir, &o.name, d, &o.follower_env)?;
    }
    println!("sandbox {} up: {} racks x {} hosts, agents ready", o.name, o.racks, o.hosts_per_rack);
    Ok(())
}

/// Host `host`'s agent (credentials already in `d`); returns its pid. Its own process group:
/// the agents outlive this command and a Ctrl-C of it.
pub(crate) fn start_agent(layout: &Layout, host: &str, d: &Path) -> Result<u32> {
    let h = layout.hosts.iter().find(|h| h.name == host).context("no such host")?;
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(d.join(format!("{}.log", h.name)))?;
    let child = Command::new(sibling("romana-agent"))
        .args(["--host", &h.name, "--netns", &h.netns, "--interval-ms", "300"])
        .arg("--socket")
        .arg(d.join(format!("{}.sock", h.name)))
        .arg("--credentials")
        .arg(d.join(format!("{}.credentials", h.name)))
        .args(crate::sandbox_bgp::agent_args(layout, &h.netns, d))
        .args(crate::sandbox_ipv6::agent_args(layout, h))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting romana-agent (is it next to romana or on PATH?)")?;
    Ok(child.id())
}

/// Programs the spine and rack routers from romanad's fabric view: with static routing our
/// routes are reconciled in each router namespace (`sandbox_static.rs`); with BGP each router's
/// BIRD gets its configuration rendered again (`sandbox_bgp.rs`).
pub(crate) async fn sync_fabric(c: &Client, layout: &Layout, d: &Path) -> Result<()> {
    if layout.routing == Routing::Bgp {
        return crate::sandbox_bgp::sync_routers(c, layout, d).await;
    }
    crate::sandbox_static::sync(c, layout).await.map(|_| ())
}

/// One romana-cni call for interface eth0; Ok(result JSON) or Err(CNI error message).
pub(crate) fn cni(
    sock: &Path,
    command: &str,
    cid: &str,
    netns: &str,
    network: &str,
    args: &str,
) -> Result<serde_json::Value> {
    let conf = serde_json::json!({"cniVersion": "1.1.0", "name": network, "type": "romana-cni", "agent_socket": sock});
    let mut child = Command::new(sibling("romana-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running romana-cni (is it next to romana or on PATH?)")?;
    child.stdin.take().context("stdin")?.write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    if out.status.success() {
        Ok(v)
    } else {
        bail!(
            "romana-cni {command}: {} (code {}): {}",
            v["msg"].as_str().unwrap_or("failed"),
            v["code"],
            v["details"].as_str().unwrap_or("")
        )
    }
}

#[derive(Debug)]
pub struct PodOptions {
    pub name: String,
    pub host: String,
    pub tenant: String,
    pub segment: String,
    pub labels: BTreeMap<String, String>,
    pub pod: Option<String>,
    /// K8S_POD_UID, when given.
    pub uid: Option<String>,
    /// Labels and segment come from the pod's record (romana-k8s), as under kubelet.
    pub from_kubernetes: bool,
    pub state_dir: PathBuf,
}

/// `CNI_ARGS` as kubelet passes them through containerd's CRI (`IgnoreUnknown=1;
/// K8S_POD_NAMESPACE;K8S_POD_NAME;K8S_POD_INFRA_CONTAINER_ID[;K8S_POD_UID]`), followed, unless
/// the labels come from Kubernetes, by the segment and the labels (`ROMANA_LABELS`, even empty,
/// also tells the agent not to wait for a pod record).
pub fn pod_cni_args(o: &PodOptions, pod: &str, container_id: &str) -> String {
    let mut args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id}",
        o.tenant
    );
    if let Some(uid) = &o.uid {
        args.push_str(&format!(";K8S_POD_UID={uid}"));
    }
    if !o.from_kubernetes {
        let labels: Vec<String> = o.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.push_str(&format!(";ROMANA_SEGMENT={};ROMANA_LABELS={}", o.segment, labels.join(",")));
    }
    args
}

pub async fn pod_add(c: &Client, o: &PodOptions) -> Result<()> {
    let mut state = load(&o.state_dir, &o.name)?;
    let layout = state.layout()?;
    if !layout.hosts.iter().any(|h| h.name == o.host) {
        bail!(
            "sandbox {} has no host {:?} (hosts: {})",
            o.name,
            o.host,
            layout.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    let pod = o.pod.clone().unwrap_or_else(|| format!("p{}", state.pods.len() + 1));
    if !crate::sandbox_layout::valid_name(&pod) || state.pods.iter().any(|p| p.name == pod) {
        bail!("pod name {pod:?} is taken or not 1 to 8 characters from a-z 0-9");
    }
    if c.tenant(&o.tenant).await.is_err() {
        let req = TenantRequest {
            name: o.tenant.clone(),
            external_id: String::new(),
            labels: Default::default(),
            isolation: Default::default(),
        };
        let _ = c.create_tenant(&req).await;
    }
    let netns = layout.pod_netns(&pod);
    ip(&["netns".into(), "add".into(), netns.clone()])?;
    let sock = dir(&o.state_dir, &o.name).join(format!("{}.sock", o.host));
    // The pod's labels reach the agent with ADD (or from its record, which ADD waits for), so
    // policies select it from its first packet. The container id is the pod's name.
    let args = pod_cni_args(o, &pod, &pod);
    let r = match cni(&sock, "ADD", &pod, &format!("/run/netns/{netns}"), "romana-sandbox", &args) {
        Ok(r) => r,
        Err(e) => {
            let _ = ip(&["netns".into(), "del".into(), netns]);
            return Err(e);
        }
    };
    let (addr, ipv6) = crate::sandbox_ipv6::addresses(&r);
    state.pods.push(Pod {
        name: pod.clone(),
        host: o.host.clone(),
        netns,
        ip: addr.clone(),
        ipv6: ipv6.clone(),
        tenant: o.tenant.clone(),
        segment: o.segment.clone(),
        labels: o.labels.clone(),
    });
    save(&o.state_dir, &state)?;
    sync_fabric(c, &layout, &dir(&o.state_dir, &o.name)).await?;
    let addr = ipv6.map_or(addr.clone(), |v6| format!("{addr} {v6}"));
    println!("{pod} {addr} on {}", o.host);
    Ok(())
}

fn agent_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("romana-agent"))
}

pub async fn status(c: &Client, state_dir: &Path, name: &str) -> Result<()> {
    let state = load(state_dir, name)?;
    let layout = state.layout()?;
    println!(
        "{:<8} {:<6} {:<14} {:<6} {:>10} {:>10} {:>14}",
        "HOST", "RACK", "IP", "AGENT", "ENDPOINTS", "ROUTES", "PER-ENDPOINT"
    );
    // Dual stack: a route of each family per endpoint, and the kernel's IPv6 routes counted too.
    let families = if state.ipv6.is_some() { 2 } else { 1 };
    let total = state.pods.len() * families;
    for h in &layout.hosts {
        let alive = state.agents.get(&h.name).is_some_and(|p| agent_alive(*p));
        let local = state.pods.iter().filter(|p| p.host == h.name).count();
        let count = |args: &str| ipn(&h.netns, args).map(|o| o.lines().count()).unwrap_or(0);
        let kernel = count("route show proto 77") + (families - 1) * count("-6 route show proto 77");
        let routes = c.routes(&h.name).await.map(|r| r.routes.len()).unwrap_or(0);
        // Kernel routes: the route manager's set plus one /32 per local endpoint; a per-endpoint
        // scheme would need one route per endpoint in the whole sandbox.
        println!(
            "{:<8} {:<6} {:<14} {:<6} {:>10} {:>10} {:>14}",
            h.name,
            h.rack,
            h.ip,
            if alive { "up" } else { "DOWN" },
            local,
            format!("{kernel} ({routes}+{})", local * families),
            total
        );
    }
    if layout.routing == Routing::Bgp {
        crate::sandbox_bgp::print_status(&layout, &dir(state_dir, name));
    }
    println!();
    // A dual-stack sandbox's pods show both addresses.
    let v6 = |a: Option<&str>| state.ipv6.as_ref().map(|_| format!("{:<24} ", a.unwrap_or("-")));
    let head = v6(Some("IPV6")).unwrap_or_default();
    println!("{:<6} {:<8} {:<14} {head}{:<10} {:<10} LABELS", "POD", "HOST", "IP", "TENANT", "SEGMENT");
    for p in &state.pods {
        let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<6} {:<8} {:<14} {}{:<10} {:<10} {}",
            p.name,
            p.host,
            p.ip,
            v6(p.ipv6.as_deref()).unwrap_or_default(),
            p.tenant,
            p.segment,
            labels.join(",")
        );
    }
    Ok(())
}

/// Namespaces of sandbox `name` that exist now.
fn leftovers(name: &str) -> Result<Vec<String>> {
    let p = prefix(name);
    let list = ip(&["netns".into(), "list".into()])?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&p))
        .map(str::to_owned)
        .collect())
}

/// Stops the agents, deletes every namespace of the sandbox (found by name, so this works after
/// a crash or without a state file), removes its hosts from romanad when it can, and its state.
pub async fn down(state_dir: &Path, name: &str, c: Option<&Client>) -> Result<()> {
    if !crate::sandbox_layout::valid_name(name) {
        bail!("sandbox name {name:?}: 1 to 8 characters from a-z 0-9");
    }
    let state = load(state_dir, name).ok();
    if let Some(s) = &state {
        for pid in s.agents.values().filter(|p| agent_alive(**p)) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
    // Agents started by a state file that is gone: found by their socket directory.
    let d = dir(state_dir, name);
    if let Ok(out) = Command::new("pgrep").args(["-f", &format!("romana-agent.*{}/", d.display())]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
    crate::sandbox_static::stop_follower(&d);
    crate::sandbox_bgp::stop_birds(&d);
    let namespaces = leftovers(name)?;
    for ns in &namespaces {
        ip(&["netns".into(), "del".into(), ns.clone()])?;
    }
    if let (Some(c), Some(s)) = (c, &state)
        && let Ok(layout) = s.layout()
    {
        for h in &layout.hosts {
            let _ = c.remove_host(&h.name).await;
        }
    }
    let _ = std::fs::remove_dir_all(&d);
    println!("sandbox {name} down: {} namespaces removed", namespaces.len());
    Ok(())
}

fn known_host(layout: &Layout, host: &str) -> Result<()> {
    if layout.hosts.iter().any(|h| h.name == host) {
        return Ok(());
    }
    let names: Vec<&str> = layout.hosts.iter().map(|h| h.name.as_str()).collect();
    bail!("sandbox {} has no host {host:?} (hosts: {})", layout.name, names.join(", "))
}

/// `romana sandbox kill-host`.
pub fn kill_host(state_dir: &Path, name: &str, host: &str) -> Result<()> {
    let state = load(state_dir, name)?;
    let layout = state.layout()?;
    known_host(&layout, host)?;
    crate::sandbox_bgp::kill_host(&layout, host, state.agents.get(host).copied(), &dir(state_dir, name))?;
    println!("{host} killed: link down, agent and BIRD killed");
    Ok(())
}

/// `romana sandbox revive-host`: link and default route back, BIRD and the agent started again.
pub fn revive_host(state_dir: &Path, name: &str, host: &str) -> Result<()> {
    let mut state = load(state_dir, name)?;
    let layout = state.layout()?;
    known_host(&layout, host)?;
    let d = dir(state_dir, name);
    if state.agents.get(host).is_some_and(|p| crate::sandbox_bgp::pid_alive(*p, "romana-agent")) {
        bail!("{host} is alive (its agent runs); kill-host it first");
    }
    crate::sandbox_bgp::revive_links(&layout, host, &d)?;
    let pid = start_agent(&layout, host, &d)?;
    state.agents.insert(host.to_owned(), pid);
    save(state_dir, &state)?;
    println!("{host} revived: link up, agent started (pid {pid})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(labels: &[(&str, &str)], segment: &str, uid: Option<&str>, kube: bool, expect: &str) {
        let o = PodOptions {
            name: "sb".into(),
            host: "r1h1".into(),
            tenant: "red".into(),
            segment: segment.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            pod: None,
            uid: uid.map(str::to_owned),
            from_kubernetes: kube,
            state_dir: PathBuf::new(),
        };
        assert_eq!(pod_cni_args(&o, "web1", "web1"), expect);
    }

    #[test]
    fn cni_args_are_kubelets_plus_the_runtime_labels_unless_kubernetes_gives_them() {
        let kubelet =
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=red;K8S_POD_NAME=web1;K8S_POD_INFRA_CONTAINER_ID=web1";
        check(
            &[("app", "web"), ("tier", "1")],
            "web",
            None,
            false,
            &format!("{kubelet};ROMANA_SEGMENT=web;ROMANA_LABELS=app=web,tier=1"),
        );
        check(&[], "", None, false, &format!("{kubelet};ROMANA_SEGMENT=;ROMANA_LABELS="));
        check(&[], "", Some("u-1"), true, &format!("{kubelet};K8S_POD_UID=u-1"));
        check(&[], "", None, true, kubelet);
    }
}
