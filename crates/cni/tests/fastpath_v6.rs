//! The fast path over IPv6 through romana-cni and the agents, in network namespaces this test
//! creates (`rmv-<pid>-*`, deleted by their guards even when it fails; no link leaves them): two
//! hosts with an IPv4 and an IPv6 underlay address on one link, a real agent each, romanad in
//! this process with an IPv4 and an IPv6 network, dual-stack pods p1 on host a, p2 and p3 on host
//! b. IPv6 between pods across hosts and on one host is not forwarded by the hosts' kernels (the
//! programs carry it) and each host's map holds both addresses of each pod; a policy isolating
//! p3 takes both its addresses out of host b's map, refuses p1's IPv6 pings to it and keeps p2's
//! fast path; deleting the policy brings p3 back.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{agent_metric, agent_with, cni, conf, dump, result_ips, wait_for};
use romana_test_support::{HostPair, Netns, TempDir};
use serde_json::json;

/// IPv6 datagrams a test namespace's kernel forwarded.
fn forwarded6(ns: &str) -> u64 {
    let out = Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/snmp6"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Ip6OutForwDatagrams"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `count` IPv6 pings from `from` to `to`; whether all were answered.
fn pings(from: &Netns, to: &str, count: u32) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &from.0,
            "ping",
            "-6",
            "-q",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.01",
            "-W",
            "1",
        ])
        .arg(to)
        .output()
        .unwrap()
        .status
        .success()
}

fn entries(sock: &std::path::Path) -> f64 {
    agent_metric(sock, "romana_agent_fast_path_entries")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_pod_traffic_takes_the_fast_path_unless_a_policy_isolates_the_pod() {
    let Some(hosts) = HostPair::new("rmv") else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let pid = std::process::id();
    let pods: Vec<Netns> = (1..=3).map(|i| Netns::new(&format!("rmv-{pid}-p{i}")).unwrap()).collect();
    hosts.0.ip("addr add fd88::1/64 dev eth0 nodad");
    hosts.1.ip("addr add fd88::2/64 dev eth0 nodad");
    let dir = TempDir::new("cni-fastpath-v6");
    let creds = common::romanad_with(dir.path(), common::DUAL).await;
    let admin = common::admin(&creds).await;
    let sock: Vec<PathBuf> = ["a", "b"].iter().map(|h| dir.path().join(format!("{h}.sock"))).collect();
    let logs: Vec<PathBuf> = ["a", "b"].iter().map(|h| dir.path().join(format!("{h}.log"))).collect();
    let _a =
        agent_with(&creds, "ha", "192.168.88.1", &hosts.0.0, &sock[0], &logs[0], &["--host-ipv6", "fd88::1"]);
    let _b =
        agent_with(&creds, "hb", "192.168.88.2", &hosts.1.0, &sock[1], &logs[1], &["--host-ipv6", "fd88::2"]);
    wait_for("both agents ready (STATUS)", 30, || {
        (0..2).all(|h| cni("STATUS", "", "", &conf("1.1.0", &sock[h]), "").0 == 0)
    })
    .await;
    let trouble = || {
        let logs: String = logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        format!(
            "{}\nagent logs (last lines, newest first):\n{}",
            dump(&[&hosts.0.0, &hosts.1.0]),
            tail.join("\n")
        )
    };

    // p1 (tenant acme) on host a, p2 (acme) and p3 (z) on host b; each dual-stack.
    let mut ip6 = vec![];
    let mut links = vec![];
    for (i, (host, tenant)) in [(0, "acme"), (1, "acme"), (1, "z")].into_iter().enumerate() {
        let mut c = conf("1.0.0", &sock[host]);
        c["tenant"] = json!(tenant);
        let (rc, r) = cni("ADD", &format!("p{}", i + 1), &format!("/run/netns/{}", pods[i].0), &c, "");
        assert_eq!(rc, 0, "ADD p{}: {r}", i + 1);
        let ips = result_ips(&r);
        assert!(ips.len() == 2 && ips[1].is_ipv6(), "ADD p{}: both families: {r}", i + 1);
        ip6.push(ips[1].to_string());
        links.push(r["interfaces"][0]["name"].as_str().unwrap().to_owned());
    }
    // Each pod's two addresses in its host's map, and `romana_send` on every pod's link once
    // the CNI path is quiet.
    wait_for("both addresses of each pod in its host's map", 30, || {
        entries(&sock[0]) == 2.0 && entries(&sock[1]) == 4.0
    })
    .await;
    for (host, link) in [(&hosts.0, &links[0]), (&hosts.1, &links[1]), (&hosts.1, &links[2])] {
        let link: &'static str = Box::leak(link.clone().into_boxed_str());
        wait_for("romana_send on the pod's link", 30, || common::programs(&host.0, link) == ["romana_send"])
            .await;
    }
    wait_for("p1 reaches p2 over IPv6", 30, || pings(&pods[0], &ip6[1], 1)).await;
    assert!(pings(&pods[0], &ip6[2], 1), "p1 reaches p3 over IPv6\n{}", trouble());

    // Across hosts, both directions: neither host's kernel forwards the requests or replies.
    let (fa, fb) = (forwarded6(&hosts.0.0), forwarded6(&hosts.1.0));
    assert!(pings(&pods[0], &ip6[1], 20), "p1 -> p2 over IPv6\n{}", trouble());
    let (fa, fb) = (forwarded6(&hosts.0.0) - fa, forwarded6(&hosts.1.0) - fb);
    assert!(
        fa < 5 && fb < 5,
        "across hosts: host a forwarded {fa}, host b {fb} IPv6 datagrams\n{}",
        trouble()
    );
    // On one host: p2 -> p3.
    let fb = forwarded6(&hosts.1.0);
    assert!(pings(&pods[1], &ip6[2], 20), "p2 -> p3 over IPv6\n{}", trouble());
    let fb = forwarded6(&hosts.1.0) - fb;
    assert!(fb < 5, "on one host: host b forwarded {fb} IPv6 datagrams\n{}", trouble());

    // p3 isolated for ingress (tenant z admits only tenant x on TCP 80): both its addresses
    // leave host b's map, and the policy holds over IPv6 while p2 keeps the fast path.
    let tenant = romana_api::rest::TenantRequest {
        name: "z".into(),
        external_id: String::new(),
        labels: Default::default(),
        isolation: String::new(),
    };
    admin.create_tenant(&tenant).await.unwrap();
    let policy = admin
        .add_policy(&json!({"name": "z-in", "applied_to": [{"tenant": "z"}],
            "ingress": [{"peers": [{"tenant": "x"}], "rules": [{"protocol": "tcp", "ports": [80]}]}]}))
        .await
        .unwrap();
    wait_for("p3 out of host b's map", 30, || entries(&sock[1]) == 2.0).await;
    assert!(!pings(&pods[0], &ip6[2], 3), "p1's IPv6 pings reached the isolated p3\n{}", trouble());
    assert!(!pings(&pods[1], &ip6[2], 3), "p2's IPv6 pings reached the isolated p3\n{}", trouble());
    let fb = forwarded6(&hosts.1.0);
    assert!(pings(&pods[0], &ip6[1], 20), "p1 -> p2 over IPv6 with p3 isolated\n{}", trouble());
    let fb = forwarded6(&hosts.1.0) - fb;
    assert!(fb < 5, "p2 keeps the fast path: host b forwarded {fb}\n{}", trouble());

    admin.delete_policy(&policy.id).await.unwrap();
    wait_for("p3 back in host b's map", 30, || entries(&sock[1]) == 4.0).await;
    wait_for("p1 reaches p3 over IPv6 again", 30, || pings(&pods[0], &ip6[2], 1)).await;
}
