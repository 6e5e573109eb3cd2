//! `romana sandbox up --ipv6` end to end (root): a romanad process (embedded store) on
//! 127.0.0.1, a dual-stack sandbox of 2 racks x 2 hosts with real agents, pods of two tenants on
//! both racks getting an address of each family through romana-cni, both reachability matrices
//! full, `sandbox reach` over both families (by default, `--family`, the target's address; TCP
//! and UDP), then tenant blue isolated and the IPv6 matrix (as the IPv4 one) refusing exactly
//! red's pods toward blue's, `reach` refused over both, the routers holding IPv6 routes, and
//! `down` leaving no namespace.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

use romana_test_support::TempDir;

#[allow(dead_code)]
mod common;
use common::{Sandbox, can_make_namespaces, namespaces, run_demo};

/// The matrices of `sandbox probe`'s output: "IPv4" and "IPv6" -> (from, to) -> cell.
fn matrices(out: &str) -> BTreeMap<String, BTreeMap<(String, String), String>> {
    let mut all = BTreeMap::new();
    let mut family = "IPv4".to_owned();
    let mut columns: Vec<String> = Vec::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"IPv6:") => family = "IPv6".into(),
            Some(&"from\\to") => columns = words[1..].iter().map(|w| (*w).to_owned()).collect(),
            Some(from) if from.contains('@') => {
                let from = from.split('@').next().unwrap().to_owned();
                let m: &mut BTreeMap<_, _> = all.entry(family.clone()).or_default();
                for (to, cell) in columns.iter().zip(&words[1..]) {
                    m.insert((from.clone(), to.clone()), (*cell).to_owned());
                }
            }
            _ => {}
        }
    }
    all
}

/// What blue's isolation allows: "." or "X".
fn isolated(from: &str, to: &str) -> &'static str {
    if from == to || !to.starts_with('b') || from.starts_with('b') { "." } else { "X" }
}

fn open(_: &str, _: &str) -> &'static str {
    "."
}

/// Cells of both families that differ from `expected` (empty: as expected).
fn wrong(out: &str, expected: fn(&str, &str) -> &'static str) -> Vec<String> {
    let m = matrices(out);
    let mut bad = Vec::new();
    for family in ["IPv4", "IPv6"] {
        let Some(cells) = m.get(family) else {
            bad.push(format!("no {family} matrix"));
            continue;
        };
        if cells.len() != 16 {
            bad.push(format!("{family}: {} cells, want 16", cells.len()));
        }
        for ((from, to), cell) in cells {
            if cell != expected(from, to) {
                bad.push(format!("{family} {from}->{to}: {cell}, want {}", expected(from, to)));
            }
        }
    }
    bad
}

#[test]
fn dual_stack_sandbox_pods_reach_over_both_families_and_isolation_holds_over_ipv6() {
    // Static routing: the router follower writes the fabric view's IPv6 routes, via the rack
    // routers' spine-link addresses.
    dual_stack("v", &[], "via fd72:6d73:fe0");
}

#[test]
fn dual_stack_over_bgp_announces_ipv6_through_both_spines() {
    if Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: BIRD (bird2) is not installed");
        return;
    }
    // BGP: the IPv6 channel on the IPv4 sessions; the spine learns the racks' IPv6 aggregates
    // via the rack routers' IPv6 addresses on its segment.
    dual_stack("w", &["--routing", "bgp"], "via fd72:6d73:ff01::1");
}

/// The whole story with `up`'s extra flags `up_args`; `spine_route` is in the spine's IPv6 routes.
fn dual_stack(letter: &str, up_args: &[&str], spine_route: &str) {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    let dir = TempDir::new("sandbox-ipv6");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, letter);
    let prefix = format!("rms-{}-", sb.name);

    // Bad input: not IPv6, or the underlay's range.
    let out = sb.romana(&["sandbox", "up", "--ipv6", "10.9.0.0/16"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an IPv6 network"), "{out:?}");
    let out = sb.romana(&["sandbox", "up", "--ipv6", "fd72:6d73:1::/64"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlaps the sandbox's IPv6 underlay"), "{out:?}");
    assert!(namespaces(&prefix).is_empty(), "a refused up makes nothing");

    let mut up = vec!["sandbox", "up", "--ipv6", "fd00:10::/64"];
    up.extend(up_args);
    sb.ok(&up);
    // (pod, host, tenant): each tenant on both racks.
    let pods = [("ra", "r1h1", "red"), ("rb", "r2h2", "red"), ("ba", "r1h2", "blue"), ("bb", "r2h1", "blue")];
    // Each pod's (IPv4, IPv6) address, from `pod add`'s `NAME V4 V6 on HOST`.
    let mut addrs: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for (pod, host, tenant) in pods {
        let out = sb.ok(&["sandbox", "pod", "add", "--host", host, "--tenant", tenant, "--pod", pod]);
        assert!(out.contains(" 10.112.") && out.contains(" fd00:10:"), "both families: {out}");
        let words: Vec<&str> = out.split_whitespace().collect();
        addrs.insert(pod, (words[1].to_owned(), words[2].to_owned()));
    }
    let status = sb.ok(&["sandbox", "status"]);
    assert!(status.contains("IPV6") && status.contains(" fd00:10:"), "both addresses in status:\n{status}");
    let inside = |pod: &str, args: &str| {
        let mut v = vec!["netns".to_owned(), "exec".to_owned(), format!("{prefix}{pod}")];
        v.extend(args.split_whitespace().map(str::to_owned));
        let out = Command::new("ip").args(&v).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(inside("ra", "ip -6 route show").contains("default via fe80::1"), "IPv6 gateway in the pod");

    // Routes (static: the follower; BGP: announcements) and policies reach the kernels within a
    // moment of a change: each check probes until the matrices say so, or gives up.
    let probe_until = |expected: fn(&str, &str) -> &'static str| {
        let mut last = (Vec::new(), String::new());
        for _ in 0..30 {
            let out = sb.romana(&["sandbox", "probe"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            last = (wrong(&text, expected), text);
            if last.0.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        last
    };
    let (bad, probe) = probe_until(open);
    assert!(bad.is_empty(), "every pair over both families: {bad:?}\n{probe}");
    assert_eq!(probe.matches("(16 of 16 pairs reachable").count(), 2, "both families, all pairs:\n{probe}");
    // Across racks over IPv6 through the routers' IPv6 routes.
    let spine = inside("spine", "ip -6 route show");
    assert!(spine.contains("fd00:10::/65") && spine.contains(spine_route), "spine's IPv6 routes: {spine}");

    reach_over_both_families(&sb, &addrs);

    sb.plain_ok(&["tenant", "isolate", "blue", "tenant"]);
    let (bad, probe) = probe_until(isolated);
    assert!(bad.is_empty(), "isolation of blue over both families: {bad:?}\n{probe}");
    assert_eq!(probe.matches("(12 of 16 pairs reachable").count(), 2, "{probe}");
    // Refused over both families: exit status 1, a line for each.
    let out = sb.romana(&["sandbox", "reach", "--from", "ra", "--to-pod", "bb"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        text.matches("no answer; nothing arrived").count(),
        2,
        "red -> blue refused over both:\n{text}"
    );

    // A host killed and revived: its link was down, which drops IPv6 addresses; revive puts its
    // IPv6 address and default route back, and its pods answer over both families again.
    sb.ok(&["sandbox", "kill-host", "r2h2"]);
    sb.ok(&["sandbox", "revive-host", "r2h2"]);
    assert!(inside("r2h2", "ip -6 addr show dev eth0").contains("fd72:6d73:2::12/64"));
    let (bad, probe) = probe_until(isolated);
    assert!(bad.is_empty(), "after revive-host, over both families: {bad:?}\n{probe}");

    sb.ok(&["sandbox", "down"]);
    assert!(namespaces(&prefix).is_empty(), "down removed every namespace");
}

/// `sandbox reach` across racks: both families by default, one by `--family` or by the target's
/// address, TCP and UDP; the far end sees the source pod's own address of each family (no NAT
/// between pods).
fn reach_over_both_families(sb: &Sandbox, addrs: &BTreeMap<&str, (String, String)>) {
    let (ra4, ra6) = &addrs["ra"];
    let (bb4, bb6) = &addrs["bb"];
    let both = sb.ok(&["sandbox", "reach", "--from", "ra", "--to-pod", "bb"]);
    assert_eq!(
        both.lines().collect::<Vec<_>>(),
        [
            format!("ra {ra4} -> bb {bb4}:7/tcp: answered; seen as {ra4}"),
            format!("ra {ra6} -> bb [{bb6}]:7/tcp: answered; seen as {ra6}"),
        ],
    );
    let six = sb.ok(&["sandbox", "reach", "--from", "ra", "--to-pod", "bb", "--family", "ipv6", "--udp"]);
    assert_eq!(six.trim(), format!("ra {ra6} -> bb [{bb6}]:7/udp: answered; seen as {ra6}"));
    let by_address = sb.ok(&["sandbox", "reach", "--from", "bb", "--to-pod", ra6.as_str()]);
    assert_eq!(by_address.trim(), format!("bb {bb6} -> ra [{ra6}]:7/tcp: answered; seen as {bb6}"));
    // Bad input is named: an address against --family, an address no pod holds, the internet
    // over IPv6 (this sandbox has none; a sandbox with one has it over IPv4 only).
    let err = |args: &[&str]| {
        let out = sb.romana(args);
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&["sandbox", "reach", "--from", "ra", "--to-pod", bb6.as_str(), "--family", "ipv4"]);
    assert!(e.contains("is an ipv6 address but --family ipv4 was given"), "{e}");
    let e = err(&["sandbox", "reach", "--from", "ra", "--to-pod", "fd00:10::ffff"]);
    assert!(e.contains("holds fd00:10::ffff"), "{e}");
    let e = err(&["sandbox", "reach", "--from", "ra", "--internet", "--family", "ipv6"]);
    assert!(e.contains("has no internet"), "{e}");
}

/// `scripts/demo.sh --ipv6` on this build's binaries: both matrices checked against isolation
/// and the NetworkPolicy (the script fails on a cell against them), IPv6 pairs refused too, and
/// `romana doctor` finds the host's IPv6 routes where they belong.
#[test]
fn the_demo_with_ipv6_checks_both_matrices() {
    let Some(text) = run_demo(env!("CARGO_BIN_EXE_romana"), &["--ipv6"]) else { return };
    let checked = text.split("checked against isolation and the policy").nth(1).unwrap();
    let checked = checked.split("(. reachable").next().unwrap();
    let v6 = checked.split("IPv6:").nth(1).expect("the IPv6 matrix is checked");
    assert!(v6.contains("      X"), "refused IPv6 pairs are marked:\n{text}");
    assert!(!checked.contains('!'), "{text}");
    assert!(text.contains("0 problem(s) on r1h1"), "{text}");
    assert!(namespaces("rms-demo-").is_empty(), "the demo tears its sandbox down");
}
