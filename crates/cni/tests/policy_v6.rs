//! The policy truth tables over IPv6: the same cases as `policy.rs` (the worked Kubernetes
//! examples and our own, from `crates/policy/tests/data`), set up the same way
//! (`common::policy`), between dual-stack pods probed on their IPv6 addresses, with the
//! examples' ipBlocks rewritten to IPv6 CIDRs. In network namespaces this test creates
//! (`rm6-<pid>-*`, deleted by their guards even when it fails). The nine pods share one host: the
//! underlay is IPv4, and another host's IPv6 block has no next hop the kernel takes (docs/cni.md,
//! "Dual stack"); each host enforces both ingress and egress, so one host checks every rule.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::policy::{V6, agent_trouble, all_open, expect, run_cases};
use common::{agent, cni, conf};
use romana_test_support::{HostPair, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_truth_tables_over_ipv6_between_dual_stack_pods() {
    let Some(hosts) = HostPair::new("rm6") else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let pid = std::process::id();
    let dir = TempDir::new("policy-v6");
    let creds = common::romanad_with(dir.path(), common::DUAL).await;
    let admin = common::admin(&creds).await;
    common::policy::tenants(&admin).await;
    let sock = vec![dir.path().join("a.sock")];
    let logs = [dir.path().join("a.log")];
    let _agent = agent(&creds, "ha", "192.168.88.1", &hosts.0.0, &sock[0], &logs[0]);
    common::wait_for("the agent ready (STATUS)", 20, || {
        cni("STATUS", "", "", &conf("1.1.0", &sock[0]), "").0 == 0
    })
    .await;
    let (pods, original) = common::policy::add_pods(&admin, &sock, &format!("rm6-{pid}"), V6).await;
    assert!(pods.iter().all(|p| p.ip.is_ipv6() && p.records.len() == 2), "dual-stack pods with two records");
    expect(&pods, &all_open(pods.len()), 10).unwrap_or_else(|e| panic!("before any policy: {e}"));
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/tests/data");
    let n =
        run_cases(&admin, &Path::new(data).join("netpol-examples.json"), &pods, &original, &logs, V6).await;
    let m = run_cases(&admin, &Path::new(data).join("netpol-romana.json"), &pods, &original, &logs, V6).await;
    assert!(n >= 13 && m >= 7, "steps run: {n} + {m}\n{}", agent_trouble(&logs));
}
