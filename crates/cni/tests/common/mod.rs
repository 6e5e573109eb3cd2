//! Shared by romana-cni's end-to-end tests: romanad's services in the test process on 127.0.0.1,
//! agent processes programming test namespaces, and the plugin called the way runtimes call it.
#![allow(dead_code, clippy::unwrap_used)]

pub mod policy;
pub mod probe;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_api::topology::TopologyRequest;
use romana_test_support::sibling_bin;
use serde_json::{Value, json};

/// Egress NAT off: these tests and benches are about pod-to-pod paths, the fast path and the
/// firewall; a masqueraded endpoint would stay off the fast path (docs/fabric.md, "Egress NAT").
pub const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28,"nat_outgoing":false}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

/// romanad's services on 127.0.0.1 (port chosen at run time); returns the admin credentials file.
pub async fn romanad(dir: &Path) -> PathBuf {
    let creds = dir.join("admin.credentials");
    let _url = romana_services::serve_loopback(
        "cni-test",
        Some(serde_json::from_str::<TopologyRequest>(FLAT).unwrap()),
        Some(creds.clone()),
    )
    .await
    .unwrap();
    creds
}

/// Dual stack: an IPv4 and an IPv6 network for tenant acme (`pods4`, `pods6`); tenant six draws
/// from the IPv6 one only; tenant tiny from the IPv4 one and an IPv6 network of two addresses
/// (`tiny6`), so its third endpoint's IPv6 allocation fails. Egress NAT off, as in `FLAT`.
pub const DUAL: &str = r#"{"networks":[
  {"name":"pods4","cidr":"10.20.0.0/16","block_mask":28,"nat_outgoing":false,"tenants":["acme","x","y","z","tiny"]},
  {"name":"pods6","cidr":"fd00:20::/112","block_mask":124,"nat_outgoing":false,"tenants":["acme","x","y","z","six"]},
  {"name":"tiny6","cidr":"fd00:30::/127","block_mask":127,"nat_outgoing":false,"tenants":["tiny"]}],
  "topologies":[{"networks":["pods4","pods6","tiny6"],"map":[{"groups":[]}]}]}"#;

/// `romanad` with another topology (JSON).
pub async fn romanad_with(dir: &Path, topology: &str) -> PathBuf {
    let creds = dir.join("admin.credentials");
    let _url = romana_services::serve_loopback(
        "cni-test",
        Some(serde_json::from_str::<TopologyRequest>(topology).unwrap()),
        Some(creds.clone()),
    )
    .await
    .unwrap();
    creds
}

/// The admin client of the romanad `romanad`/`romanad_with` started.
pub async fn admin(creds: &Path) -> romana_client::Client {
    let c: romana_api::rest::Credentials =
        serde_json::from_str(&std::fs::read_to_string(creds).unwrap()).unwrap();
    romana_client::Client::from_credentials(&c).await.unwrap()
}

/// The addresses of an ADD result's `ips`, in order (without their prefix lengths).
pub fn result_ips(r: &Value) -> Vec<std::net::IpAddr> {
    r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap())
        .collect()
}

/// An agent process, killed on drop.
pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn agent(creds: &Path, host: &str, ip: &str, netns: &str, socket: &Path, log: &Path) -> Agent {
    agent_with(creds, host, ip, netns, socket, log, &[])
}

/// `agent` with more flags.
pub fn agent_with(
    creds: &Path,
    host: &str,
    ip: &str,
    netns: &str,
    socket: &Path,
    log: &Path,
    extra: &[&str],
) -> Agent {
    let bin = sibling_bin(env!("CARGO_BIN_EXE_romana-cni"), "romana-agent");
    // The tests' interval unless `extra` sets its own (the agent takes a flag once).
    let interval: &[&str] = if extra.contains(&"--interval-ms") { &[] } else { &["--interval-ms", "200"] };
    let child = Command::new(bin)
        .args(["--host", host, "--host-ip", ip, "--netns", netns])
        .args(interval)
        .args(extra)
        .arg("--socket")
        .arg(socket)
        .arg("--credentials")
        .arg(creds)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Agent(child)
}

/// `nft ARGS` inside a namespace the test created (never the root namespace): its output.
pub fn nft_in(ns: &str, args: &str) -> String {
    let out =
        Command::new("ip").args(["netns", "exec", ns, "nft"]).args(args.split_whitespace()).output().unwrap();
    assert!(out.status.success(), "nft {args}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft -f -` with `script` inside a namespace the test created (never the root namespace).
pub fn nft_script(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft -f in {ns}");
}

/// Sends `SIG<sig>` to an agent the test started (`STOP` pauses it, `CONT` resumes it).
pub fn signal(agent: &Agent, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &agent.0.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} the agent");
}

/// CPU time the whole machine spent busy so far (user, system, interrupts; not idle, iowait or
/// steal), in seconds: read around each run, it gives CPU seconds per gigabyte moved, a cost that
/// other tenants' load on this shared machine moves far less than it moves throughput.
pub fn busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<f64> =
        stat.lines().next().unwrap().split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    // user nice system idle iowait irq softirq steal ...; USER_HZ is 100 on Linux.
    (cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6]) / 100.0
}

/// One plugin call with interface eth0: (exit status, stdout as JSON or Null).
pub fn cni(command: &str, cid: &str, netns: &str, conf: &Value, args: &str) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_romana-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

pub fn conf(version: &str, socket: &Path) -> Value {
    json!({"cniVersion": version, "name": "romana-test", "type": "romana-cni",
           "agent_socket": socket, "tenant": "acme", "segment": "web"})
}

pub fn ping(from: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from, "ping", "-c1", "-W1", to])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// Links, addresses, routes and neighbours of namespaces, for a failure message.
pub fn dump(namespaces: &[&str]) -> String {
    namespaces
        .iter()
        .map(|ns| {
            let o = Command::new("sh")
                .arg("-c")
                .arg(format!("ip -n {ns} -br link; ip -n {ns} -br addr; ip -n {ns} route; ip -n {ns} neigh"))
                .output()
                .unwrap();
            format!("--- {ns}\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A busybox root filesystem as a tar (for `podman import`): busybox-static and its applets.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    for a in ["sh", "ip", "ping", "wget", "httpd", "sleep", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    let tar = dir.join("busybox.tar");
    let ok = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(ok.success());
    tar
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `GET path` on an agent's Unix socket: (status, body).
pub fn agent_get(socket: &Path, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Adds (`verb` "add") or deletes an empty clsact qdisc on `ns`'s eth0: something on the
/// uplink's transmit side, which turns the fast path's hand-off to its far end off.
pub fn clsact(ns: &str, verb: &str) {
    let out = Command::new("tc")
        .args(["-n", ns, "qdisc", verb, "dev", "eth0", "clsact"])
        .output()
        .expect("tc runs");
    assert!(out.status.success(), "tc -n {ns} qdisc {verb}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An agent's uplinks with whether its fast path hands packets to their far ends (`/v1/status`).
pub fn handoffs(socket: &Path) -> Vec<(String, bool)> {
    let (code, body) = agent_get(socket, "/v1/status");
    assert_eq!(code, 200, "status: {body}");
    let v: Value = serde_json::from_str(&body).expect("status JSON");
    let list = v["fast_path"]["uplinks"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|u| (u["name"].as_str().unwrap_or("").to_owned(), u["handoff"].as_bool().unwrap_or(false)))
        .collect()
}

/// A counter's value from an agent's `/metrics`.
pub fn agent_metric(socket: &Path, name: &str) -> f64 {
    let (_, body) = agent_get(socket, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
}

/// One iperf3 run from `client` to `server_ip` (server started in `server`): Gbit/s.
pub fn iperf(server: &str, client: &str, server_ip: &str, secs: u32) -> f64 {
    let mut srv = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s", "-1", "-B", server_ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", client, "iperf3", "-J", "-t", &secs.to_string(), "-c", server_ip])
        .output()
        .expect("iperf3 client");
    let _ = srv.kill();
    let _ = srv.wait();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64();
    bps.unwrap_or_else(|| {
        panic!("iperf3 {client} -> {server_ip} failed: {}", String::from_utf8_lossy(&out.stdout))
    }) / 1e9
}

/// Datagrams a test namespace's kernel forwarded (`Ip: ForwDatagrams` of its /proc/net/snmp).
pub fn forwarded(ns: &str) -> u64 {
    let out = Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/snmp"]).output().unwrap();
    let snmp = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ip = snmp.lines().filter(|x| x.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let at = names.split_whitespace().position(|n| n == "ForwDatagrams").unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// The BPF programs at the tcx ingress of `host`'s first link named `prefix...` (not the
/// gateway), in the order they run; empty when there is no such link.
pub fn programs(host: &str, prefix: &'static str) -> Vec<String> {
    let out = Command::new("ip").args(["-n", host, "-j", "link", "show"]).output().unwrap();
    let links: Value = serde_json::from_slice(&out.stdout).unwrap();
    let Some(ifindex) = links.as_array().into_iter().flatten().find_map(|l| {
        let name = l["ifname"].as_str()?;
        (name.starts_with(prefix) && name != "romana-gw").then(|| l["ifindex"].as_u64())?
    }) else {
        return vec![];
    };
    romana_host::in_netns(host, move || async move { romana_host::tcx_program_names(ifindex as u32) })
        .unwrap()
        .unwrap()
}
