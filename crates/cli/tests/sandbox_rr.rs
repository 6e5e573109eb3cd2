//! Route reflectors in the sandbox (root, real BIRD everywhere): `romana sandbox up --routing bgp
//! --reflectors 1`, two racks of three hosts, the first host of each rack reflecting for the
//! other two (iBGP in the rack). Checks: the other hosts peer with the reflector only and still
//! learn the other rack's aggregate; the rack router peers with the reflector only and still
//! holds one route per host, the spines one per rack, nobody a per-endpoint route; every pod
//! reaches every pod. A guard runs `down` if the test fails half-way; waits poll for
//! convergence, nothing asserts on time.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use romana_test_support::TempDir;

#[allow(dead_code)]
mod common;
use common::{Sandbox, can_make_namespaces, namespaces};

fn usable() -> bool {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return false;
    }
    if Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: bird is not installed (Debian's bird2; scripts/setup.sh installs it)");
        return false;
    }
    true
}

/// `birdc ARGS` against the BIRD of namespace `ns` of the sandbox.
fn birdc(sb: &Sandbox, ns: &str, args: &[&str]) -> String {
    let ctl = sb.state.join(&sb.name).join(format!("{ns}.ctl"));
    let out = Command::new("birdc").arg("-s").arg(ctl).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The BGP protocols of `show protocols`: (name, established).
fn sessions(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("BGP"))
        .map(|l| (l.split_whitespace().next().unwrap().to_owned(), l.contains("Established")))
        .collect()
}

/// The networks of `show route`, in order.
fn nets(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

/// The router rows of `status` (namespace, then sessions, from below, from above, multipath,
/// per-endpoint), once `want` holds for every row; fails after `limit` with the last rows.
fn wait_routers(sb: &Sandbox, what: &str, want: impl Fn(&str, &[&str]) -> bool, limit: Duration) {
    let start = Instant::now();
    loop {
        let status = sb.ok(&["sandbox", "status"]);
        let rows: Vec<Vec<&str>> = status
            .lines()
            .filter(|l| l.starts_with(&format!("rms-{}-", sb.name)))
            .map(|l| l.split_whitespace().collect())
            .collect();
        if rows.len() == 4 && rows.iter().all(|r| want(r[0], &r[1..])) {
            return;
        }
        assert!(start.elapsed() < limit, "{what}: not reached:\n{status}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn hosts_peer_with_their_reflector_only_and_routers_hold_aggregates() {
    if !usable() {
        return;
    }
    let dir = TempDir::new("sandbox-rr");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "q");
    let name = sb.name.clone();
    let prefix = format!("rms-{name}-");

    // Bad input first: reflectors need BGP, and hosts to be.
    let out = sb.romana(&["sandbox", "up", "--reflectors", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("route reflectors need --routing bgp"), "{out:?}");
    assert!(namespaces(&prefix).is_empty(), "nothing made on a refusal");

    sb.ok(&["sandbox", "up", "--routing", "bgp", "--hosts-per-rack", "3", "--reflectors", "1"]);
    for r in 1..=2 {
        for h in 1..=3 {
            sb.ok(&["sandbox", "pod", "add", "--host", &format!("r{r}h{h}"), "--tenant", "red"]);
        }
    }
    // Rack routers: two uplinks and the reflector; one route per host (reflected), one from
    // above, no per-endpoint route. Spines: one per rack.
    let aggregates = |ns: &str, r: &[&str]| {
        if ns.contains("spine") { r == ["2/2", "2", "0", "0", "0"] } else { r == ["3/3", "3", "1", "1", "0"] }
    };
    wait_routers(&sb, "aggregates through the reflectors", aggregates, Duration::from_secs(60));
    let probe = sb.ok(&["sandbox", "probe"]);
    assert!(probe.contains("(36 of 36 pairs reachable"), "every pod reaches every pod:\n{probe}");

    // The rack router's one member session is with the reflector; no host but it is a neighbour.
    let rack1 = format!("{prefix}rack1");
    let config = std::fs::read_to_string(sb.state.join(&name).join(format!("{rack1}.romana.conf"))).unwrap();
    assert!(config.contains("neighbor 192.168.1.11 as 65001;"), "{config}");
    assert!(!config.contains("192.168.1.12") && !config.contains("192.168.1.13"), "{config}");

    // The reflector: its router and its two clients, all established.
    let r1h1 = birdc(&sb, &format!("{prefix}r1h1"), &["show", "protocols"]);
    let s = sessions(&r1h1);
    assert_eq!(s.len(), 3, "{r1h1}");
    assert!(s.iter().all(|(_, up)| *up), "{r1h1}");
    // A client: one session, with the reflector, and the other rack's aggregate learned through
    // it (what the rack router learned from above), nothing else.
    let from_above = nets(&birdc(&sb, &rack1, &["show", "route", "protocol", "romana_up1"]));
    assert_eq!(from_above.len(), 1, "{from_above:?}");
    let start = Instant::now();
    loop {
        let ns = format!("{prefix}r1h2");
        let protocols = birdc(&sb, &ns, &["show", "protocols", "all"]);
        let learned = nets(&birdc(&sb, &ns, &["show", "route", "protocol", "romana_peer1"]));
        let s = sessions(&protocols);
        let ok = s.len() == 1 && s[0].1 && learned == from_above;
        if ok {
            assert!(protocols.contains("Neighbor address: 192.168.1.11"), "{protocols}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "r1h2: {protocols}\nlearned {learned:?}");
        std::thread::sleep(Duration::from_millis(250));
    }

    sb.ok(&["sandbox", "down"]);
    assert!(namespaces(&prefix).is_empty(), "down removed every namespace");
}
