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
    let methods: std::collections::BTreeSet<&str> =
        series.iter().filter_map(|l| l.split("method=\"").nth(1)?.split('"').next()).collect();
    assert_eq!(methods, ["GET", "other"].into_iter().collect(), "series:\n{}", series.join("\n"));
    assert!(series.len() <= 4, "{} series:\n{}", series.len(), series.join("\n"));
    assert!(!text.contains("/no/such"), "raw paths are labels");
    assert!(text.len() < 16 * 1024, "/metrics is {} bytes", text.len());
}

/// F2: a long-running client renews its token with the refresh token, so a login lock (here the
/// (user, address) pair lock, after 5 wrong passwords from this address) does not cut it off;
/// logging in again, as the agent did on every expiry, answers 429 meanwhile.
#[tokio::test]
async fn renew_uses_the_refresh_token_while_logins_are_locked() {
    let dir = romana_test_support::TempDir::new("exhaust-renew");
    let d = common::embedded(&dir, &[]);
    let text = std::fs::read_to_string(dir.path().join("admin.credentials")).unwrap();
    let creds: romana_api::rest::Credentials = serde_json::from_str(&text).unwrap();
    let c = romana_client::Client::from_credentials(&creds).await.unwrap();
    let guesser = romana_client::Client::new(vec![d.url.clone()]);
    for _ in 0..6 {
        let e = guesser.login(&creds.username, "wrong").await.unwrap_err();
        assert!(matches!(e.status(), Some(401 | 429)), "{e}");
    }
    let relogin = romana_client::Client::from_credentials(&creds).await.unwrap_err();
    assert_eq!(relogin.status(), Some(429), "the login is locked: {relogin}");
    let t = c.renew(&creds.username, &creds.password).await.unwrap();
    assert!(!t.access_token.is_empty());
    assert_eq!(c.whoami().await.unwrap().name, creds.username);
}

/// Opens `n` connections to `url` that each send a request's first lines and never end them.
async fn half_requests(url: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let addr = url.trim_start_matches("http://");
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: romanad\r\nX-Slow: ").await.unwrap();
        held.push(s);
    }
    held
}

/// Whether the server closed `s` within `wait` (end of stream or a reset, after any answer).
async fn closed_within(s: &mut tokio::net::TcpStream, wait: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = Vec::new();
    tokio::time::timeout(wait, s.read_to_end(&mut sink)).await.is_ok()
}

/// F3: 300 requests whose headers never end neither stop /healthz nor stay open past the
/// header-read timeout (1 s here); on main they stayed open as long as the client liked.
#[tokio::test]
async fn idle_half_requests_are_closed_after_the_header_timeout() {
    let dir = romana_test_support::TempDir::new("exhaust-slow");
    let d = common::embedded(
        &dir,
        &["--auth", "off", "--header-read-timeout-ms", "1000", "--max-connections-per-source", "1000"],
    );
    let mut held = half_requests(&d.url, 300).await;
    let http = romana_client::http();
    let health = http.get(format!("{}/healthz", d.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let mut open = 0;
    for s in &mut held {
        if !closed_within(s, std::time::Duration::from_secs(5)).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} of 300 half-requests still open after 5 s");
    let health = http.get(format!("{}/healthz", d.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// F3: past the per-source cap new connections are closed at once, and the held ones leave
/// with the header timeout, after which the address is served again.
#[tokio::test]
async fn connections_past_the_per_source_cap_are_closed_at_once() {
    let dir = romana_test_support::TempDir::new("exhaust-cap");
    let d = common::embedded(
        &dir,
        &["--auth", "off", "--header-read-timeout-ms", "2000", "--max-connections-per-source", "20"],
    );
    let mut held = half_requests(&d.url, 30).await;
    let mut refused = 0;
    for s in held.iter_mut().skip(20) {
        if closed_within(s, std::time::Duration::from_millis(500)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 10, "connections past the cap of 20");
    let mut kept = 0;
    for s in held.iter_mut().take(20) {
        if !closed_within(s, std::time::Duration::from_millis(10)).await {
            kept += 1;
        }
    }
    assert_eq!(kept, 20, "connections within the cap stay until their timeout");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let health = romana_client::http().get(format!("{}/healthz", d.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// F5: request tokens are per tenant. Blue's token reused by red's user neither hands red blue's
/// address (nor its name in a 409) nor makes blue's later retry with that token land elsewhere.
#[tokio::test]
async fn a_request_token_of_one_tenant_means_nothing_to_another() {
    use romana_api::rest::{AddressRequest, HostRequest, SegmentRequest, TenantRequest, UserRequest};
    let dir = romana_test_support::TempDir::new("exhaust-token");
    let d = common::embedded(&dir, &[]);
    let admin = common::admin(&dir).await;
    let topo: romana_api::topology::TopologyRequest = serde_json::from_value(serde_json::json!({
        "networks": [{"name": "shared", "cidr": "10.111.0.0/16", "block_mask": 29}],
        "topologies": [{"networks": ["shared"], "map": [{"groups": []}]}]
    }))
    .unwrap();
    admin.apply_topology(&topo).await.unwrap();
    let host = HostRequest {
        name: "h1".into(),
        ip: "192.0.2.1".into(),
        ipv6: None,
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    };
    admin.add_host(&host).await.unwrap();
    for (t, s) in [("red", "web"), ("blue", "db")] {
        let tenant = TenantRequest {
            name: t.into(),
            external_id: String::new(),
            labels: Default::default(),
            isolation: Default::default(),
        };
        admin.create_tenant(&tenant).await.unwrap();
        let seg = SegmentRequest { name: s.into(), external_id: String::new(), labels: Default::default() };
        admin.add_segment(t, &seg).await.unwrap();
    }
    let addr = |name: &str, tenant: &str, segment: &str| AddressRequest {
        name: name.into(),
        host: "h1".into(),
        tenant: tenant.into(),
        segment: segment.into(),
        ip: None,
    };
    let blue = admin.allocate(&addr("blue-pod", "blue", "db"), Some("tok-1")).await.unwrap();
    admin
        .create_user(&UserRequest {
            name: "alice".into(),
            password: "alice-password-123".into(),
            roles: vec!["tenant".into()],
            tenants: vec!["red".into()],
            hosts: vec![],
        })
        .await
        .unwrap();
    let alice = romana_client::Client::new(vec![d.url.clone()]);
    alice.login("alice", "alice-password-123").await.unwrap();
    let red = alice.allocate(&addr("red-pod", "red", "web"), Some("tok-1")).await;
    let red = red.unwrap_or_else(|e| panic!("red's first use of its token allocates: {e}"));
    assert_eq!((red.name.as_str(), red.tenant.as_str()), ("red-pod", "red"));
    assert_ne!(red.ip, blue.ip);
    // Each tenant's retry with the token finds its own allocation again.
    let again = alice.allocate(&addr("red-pod-2", "red", "web"), Some("tok-1")).await.unwrap();
    assert_eq!((again.name.as_str(), again.ip.as_str()), ("red-pod", red.ip.as_str()));
    let blue_again = admin.allocate(&addr("blue-pod-2", "blue", "db"), Some("tok-1")).await.unwrap();
    assert_eq!((blue_again.name.as_str(), blue_again.ip.as_str()), ("blue-pod", blue.ip.as_str()));
}
