//! `romana sandbox up --routing bgp` end to end (root): a romanad process on 127.0.0.1, two racks
//! of two hosts behind rack routers and two spines, BIRD in every router and host namespace
//! (routers configured only from rendered configuration, hosts through their agents), one pod
//! per host. Checks: every pod reaches every pod across racks; route counts per router are the
//! aggregates (a rack router one route per host, a spine one per rack, no per-endpoint route);
//! other racks' aggregates are kernel multipath routes over both spines (ECMP); routers hold no
//! static route; a killed host's prefix is withdrawn and comes back after revive-host; `down`
//! leaves no namespace and no BIRD. A guard runs `down` (which kills the sandbox's BIRDs by pid)
//! if the test fails half-way. Waits poll for convergence; nothing asserts on time.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use romana_test_support::TempDir;

#[allow(dead_code)]
mod common;
use common::{Sandbox, namespaces};

impl Sandbox {
    /// The router rows of `status`: namespace -> (sessions, from below, from above, multipath,
    /// per-endpoint).
    fn routers(&self) -> Vec<(String, [String; 5])> {
        let status = self.ok(&["sandbox", "status"]);
        status
            .lines()
            .filter(|l| l.starts_with(&format!("rms-{}-", self.name)))
            .map(|l| {
                let f: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
                (f[0].clone(), [f[1].clone(), f[2].clone(), f[3].clone(), f[4].clone(), f[5].clone()])
            })
            .collect()
    }

    /// Polls `status` until `want` holds for every router row (or fails after `limit` with
    /// the last rows: convergence, not speed, is what is checked).
    fn wait_routers(&self, what: &str, want: impl Fn(&str, &[String; 5]) -> bool, limit: Duration) {
        let start = Instant::now();
        loop {
            let rows = self.routers();
            if !rows.is_empty() && rows.iter().all(|(ns, r)| want(ns, r)) {
                return;
            }
            assert!(start.elapsed() < limit, "{what}: not reached; routers: {rows:#?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn ip(args: &[&str]) -> String {
    String::from_utf8_lossy(&Command::new("ip").args(args).output().unwrap().stdout).into_owned()
}

fn usable() -> bool {
    let name = format!("rms-probe{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    if !ok {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return false;
    }
    if Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: bird is not installed (Debian's bird2; scripts/setup.sh installs it)");
        return false;
    }
    true
}

/// The expected router rows for 2 racks of `hosts` live hosts each (one block per host).
fn aggregates(name: &str, ns: &str, r: &[String; 5], hosts: [usize; 2]) -> bool {
    let spine = ns.starts_with(&format!("rms-{name}-spine"));
    let rack = |i: usize| ns == format!("rms-{name}-rack{i}");
    let (sessions, below, above, multipath) = if spine {
        ("2/2".to_owned(), 2, 0, 0)
    } else if rack(1) {
        (format!("{}/4", 2 + hosts[0]), hosts[0], 1, 1)
    } else {
        (format!("{}/4", 2 + hosts[1]), hosts[1], 1, 1)
    };
    r[0] == sessions
        && r[1] == below.to_string()
        && r[2] == above.to_string()
        && r[3] == multipath.to_string()
        && r[4] == "0"
}

#[test]
fn sandbox_on_bgp_routes_aggregates_with_ecmp_and_withdraws_dead_hosts() {
    if !usable() {
        return;
    }
    let dir = TempDir::new("sandbox-bgp");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "b");
    let name = sb.name.clone();
    let prefix = format!("rms-{name}-");

    sb.ok(&["sandbox", "up", "--routing", "bgp"]);
    assert_eq!(namespaces(&prefix).len(), 8, "two spines, two rack routers, four hosts");
    for host in ["r1h1", "r1h2", "r2h1", "r2h2"] {
        sb.ok(&["sandbox", "pod", "add", "--host", host, "--tenant", "red"]);
    }
    let limit = Duration::from_secs(60);
    sb.wait_routers("aggregates everywhere", |ns, r| aggregates(&name, ns, r, [2, 2]), limit);
    let probe = sb.ok(&["sandbox", "probe"]);
    assert!(probe.contains("(16 of 16 pairs reachable"), "every pod reaches every pod:\n{probe}");

    // ECMP: rack 1 reaches rack 2's aggregate over both spines, as one multipath kernel route.
    let rack1 = format!("{prefix}rack1");
    let ecmp = ip(&["-n", &rack1, "route", "show", "10.112.128.0/17"]);
    assert_eq!(ecmp.matches("nexthop via").count(), 2, "{ecmp}");
    assert!(ecmp.contains("192.168.254.1") && ecmp.contains("192.168.253.1"), "{ecmp}");
    // Routers hold connected routes and what BIRD learned, nothing static.
    for r in [format!("{prefix}spine"), format!("{prefix}spine2"), rack1.clone(), format!("{prefix}rack2")] {
        for line in ip(&["-n", &r, "-o", "route", "show"]).lines() {
            assert!(line.contains("proto kernel") || line.contains("proto bird"), "{r}: {line}");
        }
    }

    // A host dies: rack 2's router loses its prefix; its pod is unreachable, the others are not.
    let rack2 = format!("{prefix}rack2");
    let learned = |ns: &str| ip(&["-n", ns, "-o", "route", "show", "proto", "bird"]);
    let before = learned(&rack2);
    assert!(before.contains("via 192.168.2.11"), "r2h1's prefix via r2h1: {before}");
    sb.ok(&["sandbox", "kill-host", "r2h1"]);
    sb.wait_routers("r2h1 withdrawn", |ns, r| aggregates(&name, ns, r, [2, 1]), limit);
    assert!(!learned(&rack2).contains("via 192.168.2.11"), "{}", learned(&rack2));
    let probe = sb.romana(&["sandbox", "probe"]);
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(!probe.status.success() && text.contains("(10 of 16 pairs reachable"), "{text}");

    // `romana fabric`: what the routers run, rendered from the same view; errors name the group.
    let fabric = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_romana"))
            .args(args)
            .env("ROMANA_ENDPOINT", &sb.url)
            .env("ROMANA_CREDENTIALS", &sb.creds)
            .env_remove("ROMANA_CONFIG")
            .output()
            .unwrap()
    };
    let out = fabric(&["fabric", "bird-config", "/rack-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("router id 192.168.1.1;") && text.contains("neighbor 192.168.1.12 as 65101;"),
        "{text}"
    );
    let out = fabric(&["fabric", "bird-config", "/"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("say which one with --router"), "{out:?}");
    let out = fabric(&["fabric", "bird-host", "r1h1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("local 192.168.1.11 as 65101;"), "{out:?}");

    // Bad input names the problem.
    let out = sb.romana(&["sandbox", "kill-host", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host \"nope\""), "{out:?}");
    let out = sb.romana(&["sandbox", "revive-host", "r1h1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("r1h1 is alive"), "{out:?}");

    sb.ok(&["sandbox", "revive-host", "r2h1"]);
    sb.wait_routers("r2h1 back", |ns, r| aggregates(&name, ns, r, [2, 2]), limit);
    // Again: a second death soon after the first must not leave the session in a long backoff.
    sb.ok(&["sandbox", "kill-host", "r2h1"]);
    sb.wait_routers("r2h1 withdrawn again", |ns, r| aggregates(&name, ns, r, [2, 1]), limit);
    sb.ok(&["sandbox", "revive-host", "r2h1"]);
    sb.wait_routers("r2h1 back again", |ns, r| aggregates(&name, ns, r, [2, 2]), limit);
    let probe = sb.ok(&["sandbox", "probe"]);
    assert!(probe.contains("(16 of 16 pairs reachable"), "after revive:\n{probe}");

    sb.ok(&["sandbox", "down"]);
    assert!(namespaces(&prefix).is_empty(), "down removed every namespace");
    let birds =
        Command::new("pgrep").args(["-f", &format!("bird -c {}", sb.state.display())]).output().unwrap();
    assert!(String::from_utf8_lossy(&birds.stdout).trim().is_empty(), "no BIRD of the sandbox is left");
}
