//! Egress NAT throughput, end to end, in one sandbox (root): `romana sandbox up --internet`
//! (static routing, two racks of one host), pod a on r1h1, pod b on r2h1. iperf3 TCP from pod a
//! to the "internet" (198.18.0.1 behind the spine: masqueraded on r1h1, replies translated back
//! by conntrack) against pod a to pod b across the racks (never NATed), and against pod a to the
//! internet on the same path without the masquerade (the internet's range in `no_nat`, and the
//! internet given a route back to the pods: the chain is still there, pod a still off the fast
//! path, only the translation differs). Each round measures all three, the NAT setting switched
//! by a topology update (`romana sandbox nat`) and awaited; prints each round and the medians
//! with their ratios. Both pods are in a NATed network, so every run takes the kernel's
//! forwarding path on r1h1 (masqueraded endpoints stay off the fast path).
//! Run: `cargo bench -p romana-cli --bench nat --profile dev` (the data path is the kernel's;
//! `-- --quick`: 1 s runs, 2 rounds).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use romana_test_support::{Romanad, TempDir, sibling_bin};
use serde_json::Value;

struct Sb {
    url: String,
    creds: PathBuf,
    state: PathBuf,
    name: String,
}

impl Sb {
    fn romana(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_romana"))
            .args(args)
            .args(["--name", &self.name, "--state-dir"])
            .arg(&self.state)
            .env("ROMANA_ENDPOINT", &self.url)
            .env("ROMANA_CREDENTIALS", &self.creds)
            .env_remove("ROMANA_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "romana {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Sb {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_romana"))
            .args(["sandbox", "down", "--name", &self.name, "--state-dir"])
            .arg(&self.state)
            .env("ROMANA_ENDPOINT", &self.url)
            .env("ROMANA_CREDENTIALS", &self.creds)
            .output();
    }
}

/// One iperf3 run from namespace `client` to `ip` (server started in `server`): Gbit/s.
fn iperf(server: &str, client: &str, ip: &str, secs: u32) -> f64 {
    let mut srv = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s", "-1", "-B", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", client, "iperf3", "-J", "-t", &secs.to_string(), "-c", ip])
        .output()
        .unwrap();
    let _ = srv.kill();
    let _ = srv.wait();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 {client} -> {ip} failed: {}", String::from_utf8_lossy(&out.stdout)))
        / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if Command::new("iperf3").arg("-v").output().is_err() {
        eprintln!("SKIP: iperf3 is not installed (scripts/setup.sh installs it)");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (secs, rounds) = if quick { (1, 2) } else { (5, 5) };
    sibling_bin(env!("CARGO_BIN_EXE_romana"), "romana-agent");
    sibling_bin(env!("CARGO_BIN_EXE_romana"), "romana-cni");
    let dir = TempDir::new("nat-bench");
    let store = dir.path().join("store");
    let romanad_bin = sibling_bin(env!("CARGO_BIN_EXE_romana"), "romanad");
    let romanad = Romanad::start(&romanad_bin, &["--data-dir".into(), store.display().to_string()]).unwrap();
    let name = format!("n{}", std::process::id() % 100_000);
    let sb = Sb {
        url: romanad.url.clone(),
        creds: store.join("admin.credentials"),
        state: dir.path().join("state"),
        name: name.clone(),
    };
    sb.romana(&["sandbox", "up", "--internet", "--hosts-per-rack", "1"]);
    let ip_of = |out: &str| out.split_whitespace().find(|w| w.starts_with("10.112.")).unwrap().to_owned();
    ip_of(&sb.romana(&["sandbox", "pod", "add", "--host", "r1h1", "--tenant", "red", "--pod", "a"]));
    let b_ip =
        ip_of(&sb.romana(&["sandbox", "pod", "add", "--host", "r2h1", "--tenant", "red", "--pod", "b"]));
    let reach = |want: &str| {
        for _ in 0..100 {
            let out = Command::new(env!("CARGO_BIN_EXE_romana"))
                .args([
                    "sandbox",
                    "reach",
                    "--from",
                    "a",
                    "--internet",
                    "--udp",
                    "--name",
                    &name,
                    "--state-dir",
                ])
                .arg(&sb.state)
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("NAT setting never took effect: {want}");
    };
    let (a, inet, b) = (format!("rms-{name}-a"), format!("rms-{name}-inet"), format!("rms-{name}-b"));
    // The internet routes the pods back (for the runs without NAT), through the spine.
    let ok = Command::new("ip")
        .args(["-n", &inet, "route", "add", "10.112.0.0/16", "via", "192.168.241.1"])
        .status();
    assert!(ok.unwrap().success());
    let (mut nat, mut exempt, mut pod) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // ABBA: the order alternates, so a drift of the machine's load falls on both alike.
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for masquerade in order {
            if masquerade {
                sb.romana(&["sandbox", "nat", "on"]);
                reach("seen as 192.168.1.11");
                nat.push(iperf(&inet, &a, "198.18.0.1", secs));
            } else {
                sb.romana(&["sandbox", "nat", "on", "--no-nat", "198.18.0.0/15"]);
                reach("answered; seen as 10.112.");
                exempt.push(iperf(&inet, &a, "198.18.0.1", secs));
            }
            pod.push(iperf(&b, &a, &b_ip, secs));
        }
        let last = |v: &Vec<f64>| *v.last().unwrap();
        println!(
            "round {}: pod -> internet with NAT {:.2} Gbit/s, without (no_nat) {:.2}; pod -> pod {:.2}",
            round + 1,
            last(&nat),
            last(&exempt),
            last(&pod)
        );
    }
    let (n, e, p) = (median(nat), median(exempt), median(pod));
    println!(
        "median of {rounds} rounds x {secs} s: pod -> internet with NAT {n:.2} Gbit/s, same path without NAT {e:.2} Gbit/s (ratio {:.3}); pod -> pod across racks {p:.2} Gbit/s (NAT / pod-to-pod {:.3})",
        n / e,
        n / p
    );
}
