//! Policy enforcement end to end, in network namespaces this test creates (`rmp-*`): two hosts
//! with a real agent each, romanad in this process, nine pods (namespaces x, y, z x pods a, b, c)
//! added through romana-cni and spread over both hosts, every pod serving TCP and UDP on 80 and
//! 81. The worked Kubernetes truth tables (and our own, with label changes and policy updates)
//! are applied through romanad's API and every expected matrix is probed for real; Romana
//! policies (a CIDR target with `local` and `host` peers and ICMP type/code, an egress policy to
//! a CIDR, a `dest: host` target) are probed the same way. Then Romana's
//! own behaviour: tenant and segment isolation, fail-closed ADD, an agent restart that keeps the
//! table in force, and repair of what a foreign process deletes.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::policy::{
    PROBES, Pod, TIMEOUT, V4, agent_trouble, all_open, expect, netns_path, probe_name, run_cases,
};
use common::probe::{self, Proto};
use common::{agent, agent_metric, cni, conf, nft_in};
use romana_api::rest::{Credentials, LabelsRequest, TenantRequest};
use romana_client::Client;
use romana_test_support::{HostPair, Netns, TempDir};
use serde_json::{Value, json};

/// Whether one ping from `from` to `to` is answered (ICMP echo, type 8 code 0).
/// Whether `from` opens TCP 80 to the pod in namespace `to` with address `ip`.
fn reaches(from: &Pod, to: &Netns, ip: IpAddr) -> bool {
    let pods = [(netns_path(&from.ns), from.ip), (netns_path(to), ip)];
    probe::matrix(&pods, &[(Proto::Tcp, 80)], TIMEOUT)[0][0][1]
}

fn ping(from: &Pod, to: &Pod) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &from.ns.0, "ping", "-c1", "-W1", &to.ip.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Romana policies through `POST /policies`, probed: a CIDR target (x/a's address) open only to
/// endpoints on its own host (`peer: local`) on TCP 80 and to their pings (ICMP type 8, code 0);
/// then an egress policy on tenant z allowing only UDP 81 to y/b's address. Pods alternate
/// between the two hosts, so pod i is on host i % 2.
async fn romana_policies(admin: &Client, pods: &[Pod], hosts: &HostPair, logs: &[std::path::PathBuf]) {
    let at = |id: &str| pods.iter().position(|p| p.id == id).unwrap();
    let (xa, yb) = (at("x/a"), at("y/b"));
    let matrix = |open: &dyn Fn(&str, usize, usize) -> bool| -> BTreeMap<String, Vec<String>> {
        PROBES
            .iter()
            .map(|p| {
                let name = probe_name(*p);
                let rows = (0..pods.len())
                    .map(|i| (0..pods.len()).map(|j| if open(&name, i, j) { '1' } else { '0' }).collect())
                    .collect();
                (name, rows)
            })
            .collect()
    };
    // Both hosts reach x/a before any policy (so a refusal below is the policy's doing).
    let hosts_to_xa = || {
        let list = [
            (netns_path(&hosts.0), "192.168.88.1".parse().unwrap()),
            (netns_path(&hosts.1), "192.168.88.2".parse().unwrap()),
            (netns_path(&pods[xa].ns), pods[xa].ip),
        ];
        let got = probe::matrix(&list, &[(Proto::Tcp, 80), (Proto::Tcp, 81)], TIMEOUT);
        (got[0][0][2], got[0][1][2], got[1][0][2])
    };
    assert_eq!(hosts_to_xa(), (true, true, true), "hosts -> x/a before the policy");
    let local = admin
        .add_policy(&json!({"name": "xa-local", "applied_to": [{"cidr": format!("{}/32", pods[xa].ip)}],
            "ingress": [{"peers": [{"peer": "local"}, {"peer": "host"}],
                         "rules": [{"protocol": "tcp", "ports": [80]}, {"protocol": "icmp", "icmp_type": 8, "icmp_code": 0}]}]}))
        .await
        .unwrap();
    let want = matrix(&|probe, i, j| j != xa || (probe == "TCP/80" && i % 2 == xa % 2));
    expect(pods, &want, 10)
        .unwrap_or_else(|e| panic!("romana cidr target, local peer: {e}\n{}", agent_trouble(logs)));
    let (near, far) = ((0..pods.len()).find(|i| *i != xa && i % 2 == xa % 2).unwrap(), (xa + 1) % pods.len());
    assert!(ping(&pods[near], &pods[xa]), "a ping from {} (same host) to x/a was refused", pods[near].id);
    assert!(!ping(&pods[far], &pods[xa]), "a ping from {} (other host) reached x/a", pods[far].id);
    // `peer: host` is x/a's own host (a): it gets in on TCP 80, host b does not.
    assert_eq!(
        hosts_to_xa(),
        (true, false, false),
        "host a -> x/a TCP/80, host b -> x/a TCP/80, host a -> x/a TCP/81 under peer host"
    );
    admin.delete_policy(&local.id).await.unwrap();

    let egress = admin
        .add_policy(&json!({"name": "z-out", "applied_to": [{"tenant": "z"}],
            "egress": [{"peers": [{"cidr": format!("{}/32", pods[yb].ip)}], "rules": [{"protocol": "udp", "ports": [81]}]}]}))
        .await
        .unwrap();
    let want = matrix(&|probe, i, j| !pods[i].id.starts_with('z') || (j == yb && probe == "UDP/81"));
    expect(pods, &want, 10)
        .unwrap_or_else(|e| panic!("romana egress to a cidr: {e}\n{}", agent_trouble(logs)));
    admin.delete_policy(&egress.id).await.unwrap();
    expect(pods, &all_open(pods.len()), 10)
        .unwrap_or_else(|e| panic!("after the romana policies: {e}\n{}", agent_trouble(logs)));
}

/// A Romana policy applied to `dest: host`: host a (192.168.88.1, serving TCP 80 and 81) admits
/// what its own endpoints open to it only from tenant x on TCP 80; host b's endpoints, whose
/// connections arrive over the underlay, are not policed.
async fn host_policy(admin: &Client, pods: &[Pod], hosts: &HostPair, logs: &[std::path::PathBuf]) {
    let host_a: IpAddr = "192.168.88.1".parse().unwrap();
    probe::serve(&netns_path(&hosts.0));
    let mut list: Vec<(String, IpAddr)> = pods.iter().map(|p| (netns_path(&p.ns), p.ip)).collect();
    list.push((netns_path(&hosts.0), host_a));
    let probes = [(Proto::Tcp, 80), (Proto::Tcp, 81)];
    // What each pod gets from host a on TCP 80 and 81, until it is `want` (or 10 s).
    let reach = |want: &dyn Fn(usize, u16) -> bool| -> Result<(), String> {
        let start = Instant::now();
        loop {
            let got = probe::matrix(&list, &probes, TIMEOUT);
            let wrong: Vec<String> = (0..pods.len())
                .flat_map(|i| probes.iter().enumerate().map(move |(k, p)| (i, k, p.1)))
                .filter(|(i, k, port)| got[*k][*i][pods.len()] != want(*i, *port))
                .map(|(i, _, port)| format!("{} -> host a TCP/{port}: want {}", pods[i].id, want(i, port)))
                .collect();
            if wrong.is_empty() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(wrong.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    reach(&|_, _| true).unwrap_or_else(|e| panic!("host a before its policy: {e}"));
    let p = admin
        .add_policy(&json!({"name": "host-a", "applied_to": [{"dest": "host"}],
            "ingress": [{"peers": [{"tenant": "x"}], "rules": [{"protocol": "tcp", "ports": [80]}]}]}))
        .await
        .unwrap();
    // Pod i is on host i % 2: host a's own are the even ones.
    reach(&|i, port| i % 2 == 1 || (pods[i].id.starts_with('x') && port == 80))
        .unwrap_or_else(|e| panic!("romana dest host: {e}\n{}", agent_trouble(logs)));
    admin.delete_policy(&p.id).await.unwrap();
    reach(&|_, _| true).unwrap_or_else(|e| panic!("host a after its policy: {e}\n{}", agent_trouble(logs)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_enforced_between_pods_on_two_hosts() {
    let Some(hosts) = HostPair::new("rmp") else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let pid = std::process::id();
    let dir = TempDir::new("policy");
    let creds = common::romanad(dir.path()).await;
    let admin = Client::from_credentials(
        &serde_json::from_str::<Credentials>(&std::fs::read_to_string(&creds).unwrap()).unwrap(),
    )
    .await
    .unwrap();
    common::policy::tenants(&admin).await;
    let sock: Vec<_> = ["a", "b"].iter().map(|h| dir.path().join(format!("{h}.sock"))).collect();
    let host_ns = [hosts.0.0.clone(), hosts.1.0.clone()];
    let mut agents = vec![
        agent(&creds, "ha", "192.168.88.1", &host_ns[0], &sock[0], &dir.path().join("a.log")),
        agent(&creds, "hb", "192.168.88.2", &host_ns[1], &sock[1], &dir.path().join("b.log")),
    ];
    common::wait_for("both agents ready (STATUS)", 20, || {
        (0..2).all(|h| cni("STATUS", "", "", &conf("1.1.0", &sock[h]), "").0 == 0)
    })
    .await;

    // Nine pods, alternating hosts, with the examples' labels and named ports.
    let (pods, original) = common::policy::add_pods(&admin, &sock, &format!("rmp-{pid}"), V4).await;
    expect(&pods, &all_open(pods.len()), 10).unwrap_or_else(|e| panic!("before any policy: {e}"));
    // Nothing isolated yet: the agents' tables hook nothing (no chains in the packet path, no
    // conntrack from us); the tenant isolation below brings the base chains.
    let hooks = |h: usize| nft_in(&host_ns[h], "list table inet romana").matches(" hook ").count();
    assert_eq!((hooks(0), hooks(1)), (0, 0), "base chains on hosts without isolation");

    // The worked examples, then our own cases (label changes, updates, deletes).
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/tests/data");
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    let n =
        run_cases(&admin, &Path::new(data).join("netpol-examples.json"), &pods, &original, &logs, V4).await;
    let m = run_cases(&admin, &Path::new(data).join("netpol-romana.json"), &pods, &original, &logs, V4).await;
    assert!(n >= 13 && m >= 7, "steps run: {n} + {m}");
    romana_policies(&admin, &pods, &hosts, &logs).await;
    host_policy(&admin, &pods, &hosts, &logs).await;

    // Tenant isolation: x isolates segments, y the tenant. All pods are in segment "web" (the
    // CNI config's), so x's pods still talk among themselves; nobody else reaches x or y.
    let set_isolation = |t: &'static str, mode: &'static str| {
        let admin = &admin;
        async move {
            let cur = admin.tenant(t).await.unwrap();
            let req = TenantRequest {
                name: t.into(),
                external_id: cur.external_id,
                labels: cur.labels,
                isolation: mode.into(),
            };
            admin.update_tenant(&req).await.unwrap();
        }
    };
    set_isolation("x", "segment").await;
    set_isolation("y", "tenant").await;
    let row = |from: &str| -> String {
        pods.iter()
            .map(|to| {
                let (f, t) = (&from[..1], &to.id[..1]);
                let open = match t {
                    "x" | "y" => f == t,
                    _ => true,
                };
                if open { '1' } else { '0' }
            })
            .collect()
    };
    let isolated: BTreeMap<String, Vec<String>> =
        PROBES.iter().map(|p| (probe_name(*p), pods.iter().map(|p| row(&p.id)).collect())).collect();
    expect(&pods, &isolated, 10).unwrap_or_else(|e| panic!("tenant isolation: {e}"));
    // Isolated for ingress on both hosts (x's and y's pods alternate hosts): the two ingress base
    // chains at least (the cases above may have left egress or host policies too).
    assert!(
        hooks(0) >= 2 && hooks(1) >= 2,
        "ingress base chains with isolation: {} and {}",
        hooks(0),
        hooks(1)
    );
    // A policy opens what isolation closes: z may reach y's pod a on TCP 80.
    admin
        .apply_netpol(&json!({"metadata":{"name":"z-to-ya","namespace":"y"},"spec":{"podSelector":{"matchLabels":{"pod":"a"}},
            "ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"ns":"z"}}}],"ports":[{"port":80}]}]}}))
        .await
        .unwrap();
    let mut opened = isolated.clone();
    for (i, p) in pods.iter().enumerate() {
        if p.id.starts_with('z') {
            let ya = pods.iter().position(|q| q.id == "y/a").unwrap();
            // The port's protocol defaults to TCP: UDP/80 stays closed.
            let mut r: Vec<char> = opened["TCP/80"][i].chars().collect();
            r[ya] = '1';
            opened.get_mut("TCP/80").unwrap()[i] = r.into_iter().collect();
        }
    }
    expect(&pods, &opened, 10).unwrap_or_else(|e| panic!("policy over isolation: {e}"));

    // Fail-closed: a new pod of y, probed from z the moment ADD returns, is already isolated.
    let late = Netns::new(&format!("rmp-{pid}-late")).unwrap();
    // The runtime's ADD for it (repeated below, as a runtime retries).
    let add_late = || {
        cni(
            "ADD",
            "late",
            &netns_path(&late),
            &conf("1.0.0", &sock[1]),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=y;ROMANA_LABELS=pod=late",
        )
    };
    let (rc, r) = add_late();
    assert_eq!(rc, 0, "ADD late: {r}");
    let late_ip: IpAddr =
        r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
    probe::serve(&netns_path(&late));
    let za = pods.iter().find(|p| p.id == "z/a").unwrap();
    let ya = pods.iter().find(|p| p.id == "y/b").unwrap();
    let pair = |from: &Pod| reaches(from, &late, late_ip);
    assert!(!pair(za), "z/a reached a new y pod the moment ADD returned");
    assert!(pair(ya), "y/b (same tenant) reaches the new pod");

    // A controller relabels the pod; the runtime repeats the ADD (a retry): the controller's
    // labels stay, the runtime's are only the first registration's.
    let late_name = "cni:romana-test:late:eth0";
    let labels = BTreeMap::from([("pod".to_owned(), "relabelled".to_owned())]);
    admin.set_endpoint_labels(late_name, &LabelsRequest { labels: labels.clone() }).await.unwrap();
    let (rc, again) = add_late();
    assert_eq!((rc, &again["ips"]), (0, &r["ips"]), "repeated ADD: {again}");
    let record = admin.endpoint_list().await.unwrap().into_iter().find(|e| e.name == late_name).unwrap();
    assert_eq!(record.labels, labels, "a repeated ADD overwrote the controller's labels");

    // Agent restart: the table stays in force while the agent is away, and the restarted agent
    // converges without replacing it.
    let handle = |ns: &str| -> String {
        let j: Value = serde_json::from_str(&nft_in(ns, "-j list table inet romana")).unwrap();
        j["nftables"][1]["table"]["handle"].to_string()
    };
    let before = handle(&host_ns[1]);
    drop(agents.pop());
    assert!(!pair(za), "with the agent stopped the table still isolates");
    agents.push(agent(&creds, "hb", "192.168.88.2", &host_ns[1], &sock[1], &dir.path().join("b2.log")));
    common::wait_for("agent hb back", 20, || cni("STATUS", "", "", &conf("1.1.0", &sock[1]), "").0 == 0)
        .await;
    common::wait_for("the restarted agent's first firewall pass", 20, || {
        agent_metric(&sock[1], "romana_agent_firewall_syncs_total") >= 1.0
    })
    .await;
    assert_eq!(handle(&host_ns[1]), before, "the restarted agent replaced the table instead of converging");
    assert!(!pair(za) && pair(ya), "isolation holds across the restart");

    // A foreign process empties our ingress base chain: the next pass puts it back.
    nft_in(&host_ns[1], "flush chain inet romana fwd-ingress");
    let started = Instant::now();
    common::wait_for("repair of a foreign flush", 15, || {
        agent_metric(&sock[1], "romana_agent_firewall_repairs_total") >= 1.0
    })
    .await;
    assert!(!pair(za), "isolation is back after the repair ({:?})", started.elapsed());

    // A policy only a new pod on hb will match has no chains there until that pod's ADD brings
    // them (its first local target), in force the moment the ADD returns; its DEL takes them out.
    let table_b = || nft_in(&host_ns[1], "list table inet romana");
    let known = agent_metric(&sock[1], "romana_agent_firewall_policies");
    admin
        .apply_netpol(&json!({"metadata":{"name":"fresh-in","namespace":"z"},"spec":{"podSelector":{"matchLabels":{"pod":"fresh"}},
            "ingress":[{"from":[{"podSelector":{"matchLabels":{"pod":"a"}}}],"ports":[{"port":80}]}]}}))
        .await
        .unwrap();
    common::wait_for("hb compiles the new policy", 20, || {
        agent_metric(&sock[1], "romana_agent_firewall_policies") > known
    })
    .await;
    assert!(!table_b().contains("fresh-in"), "a policy no pod on hb matches has chains there");
    let fresh = Netns::new(&format!("rmp-{pid}-fresh")).unwrap();
    let fresh_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=z;ROMANA_LABELS=pod=fresh";
    let (rc, r) = cni("ADD", "fresh", &netns_path(&fresh), &conf("1.0.0", &sock[1]), fresh_args);
    assert_eq!(rc, 0, "ADD fresh: {r}");
    let table = table_b();
    let fresh_ip: IpAddr =
        r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
    probe::serve(&netns_path(&fresh));
    let to_fresh = |from: &Pod| reaches(from, &fresh, fresh_ip);
    let (za, zb) =
        (pods.iter().find(|p| p.id == "z/a").unwrap(), pods.iter().find(|p| p.id == "z/b").unwrap());
    assert!(
        table.contains("fresh-in"),
        "the ADD of the policy's first target on hb did not bring it:\n{table}"
    );
    assert!(!to_fresh(zb), "z/b (not admitted, on hb) reached the new pod the moment ADD returned");
    common::wait_for("z/a (admitted) reaches the new pod", 10, || to_fresh(za)).await;
    let (rc, r) = cni("DEL", "fresh", &netns_path(&fresh), &conf("1.0.0", &sock[1]), fresh_args);
    assert_eq!(rc, 0, "DEL fresh: {r}");
    common::wait_for("the policy's chains leave hb with its last target", 10, || {
        !table_b().contains("fresh-in")
    })
    .await;
}
