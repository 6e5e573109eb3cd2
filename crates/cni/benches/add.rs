//! CNI ADD latency for a burst of pods: romana-cni (agent, romanad IPAM, veth, routes) against
//! Debian's reference `bridge` + `host-local` plugins, in the same run on the same machine. Each
//! plugin is exec'd once per pod the way a runtime does (through `nsenter` into the node namespace,
//! the same wrapper for both), one pod after another; then every pod is deleted (DEL timed too).
//! Then dual stack: the same burst for a tenant drawing from an IPv4 and an IPv6 network (two
//! addresses, two records, both families plumbed) against an IPv4-only tenant, in the same run.
//! `cargo build --release -p romana-agent && cargo bench -p romana-cni --bench add`
//! (`-- --quick`: 20 pods).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent, cni, conf, wait_for};
use romana_test_support::{Netns, TempDir};
use serde_json::{Value, json};

/// Runs `plugin` in `node` with CNI_* set; returns elapsed time and the parsed stdout.
fn call(node: &str, plugin: &Path, command: &str, cid: &str, pod: &str, conf: &Value) -> (Duration, Value) {
    let start = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .arg(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", format!("/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("plugin starts");
    child.stdin.take().expect("stdin").write_all(conf.to_string().as_bytes()).expect("write config");
    let out = child.wait_with_output().expect("plugin runs");
    let elapsed = start.elapsed();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "{} {command} {cid}: {v}", plugin.display());
    (elapsed, v)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn stats(mut d: Vec<Duration>) -> Stats {
    d.sort();
    let mean = d.iter().map(Duration::as_secs_f64).sum::<f64>() / d.len() as f64 * 1e3;
    Stats { p50: pct(&d, 0.5), p99: pct(&d, 0.99), mean }
}

/// The bench's topology: tenant v4 draws from an IPv4 network only, tenant dual from it and an
/// IPv6 network (egress NAT off, as `common::FLAT`).
const TOPOLOGY: &str = r#"{"networks":[
  {"name":"pods4","cidr":"10.20.0.0/16","block_mask":28,"nat_outgoing":false,"tenants":["v4","dual"]},
  {"name":"pods6","cidr":"fd00:20::/112","block_mask":124,"nat_outgoing":false,"tenants":["dual"]}],
  "topologies":[{"networks":["pods4","pods6"],"map":[{"groups":[]}]}]}"#;

/// ADD then DEL for every pod; returns (ADD stats, DEL stats, each ADD's time in order).
fn burst(node: &str, plugin: &Path, conf: &Value, pods: &[Netns]) -> (Stats, Stats, Vec<Duration>) {
    let want = if conf["tenant"] == "dual" { 2 } else { 1 };
    let mut adds = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let (d, r) = call(node, plugin, "ADD", &format!("bench{i}"), &p.0, conf);
        let n = r["ips"].as_array().map_or(0, Vec::len);
        assert!(n == want && r["ips"][0]["address"].is_string(), "ADD result has {want} addresses: {r}");
        adds.push(d);
    }
    let mut dels = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        dels.push(call(node, plugin, "DEL", &format!("bench{i}"), &p.0, conf).0);
    }
    (stats(adds.clone()), stats(dels), adds)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 20 } else { 100 };
    let pid = std::process::id();
    let Some(node) = Netns::new(&format!("rmb-{pid}-cninode")) else {
        println!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    node.ip("link set lo up");
    let pods: Vec<Netns> =
        (0..n).map(|i| Netns::new(&format!("rmb-{pid}-pod{i}")).expect("pod namespace")).collect();
    let dir = TempDir::new("cni-bench");
    let creds = common::romanad_with(dir.path(), TOPOLOGY).await;
    let socket = dir.path().join("agent.sock");
    let _agent = agent(&creds, "node1", "192.168.77.1", &node.0, &socket, &dir.path().join("agent.log"));
    wait_for("agent ready", 30, || cni("STATUS", "", "", &conf("1.1.0", &socket), "").0 == 0).await;

    let romana = Path::new(env!("CARGO_BIN_EXE_romana-cni"));
    let bridge = Path::new("/usr/lib/cni/bridge");
    if !bridge.exists() {
        println!("SKIP: /usr/lib/cni/bridge missing (scripts/setup.sh installs containernetworking-plugins)");
        return;
    }
    let rconf = json!({"cniVersion": "1.0.0", "name": "romana-bench", "type": "romana-cni",
                       "agent_socket": socket, "tenant": "v4"});
    let mut dconf = rconf.clone();
    dconf["tenant"] = json!("dual");
    let bconf = json!({"cniVersion": "1.0.0", "name": "bridge-bench", "type": "bridge",
        "bridge": "rmbbr0", "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": dir.path().join("host-local")}});
    // One warm-up pod each (first exec of a binary pays page-cache misses), then the bursts,
    // alternated so drift on this shared machine hits both.
    burst(&node.0, romana, &rconf, &pods[..1]);
    burst(&node.0, romana, &dconf, &pods[..1]);
    burst(&node.0, bridge, &bconf, &pods[..1]);
    let (ra, rd, rt) = burst(&node.0, romana, &rconf, &pods);
    let (da, dd, dt) = burst(&node.0, romana, &dconf, &pods);
    let (ba, bd, _) = burst(&node.0, bridge, &bconf, &pods);
    // A second IPv4-only burst after the dual one, so drift over the run shows.
    let (ra2, _, rt2) = burst(&node.0, romana, &rconf, &pods);
    println!("CNI ADD/DEL latency, {n} pods one after another (ms)");
    println!(
        "{:<26} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "plugin", "ADD p50", "ADD p99", "ADD mean", "DEL p50", "DEL p99"
    );
    for (name, a, d) in [
        ("romana-cni IPv4", &ra, &rd),
        ("romana-cni dual stack", &da, &dd),
        ("bridge + host-local", &ba, &bd),
    ] {
        println!("{name:<26} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}", a.p50, a.p99, a.mean, d.p50, d.p99);
    }
    // Where romana's ADD time goes, from the agent's log: IPAM allocation and netlink plumbing.
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| c.is_whitespace()).next()?.parse().ok()
    };
    if std::env::var_os("ROMANA_BENCH_SHOW_LOG").is_some() {
        println!("{}", log.lines().filter(|l| l.contains("CNI ADD")).take(3).collect::<Vec<_>>().join("\n"));
    }
    // The agent logs one line per ADD, in order: the two warm-ups (IPv4, dual), then the bursts.
    // Each step's mean, then the ADD's time in the agent (`total`) and outside it (the bench's
    // time less the agent's: nsenter, the plugin's start, the socket, the result) at p50.
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("CNI ADD")).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let keys = [
        "alloc_ms=",
        "register_ms=",
        "policy_ms=",
        "plumb_ms=",
        "plumb_work_ms=",
        "veth_ms=",
        "pod_side_ms=",
        "pod_v6_ms=",
        "host_side_ms=",
        "host_v6_ms=",
    ];
    for (name, at, times) in [("IPv4", 2, &rt), ("dual stack", 2 + n, &dt), ("IPv4 again", 2 + 2 * n, &rt2)] {
        let burst = lines.get(at..(at + n).min(lines.len())).unwrap_or_default();
        let steps: Vec<String> = keys
            .iter()
            .map(|k| {
                let v: Vec<f64> = burst.iter().filter_map(|l| field(l, k)).collect();
                format!("{} {:.2}", k.trim_end_matches("_ms="), mean(&v))
            })
            .collect();
        println!("romana ADD inside the agent, {name} (mean ms): {}", steps.join(", "));
        let total: Vec<f64> = burst.iter().filter_map(|l| field(l, "total_ms=")).collect();
        if total.len() == times.len() {
            let ms =
                |v: Vec<f64>| stats(v.iter().map(|m| Duration::from_secs_f64(m.max(0.0) / 1e3)).collect());
            let inside = ms(total.clone());
            let outside =
                ms(times.iter().zip(&total).map(|(d, t)| d.as_secs_f64() * 1e3 - t).collect::<Vec<_>>());
            println!(
                "romana ADD {name}: in the agent p50 {:.2} mean {:.2}, outside it p50 {:.2} mean {:.2} (ms)",
                inside.p50, inside.mean, outside.p50, outside.mean
            );
        }
    }
    println!(
        "ratio romana/reference: ADD p50 {:.2}, ADD p99 {:.2}, DEL p50 {:.2} (target ADD <= 1.0)",
        ra.p50 / ba.p50,
        ra.p99 / ba.p99,
        rd.p50 / bd.p50
    );
    println!(
        "ratio dual/IPv4: ADD p50 {:.2}, ADD p99 {:.2}, DEL p50 {:.2} (target ADD < 1.2); \
         IPv4 again after dual: ADD p50 {:.2}, p99 {:.2}",
        da.p50 / ra.p50,
        da.p99 / ra.p99,
        dd.p50 / rd.p50,
        ra2.p50,
        ra2.p99
    );
}
