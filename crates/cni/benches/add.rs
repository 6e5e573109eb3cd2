//! CNI ADD latency for a burst of pods: romana-cni (agent, romanad IPAM, veth, routes) against
//! Debian's reference `bridge` + `host-local` plugins, in the same run on the same machine. Each
//! plugin is exec'd once per pod the way a runtime does (through `nsenter` into the node namespace,
//! the same wrapper for both), one pod after another; then every pod is deleted (DEL timed too).
//! Dual stack: the same burst for a tenant drawing from an IPv4 and an IPv6 network (two
//! addresses, two records, both families plumbed) against an IPv4-only tenant, alternated over
//! three rounds (one with `--quick`) and pooled, with the CPU each burst took per ADD.
//! `cargo build --release -p romana-agent && cargo bench -p romana-cni --bench add`
//! (`-- --quick`: 20 pods).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cni, conf, wait_for};
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

/// CPU seconds so far (user + system) of the agent, of this process (romanad's services), of
/// this process's waited-for children (nsenter and the plugins) and of the whole machine.
#[derive(Clone, Copy, Default)]
struct Cpu {
    agent: f64,
    bench: f64,
    children: f64,
    machine: f64,
}

/// utime + stime (and cutime + cstime) of `/proc/<pid>/stat`, in seconds (USER_HZ 100).
fn proc_cpu(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    let at = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / 100.0;
    (at(14) + at(15), at(16) + at(17))
}

fn cpu_now(agent: u32) -> Cpu {
    let (bench, children) = proc_cpu("self");
    Cpu { agent: proc_cpu(&agent.to_string()).0, bench, children, machine: common::busy_seconds() }
}

/// ADD then DEL for every pod; returns (ADD stats, DEL stats, each ADD's time in order, the CPU
/// the ADDs took).
fn burst(
    node: &str,
    plugin: &Path,
    conf: &Value,
    pods: &[Netns],
    agent: u32,
) -> (Stats, Stats, Vec<Duration>, Cpu) {
    let want = if conf["tenant"] == "dual" { 2 } else { 1 };
    let mut adds = Vec::new();
    // ROMANA_BENCH_MARKS: each ADD phase's start and end on the clock `perf record -k
    // CLOCK_MONOTONIC` uses (the boot clock of /proc/uptime: the same on a machine that never
    // suspends), so that a system-wide profile can be cut to one burst (`perf report --time`).
    let marks = std::env::var_os("ROMANA_BENCH_MARKS").is_some() && pods.len() > 1;
    let uptime = || {
        std::fs::read_to_string("/proc/uptime").unwrap_or_default().split(' ').next().unwrap_or("").to_owned()
    };
    if marks {
        println!("mark: {} {} ADDs start at {}", plugin.display(), conf["tenant"], uptime());
    }
    let before = cpu_now(agent);
    for (i, p) in pods.iter().enumerate() {
        let (d, r) = call(node, plugin, "ADD", &format!("bench{i}"), &p.0, conf);
        let n = r["ips"].as_array().map_or(0, Vec::len);
        assert!(n == want && r["ips"][0]["address"].is_string(), "ADD result has {want} addresses: {r}");
        adds.push(d);
    }
    let after = cpu_now(agent);
    if marks {
        println!("mark: {} {} ADDs end at {}", plugin.display(), conf["tenant"], uptime());
    }
    let cpu = Cpu {
        agent: after.agent - before.agent,
        bench: after.bench - before.bench,
        children: after.children - before.children,
        machine: after.machine - before.machine,
    };
    let mut dels = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        dels.push(call(node, plugin, "DEL", &format!("bench{i}"), &p.0, conf).0);
    }
    (stats(adds.clone()), stats(dels), adds, cpu)
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
    // ROMANA_BENCH_AGENT_ARGS: more agent flags (e.g. `--interval-ms 60000 --no-watch`, to see
    // what the route loop costs during a burst).
    let extra = std::env::var("ROMANA_BENCH_AGENT_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    let agent = common::agent_with(
        &creds,
        "node1",
        "192.168.77.1",
        &node.0,
        &socket,
        &dir.path().join("agent.log"),
        &extra,
    );
    let apid = agent.0.id();
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
    // One warm-up pod each (first exec of a binary pays page-cache misses), then the bursts.
    burst(&node.0, romana, &rconf, &pods[..1], apid);
    burst(&node.0, romana, &dconf, &pods[..1], apid);
    burst(&node.0, bridge, &bconf, &pods[..1], apid);
    // Rounds of one IPv4-only and one dual-stack burst, the order swapped every round, so that
    // load from other tenants of this shared machine (which comes and goes over seconds) hits
    // both kinds alike; the reference once, after the first round. The agent logs one line per
    // ADD in order (the two warm-ups first), which `log_at` follows.
    let rounds = if quick { 1 } else { 3 };
    let mut runs: Vec<Run> = Vec::new();
    let mut log_at = 2;
    let mut reference = None;
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [(&rconf, false), (&dconf, true)]
        } else {
            [(&dconf, true), (&rconf, false)]
        };
        for (c, dual) in order {
            let (add, del, times, cpu) = burst(&node.0, romana, c, &pods, apid);
            runs.push(Run { round, dual, add, del, times, cpu, log_at });
            log_at += n;
        }
        if round == 0 {
            reference = Some(burst(&node.0, bridge, &bconf, &pods, apid));
        }
    }
    let (ba, bd, _, bc) = reference.expect("the reference ran");
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    report(n, &runs, (&ba, &bd, bc), &log);
}

/// One burst of romana-cni ADDs (then DELs).
struct Run {
    round: usize,
    dual: bool,
    add: Stats,
    del: Stats,
    times: Vec<Duration>,
    cpu: Cpu,
    /// Index of its first ADD among the agent's `CNI ADD` log lines.
    log_at: usize,
}

fn kind(dual: bool) -> &'static str {
    if dual { "dual stack" } else { "IPv4" }
}

/// Prints each burst, the kinds pooled over all rounds, CPU per ADD and the agent's steps.
fn report(n: usize, runs: &[Run], (ba, bd, bc): (&Stats, &Stats, Cpu), log: &str) {
    println!("CNI ADD/DEL latency, {n} pods one after another (ms)");
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "burst", "ADD p50", "ADD p99", "ADD mean", "DEL p50", "DEL p99"
    );
    for r in runs {
        let (a, d) = (&r.add, &r.del);
        let name = format!("round {} romana-cni {}", r.round + 1, kind(r.dual));
        println!("{name:<34} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}", a.p50, a.p99, a.mean, d.p50, d.p99);
    }
    println!(
        "{:<34} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        "bridge + host-local", ba.p50, ba.p99, ba.mean, bd.p50, bd.p99
    );
    // Pooled: every ADD of a kind over all rounds.
    let pooled = |dual: bool| {
        let all: Vec<Duration> =
            runs.iter().filter(|r| r.dual == dual).flat_map(|r| r.times.clone()).collect();
        stats(all)
    };
    let (p4, p6) = (pooled(false), pooled(true));
    for (name, a) in [("pooled romana-cni IPv4", &p4), ("pooled romana-cni dual stack", &p6)] {
        println!("{name:<34} {:>8.2} {:>8.2} {:>8.2}", a.p50, a.p99, a.mean);
    }
    // CPU per ADD, by whom: background work that grows with the pods on the host shows here even
    // when it runs between two ADDs (the machine's figure includes the kernel's softirqs and
    // kworkers, and other tenants of this shared machine).
    let per = |s: f64| s * 1e3 / n as f64;
    for (name, c) in runs
        .iter()
        .map(|r| (format!("round {} {}", r.round + 1, kind(r.dual)), r.cpu))
        .chain([("bridge + host-local".to_owned(), bc)])
    {
        println!(
            "CPU per ADD, {name} (ms): agent {:.2}, romanad (bench process) {:.2}, nsenter + plugin {:.2}, machine {:.2}",
            per(c.agent),
            per(c.bench),
            per(c.children),
            per(c.machine)
        );
    }
    // Where romana's ADD time goes, from the agent's log: each step's mean, then the ADD's time
    // in the agent (`total`) and outside it (the bench's time less the agent's: nsenter, the
    // plugin's start, the socket, the result) at p50.
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| c.is_whitespace()).next()?.parse().ok()
    };
    if std::env::var_os("ROMANA_BENCH_SHOW_LOG").is_some() {
        println!("{}", log.lines().filter(|l| l.contains("CNI ADD")).take(3).collect::<Vec<_>>().join("\n"));
    }
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
    for r in runs {
        let name = format!("round {} {}", r.round + 1, kind(r.dual));
        let burst = lines.get(r.log_at..(r.log_at + n).min(lines.len())).unwrap_or_default();
        let steps: Vec<String> = keys
            .iter()
            .map(|k| {
                let v: Vec<f64> = burst.iter().filter_map(|l| field(l, k)).collect();
                format!("{} {:.2}", k.trim_end_matches("_ms="), mean(&v))
            })
            .collect();
        println!("romana ADD inside the agent, {name} (mean ms): {}", steps.join(", "));
        let total: Vec<f64> = burst.iter().filter_map(|l| field(l, "total_ms=")).collect();
        if total.len() == r.times.len() {
            let ms =
                |v: Vec<f64>| stats(v.iter().map(|m| Duration::from_secs_f64(m.max(0.0) / 1e3)).collect());
            let inside = ms(total.clone());
            let outside =
                ms(r.times.iter().zip(&total).map(|(d, t)| d.as_secs_f64() * 1e3 - t).collect::<Vec<_>>());
            println!(
                "romana ADD {name}: in the agent p50 {:.2} mean {:.2}, outside it p50 {:.2} mean {:.2} (ms)",
                inside.p50, inside.mean, outside.p50, outside.mean
            );
        }
    }
    let first4 = runs.iter().find(|r| !r.dual).expect("an IPv4 burst");
    println!(
        "ratio romana IPv4 (round 1)/reference: ADD p50 {:.2}, ADD p99 {:.2}, DEL p50 {:.2} (target ADD <= 1.0)",
        first4.add.p50 / ba.p50,
        first4.add.p99 / ba.p99,
        first4.del.p50 / bd.p50
    );
    for round in 0..runs.iter().map(|r| r.round + 1).max().unwrap_or(0) {
        let of =
            |dual: bool| runs.iter().find(|r| r.round == round && r.dual == dual).expect("both kinds ran");
        let (v4, v6) = (of(false), of(true));
        println!(
            "ratio dual/IPv4, round {}: ADD p50 {:.2}, ADD p99 {:.2}, DEL p50 {:.2}",
            round + 1,
            v6.add.p50 / v4.add.p50,
            v6.add.p99 / v4.add.p99,
            v6.del.p50 / v4.del.p50
        );
    }
    println!(
        "ratio dual/IPv4, pooled over the rounds: ADD p50 {:.2}, ADD p99 {:.2}, mean {:.2} (target ADD < 1.2)",
        p6.p50 / p4.p50,
        p6.p99 / p4.p99,
        p6.mean / p4.mean
    );
}
