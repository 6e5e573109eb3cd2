//! romana-cni end to end, called the way a runtime calls it (CNI_* environment, config on stdin):
//! two hosts as namespaces joined by a veth pair, an agent on each, romanad's services in this
//! process on 127.0.0.1, pods as namespaces of their own. Pods on different hosts reach each other;
//! ADD is idempotent; CHECK finds tampering; DEL twice and DEL without a namespace succeed; GC
//! removes leftovers; errors carry their CNI codes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{agent, agent_get, agent_metric, cni, conf, dump, ping, wait_for};
use romana_test_support::{HostPair, Netns, TempDir};
use serde_json::json;

fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.0)
}

/// Packets the host's underlay link transmitted.
fn uplink_tx(host: &Netns) -> u64 {
    let link: serde_json::Value = serde_json::from_str(&host.ip("-s -j link show eth0")).unwrap();
    link[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
}

/// Packets the host sides of a host's endpoint veths transmitted (toward their pods).
fn endpoint_tx(host: &Netns) -> u64 {
    let links: serde_json::Value = serde_json::from_str(&host.ip("-s -j link show type veth")).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("romana")))
        .map(|l| l["stats64"]["tx"]["packets"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_across_hosts_through_the_cni_plugin() {
    let Some(hosts) = HostPair::new("rmc") else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let pid = std::process::id();
    let pods: Vec<Netns> = (1..=3).map(|i| Netns::new(&format!("rmc-{pid}-p{i}")).unwrap()).collect();
    let dir = TempDir::new("cni");
    let creds = common::romanad(dir.path()).await;

    let sock: Vec<PathBuf> = ["a", "b"].iter().map(|h| dir.path().join(format!("{h}.sock"))).collect();
    // Host a leaves its pods' outgoing traffic to its kernel (`--no-fast-path-send`); host b, as
    // by default, takes it past its forwarding (`romana_send`).
    let no_send = ["--no-fast-path-send"];
    let mut a = common::agent_with(
        &creds,
        "ha",
        "192.168.88.1",
        &hosts.0.0,
        &sock[0],
        &dir.path().join("a.log"),
        &no_send,
    );
    let b = agent(&creds, "hb", "192.168.88.2", &hosts.1.0, &sock[1], &dir.path().join("b.log"));
    let (ca, cb) = (conf("1.0.0", &sock[0]), conf("1.0.0", &sock[1]));
    wait_for("both agents ready (STATUS)", 20, || {
        cni("STATUS", "", "", &conf("1.1.0", &sock[0]), "").0 == 0
            && cni("STATUS", "", "", &conf("1.1.0", &sock[1]), "").0 == 0
    })
    .await;

    // ADD on each host; a 1.0.0 result names both ends and the pod's address and gateway.
    let (rc, r1) = cni("ADD", "pod1", &netns_path(&pods[0]), &ca, "");
    assert_eq!(rc, 0, "ADD pod1: {r1}");
    let ip1 = r1["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned();
    assert_eq!(r1["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(r1["interfaces"][1]["sandbox"], netns_path(&pods[0]));
    assert!(r1["ips"][0].get("version").is_none(), "1.0.0 results carry no IP version");
    // Pod 2 is kubelet's: its ADD takes the labels from the pod's record, which romana-k8s writes.
    let admin = romana_client::Client::from_credentials(
        &serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap(),
    )
    .await
    .unwrap();
    let record = romana_api::rest::PodInfo {
        namespace: "acme".into(),
        name: "p2".into(),
        host: "hb".into(),
        labels: [("app".to_owned(), "p2".to_owned())].into(),
        ..Default::default()
    };
    admin.put_pod(&record).await.unwrap();
    let (rc, r2) = cni(
        "ADD",
        "pod2",
        &netns_path(&pods[1]),
        &conf("0.4.0", &sock[1]),
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=acme;K8S_POD_NAME=p2",
    );
    assert_eq!(rc, 0, "ADD pod2: {r2}");
    assert_eq!(r2["ips"][0]["version"], "4", "0.4.0 results carry the IP version");
    let ip2 = r2["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned();
    assert_ne!(ip1, ip2);
    let e2 = admin.endpoint_list().await.unwrap().into_iter().find(|e| e.ip == ip2).unwrap();
    assert_eq!((e2.pod.as_str(), e2.labels.clone()), ("acme/p2", record.labels.clone()), "{e2:?}");

    // Cross-host reachability once each host has the other's block (route manager + agents).
    let start = Instant::now();
    while !ping(&pods[0].0, &ip2) {
        if start.elapsed() > Duration::from_secs(20) {
            let all = dump(&[&hosts.0.0, &hosts.1.0, &pods[0].0, &pods[1].0]);
            panic!("pod1 cannot reach pod2 ({ip2}) across hosts:\n{all}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ping(&pods[1].0, &ip1), "pod2 -> pod1");
    // The fast path: host b hands pod1's packets straight to pod2 (the host side of pod2's veth
    // transmits none of 20 pings) and pod2's replies, unforwarded, to the far end of its veth
    // uplink (host a's eth0: its own eth0 transmits none of them); host a
    // (`--no-fast-path-send`) forwards pod1's requests out of its eth0 and is handed the replies.
    wait_for("one fast path entry on each host", 10, || {
        agent_metric(&sock[0], "romana_agent_fast_path_entries") == 1.0
            && agent_metric(&sock[1], "romana_agent_fast_path_entries") == 1.0
    })
    .await;
    // Endpoint links get `romana_send` once the CNI path has been quiet for a moment.
    wait_for("romana_send on pod2's link", 10, || common::programs(&hosts.1.0, "romana") == ["romana_send"])
        .await;
    wait_for("host b hands packets to the far end of eth0", 10, || {
        common::handoffs(&sock[1]) == [("eth0".to_owned(), true)]
    })
    .await;
    let fwd = [common::forwarded(&hosts.0.0), common::forwarded(&hosts.1.0)];
    let up = [uplink_tx(&hosts.0), uplink_tx(&hosts.1)];
    let before = endpoint_tx(&hosts.1);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &pods[0].0, "ping", "-q", "-c", "20", "-i", "0.01", "-W", "1", &ip2])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("20 received"), "{out:?}");
    let sent = endpoint_tx(&hosts.1) - before;
    // (The link's own ARP and IPv6 neighbour discovery may still go out; the requests do not.)
    assert!(sent < 10, "host b transmitted {sent} packets to pod2: the fast path was not taken");
    let fwd = [common::forwarded(&hosts.0.0) - fwd[0], common::forwarded(&hosts.1.0) - fwd[1]];
    assert!((20..30).contains(&fwd[0]) && fwd[1] <= 2, "the hosts forwarded {fwd:?} datagrams of 40");
    let up = [uplink_tx(&hosts.0) - up[0], uplink_tx(&hosts.1) - up[1]];
    assert!(up[0] >= 20 && up[1] < 10, "the uplinks transmitted {up:?} packets");
    // Anything on the uplink's transmit side (here an empty clsact qdisc: tc egress filters
    // would see the packets there) turns the hand-off off: the uplink transmits the replies.
    common::clsact(&hosts.1.0, "add");
    wait_for("host b's hand-off off", 10, || common::handoffs(&sock[1]) == [("eth0".to_owned(), false)])
        .await;
    let (_, status) = agent_get(&sock[1], "/v1/status");
    assert!(status.contains(r#"qdiscs [\"clsact\"] on it"#), "{status}");
    let before = uplink_tx(&hosts.1);
    assert!(ping(&pods[0].0, &ip2));
    assert!(uplink_tx(&hosts.1) > before, "with the hand-off off host b's uplink transmits the reply");
    common::clsact(&hosts.1.0, "del");
    wait_for("host b's hand-off back", 10, || common::handoffs(&sock[1]) == [("eth0".to_owned(), true)])
        .await;
    // A NAT chain of someone else's on prerouting (kube-proxy's, Docker's) needs conntrack to see
    // both directions: the fast path empties, the kernel forwards to the pod again, and it comes
    // back when the chain goes.
    common::nft_script(
        &hosts.1.0,
        "table ip rmc-nat {\n chain pre { type nat hook prerouting priority -100; }\n}\n",
    );
    wait_for("host b's fast path off", 10, || {
        agent_metric(&sock[1], "romana_agent_fast_path_entries") == 0.0
    })
    .await;
    let (_, status) = agent_get(&sock[1], "/v1/status");
    assert!(status.contains("table ip rmc-nat chain pre hook prerouting"), "{status}");
    let before = endpoint_tx(&hosts.1);
    assert!(ping(&pods[0].0, &ip2));
    assert!(endpoint_tx(&hosts.1) > before, "with the fast path off the host forwards to the pod");
    common::nft_script(&hosts.1.0, "delete table ip rmc-nat\n");
    wait_for("host b's fast path back", 15, || {
        agent_metric(&sock[1], "romana_agent_fast_path_entries") == 1.0
    })
    .await;
    // The agents followed romanad's watch for their route sets, and count what they did.
    assert!(agent_metric(&sock[0], "romana_agent_watch_events_total") >= 1.0);
    assert_eq!(agent_metric(&sock[1], "romana_agent_cni_add_total"), 1.0);
    assert_eq!(agent_get(&sock[0], "/healthz"), (200, "ok".to_owned()));
    // Host b's agent again, with `--no-fast-path-send`: the `romana_send` the first one left on
    // pod2's link reads a map nobody writes any more, so the new agent removes it (and replaces
    // the uplink's program in place); pod2 stays reachable throughout.
    assert_eq!(common::programs(&hosts.1.0, "romana"), ["romana_send"]);
    assert_eq!(common::programs(&hosts.1.0, "eth0"), ["romana_deliver"]);
    drop(b);
    let _b2 = common::agent_with(
        &creds,
        "hb",
        "192.168.88.2",
        &hosts.1.0,
        &sock[1],
        &dir.path().join("b2.log"),
        &no_send,
    );
    wait_for("restarted agent b ready", 20, || cni("STATUS", "", "", &conf("1.1.0", &sock[1]), "").0 == 0)
        .await;
    wait_for("the stale romana_send removed", 15, || common::programs(&hosts.1.0, "romana").is_empty()).await;
    assert_eq!(common::programs(&hosts.1.0, "eth0"), ["romana_deliver"]);
    assert!(ping(&pods[0].0, &ip2));

    // Agent restart under traffic: 60 pings 50 ms apart across hosts while ha's agent is killed
    // and started again; the kernel keeps forwarding, so not one is lost.
    let pinger = std::process::Command::new("ip")
        .args(["netns", "exec", &pods[0].0, "ping", "-q", "-c", "60", "-i", "0.05", "-W", "1", &ip2])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(a);
    a = agent(&creds, "ha", "192.168.88.1", &hosts.0.0, &sock[0], &dir.path().join("a2.log"));
    let out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("60 received"), "no loss across an agent restart: {summary}");
    wait_for("restarted agent ready", 20, || cni("STATUS", "", "", &conf("1.1.0", &sock[0]), "").0 == 0)
        .await;

    // ADD again: the same address, nothing rebuilt.
    let (rc, again) = cni("ADD", "pod1", &netns_path(&pods[0]), &ca, "");
    assert_eq!(rc, 0);
    assert_eq!(again["ips"], r1["ips"]);
    assert_eq!(
        again["interfaces"][1]["mac"], r1["interfaces"][1]["mac"],
        "idempotent ADD keeps the interface"
    );

    // CHECK with prevResult passes; after tampering it names the problem.
    let mut check = ca.clone();
    check["prevResult"] = r1.clone();
    assert_eq!(cni("CHECK", "pod1", &netns_path(&pods[0]), &check, "").0, 0);
    pods[0].ip("addr flush dev eth0");
    let (rc, err) = cni("CHECK", "pod1", &netns_path(&pods[0]), &check, "");
    assert_eq!(rc, 1);
    assert_eq!(err["code"], 999);
    assert!(err["details"].as_str().unwrap().contains(&format!("address {ip1}/32 is missing")), "{err}");
    // ADD repairs it (idempotent by container and interface: same address).
    let (rc, fixed) = cni("ADD", "pod1", &netns_path(&pods[0]), &ca, "");
    assert_eq!((rc, &fixed["ips"]), (0, &r1["ips"]));
    assert_eq!(cni("CHECK", "pod1", &netns_path(&pods[0]), &check, "").0, 0);
    assert!(ping(&pods[0].0, &ip2), "a repaired pod is reachable at once");

    // DEL twice is success; the address goes back to IPAM and the host link is gone.
    assert_eq!(cni("DEL", "pod2", &netns_path(&pods[1]), &cb, "").0, 0);
    assert_eq!(cni("DEL", "pod2", &netns_path(&pods[1]), &cb, "").0, 0);
    assert!(!pods[1].ip("link").contains("eth0"), "the pod's interface left with DEL");
    assert_eq!(
        agent_metric(&sock[1], "romana_agent_fast_path_entries"),
        0.0,
        "DEL empties the fast path first"
    );
    assert!(!ping(&pods[0].0, &ip2));
    // DEL with no namespace (the runtime removed it first) is success too.
    assert_eq!(cni("DEL", "pod-gone", "", &cb, "").0, 0);

    // GC: pod3 is a leftover the runtime no longer lists; pod1 stays.
    assert_eq!(cni("ADD", "pod3", &netns_path(&pods[2]), &ca, "").0, 0);
    let mut gc = conf("1.1.0", &sock[0]);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "pod1", "ifname": "eth0"}]);
    assert_eq!(cni("GC", "", "", &gc, "").0, 0);
    assert!(!pods[2].ip("link").contains("eth0"), "GC removed pod3's interface");
    assert_eq!(cni("CHECK", "pod1", &netns_path(&pods[0]), &check, "").0, 0, "GC kept pod1");
    let mut check3 = ca.clone();
    check3["prevResult"] = json!({});
    let (rc, err) = cni("CHECK", "pod3", &netns_path(&pods[2]), &check3, "");
    assert_eq!((rc, err["code"].as_u64()), (1, Some(3)), "pod3's address was released: {err}");

    // Errors carry their codes: no such namespace (3), unreachable agent (11), no tenant (7).
    let (rc, err) = cni("ADD", "pod9", "/run/netns/rmc-does-not-exist", &ca, "");
    assert_eq!((rc, err["code"].as_u64()), (1, Some(3)), "{err}");
    let (rc, err) =
        cni("ADD", "pod9", &netns_path(&pods[1]), &conf("1.0.0", &dir.path().join("none.sock")), "");
    assert_eq!((rc, err["code"].as_u64()), (1, Some(11)), "{err}");
    assert!(err["msg"].as_str().unwrap().contains("not reachable"));
    let (rc, err) = cni(
        "ADD",
        "pod9",
        &netns_path(&pods[1]),
        &json!({"cniVersion":"1.0.0","name":"romana-test","agent_socket":sock[1]}),
        "",
    );
    assert_eq!((rc, err["code"].as_u64()), (1, Some(7)), "{err}");
    let (rc, err) = cni("ADD", "pod9", &netns_path(&pods[1]), &json!({"cniVersion":"0.2.0","name":"x"}), "");
    assert_eq!((rc, err["code"].as_u64(), err["cniVersion"].as_str()), (1, Some(1), Some("0.2.0")), "{err}");
    // VERSION needs nothing else.
    drop(a);
    let (rc, v) = cni("VERSION", "", "", &json!({"cniVersion":"1.1.0"}), "");
    assert_eq!(rc, 0);
    assert!(v["supportedVersions"].as_array().unwrap().contains(&json!("1.1.0")));
}
