//! Route propagation: how long after a pod lands in a new block on one host the other host's
//! kernel has the changed route set. Agents following romanad's watch (the default) against agents
//! that only poll every 500 ms (`--no-watch`), in the same run. Each sample is a CNI ADD for a new
//! tenant (a new block) on hosts b and a in turn, then reading the other host's routes every 2 ms;
//! a block the other host's aggregate already covers changes nothing and is counted apart.
//! `cargo build --release -p romana-agent && cargo bench -p romana-cni --bench propagation`
//! (`-- --quick`: 5 samples each).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cni, conf, wait_for};
use romana_test_support::{HostPair, Netns, TempDir, sibling_bin};
use serde_json::json;

struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(creds: &Path, host: &str, ip: &str, netns: &str, socket: &Path, watch: bool) -> Agent {
    let bin = sibling_bin(env!("CARGO_BIN_EXE_romana-cni"), "romana-agent");
    let mut cmd = Command::new(bin);
    cmd.args(["--host", host, "--host-ip", ip, "--netns", netns, "--interval-ms", "500"])
        .arg("--socket")
        .arg(socket)
        .arg("--credentials")
        .arg(creds)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !watch {
        cmd.arg("--no-watch");
    }
    Agent(cmd.spawn().expect("romana-agent starts"))
}

fn routes(ns: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "route", "show", "proto", "77"]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let samples = if quick { 5 } else { 30 };
    let Some(hosts) = HostPair::new("rmb") else {
        println!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let pid = std::process::id();
    let pods: Vec<Netns> =
        (0..samples * 2).map(|i| Netns::new(&format!("rmb-{pid}-pp{i}")).expect("pod namespace")).collect();
    let dir = TempDir::new("propagation");
    let creds = common::romanad(dir.path()).await;
    let mut results = Vec::new();
    for (round, watch) in [(0, true), (1, false)] {
        let sa = dir.path().join(format!("a{round}.sock"));
        let sb = dir.path().join(format!("b{round}.sock"));
        let _a = agent(&creds, "ha", "192.168.88.1", &hosts.0.0, &sa, watch);
        let _b = agent(&creds, "hb", "192.168.88.2", &hosts.1.0, &sb, watch);
        wait_for("agents ready", 30, || {
            cni("STATUS", "", "", &conf("1.1.0", &sa), "").0 == 0
                && cni("STATUS", "", "", &conf("1.1.0", &sb), "").0 == 0
        })
        .await;
        let mut ms = Vec::new();
        let mut unchanged = 0;
        for i in 0..samples {
            // Alternate hosts, so each host's blocks sit between the other's and new blocks
            // change the other host's aggregated routes.
            let (sock, other) = if i % 2 == 0 { (&sb, &hosts.0.0) } else { (&sa, &hosts.1.0) };
            let before = routes(other);
            let pod = &pods[round * samples + i];
            let c = json!({"cniVersion": "1.0.0", "name": "prop", "type": "romana-cni",
                           "agent_socket": sock, "tenant": format!("t{round}x{i}")});
            let (rc, r) = cni("ADD", &format!("c{round}x{i}"), &format!("/run/netns/{}", pod.0), &c, "");
            assert_eq!(rc, 0, "ADD: {r}");
            let start = Instant::now();
            // A block the other host's aggregate already covers needs no change at all: such a
            // sample is counted apart, not timed.
            loop {
                if routes(other) != before {
                    ms.push(start.elapsed().as_secs_f64() * 1e3);
                    break;
                }
                if start.elapsed() > Duration::from_millis(1500) {
                    unchanged += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        println!(
            "{}: {} of {samples} new blocks changed the other host's routes",
            if watch { "watch" } else { "poll" },
            samples - unchanged
        );
        if std::env::var_os("ROMANA_BENCH_DEBUG").is_some() {
            println!(
                "host a routes:\n{}",
                String::from_utf8_lossy(
                    &Command::new("ip").args(["-n", &hosts.0.0, "route"]).output().expect("ip").stdout
                )
            );
            println!("{ms:?}");
        }
        results.push((watch, ms));
    }
    println!("new block on one host -> the other host's kernel routes changed, {samples} samples (ms)");
    println!("{:<28} {:>8} {:>8} {:>8}", "agents", "p50", "p99", "max");
    let mut p50s = Vec::new();
    for (watch, mut ms) in results {
        let name = if watch { "follow the watch" } else { "poll every 500 ms" };
        let (p50, p99, max) = (pct(&mut ms, 0.5), pct(&mut ms, 0.99), pct(&mut ms, 1.0));
        println!("{name:<28} {p50:>8.1} {p99:>8.1} {max:>8.1}");
        p50s.push(p50);
    }
    println!("ratio watch/poll p50 {:.3}", p50s[0] / p50s[1]);
}
