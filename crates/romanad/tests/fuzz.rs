//! Random request bodies on every route that takes one: romanad answers 4xx (or 2xx), never 5xx,
//! and keeps answering.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use romana_store::MemStore;
use serde_json::{Value, json};

const FIELDS: &[&str] = &[
    "name",
    "ip",
    "host",
    "tenant",
    "segment",
    "cidr",
    "tags",
    "labels",
    "external_id",
    "agent_port",
    "id",
    "applied_to",
    "ingress",
    "egress",
    "peers",
    "rules",
    "protocol",
    "ports",
    "port_ranges",
    "icmp_type",
    "icmp_code",
    "peer",
    "dest",
    "direction",
    "networks",
    "topologies",
    "map",
    "groups",
    "block_mask",
    "tenants",
    "assignment",
    "classic",
    "host_bits",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..70000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("10.0.0.0/8"),
            Just("10.1.2.3/33"),
            Just("::/0"),
            Just("192.168.0.1"),
            Just("tcp"),
            Just("any"),
            Just("h1"),
            Just("")
        ]
        .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(FIELDS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

#[test]
fn random_bodies_never_cause_a_server_error() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (url, _server) = rt.block_on(common::serve(Arc::new(MemStore::new())));
    let http = romana_client::http();
    rt.block_on(async {
        let topo = std::fs::read_to_string(common::topology_file("multi-zone.json")).expect("topology");
        http.post(format!("{url}/topology"))
            .header("content-type", "application/json")
            .body(topo)
            .send()
            .await
            .expect("topology");
    });
    let routes: Vec<_> =
        romana_services::table::ROUTES.iter().filter(|r| r.method == "POST" || r.method == "PUT").collect();
    let mut runner = TestRunner::new(Config { cases: 300, ..Config::default() });
    runner
        .run(&(proptest::sample::select(routes), value(), any::<bool>()), |(route, body, raw)| {
            let path = route
                .path
                .replace("{service}", "ipam")
                .replace("{tenant}", "t")
                .replace("{host}", "h1")
                .replace("{id}", "p");
            let text =
                if raw { body.to_string().chars().rev().collect::<String>() } else { body.to_string() };
            let status = rt.block_on(async {
                let req = http
                    .request(
                        reqwest::Method::from_bytes(route.method.as_bytes()).expect("method"),
                        format!("{url}{path}"),
                    )
                    .header("content-type", "application/json")
                    .body(text.clone());
                req.send().await.expect("romanad answers").status().as_u16()
            });
            prop_assert!(status < 500, "{} {path} with {text} -> {status}", route.method);
            Ok(())
        })
        .expect("no 5xx");
    let alive = rt.block_on(async {
        http.get(format!("{url}/healthz")).send().await.expect("alive").status().as_u16()
    });
    assert_eq!(alive, 200);
}
