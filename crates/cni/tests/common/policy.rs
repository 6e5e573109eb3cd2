//! The policy truth tables as both policy tests run them (`policy.rs` over IPv4, `policy_v6.rs`
//! over IPv6 between dual-stack pods): pods, probes of every pair, the examples' ipBlocks
//! rewritten for the family probed, and the cases of a data file applied through romanad's API
//! with every expected matrix probed for real.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use romana_api::rest::LabelsRequest;
use romana_client::Client;
use romana_test_support::Netns;
use serde_json::{Value, json};

use super::probe::{self, Proto};

/// The family probed: the pod network an ipBlock around every pod becomes, and a pod's prefix.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub pods: &'static str,
    pub host_len: u8,
}

pub const V4: Family = Family { pods: "10.20.0.0/16", host_len: 32 };
/// `common::DUAL`'s IPv6 pod network.
pub const V6: Family = Family { pods: "fd00:20::/112", host_len: 128 };

pub const PROBES: [(Proto, u16); 4] =
    [(Proto::Tcp, 80), (Proto::Tcp, 81), (Proto::Udp, 80), (Proto::Udp, 81)];
pub const TIMEOUT: Duration = Duration::from_millis(300);

pub struct Pod {
    pub id: String,
    pub ns: Netns,
    /// The address probed (of the family under test).
    pub ip: IpAddr,
    pub address_name: String,
    /// The endpoint records a relabel changes: the address name's, and `#v6` of a dual-stack pod.
    pub records: Vec<String>,
}

pub fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.0)
}

pub fn probe_name(p: (Proto, u16)) -> String {
    format!("{}/{}", if p.0 == Proto::Tcp { "TCP" } else { "UDP" }, p.1)
}

/// Probes until the matrices equal `want` (policy changes reach the hosts through the watch) or
/// `secs` pass; returns the mismatch description on failure.
pub fn expect(pods: &[Pod], want: &BTreeMap<String, Vec<String>>, secs: u64) -> Result<Duration, String> {
    let list: Vec<(String, IpAddr)> = pods.iter().map(|p| (netns_path(&p.ns), p.ip)).collect();
    let start = Instant::now();
    loop {
        let got = probe::matrix(&list, &PROBES, TIMEOUT);
        let mut wrong = Vec::new();
        for (k, p) in PROBES.iter().enumerate() {
            let Some(rows) = want.get(&probe_name(*p)) else { continue };
            for (i, row) in rows.iter().enumerate() {
                for (j, c) in row.chars().enumerate() {
                    if i != j && (c == '1') != got[k][i][j] {
                        wrong.push(format!("{} {} -> {}: want {c}", probe_name(*p), pods[i].id, pods[j].id));
                    }
                }
            }
        }
        if wrong.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let shown: Vec<String> = PROBES
                .iter()
                .enumerate()
                .map(|(k, p)| format!("{}:\n{}", probe_name(*p), probe::render(&got[k])))
                .collect();
            return Err(format!(
                "{} cells differ:\n{}\nprobed:\n{}",
                wrong.len(),
                wrong.join("\n"),
                shown.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn all_open(n: usize) -> BTreeMap<String, Vec<String>> {
    PROBES.iter().map(|p| (probe_name(*p), vec!["1".repeat(n); n])).collect()
}

/// Rewrites the examples' ipBlocks for this cluster, whose addresses IPAM chose. A block around
/// every example pod becomes our pod network, its exceptions the excepted pods' addresses; a
/// block around some of them becomes one /32 block per pod it covers (what the probes can tell
/// apart). `example_ips` maps each example address to its pod.
fn rewrite(v: &mut Value, example_ips: &BTreeMap<IpAddr, String>, pods: &[Pod], fam: Family) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if (k == "from" || k == "to") && x.is_array() {
                    let peers = std::mem::take(x.as_array_mut().unwrap());
                    *x = Value::Array(
                        peers.into_iter().flat_map(|p| rewrite_peer(p, example_ips, pods, fam)).collect(),
                    );
                } else {
                    rewrite(x, example_ips, pods, fam);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, example_ips, pods, fam)),
        _ => {}
    }
}

fn covered(cidr: &str, example_ips: &BTreeMap<IpAddr, String>) -> Vec<String> {
    let c: romana_model::Cidr = cidr.parse().unwrap();
    example_ips.iter().filter(|(ip, _)| c.contains_addr(**ip)).map(|(_, id)| id.clone()).collect()
}

fn rewrite_peer(
    peer: Value,
    example_ips: &BTreeMap<IpAddr, String>,
    pods: &[Pod],
    fam: Family,
) -> Vec<Value> {
    let Some(block) = peer.get("ipBlock") else { return vec![peer] };
    let ip_of = |id: &String| pods.iter().find(|p| &p.id == id).unwrap().ip;
    let inside = covered(block["cidr"].as_str().unwrap(), example_ips);
    let excepted: Vec<String> = block["except"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|x| covered(x.as_str().unwrap(), example_ips))
        .collect();
    if inside.len() == example_ips.len() {
        let except: Vec<String> =
            excepted.iter().map(|id| format!("{}/{}", ip_of(id), fam.host_len)).collect();
        return vec![json!({"ipBlock": {"cidr": fam.pods, "except": except}})];
    }
    inside
        .iter()
        .filter(|id| !excepted.contains(id))
        .map(|id| json!({"ipBlock": {"cidr": format!("{}/{}", ip_of(id), fam.host_len)}}))
        .collect()
}

/// The agents' warnings and errors, for a failure message.
pub fn agent_trouble(logs: &[std::path::PathBuf]) -> String {
    logs.iter()
        .map(|l| {
            let text = std::fs::read_to_string(l).unwrap_or_default();
            let bad: Vec<&str> = text
                .lines()
                .filter(|x| x.contains("WARN") || x.contains("ERROR") || x.contains("firewall"))
                .collect();
            format!("--- {}:\n{}", l.display(), bad[bad.len().saturating_sub(25)..].join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn run_cases(
    client: &Client,
    path: &Path,
    pods: &[Pod],
    original: &BTreeMap<String, String>,
    logs: &[std::path::PathBuf],
    fam: Family,
) -> usize {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let example_ips: BTreeMap<IpAddr, String> = pods
        .iter()
        .map(|p| (doc["cluster"]["pods"][&p.id]["ip"].as_str().unwrap().parse().unwrap(), p.id.clone()))
        .collect();
    let mut steps = 0;
    for case in doc["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let mut created = Vec::new();
        for (s, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            for a in step["actions"].as_array().unwrap() {
                match a["op"].as_str().unwrap() {
                    "label_pod" => {
                        let pod = pods.iter().find(|p| p.id == a["pod"].as_str().unwrap()).unwrap();
                        let labels: BTreeMap<String, String> =
                            serde_json::from_value(a["labels"].clone()).unwrap();
                        for r in &pod.records {
                            let req = LabelsRequest { labels: labels.clone() };
                            client.set_endpoint_labels(r, &req).await.unwrap();
                        }
                    }
                    "create_policy" | "update_policy" => {
                        let mut p = a["policy"].clone();
                        rewrite(&mut p, &example_ips, pods, fam);
                        let np = client.apply_netpol(&p).await.unwrap_or_else(|e| panic!("{id}: {e}"));
                        created.push((np.metadata.namespace, np.metadata.name));
                    }
                    "delete_policy" => {
                        let m = &a["policy"]["metadata"];
                        client
                            .delete_netpol(m["namespace"].as_str().unwrap(), m["name"].as_str().unwrap())
                            .await
                            .unwrap();
                    }
                    other => panic!("{id}: unknown op {other}"),
                }
            }
            let want: BTreeMap<String, Vec<String>> =
                serde_json::from_value(step["expected"].clone()).unwrap();
            if let Err(e) = expect(pods, &want, 10) {
                panic!("{id} step {s}: {e}\n{}", agent_trouble(logs));
            }
            steps += 1;
        }
        // Back to an open cluster for the next case.
        for (ns, name) in created {
            let _ = client.delete_netpol(&ns, &name).await;
        }
        for p in pods {
            for r in &p.records {
                let labels = BTreeMap::from([("pod".to_owned(), original[&p.id].clone())]);
                client.set_endpoint_labels(r, &LabelsRequest { labels }).await.unwrap();
            }
        }
        expect(pods, &all_open(pods.len()), 10)
            .unwrap_or_else(|e| panic!("after {id}: {e}\n{}", agent_trouble(logs)));
    }
    steps
}

/// The Kubernetes examples' cluster (pods, labels, containerPorts) and their cases.
pub fn examples() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/tests/data/netpol-examples.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Tenants x, y and z, labelled as the examples' namespaces.
pub async fn tenants(admin: &Client) {
    for ns in ["x", "y", "z"] {
        let labels = BTreeMap::from([
            ("ns".to_owned(), ns.to_owned()),
            ("kubernetes.io/metadata.name".to_owned(), ns.to_owned()),
        ]);
        let req = romana_api::rest::TenantRequest {
            name: ns.into(),
            external_id: String::new(),
            labels,
            isolation: String::new(),
        };
        admin.create_tenant(&req).await.unwrap();
    }
}

/// The examples' nine pods added through romana-cni (`ns_prefix-<ns><name>` namespaces, pod i
/// through agent socket `sockets[i % len]`) with their labels, and the containerPorts a
/// controller adds (on every record of the pod); each serves the probes. The address probed is
/// the one of `fam` (a dual-stack pod has both). Returns the pods and their original labels.
pub async fn add_pods(
    admin: &Client,
    sockets: &[std::path::PathBuf],
    ns_prefix: &str,
    fam: Family,
) -> (Vec<Pod>, BTreeMap<String, String>) {
    let doc = examples();
    let mut pods = Vec::new();
    let mut original = BTreeMap::new();
    for (i, id) in doc["pods"].as_array().unwrap().iter().enumerate() {
        let id = id.as_str().unwrap().to_owned();
        let (ns, name) = id.split_once('/').unwrap();
        let netns = Netns::new(&format!("{ns_prefix}-{ns}{name}")).unwrap();
        let args =
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};ROMANA_LABELS=pod={name}");
        let sock = &sockets[i % sockets.len()];
        let (rc, r) =
            super::cni("ADD", &format!("p{i}"), &netns_path(&netns), &super::conf("1.0.0", sock), &args);
        assert_eq!(rc, 0, "ADD {id}: {r}");
        let want_v6 = fam.host_len == 128;
        let ip = super::result_ips(&r)
            .into_iter()
            .find(|ip| ip.is_ipv6() == want_v6)
            .unwrap_or_else(|| panic!("ADD {id}: no address of the family probed: {r}"));
        let address_name = format!("cni:romana-test:p{i}:eth0");
        let v6_name = format!("{address_name}#v6");
        let ports: Vec<romana_api::rest::EndpointPort> =
            serde_json::from_value::<Vec<Value>>(doc["cluster"]["pods"][&id]["containerPorts"].clone())
                .unwrap()
                .iter()
                .filter(|p| p["protocol"] != "SCTP")
                .map(|p| romana_api::rest::EndpointPort {
                    name: p["name"].as_str().unwrap().into(),
                    protocol: p["protocol"].as_str().unwrap().into(),
                    port: p["containerPort"].as_u64().unwrap() as u16,
                })
                .collect();
        let mut records = Vec::new();
        for mut e in admin.endpoint_list().await.unwrap() {
            if e.name == address_name || e.name == v6_name {
                records.push(e.name.clone());
                e.ports.clone_from(&ports);
                admin.put_endpoint(&e).await.unwrap();
            }
        }
        probe::serve(&netns_path(&netns));
        original.insert(id.clone(), name.to_owned());
        pods.push(Pod { id, ns: netns, ip, address_name, records });
    }
    (pods, original)
}
