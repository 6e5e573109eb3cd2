//! romanad's `/metrics` against docs/metrics.md: a romanad process on 127.0.0.1 (no root) is
//! scraped, the text must parse as Prometheus exposition, every documented family must be served
//! and every served family documented, and each family must move when its event happens.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, HostRequest, TenantRequest};
use romana_test_support::TempDir;
use romana_test_support::prom::{self, Scrape};

async fn scrape(url: &str) -> Scrape {
    let text =
        romana_client::http().get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Waits until every family in `moves` is above its value in `before`; panics naming those that
/// did not move.
async fn expect_moved(url: &str, event: &str, before: &Scrape, moves: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = scrape(url).await;
        let stuck: Vec<String> = moves
            .iter()
            .filter(|f| now.value(f).unwrap_or(0.0) <= before.value(f).unwrap_or(0.0))
            .map(|f| format!("{f} (still {:?})", now.value(f)))
            .collect();
        if stuck.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "after {event}, these did not move: {stuck:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn host(name: &str, ip: &str) -> HostRequest {
    HostRequest {
        name: name.into(),
        ip: ip.into(),
        ipv6: None,
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_family_is_served_and_moves_with_its_event() {
    let dir = TempDir::new("romanad-metrics");
    let topo = common::topology_file("flat.json").display().to_string();
    let d = common::embedded(
        &dir,
        &["--initial-topology", &topo, "--host-liveness-ttl", "1", "--dead-host-grace", "2"],
    );
    let admin = common::admin(&dir).await;
    let url = d.url.clone();

    let documented = prom::documented_families(&prom::metrics_doc(), "romanad");
    assert!(documented.len() >= 9, "docs/metrics.md lists romanad's families: {documented:?}");
    let first = scrape(&url).await;
    assert_eq!(prom::compare(&first, &documented), Vec::<String>::new());

    // (event, what happens, families that must move). Every documented family is in one row.
    let mut moved: Vec<&str> = Vec::new();
    let before = scrape(&url).await;
    admin.add_host(&host("h1", "192.168.77.1")).await.unwrap();
    let m = ["romana_http_requests_total", "romana_http_request_duration_seconds", "romana_ipam_hosts"];
    expect_moved(&url, "adding a host", &before, &m).await;
    moved.extend(m);

    let before = scrape(&url).await;
    let req = AddressRequest {
        name: "p1".into(),
        host: "h1".into(),
        tenant: "t".into(),
        segment: "".into(),
        ip: None,
    };
    admin.allocate(&req, None).await.unwrap();
    let m = ["romana_ipam_allocated_addresses", "romana_store_revision"];
    expect_moved(&url, "allocating an address", &before, &m).await;
    moved.extend(m);

    // p1 registered as an endpoint: once h1 dies it is on a dead host, then reclaimed.
    let a = admin.addresses("").await.unwrap().remove(0);
    let e = romana_api::rest::EndpointInfo {
        name: a.name,
        ip: a.ip,
        tenant: a.tenant,
        segment: a.segment,
        host: a.host,
        labels: Default::default(),
        ports: vec![],
        pod: String::new(),
    };
    admin.put_endpoint(&e).await.unwrap();
    let before = scrape(&url).await;
    admin.heartbeat("h1").await.unwrap();
    expect_moved(&url, "a heartbeat", &before, &["romana_hosts_alive"]).await;
    // Nothing renews the one-second lease: the host is dead once it lapses.
    expect_moved(&url, "the heartbeat lease lapsing", &before, &["romana_hosts_dead"]).await;
    moved.extend(["romana_hosts_alive", "romana_hosts_dead"]);
    expect_moved(&url, "an endpoint on a dead host", &before, &["romana_check_disagreements"]).await;
    expect_moved(&url, "the dead-host grace passing", &before, &["romana_reclaimed_addresses_total"]).await;
    moved.extend(["romana_check_disagreements", "romana_reclaimed_addresses_total"]);

    let before = scrape(&url).await;
    let mut rx = admin.watch("tenants/", 0).await.unwrap();
    expect_moved(&url, "opening a watch", &before, &["romana_watch_streams"]).await;
    let tenant = TenantRequest {
        name: "red".into(),
        external_id: "".into(),
        labels: Default::default(),
        isolation: "".into(),
    };
    admin.create_tenant(&tenant).await.unwrap();
    expect_moved(&url, "a change under a watch", &before, &["romana_watch_events_total"]).await;
    moved.extend(["romana_watch_streams", "romana_watch_events_total"]);
    // A watcher that leaves is no longer counted (the gauge is not a counter): romanad learns it
    // when a write to the stream fails, so changes keep coming until then.
    drop(rx.recv().await);
    let open = scrape(&url).await.value("romana_watch_streams").unwrap();
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        if scrape(&url).await.value("romana_watch_streams").unwrap() < open {
            break;
        }
        assert!(Instant::now() < deadline, "romana_watch_streams stayed at {open} after the watcher left");
        let t = TenantRequest { name: format!("t{n}"), ..tenant.clone() };
        admin.create_tenant(&t).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let untested: Vec<&String> =
        documented.iter().map(|(n, _)| n).filter(|n| !moved.contains(&n.as_str())).collect();
    assert!(untested.is_empty(), "documented families no event of this test moves: {untested:?}");
}

/// `/healthz` answers on the same address, without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_need_no_token() {
    let dir = TempDir::new("romanad-metrics-anon");
    let d = common::embedded(&dir, &[]);
    for path in ["/healthz", "/metrics"] {
        let r = romana_client::http().get(format!("{}{path}", d.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
}
