//! Failover, end to end, in one sandbox on BGP (root): a host is killed (`romana sandbox
//! kill-host`: link down, agent and BIRD SIGKILLed) and two clocks run from that moment: until
//! its rack router's kernel has lost the host's prefix (BGP with BFD, 100 ms x 3), and until a
//! neighbour host's kernel has lost its routes to it (the lease path: the route manager's 2 s
//! lease, then the neighbour's agent). Rounds of kill and revive; prints each and the medians.
//! Run: `cargo bench -p romana-cli --bench failover` (needs root, bird2; builds the binaries).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use romana_test_support::TempDir;

// The sandbox tests' harness: romanad and a sandbox of its own, `romana` against it, `down` on drop.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;
use common::Sandbox;

const ROUNDS: usize = 5;

fn routes(ns: &str, proto: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "-o", "route", "show", "proto", proto]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait(what: &str, cond: impl Fn() -> bool, explain: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: not reached in 60 s: {}", explain());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: bird2 is not installed");
        return;
    }
    let dir = TempDir::new("failover");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "f");
    let name = sb.name.clone();
    sb.ok(&["sandbox", "up", "--routing", "bgp"]);
    for host in ["r1h1", "r1h2", "r2h1", "r2h2"] {
        sb.ok(&["sandbox", "pod", "add", "--host", host, "--tenant", "red"]);
    }
    let rack = format!("rms-{name}-rack2");
    let neighbour = format!("rms-{name}-r2h2");
    let dead = "via 192.168.2.11";
    let (mut bgp, mut lease) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let d = sb.state.join(&name);
        wait(
            "routes to r2h1 everywhere",
            || routes(&rack, "bird").contains(dead) && routes(&neighbour, "77").contains(dead),
            || {
                let birdc = |ns: &str| {
                    let out = Command::new("birdc")
                        .arg("-s")
                        .arg(d.join(format!("{ns}.ctl")))
                        .args(["show", "protocols", "all"])
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout).into_owned()
                };
                let log = std::fs::read_to_string(d.join("r2h1.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "rack2 bird routes: {}\nneighbour 77: {}\nrack2: {}\nr2h1 bird: {}\nr2h1 agent log tail: {:#?}",
                    routes(&rack, "bird"),
                    routes(&neighbour, "77"),
                    birdc(&rack),
                    birdc(&format!("rms-{name}-r2h1")),
                    tail
                )
            },
        );
        let t0 = Instant::now();
        sb.ok(&["sandbox", "kill-host", "r2h1"]);
        let (mut b, mut l) = (None, None);
        while b.is_none() || l.is_none() {
            if b.is_none() && !routes(&rack, "bird").contains(dead) {
                b = Some(t0.elapsed().as_secs_f64());
            }
            if l.is_none() && !routes(&neighbour, "77").contains(dead) {
                l = Some(t0.elapsed().as_secs_f64());
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "no withdrawal in 60 s (bgp {b:?}, lease {l:?})");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (b, l) = (b.unwrap_or_default(), l.unwrap_or_default());
        println!(
            "round {round}: BGP+BFD withdrawn at the rack router {b:.3} s; lease path at a neighbour {l:.3} s"
        );
        bgp.push(b);
        lease.push(l);
        sb.ok(&["sandbox", "revive-host", "r2h1"]);
    }
    let (b, l) = (median(&mut bgp), median(&mut lease));
    println!("median of {ROUNDS}: BGP+BFD {b:.3} s, lease {l:.3} s, ratio {:.2}", b / l);
}
