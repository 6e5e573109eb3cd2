//! Egress NAT end to end (root): `romana sandbox up --internet` (static routing, and BGP through
//! BIRD) against a romanad process on 127.0.0.1, two racks of one host, one pod per host. The
//! "internet" namespace (198.18.0.1, behind the spines) runs an echo server that answers with the
//! source address it saw. Checks: a pod reaches the internet over TCP and UDP seen as its host's
//! address (masqueraded, answered through conntrack); a pod reaching a pod in the other rack is
//! seen with its own address (never NATed); the host holds the `nat-out` chain in `inet romana`
//! and no other table; with `nat_outgoing` off (a topology update) the chain goes and the
//! internet sees the pod's address and cannot answer (it has no route to pods); on again, NAT is
//! back. A guard runs `down` if the test fails half-way; waits poll for convergence, nothing
//! asserts on time.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use romana_test_support::TempDir;

#[allow(dead_code)]
mod common;
use common::{Sandbox, can_make_namespaces, namespaces};

/// `romana sandbox reach ...`'s line (its exit status says whether the far end answered).
fn reach(sb: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["sandbox", "reach"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&sb.romana(&all).stdout).trim().to_owned()
}

/// Polls `reach` until its line contains `want` (or fails after `limit` with the last line).
fn wait_reach(sb: &Sandbox, args: &[&str], want: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let line = reach(sb, args);
        if line.contains(want) {
            return line;
        }
        assert!(start.elapsed() < limit, "reach {args:?}: never {want:?}; last: {line}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn nft_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "nft"]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn egress_nat(routing: &str, tag: &str) {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    if routing == "bgp" && Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: bird is not installed (Debian's bird2; scripts/setup.sh installs it)");
        return;
    }
    let dir = TempDir::new(&format!("sandbox-nat-{tag}"));
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, tag);
    let name = sb.name.clone();
    let prefix = format!("rms-{name}-");

    sb.ok(&["sandbox", "up", "--internet", "--routing", routing, "--hosts-per-rack", "1"]);
    assert!(namespaces(&prefix).contains(&format!("{prefix}inet")), "the internet namespace");
    let a = sb.ok(&["sandbox", "pod", "add", "--host", "r1h1", "--tenant", "red", "--pod", "a"]);
    let b = sb.ok(&["sandbox", "pod", "add", "--host", "r2h1", "--tenant", "red", "--pod", "b"]);
    let pod_ip = |out: &str| out.split_whitespace().find(|w| w.starts_with("10.112.")).unwrap().to_owned();
    let a_ip = pod_ip(&a);
    assert!(pod_ip(&b).starts_with("10.112."), "{b}");
    let limit = Duration::from_secs(60);

    // Out to the internet: masqueraded to the host's address, answered.
    let tcp = wait_reach(&sb, &["--from", "a", "--internet"], "answered; seen as 192.168.1.11", limit);
    assert!(tcp.contains(&format!("a {a_ip} -> internet 198.18.0.1:7/tcp")), "{tcp}");
    wait_reach(&sb, &["--from", "a", "--internet", "--udp"], "answered; seen as 192.168.1.11", limit);
    let host = format!("{prefix}r1h1");
    let chain = nft_in(&host, &["list", "chain", "inet", "romana", "nat-out"]);
    assert!(chain.contains("type nat hook postrouting priority srcnat"), "{chain}");
    assert!(chain.contains("masquerade"), "{chain}");
    let tables = nft_in(&host, &["list", "tables"]);
    assert_eq!(tables.trim(), "table inet romana", "nothing but our table");

    // Pod to pod across racks: never NATed.
    let line = wait_reach(&sb, &["--from", "a", "--to-pod", "b"], "answered", limit);
    assert!(line.ends_with(&format!("seen as {a_ip}")), "{line}");

    // NAT off: the chain goes, the internet sees the pod and cannot answer it (over UDP: a TCP
    // handshake never completes, so the server would never see the connection).
    sb.ok(&["sandbox", "nat", "off"]);
    let line = wait_reach(&sb, &["--from", "a", "--internet", "--udp"], &format!("seen as {a_ip}"), limit);
    assert!(line.contains("no answer"), "{line}");
    // The reach above already saw the pod's address, so the pass that dropped the chain ran.
    let left = nft_in(&host, &["list", "chain", "inet", "romana", "nat-out"]);
    assert!(left.is_empty(), "the nat-out chain stayed with NAT off: {left}");

    // On again.
    sb.ok(&["sandbox", "nat", "on"]);
    wait_reach(&sb, &["--from", "a", "--internet"], "answered; seen as 192.168.1.11", limit);

    sb.ok(&["sandbox", "down"]);
    assert!(namespaces(&prefix).is_empty(), "down removes every namespace, the internet's too");
    let echo =
        Command::new("pgrep").args(["-f", &format!("serve-echo.*{}", sb.state.display())]).output().unwrap();
    assert!(echo.stdout.is_empty(), "no echo server left: {}", String::from_utf8_lossy(&echo.stdout));
}

#[test]
fn egress_nat_on_static_routing() {
    egress_nat("static", "ns");
}

#[test]
fn egress_nat_on_bgp() {
    egress_nat("bgp", "nb");
}
