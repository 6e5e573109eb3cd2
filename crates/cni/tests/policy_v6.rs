//! The policy truth tables over IPv6 across hosts: the same cases as `policy.rs` (the worked
//! Kubernetes examples and our own, from `crates/policy/tests/data`), set up the same way
//! (`common::policy`), between dual-stack pods probed on their IPv6 addresses, with the
//! examples' ipBlocks rewritten to IPv6 CIDRs. Two hosts as network namespaces (`rm6-<pid>-*`,
//! deleted by their guards even when the test fails) joined by a veth pair with an IPv4 and an
//! IPv6 underlay address each; every agent registers both (`--host-ipv6`), so each routes the
//! other's IPv6 blocks via its IPv6 address, and the nine pods alternate between the hosts: most
//! pairs cross the underlay over IPv6, with ingress enforced on one host and egress on the other.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::policy::{V6, agent_trouble, all_open, expect, run_cases};
use common::{agent_with, cni, conf};
use romana_test_support::{HostPair, TempDir};

/// The hosts' IPv6 underlay addresses (a unique local /64 on the veth between them).
const UNDERLAY6: [&str; 2] = ["fd88::1", "fd88::2"];

/// Our routes of `family` (`-4`/`-6`) in a host namespace.
fn our_routes(ns: &str, family: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, family, "route", "show", "proto", "77"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_truth_tables_over_ipv6_between_dual_stack_pods_on_two_hosts() {
    let Some(hosts) = HostPair::new("rm6") else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    // No duplicate address detection: the two addresses are planned unique, and a tentative
    // address would hold the first packets back.
    hosts.0.ip(&format!("addr add {}/64 dev eth0 nodad", UNDERLAY6[0]));
    hosts.1.ip(&format!("addr add {}/64 dev eth0 nodad", UNDERLAY6[1]));
    let pid = std::process::id();
    let dir = TempDir::new("policy-v6");
    let creds = common::romanad_with(dir.path(), common::DUAL).await;
    let admin = common::admin(&creds).await;
    common::policy::tenants(&admin).await;
    let sock: Vec<_> = ["a", "b"].iter().map(|h| dir.path().join(format!("{h}.sock"))).collect();
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    let host_ns = [hosts.0.0.clone(), hosts.1.0.clone()];
    let _agents = [
        agent_with(
            &creds,
            "ha",
            "192.168.88.1",
            &host_ns[0],
            &sock[0],
            &logs[0],
            &["--host-ipv6", UNDERLAY6[0]],
        ),
        agent_with(
            &creds,
            "hb",
            "192.168.88.2",
            &host_ns[1],
            &sock[1],
            &logs[1],
            &["--host-ipv6", UNDERLAY6[1]],
        ),
    ];
    common::wait_for("both agents ready (STATUS)", 20, || {
        (0..2).all(|h| cni("STATUS", "", "", &conf("1.1.0", &sock[h]), "").0 == 0)
    })
    .await;
    // Pod i goes through agent i % 2: both hosts hold pods.
    let (pods, original) = common::policy::add_pods(&admin, &sock, &format!("rm6-{pid}"), V6).await;
    assert!(pods.iter().all(|p| p.ip.is_ipv6() && p.records.len() == 2), "dual-stack pods with two records");
    // Each host routes the other's IPv6 block via the other's IPv6 underlay address: the IPv6
    // traffic between the hosts' pods takes the IPv6 underlay, not a route of the IPv4 one.
    common::wait_for("each host's IPv6 route to the other's pods", 20, || {
        our_routes(&host_ns[0], "-6").contains(&format!("via {} dev eth0", UNDERLAY6[1]))
            && our_routes(&host_ns[1], "-6").contains(&format!("via {} dev eth0", UNDERLAY6[0]))
    })
    .await;
    expect(&pods, &all_open(pods.len()), 10).unwrap_or_else(|e| panic!("before any policy: {e}"));
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/tests/data");
    let n =
        run_cases(&admin, &Path::new(data).join("netpol-examples.json"), &pods, &original, &logs, V6).await;
    let m = run_cases(&admin, &Path::new(data).join("netpol-romana.json"), &pods, &original, &logs, V6).await;
    assert!(n >= 13 && m >= 7, "steps run: {n} + {m}\n{}", agent_trouble(&logs));
}
