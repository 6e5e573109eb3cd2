//! romana-k8s's `/metrics` against docs/metrics.md: the controller binary against the test
//! Kubernetes API server and romanad in this process (no root); the text must parse as
//! Prometheus exposition, serve exactly the documented families, and each must move when its
//! event happens (leading, a namespace, a refused write, a namespace that does not map).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Env;
use romana_test_support::prom::{self, Scrape};

/// Families this test cannot make move, and why; each is still checked to be served.
const NOT_DRIVEN: &[(&str, &str)] = &[(
    "romana_k8s_last_plan_writes",
    "a gauge of the last plan only: the next plan (the namespace's second watch event, a resync) has nothing to do and sets it back to 0 within milliseconds",
)];

async fn scrape(url: &str) -> Scrape {
    let text =
        romana_client::http().get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Waits until every family in `moves` is above its value in `before`.
async fn expect_moved(
    url: &str,
    event: &str,
    before: &Scrape,
    moves: &[&'static str],
    moved: &mut Vec<&'static str>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = scrape(url).await;
        let stuck: Vec<String> = moves
            .iter()
            .filter(|f| now.value(f).unwrap_or(0.0) <= before.value(f).unwrap_or(0.0))
            .map(|f| format!("{f} (still {:?})", now.value(f)))
            .collect();
        if stuck.is_empty() {
            moved.extend(moves);
            return;
        }
        assert!(Instant::now() < deadline, "after {event}, these did not move: {stuck:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_serves_every_documented_family_and_each_moves() {
    let env = Env::start("k8s-metrics").await;
    let before = Scrape::default();
    let ctl = env.controller("m1", &[]);
    let url = ctl.metrics_url.clone();
    let health = romana_client::http().get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    let mut moved = Vec::new();
    let m = [
        "romana_k8s_leader",
        "romana_k8s_resyncs_total",
        "romana_k8s_plans_total",
        "romana_k8s_plan_seconds",
    ];
    expect_moved(&url, "starting and leading", &before, &m, &mut moved).await;
    let documented = prom::documented_families(&prom::metrics_doc(), "romana-k8s");
    assert!(documented.len() >= 10, "docs/metrics.md lists the controller's families: {documented:?}");
    assert_eq!(prom::compare(&scrape(&url).await, &documented), Vec::<String>::new());

    let before = scrape(&url).await;
    env.kubectl_f("create", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: blue\n");
    let m = [
        "romana_k8s_objects",
        "romana_k8s_watch_events_total",
        "romana_k8s_writes_total",
        "romana_k8s_event_to_write_seconds",
    ];
    expect_moved(&url, "a new namespace", &before, &m, &mut moved).await;

    // A namespace whose isolation annotation names no mode does not map: an error of source map.
    let before = scrape(&url).await;
    env.kubectl_f(
        "create",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: odd\n  annotations:\n    romana.io/isolation: sideways\n",
    );
    expect_moved(&url, "a namespace that does not map", &before, &["romana_k8s_errors_total"], &mut moved)
        .await;
    let text =
        romana_client::http().get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("romana_k8s_errors_total{source=\"map\"}"), "{text}");

    let untested: Vec<&String> = documented
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !moved.contains(&n.as_str()) && !NOT_DRIVEN.iter().any(|(x, _)| x == n))
        .collect();
    assert!(untested.is_empty(), "documented families no event of this test moves: {untested:?}");
}
