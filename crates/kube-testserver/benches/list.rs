//! Benchmark: the test API server at the controller's scale (10,000 pods in 1,000 namespaces):
//! a paginated relist over HTTP against serialising the same objects in-process (the floor any
//! server has to pay), and POST of a pod against GET /version (the HTTP round trip alone).
//!
//! `cargo bench -p romana-kube-testserver --bench list --profile dev` (both sides same profile).

#[path = "../tests/common/mod.rs"]
mod common;

use romana_kube_testserver::ApiServer;
use serde_json::{Value, json};
use std::time::Instant;

const NAMESPACES: usize = 1_000;
const PODS: usize = 10_000;
const ROUNDS: usize = 5;

fn pod(ns: usize, i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": format!("ns-{ns}"),
            "labels": {"app": format!("app-{}", i % 7), "tier": "web"}},
        "spec": {"nodeName": format!("host-{}", i % 50), "containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 80}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}})
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let (namespaces, pods, rounds) = if quick { (10, 100, 1) } else { (NAMESPACES, PODS, ROUNDS) };
    let server = ApiServer::start().expect("start the test API server");
    let t = Instant::now();
    for n in 0..namespaces {
        server
            .put_object("v1", "namespaces", json!({"metadata": {"name": format!("ns-{n}")}}))
            .expect("namespace");
    }
    for i in 0..pods {
        server.put_object("v1", "pods", pod(i % namespaces, i)).expect("pod");
    }
    let load = t.elapsed().as_secs_f64();
    println!("loaded {namespaces} namespaces and {pods} pods directly in {load:.2} s");

    let (mut relist, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // What a reflector does: pages of 500 with continue tokens.
        let t = Instant::now();
        let mut token = String::new();
        let mut seen = 0;
        loop {
            let path = if token.is_empty() {
                "/api/v1/pods?limit=500".to_string()
            } else {
                format!("/api/v1/pods?limit=500&continue={token}")
            };
            let page = common::request(server.addr(), "GET", &path, &[], None).json();
            seen += page["items"].as_array().map_or(0, Vec::len);
            match page["metadata"]["continue"].as_str() {
                Some(c) => token = c.to_string(),
                None => break,
            }
        }
        relist.push(t.elapsed().as_secs_f64());
        assert_eq!(seen, pods);
        // The floor: serialise the same objects once, in-process, and parse them back.
        let objects = server.list_objects("v1", "pods");
        let t = Instant::now();
        let bytes = serde_json::to_vec(&objects).expect("serialise");
        let back: Value = serde_json::from_slice(&bytes).expect("parse");
        floor.push(t.elapsed().as_secs_f64());
        assert_eq!(back.as_array().map(Vec::len), Some(pods));
    }
    let (r, f) = (median(relist), median(floor));
    println!(
        "relist of {pods} pods, pages of 500 over HTTP: {:.3} s median; serialise+parse floor {:.3} s; ratio {:.2}",
        r,
        f,
        r / f
    );

    let n = if quick { 20 } else { 1_000 };
    let (mut post, mut version) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        for i in 0..n {
            let body = pod(0, 1_000_000 + round * n + i).to_string();
            let a = common::request(
                server.addr(),
                "POST",
                "/api/v1/namespaces/ns-0/pods",
                &[("Content-Type", "application/json")],
                Some(&body),
            );
            assert_eq!(a.status, 201);
        }
        post.push(t.elapsed().as_secs_f64() / n as f64 * 1e6);
        let t = Instant::now();
        for _ in 0..n {
            assert_eq!(common::request(server.addr(), "GET", "/version", &[], None).status, 200);
        }
        version.push(t.elapsed().as_secs_f64() / n as f64 * 1e6);
    }
    let (p, v) = (median(post), median(version));
    println!("POST pod: {p:.0} us median per request; GET /version {v:.0} us; ratio {:.2}", p / v);
}
