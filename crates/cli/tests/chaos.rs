//! `romana chaos` end to end (needs root, iproute2, nftables, iputils-ping and Debian's etcd):
//! a 60 s seeded run on 3 hosts of a dual-stack sandbox with its own 3 etcd members and 3 romanad
//! replicas, kills of every kind, every pod with an address of each family, both families probed
//! against the evaluator, and no violation; and a short IPv4-only run with an injected leak,
//! which must fail and name it. Both leave no namespace behind.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

#[allow(dead_code)]
mod common;
use common::{can_make_namespaces, namespaces};
use romana_test_support::{TempDir, sibling_bin};

fn ready() -> bool {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return false;
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        eprintln!("SKIP: etcd is not installed (scripts/setup.sh)");
        return false;
    }
    for bin in ["romanad", "romana-agent", "romana-cni"] {
        sibling_bin(env!("CARGO_BIN_EXE_romana"), bin);
    }
    true
}

fn chaos(dir: &TempDir, args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_romana"))
        .arg("chaos")
        .args(args)
        .arg("--work-dir")
        .arg(dir.path())
        .env_remove("ROMANA_ENDPOINT")
        .env_remove("ROMANA_CONFIG")
        .env_remove("ROMANA_CREDENTIALS")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

/// The number after `label` on the kills line (`kills: agent 3, romanad replica 2, ...`).
fn kills(text: &str, label: &str) -> usize {
    let line =
        text.lines().find(|l| l.starts_with("kills: ")).unwrap_or_else(|| panic!("no kills line:\n{text}"));
    let after = line.split(label).nth(1).unwrap_or_else(|| panic!("{label} in {line}"));
    after.trim().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// The number after `label` on the line starting with `line` (`probes over IPv6: 42 pod pairs`).
fn count(text: &str, line: &str, label: &str) -> usize {
    let l = text.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("no {line:?} line:\n{text}"));
    let after = l.split(label).nth(1).unwrap_or_else(|| panic!("{label} in {l}"));
    after.trim().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// Dual-stack (the IPv4-only path is the leak test's): about as long as an IPv4-only run of the
/// same seed, the second family's probes taking a few seconds.
#[test]
fn a_minute_of_churn_and_kills_over_both_families_leaves_nothing_inconsistent() {
    if !ready() {
        return;
    }
    let dir = TempDir::new("chaos");
    let (out, text) =
        chaos(&dir, &["--seed", "1", "--duration", "60", "--hosts", "3", "--ipv6", "fd00:113::/64"]);
    println!("{text}");
    assert!(out.status.success(), "romana chaos found violations or failed:\n{text}");
    assert!(text.contains("violations: none"), "{text}");
    assert!(text.contains("converged "), "{text}");
    assert!(text.contains("seed 1"), "the seed is printed: {text}");
    let total: usize = ["agent", "romanad replica", "etcd member"].iter().map(|k| kills(&text, k)).sum();
    assert!(total >= 5, "a kill every 2 to 6 s over 60 s:\n{text}");
    assert!(text.contains("kill -9 etcd member"), "an etcd member was killed:\n{text}");
    assert!(text.contains("kill -9 romanad replica"), "a replica was killed:\n{text}");
    let add = text.lines().find(|l| l.trim_start().starts_with("add ")).unwrap_or_else(|| panic!("{text}"));
    let acked: usize = add.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(acked > 10, "ADDs were acknowledged: {add}");
    // Every live pod holds both families, and both were probed pair by pair.
    let live = count(&text, "pods at the end: ", "pods at the end:");
    assert!(live >= 2, "{text}");
    assert_eq!(count(&text, "live pods with ", "with an IPv4 address"), live, "{text}");
    assert_eq!(count(&text, "live pods with ", "with an IPv6 address"), live, "{text}");
    let pairs = live * (live - 1);
    assert_eq!(count(&text, "probes over IPv4: ", "IPv4:"), pairs, "{text}");
    assert_eq!(count(&text, "probes over IPv6: ", "IPv6:"), pairs, "{text}");
    assert!(text.contains("probe violations per family: IPv4 0, IPv6 0"), "{text}");
    let tag = child_tag(&text);
    assert!(namespaces(&format!("rms-c{tag}-")).is_empty(), "torn down");
}

/// The sandbox name the run printed (`sandbox cNNNN up`), to look for its leftovers.
fn child_tag(text: &str) -> String {
    text.split("sandbox c").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("?").to_owned()
}

#[test]
fn an_injected_leak_fails_the_run_and_is_named() {
    if !ready() {
        return;
    }
    let dir = TempDir::new("chaos-leak");
    let (out, text) = chaos(
        &dir,
        &[
            "--seed",
            "2",
            "--duration",
            "5",
            "--hosts",
            "2",
            "--no-kills",
            "--converge-timeout",
            "5",
            "--inject-leak",
        ],
    );
    println!("{text}");
    assert_eq!(out.status.code(), Some(1), "a violation exits 1:\n{text}");
    assert!(text.contains("NOT converged within 5 s"), "{text}");
    assert!(text.contains("leak: cni:romana-sandbox:leaked:eth0 holds "), "{text}");
    assert!(text.contains("kills: agent 0, romanad replica 0, etcd member 0"), "{text}");
    let tag = child_tag(&text);
    assert!(namespaces(&format!("rms-c{tag}-")).is_empty(), "torn down after the failure too");
}
