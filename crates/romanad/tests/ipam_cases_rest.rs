//! The IPAM acceptance cases (`tests/data/ipam`, Romana 2.0's test data and ours) driven through
//! REST against a fresh romanad (on the embedded store) each: the same expectations hold end to end. Cases that need the
//! core's explicit classic numbering are covered by the core tests only.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use romana_api::rest::{AddressRequest, HostRequest, TagsRequest};
use romana_api::topology::{GroupOrHost, TopologyRequest};
use romana_client::{Client, ClientError};
use serde_json::Value;

const UNSUPPORTED: &[&str] = &["classic_numbers", "expect_classic", "expect_gateway", "expect_revision"];

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("step needs {k}: {v}"))
}

fn text(e: &ClientError) -> String {
    match e {
        ClientError::Api { body, .. } => format!("{} {}", body.message, body.details.join(" ")),
        other => other.to_string(),
    }
}

fn outcome<T: std::fmt::Debug>(at: &str, step: &Value, got: Result<T, ClientError>) -> Option<T> {
    match (step.get("error").and_then(Value::as_str), got) {
        (None, Ok(v)) => Some(v),
        (Some(want), Err(e)) => {
            let t = text(&e);
            assert!(t.contains(want), "{at}: error {t:?} lacks {want:?}");
            assert!(
                matches!(e.status(), Some(400..=499)),
                "{at}: a user's mistake is a 4xx, got {:?}",
                e.status()
            );
            None
        }
        (None, Err(e)) => panic!("{at}: unexpected error {e}"),
        (Some(want), Ok(v)) => panic!("{at}: expected error {want:?}, got {v:?}"),
    }
}

fn tags(v: &Value) -> BTreeMap<String, String> {
    v.get("tags")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

fn request(step: &Value, name: &str) -> AddressRequest {
    AddressRequest {
        name: name.into(),
        host: s(step, "host").into(),
        tenant: step.get("tenant").and_then(Value::as_str).unwrap_or("").into(),
        segment: step.get("segment").and_then(Value::as_str).unwrap_or("").into(),
        ip: step.get("ip_specific").and_then(Value::as_str).map(str::to_owned),
    }
}

/// Groups of the rendered topology as "network path cidr hosts" (padding is not rendered).
fn groups(t: &TopologyRequest) -> Vec<String> {
    fn walk(net: &str, path: &str, g: &GroupOrHost, out: &mut Vec<String>) {
        let kids = g.groups.as_deref().unwrap_or(&[]);
        let hosts = kids.iter().filter(|k| k.ip.is_some()).count();
        out.push(format!("{net} {path} {} {hosts}", g.cidr.as_deref().unwrap_or("?")));
        for (i, k) in kids.iter().enumerate().filter(|(_, k)| k.ip.is_none()) {
            let base = if path == "/" { "" } else { path };
            let seg = if k.name.is_empty() { format!("#{i}") } else { k.name.clone() };
            walk(net, &format!("{base}/{seg}"), k, out);
        }
    }
    let mut out = Vec::new();
    for (n, topo) in t.topologies.iter().enumerate() {
        let net = &topo.networks[0];
        let root_cidr = &t.networks.iter().find(|x| &x.name == net).expect("network").cidr;
        if topo.map.len() == 1 {
            walk(net, "/", &topo.map[0], &mut out);
        } else {
            let root = GroupOrHost {
                cidr: Some(root_cidr.clone()),
                groups: Some(topo.map.clone()),
                ..GroupOrHost::default()
            };
            walk(net, "/", &root, &mut out);
        }
        let _ = n;
    }
    out
}

async fn step(c: &Client, at: &str, st: &Value) {
    match s(st, "op") {
        "allocate" => {
            if let Some(a) = outcome(at, st, c.allocate(&request(st, s(st, "name")), None).await)
                && let Some(ip) = st.get("ip").and_then(Value::as_str)
            {
                assert_eq!(a.ip, ip, "{at}");
            }
        }
        "allocate_many" => {
            let hosts: Vec<&str> =
                st["hosts"].as_array().expect("hosts").iter().filter_map(Value::as_str).collect();
            let ips: Vec<&str> = st
                .get("ips")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for i in 0..st["count"].as_u64().expect("count") as usize {
                let mut one = st.clone();
                one["host"] = Value::from(hosts[i % hosts.len()]);
                let a = c
                    .allocate(&request(&one, &format!("{}{i}", s(st, "prefix"))), None)
                    .await
                    .unwrap_or_else(|e| panic!("{at} #{i}: {e}"));
                if let Some(ip) = ips.get(i) {
                    assert_eq!(a.ip, *ip, "{at} #{i}");
                }
            }
        }
        "release" => {
            if let Some(r) = outcome(at, st, c.release(s(st, "key")).await)
                && let Some(ip) = st.get("ip").and_then(Value::as_str)
            {
                assert_eq!(r.ip, ip, "{at}");
            }
        }
        "add_host" => {
            let req = HostRequest {
                name: s(st, "name").into(),
                ip: s(st, "ip").into(),
                ipv6: None,
                agent_port: None,
                tags: tags(st),
                k8s_info: None,
            };
            if let Some(h) = outcome(at, st, c.add_host(&req).await)
                && let Some(want) = st.get("placed").and_then(Value::as_array)
            {
                let got: Vec<String> =
                    h.placements.iter().map(|p| format!("{} {} {}", p.network, p.group, p.cidr)).collect();
                let want: Vec<&str> = want.iter().filter_map(Value::as_str).collect();
                assert_eq!(got, want, "{at}");
            }
        }
        "remove_host" => {
            if let Some(r) = outcome(at, st, c.remove_host(s(st, "name")).await)
                && let Some(n) = st.get("released").and_then(Value::as_u64)
            {
                assert_eq!(r.len() as u64, n, "{at}");
            }
        }
        "update_tags" => {
            outcome(at, st, c.set_tags(s(st, "name"), &TagsRequest { tags: tags(st) }).await);
        }
        "blackout" => {
            outcome(at, st, c.add_blackout(s(st, "cidr")).await);
        }
        "unblackout" => {
            outcome(at, st, c.remove_blackout(s(st, "cidr")).await);
        }
        "update_topology" => {
            let t: TopologyRequest = serde_json::from_value(st["topology"].clone()).expect("topology");
            if let Some(ch) = outcome(at, st, c.apply_topology(&t).await)
                && let Some(n) = st.get("kept_addresses").and_then(Value::as_u64)
            {
                assert_eq!(ch.kept_addresses as u64, n, "{at}");
            }
        }
        "expect_blocks" => {
            let b = c.blocks().await.expect("blocks").blocks;
            if let Some(n) = st.get("count").and_then(Value::as_u64) {
                assert_eq!(b.len() as u64, n, "{at}");
            }
            if let Some(list) = st.get("blocks").and_then(Value::as_array) {
                let got: Vec<String> = b
                    .iter()
                    .map(|x| {
                        if x.host.is_empty() {
                            format!("{} {} - {}", x.network, x.cidr, x.allocated_ip_count)
                        } else {
                            format!(
                                "{} {} {}:{}@{} {}",
                                x.network, x.cidr, x.tenant, x.segment, x.host, x.allocated_ip_count
                            )
                        }
                    })
                    .collect();
                let want: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                assert_eq!(got, want, "{at}");
            }
        }
        "expect_groups" => {
            let got = groups(&c.topology().await.expect("topology"));
            let want: Vec<&str> = st["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .filter_map(Value::as_str)
                .filter(|g| !g.ends_with(" padding"))
                .collect();
            assert_eq!(got, want, "{at}");
        }
        "expect_lookup" => {
            let got = c.address(s(st, "name")).await.ok().map(|a| a.ip);
            assert_eq!(got.as_deref(), st.get("ip").and_then(Value::as_str), "{at}");
        }
        "expect_routes" => {
            let r = c.routes(s(st, "host")).await.expect("routes");
            let got: Vec<String> = r
                .routes
                .iter()
                .map(|x| {
                    if x.kind == "throw" {
                        format!("throw {}", x.dest)
                    } else {
                        format!("{} via {}", x.dest, x.kind.via())
                    }
                })
                .collect();
            let want: Vec<&str> =
                st["routes"].as_array().expect("routes").iter().filter_map(Value::as_str).collect();
            assert_eq!(got, want, "{at}");
        }
        other => panic!("{at}: unknown op {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_cases_through_rest() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/ipam");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("cases").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let mut ran = 0;
    for f in files {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("json");
        let name = f.file_stem().expect("stem").to_string_lossy().into_owned();
        let steps = case["steps"].as_array().cloned().unwrap_or_default();
        if steps.iter().any(|st| UNSUPPORTED.contains(&s(st, "op"))) {
            continue;
        }
        let dir = romana_test_support::TempDir::new("cases");
        let store = romana_store::EmbeddedStore::open(dir.path()).await.expect("store");
        let (url, server) = common::serve(Arc::new(store)).await;
        let c = common::client(&url);
        let topo: Result<TopologyRequest, _> = serde_json::from_value(case["topology"].clone());
        let applied = match topo {
            Ok(t) => c.apply_topology(&t).await,
            Err(e) => panic!("{name}: topology JSON: {e}"),
        };
        match (case.get("topology_error").and_then(Value::as_str), applied) {
            (None, Ok(_)) => {
                for (i, st) in steps.iter().enumerate() {
                    step(&c, &format!("{name} step {i}"), st).await;
                }
            }
            (Some(want), Err(e)) => {
                assert!(text(&e).contains(want), "{name}: {} lacks {want}", text(&e));
                assert_eq!(e.status(), Some(422), "{name}");
            }
            (None, Err(e)) => panic!("{name}: topology refused: {e}"),
            (Some(want), Ok(_)) => panic!("{name}: expected topology error {want}"),
        }
        server.abort();
        ran += 1;
    }
    assert!(ran >= 50, "ran only {ran} cases through REST");
    println!("ran {ran} IPAM cases through REST");
}
