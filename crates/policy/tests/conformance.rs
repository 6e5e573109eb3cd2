//! Kubernetes NetworkPolicy truth tables (`tests/data/netpol-examples.json`, worked examples in
//! the upstream e2e form: namespaces x, y, z; pods a, b, c; probes TCP/UDP 80 and 81) checked
//! against the evaluator through the Kubernetes front end, and against the nftables tables the
//! firewall compiler makes for two hosts the pods are spread over (through the reference
//! interpreter). Each case is cumulative steps; every matrix cell off the diagonal must match.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::interp::path_allows;
use romana_policy::firewall::{FirewallInput, compile};
use romana_policy::ruleset::Ruleset;

use romana_api::netpol::NetworkPolicy;
use romana_policy::{Endpoint, NamedPort, PolicyRules, Probe, Protocol, World, allowed, from_k8s};
use serde_json::Value;

fn world(doc: &Value) -> (World, Vec<Endpoint>) {
    let cluster = &doc["cluster"];
    let mut w = World::default();
    for (ns, v) in cluster["namespaces"].as_object().unwrap() {
        let labels = v["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        w.tenants.insert(ns.clone(), labels);
    }
    let pods = doc["pods"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let id = id.as_str().unwrap();
            let p = &cluster["pods"][id];
            Endpoint {
                id: id.to_owned(),
                tenant: id.split('/').next().unwrap().to_owned(),
                labels: p["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect(),
                ip: Some(p["ip"].as_str().unwrap().parse().unwrap()),
                ports: p["containerPorts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| NamedPort {
                        name: c["name"].as_str().unwrap().to_owned(),
                        protocol: Protocol::parse(c["protocol"].as_str().unwrap()).unwrap(),
                        port: c["containerPort"].as_u64().unwrap() as u16,
                    })
                    .collect(),
                host: format!("h{}", i % 2),
                is_host: false,
            }
        })
        .collect();
    (w, pods)
}

fn probe(s: &str) -> Probe {
    let (proto, port) = s.split_once('/').unwrap();
    Probe { protocol: Protocol::parse(proto).unwrap(), port: port.parse().unwrap() }
}

/// Runs every case of a truth-table file; returns each mismatch as a line.
fn check(path: &str) -> (usize, Vec<String>) {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (w, mut pods) = world(&doc);
    let mut cells = 0;
    let mut wrong = Vec::new();
    for case in doc["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let mut policies: BTreeMap<(String, String), PolicyRules> = BTreeMap::new();
        for (s, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            for a in step["actions"].as_array().unwrap() {
                if a["op"] == "label_pod" {
                    let pod = pods.iter_mut().find(|p| p.id == a["pod"].as_str().unwrap()).unwrap();
                    pod.labels = a["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect();
                    continue;
                }
                let np: NetworkPolicy = serde_json::from_value(a["policy"].clone()).unwrap();
                let key = (np.metadata.namespace.clone(), np.metadata.name.clone());
                match a["op"].as_str().unwrap() {
                    "create_policy" | "update_policy" => {
                        policies.insert(key, from_k8s(&np).unwrap_or_else(|e| panic!("{id}: {e}")));
                    }
                    "delete_policy" => {
                        policies.remove(&key);
                    }
                    other => panic!("{id}: unknown op {other}"),
                }
            }
            let list: Vec<PolicyRules> = policies.values().cloned().collect();
            let shared: Vec<Arc<PolicyRules>> = list.iter().cloned().map(Arc::new).collect();
            let tables: BTreeMap<String, Ruleset> = ["h0", "h1"]
                .iter()
                .map(|h| {
                    let input = FirewallInput { host: h, policies: &shared, world: &w, endpoints: &pods };
                    ((*h).to_owned(), compile(input))
                })
                .collect();
            let lookup = |h: &str| tables[h].clone();
            for (name, rows) in step["expected"].as_object().unwrap() {
                let pr = probe(name);
                for (i, row) in rows.as_array().unwrap().iter().enumerate() {
                    for (j, want) in row.as_str().unwrap().chars().enumerate() {
                        if i == j {
                            continue; // the diagonal is informative only
                        }
                        cells += 1;
                        let got = allowed(&list, &w, &pods[i], &pods[j], pr);
                        let nft = path_allows(&lookup, &pods[i], &pods[j], pr.protocol, pr.port);
                        if got != (want == '1') || nft != got {
                            wrong.push(format!(
                                "{id} step {s} {name}: {} -> {} evaluator {got}, nftables {nft}",
                                pods[i].id, pods[j].id
                            ));
                        }
                    }
                }
            }
        }
    }
    (cells, wrong)
}

#[test]
fn romana_cases_hold() {
    let (cells, wrong) = check(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/netpol-romana.json"));
    assert!(cells > 1000, "the cases were read ({cells} cells)");
    assert!(wrong.is_empty(), "{} of {cells} cells differ:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn worked_examples_hold() {
    let (cells, wrong) = check(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/netpol-examples.json"));
    assert!(cells > 1000, "the examples were read ({cells} cells)");
    assert!(wrong.is_empty(), "{} of {cells} cells differ:\n{}", wrong.len(), wrong.join("\n"));
}
