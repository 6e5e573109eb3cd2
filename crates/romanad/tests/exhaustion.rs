//! What an anonymous client can exhaust: metrics series made of invented HTTP methods, and
//! connections held open by requests whose headers never end. Real HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use romana_store::MemStore;

/// Label sets of `romana_http_requests` in a /metrics body.
fn request_series(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("romana_http_requests_total{")).collect()
}

/// Every invented method counts as "other": 300 distinct method tokens (each 1 KiB) make at most
/// a few series, and /metrics stays small. On a label taken from the request, each made one.
#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let (url, _task) = common::serve(Arc::new(MemStore::new())).await;
    let http = romana_client::http();
    for i in 0..300 {
        let name = format!("X{i:04}{}", "M".repeat(1024));
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let resp = http.request(method, format!("{url}/healthz")).send().await.unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
        let resp = http.get(format!("{url}/no/such/{i}/{}", "p".repeat(512))).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }
    let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let series = request_series(&text);
    let methods: std::collections::BTreeSet<&str> = series
        .iter()
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(methods, ["GET", "other"].into_iter().collect(), "series:\n{}", series.join("\n"));
    assert!(series.len() <= 4, "{} series:\n{}", series.len(), series.join("\n"));
    assert!(!text.contains("/no/such"), "raw paths are labels");
    assert!(text.len() < 16 * 1024, "/metrics is {} bytes", text.len());
}
