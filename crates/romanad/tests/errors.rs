//! Every error romanad answers carries the documented JSON body with the right `error` code
//! (docs/api.md, "Errors"), and bad names are refused with 422 naming the field, storing nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use romana_api::rest::ErrorBody;
use romana_store::MemStore;
use romana_test_support::TempDir;
use serde_json::json;

/// Checks that `resp` is `status` with the JSON error body of code `code`; returns the body.
async fn error(resp: reqwest::Response, status: u16, code: &str, what: &str) -> ErrorBody {
    assert_eq!(resp.status().as_u16(), status, "{what}");
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"), "{what}: content type");
    let text = resp.text().await.unwrap();
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not the error body ({e}): {text}"));
    assert_eq!((body.status_code, body.error.as_str()), (status, code), "{what}: {text}");
    assert!(!body.message.is_empty(), "{what}: a message names the problem");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_errors_carry_the_json_error_body() {
    let (url, _server) = common::serve(Arc::new(MemStore::new())).await;
    let http = romana_client::http();
    let big = vec![b' '; romana_services::BODY_LIMIT + 1];
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (http.get(format!("{url}/no/such/route")), 404, "not_found", "unknown route"),
        (http.patch(format!("{url}/tenants")), 405, "method_not_allowed", "PATCH /tenants"),
        (http.delete(format!("{url}/healthz")), 405, "method_not_allowed", "DELETE /healthz"),
        (
            http.post(format!("{url}/networkpolicies"))
                .header("content-type", "application/json")
                .body(big.clone()),
            413,
            "too_large",
            "body over the limit on /networkpolicies (raw bytes)",
        ),
        (
            http.post(format!("{url}/tenants")).header("content-type", "application/json").body(big),
            413,
            "too_large",
            "body over the limit on /tenants (JSON extractor)",
        ),
        (http.get(format!("{url}/tenants/%FF%FE")), 400, "bad_request", "path segment not UTF-8"),
        (
            http.delete(format!("{url}/networkpolicies/a/%C0%80")),
            400,
            "bad_request",
            "second path segment not UTF-8",
        ),
        (http.get(format!("{url}/addresses/%FF")), 400, "bad_request", "address name not UTF-8"),
    ];
    for (req, status, code, what) in cases {
        error(req.send().await.unwrap(), status, code, what).await;
    }
    assert_eq!(http.get(format!("{url}/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_logins_is_429_too_many_requests_with_retry_after() {
    let dir = TempDir::new("errors-429");
    let url = romana_services::serve_loopback("errors", None, Some(dir.path().join("admin.credentials")))
        .await
        .unwrap();
    let http = romana_client::http();
    let login = || {
        http.post(format!("{url}/auth/login"))
            .json(&json!({"username": "mallory", "password": "guess"}))
            .send()
    };
    for _ in 0..romana_services::auth::MAX_FAILURES {
        error(login().await.unwrap(), 401, "unauthorized", "wrong password").await;
    }
    let resp = login().await.unwrap();
    assert!(resp.headers().get("retry-after").is_some(), "Retry-After is kept");
    error(resp, 429, "too_many_requests", "locked out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_names_follow_kubernetes_rules() {
    let (url, _server) = common::serve(Arc::new(MemStore::new())).await;
    let http = romana_client::http();
    let long = "a".repeat(100_000);
    let cases = [
        (long.as_str(), "x", "metadata.name: 100000 characters"),
        ("a\0b", "x", "metadata.name"),
        ("a/b", "x", "metadata.name"),
        ("ABC", "x", "metadata.name"),
        ("p", "../auth", "metadata.namespace"),
        ("p", "a/b", "metadata.namespace"),
    ];
    for (name, namespace, field) in cases {
        let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": {}});
        let resp = http.post(format!("{url}/networkpolicies")).json(&np).send().await.unwrap();
        let what = format!("{:.40}/{namespace}", format!("{name:?}"));
        let body = error(resp, 422, "invalid", &what).await;
        assert!(body.details.iter().any(|d| d.starts_with(field)), "{what}: {:?}", body.details);
        assert!(body.details.iter().all(|d| d.len() < 300), "{what}: a problem does not echo a huge name");
    }
    let stored: Vec<serde_json::Value> =
        http.get(format!("{url}/networkpolicies")).send().await.unwrap().json().await.unwrap();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
    // The rules still let a valid policy through.
    let ok = json!({"metadata": {"name": "allow-web.v2", "namespace": "team-a"}, "spec": {}});
    let resp = http.post(format!("{url}/networkpolicies")).json(&ok).send().await.unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_with_an_empty_name_is_refused() {
    let (url, _server) = common::serve(Arc::new(MemStore::new())).await;
    let http = romana_client::http();
    let resp = http.post(format!("{url}/tenants")).json(&json!({"name": "t"})).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let resp =
        http.post(format!("{url}/tenants/t/segments")).json(&json!({"name": ""})).send().await.unwrap();
    let body = error(resp, 422, "invalid", "empty segment name").await;
    assert!(body.details.iter().any(|d| d.starts_with("name:")), "{:?}", body.details);
    let segments: Vec<serde_json::Value> =
        http.get(format!("{url}/tenants/t/segments")).send().await.unwrap().json().await.unwrap();
    assert!(segments.is_empty(), "no segment created: {segments:?}");
}
