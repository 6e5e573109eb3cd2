//! Dual-stack pods through romana-cni, end to end, in network namespaces this test creates
//! (`rmd-<pid>-*`, deleted by their guards even when it fails; no link leaves them): two hosts
//! with a real agent each, romanad in this process with an IPv4 and an IPv6 network. ADD gives a
//! pod one address of each family (both in the CNI result, IPv4 first; both plumbed with their
//! gateways; two endpoint records), pods reach each other over IPv4 across hosts and over both
//! families on a host, an IPv6-only tenant's pod gets one IPv6 address, CHECK verifies both
//! addresses, DEL and GC release both, and a failed IPv6 allocation leaves no address at all.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::path::PathBuf;

use common::{agent, cni, conf, dump, result_ips, wait_for};
use romana_test_support::{HostPair, Netns, TempDir};
use serde_json::{Value, json};

fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.0)
}

/// `ping` from `from` to `to` answers (three tries: the first may wait for neighbour discovery).
fn pings(from: &Netns, to: IpAddr) -> bool {
    (0..3).any(|_| common::ping(&from.0, &to.to_string()))
}

fn conf_for(version: &str, socket: &std::path::Path, tenant: &str) -> Value {
    let mut c = conf(version, socket);
    c["tenant"] = json!(tenant);
    c
}

/// The pod's addresses on eth0 (global scope), as `ip -br` shows them.
fn pod_addresses(pod: &Netns) -> String {
    pod.ip("-br addr show dev eth0 scope global")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pods_through_the_cni_plugin() {
    let Some(hosts) = HostPair::new("rmd") else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let pid = std::process::id();
    let pods: Vec<Netns> = (1..=8).map(|i| Netns::new(&format!("rmd-{pid}-p{i}")).unwrap()).collect();
    let dir = TempDir::new("cni-dual");
    let creds = common::romanad_with(dir.path(), common::DUAL).await;
    let admin = common::admin(&creds).await;
    let sock: Vec<PathBuf> = ["a", "b"].iter().map(|h| dir.path().join(format!("{h}.sock"))).collect();
    let _a = agent(&creds, "ha", "192.168.88.1", &hosts.0.0, &sock[0], &dir.path().join("a.log"));
    let _b = agent(&creds, "hb", "192.168.88.2", &hosts.1.0, &sock[1], &dir.path().join("b.log"));
    wait_for("both agents ready (STATUS)", 20, || {
        (0..2).all(|h| cni("STATUS", "", "", &conf("1.1.0", &sock[h]), "").0 == 0)
    })
    .await;
    let (ca, cb) = (conf("1.0.0", &sock[0]), conf("1.1.0", &sock[1]));

    // ADD: both families in the result, IPv4 first, each with its gateway and default route.
    let (rc, r1) = cni("ADD", "p1", &netns_path(&pods[0]), &ca, "");
    assert_eq!(rc, 0, "ADD p1: {r1}");
    let ip1 = result_ips(&r1);
    assert!(ip1.len() == 2 && ip1[0].is_ipv4() && ip1[1].is_ipv6(), "{r1}");
    assert_eq!(r1["ips"][1]["address"], format!("{}/128", ip1[1]));
    assert_eq!(
        (&r1["ips"][0]["gateway"], &r1["ips"][1]["gateway"]),
        (&json!("169.254.1.1"), &json!("fe80::1"))
    );
    assert_eq!(
        r1["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}])
    );
    let shown = pod_addresses(&pods[0]);
    assert!(
        shown.contains(&format!("{}/32", ip1[0])) && shown.contains(&format!("{}/128", ip1[1])),
        "{shown}"
    );
    // 0.4.0 results carry each address's version.
    let (rc, r2) = cni("ADD", "p2", &netns_path(&pods[1]), &conf("0.4.0", &sock[0]), "");
    assert_eq!(rc, 0, "ADD p2: {r2}");
    assert_eq!((&r2["ips"][0]["version"], &r2["ips"][1]["version"]), (&json!("4"), &json!("6")));
    let ip2 = result_ips(&r2);
    let (rc, r3) = cni("ADD", "p3", &netns_path(&pods[2]), &cb, "");
    assert_eq!(rc, 0, "ADD p3: {r3}");
    let ip3 = result_ips(&r3);
    assert_eq!(ip3.len(), 2, "{r3}");

    // The registry holds both addresses, as two records with the same labels.
    let records: Vec<(String, String)> = admin
        .endpoint_list()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.name.starts_with("cni:romana-test:p1:"))
        .map(|e| (e.name, e.ip))
        .collect();
    assert_eq!(
        records,
        [
            ("cni:romana-test:p1:eth0".to_owned(), ip1[0].to_string()),
            ("cni:romana-test:p1:eth0#v6".to_owned(), ip1[1].to_string())
        ]
    );

    // Both families on one host; IPv4 across hosts (the underlay is IPv4: another host's IPv6
    // block has no next hop the kernel takes, docs/cni.md "Dual stack").
    wait_for("p1 reaches p3 over IPv4 across hosts", 20, || pings(&pods[0], ip3[0])).await;
    let all = || dump(&[&hosts.0.0, &hosts.1.0, &pods[0].0, &pods[1].0]);
    for (from, to) in [(0, ip2[0]), (0, ip2[1]), (1, ip1[0]), (1, ip1[1]), (2, ip1[0])] {
        assert!(pings(&pods[from], to), "p{} -> {to}:\n{}", from + 1, all());
    }
    // A repeated ADD gives the same two addresses.
    let (rc, again) = cni("ADD", "p1", &netns_path(&pods[0]), &ca, "");
    assert_eq!((rc, &again["ips"]), (0, &r1["ips"]), "{again}");

    // IPv6-only: tenant six draws from the IPv6 network only.
    let (rc, r4) = cni("ADD", "p4", &netns_path(&pods[3]), &conf_for("1.0.0", &sock[0], "six"), "");
    assert_eq!(rc, 0, "ADD p4: {r4}");
    let ip4 = result_ips(&r4);
    assert!(ip4.len() == 1 && ip4[0].is_ipv6(), "{r4}");
    assert_eq!(r4["routes"], json!([{"dst": "::/0", "gw": "fe80::1"}]));
    assert!(pings(&pods[3], ip1[1]) && pings(&pods[0], ip4[0]), "IPv6-only pod <-> p1:\n{}", all());
    assert!(admin.address("cni:romana-test:p4:eth0#v6").await.is_err(), "an IPv6-only pod has one name");

    // CHECK compares both addresses with IPAM and finds a missing IPv6 address or route.
    let mut check = ca.clone();
    check["prevResult"] = r1.clone();
    let (rc, err) = cni("CHECK", "p1", &netns_path(&pods[0]), &check, "");
    assert_eq!(rc, 0, "CHECK p1: {err}");
    let mut wrong = check.clone();
    wrong["prevResult"]["ips"][1]["address"] = json!(format!("{}/128", ip2[1]));
    let (rc, err) = cni("CHECK", "p1", &netns_path(&pods[0]), &wrong, "");
    assert_eq!((rc, err["code"].as_u64()), (1, Some(999)), "{err}");
    assert!(err["details"].as_str().unwrap().contains(&ip2[1].to_string()), "{err}");
    pods[0].ip(&format!("addr del {}/128 dev eth0", ip1[1]));
    let (rc, err) = cni("CHECK", "p1", &netns_path(&pods[0]), &check, "");
    assert_eq!((rc, err["code"].as_u64()), (1, Some(999)), "{err}");
    assert!(err["details"].as_str().unwrap().contains(&ip1[1].to_string()), "{err}");
    // ADD repairs it.
    let (rc, fixed) = cni("ADD", "p1", &netns_path(&pods[0]), &ca, "");
    assert_eq!((rc, &fixed["ips"]), (0, &r1["ips"]));
    assert_eq!(cni("CHECK", "p1", &netns_path(&pods[0]), &check, "").0, 0);
    assert!(pings(&pods[1], ip1[1]), "the repaired IPv6 address answers");

    // DEL releases both addresses and deletes both records; DEL twice is success.
    for _ in 0..2 {
        assert_eq!(cni("DEL", "p2", &netns_path(&pods[1]), &ca, "").0, 0);
    }
    for name in ["cni:romana-test:p2:eth0", "cni:romana-test:p2:eth0#v6"] {
        assert_eq!(admin.address(name).await.unwrap_err().status(), Some(404), "{name} released");
        assert_eq!(admin.endpoint(name).await.unwrap_err().status(), Some(404), "{name}'s record");
    }
    assert!(!pings(&pods[0], ip2[1]), "p2's IPv6 address is gone");

    // GC: p5 is a dual-stack leftover; p1 (dual) and p4 (IPv6-only) stay, both families.
    assert_eq!(cni("ADD", "p5", &netns_path(&pods[4]), &ca, "").0, 0);
    let mut gc = conf("1.1.0", &sock[0]);
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "p1", "ifname": "eth0"}, {"containerID": "p4", "ifname": "eth0"}]);
    assert_eq!(cni("GC", "", "", &gc, "").0, 0);
    for name in ["cni:romana-test:p5:eth0", "cni:romana-test:p5:eth0#v6"] {
        assert_eq!(admin.address(name).await.unwrap_err().status(), Some(404), "GC released {name}");
    }
    assert!(!pods[4].ip("link").contains("eth0"), "GC removed p5's interface");
    assert_eq!(admin.address("cni:romana-test:p1:eth0#v6").await.unwrap().ip, ip1[1].to_string());
    assert_eq!(cni("CHECK", "p1", &netns_path(&pods[0]), &check, "").0, 0, "GC kept p1's two addresses");
    let mut check4 = conf_for("1.0.0", &sock[0], "six");
    check4["prevResult"] = r4.clone();
    assert_eq!(cni("CHECK", "p4", &netns_path(&pods[3]), &check4, "").0, 0, "GC kept p4");

    // A failed IPv6 allocation leaves nothing: tenant tiny's IPv6 network holds two addresses.
    let tiny = conf_for("1.0.0", &sock[0], "tiny");
    for (i, p) in [(5, "t1"), (6, "t2")] {
        let (rc, r) = cni("ADD", p, &netns_path(&pods[i]), &tiny, "");
        assert_eq!((rc, result_ips(&r).len()), (0, 2), "ADD {p}: {r}");
    }
    let before = admin.addresses("").await.unwrap();
    let (rc, err) = cni("ADD", "t3", &netns_path(&pods[7]), &tiny, "");
    assert_eq!((rc, err["code"].as_u64()), (1, Some(7)), "{err}");
    assert!(err["details"].as_str().unwrap().contains("tiny6"), "the error names the network: {err}");
    let after = admin.addresses("").await.unwrap();
    assert_eq!(after, before, "a failed dual-stack ADD left an address");
    assert!(!pods[7].ip("link").contains("eth0"), "nothing plumbed for t3");
    assert!(!hosts.0.ip("link").contains(common_link("t3").as_str()), "no host link for t3");
}

/// The host end's name of container `cid`'s eth0.
fn common_link(cid: &str) -> String {
    romana_host::host_link_name(cid, "eth0").to_string()
}
