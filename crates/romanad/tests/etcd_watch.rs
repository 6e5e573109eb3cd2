//! romanad on a real etcd shares one etcd watch among all of its `GET /watch` streams: 40 agent
//! streams (several prefixes each) add no etcd watcher beyond the replica's shared one (etcd's
//! own gauge, `etcd_debugging_mvcc_watcher_total`), and each of them gets a change made after.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use romana_api::rest::TenantRequest;
use romana_test_support::TempDir;

const STREAMS: usize = 40;

/// etcd's count of open watchers.
async fn etcd_watchers(endpoint: &str) -> i64 {
    let text =
        romana_client::http().get(format!("{endpoint}/metrics")).send().await.unwrap().text().await.unwrap();
    let line =
        text.lines().find(|l| l.starts_with("etcd_debugging_mvcc_watcher_total ")).expect("etcd's gauge");
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() as i64
}

/// A stream read until `needle` arrives; what it read.
async fn read_until(resp: &mut reqwest::Response, needle: &str) -> String {
    let mut out = String::new();
    while !out.contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle} in 30 s: {out}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before {needle}: {out}"));
        out.push_str(&String::from_utf8_lossy(&chunk));
    }
    out
}

async fn open(url: &str, token: &str) -> reqwest::Response {
    let resp = romana_client::http()
        .get(format!("{url}/watch?from=0&prefix=tenants/&prefix=policies/&prefix=routes/node-1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

fn tenant(name: &str) -> TenantRequest {
    serde_json::from_value(serde_json::json!({ "name": name })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_one_etcd_watch() {
    let etcd = common::etcd("fan-etcd-watch");
    let dir = TempDir::new("fan-etcd-watch");
    let d = common::on_etcd(&etcd, "/romana/", &["--data-dir", &dir.path().display().to_string()]);
    let admin = common::admin(&dir).await;
    let token = admin.token().unwrap();
    // The first stream starts the shared watch; once a change has come through it, it runs.
    let mut first = open(&d.url, &token).await;
    read_until(&mut first, "\"synced\"").await;
    admin.create_tenant(&tenant("first")).await.unwrap();
    read_until(&mut first, "tenants/first").await;
    let before = etcd_watchers(&etcd.endpoint).await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut s = open(&d.url, &token).await;
        let head = read_until(&mut s, "\"synced\"").await;
        assert!(head.contains("tenants/first"), "{head}");
        streams.push(s);
    }
    let after = etcd_watchers(&etcd.endpoint).await;
    // One etcd watch per stream would be 40 more.
    assert!(
        after - before <= 1,
        "{STREAMS} streams opened {} etcd watchers ({before} -> {after})",
        after - before
    );
    admin.create_tenant(&tenant("after")).await.unwrap();
    for s in &mut streams {
        read_until(s, "tenants/after").await;
    }
}
