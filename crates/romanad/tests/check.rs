//! `GET /check` and reclaim against a romanad process (embedded store, no root): disagreements
//! made through the API (an address allocated with no endpoint, a VM endpoint on a host that
//! then dies) are found; tenants and agents are refused; the dead host's addresses and a CNI
//! leak are released after their graces and not before, and a live host's endpoint and a
//! hand-made allocation are never touched.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, EndpointInfo, HostRequest, UserRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_test_support::TempDir;
use serde_json::Value;

const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

async fn get(url: &str, token: &str, path: &str) -> (u16, Value) {
    let r = romana_client::http().get(format!("{url}{path}")).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The (kind, subject) pairs of a check's answer.
fn found(v: &Value) -> Vec<(String, String)> {
    v["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap().to_owned(), d["subject"].as_str().unwrap().to_owned()))
        .collect()
}

async fn heartbeat(url: &str, token: &str, host: &str) {
    let r = romana_client::http().put(format!("{url}/hosts/{host}/alive")).bearer_auth(token).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 200);
}

fn user(name: &str, role: &str, tenants: &[&str], hosts: &[&str]) -> UserRequest {
    UserRequest {
        name: name.into(),
        password: format!("{name}-password-123"),
        roles: vec![role.into()],
        tenants: tenants.iter().map(|s| s.to_string()).collect(),
        hosts: hosts.iter().map(|s| s.to_string()).collect(),
    }
}

async fn token_of(url: &str, name: &str) -> String {
    let c = Client::new(vec![url.to_owned()]);
    c.login(name, &format!("{name}-password-123")).await.unwrap();
    c.token().unwrap()
}

/// Waits (bounded) until `f` holds for the check's answer, and returns that answer.
async fn until(url: &str, token: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, v) = get(url, token, "/check").await;
        assert_eq!(status, 200, "{v}");
        if f(&v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: never happened; last answer {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disagreements_are_found_and_a_dead_hosts_addresses_reclaimed_after_the_grace() {
    let dir = TempDir::new("check");
    let d =
        common::embedded(&dir, &["--host-liveness-ttl", "1", "--dead-host-grace", "4", "--leak-grace", "3"]);
    let c = common::admin(&dir).await;
    let token = c.token().unwrap();
    c.apply_topology(&serde_json::from_str::<TopologyRequest>(FLAT).unwrap()).await.unwrap();
    let mut eps = Vec::new();
    for (i, h) in ["h1", "h2"].iter().enumerate() {
        let req = HostRequest {
            name: h.to_string(),
            ip: format!("192.168.9.{}", i + 1),
            ipv6: None,
            agent_port: None,
            tags: Default::default(),
            k8s_info: None,
        };
        c.add_host(&req).await.unwrap();
        let a = AddressRequest {
            name: format!("vm-{h}"),
            host: h.to_string(),
            tenant: "t".into(),
            segment: String::new(),
            ip: None,
        };
        let a = c.allocate(&a, None).await.unwrap();
        let e = EndpointInfo {
            name: a.name.clone(),
            ip: a.ip.clone(),
            tenant: a.tenant.clone(),
            segment: a.segment.clone(),
            host: a.host.clone(),
            labels: [("romana.io/kind".to_owned(), "vm".to_owned())].into(),
            ports: vec![],
            pod: String::new(),
        };
        eps.push(c.put_endpoint(&e).await.unwrap());
    }
    let (status, v) = get(&d.url, &token, "/check").await;
    assert_eq!((status, v["consistent"].as_bool()), (200, Some(true)), "a consistent start: {v}");

    // Who may ask: admins and controllers, not tenants or agents.
    c.create_user(&user("tina", "tenant", &["t"], &[])).await.unwrap();
    c.create_user(&user("agent-h1", "service", &[], &["h1"])).await.unwrap();
    c.create_user(&user("ctl", "service", &[], &[])).await.unwrap();
    assert_eq!(get(&d.url, &token_of(&d.url, "tina").await, "/check").await.0, 403);
    assert_eq!(get(&d.url, &token_of(&d.url, "agent-h1").await, "/check").await.0, 403);
    assert_eq!(get(&d.url, &token_of(&d.url, "ctl").await, "/check").await.0, 200);
    assert_eq!(get(&d.url, &token, "/check?leak_grace=soon").await.0, 400);

    // An address allocated with no endpoint: a leak once past the grace asked for.
    let lost = AddressRequest {
        name: "lost".into(),
        host: "h1".into(),
        tenant: "t".into(),
        segment: String::new(),
        ip: None,
    };
    c.allocate(&lost, None).await.unwrap();
    let (_, v) = get(&d.url, &token, "/check?leak_grace=0").await;
    assert_eq!(found(&v), vec![("leak".to_owned(), "lost".to_owned())]);
    assert_eq!(v["counts"]["leak"], 1);
    // A CNI ADD that allocated and never registered (nor got its DEL): reclaimed after the grace.
    let half = AddressRequest { name: "cni:pods:c1:eth0".into(), ..lost.clone() };
    c.allocate(&half, None).await.unwrap();

    // h1 and h2 send heartbeats; then h2 stops: its VM is on a dead host.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beat = {
        let (url, token, stop) = (d.url.clone(), token.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                heartbeat(&url, &token, "h1").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    heartbeat(&d.url, &token, "h2").await;
    // Seeing the VM reported on a dead host proves its record was still there after h2 died:
    // reclaim deletes the record before it releases the address, so nothing went early.
    let v = until(&d.url, &token, "h2's VM on a dead host", |v| {
        found(v).contains(&("dead-host".to_owned(), "vm-h2".to_owned()))
    })
    .await;
    let dead: Vec<_> = found(&v).into_iter().filter(|(k, _)| k != "leak").collect();
    assert_eq!(dead, vec![("dead-host".to_owned(), "vm-h2".to_owned())], "only h2's VM: {v}");
    assert!(c.endpoint("vm-h2").await.is_ok());

    // After the graces, vm-h2's address and record and the CNI leak are gone; h1's VM stays, and
    // the hand-made leak is only reported.
    let v = until(&d.url, &token, "vm-h2 and the CNI leak reclaimed", |v| {
        v["checked"]["endpoints"] == 1 && v["checked"]["allocations"] == 2
    })
    .await;
    assert_eq!(found(&v), vec![("leak".to_owned(), "lost".to_owned())], "{v}");
    assert!(c.endpoint("vm-h2").await.is_err());
    let names: Vec<String> = c.addresses("").await.unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names.len(), 2, "vm-h1 and lost stay allocated: {names:?}");
    assert!(names.contains(&"vm-h1".to_owned()) && names.contains(&"lost".to_owned()), "{names:?}");
    assert_eq!(c.endpoint("vm-h1").await.unwrap(), eps[0]);

    // The gauges are set by the pass before its releases: the next pass shows the dead host gone.
    let start = Instant::now();
    let text = loop {
        let metrics = romana_client::http().get(format!("{}/metrics", d.url)).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        if text.contains(r#"romana_check_disagreements{kind="dead-host"} 0"#)
            || start.elapsed().as_secs() > 60
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains(r#"romana_check_disagreements{kind="dead-host"} 0"#), "{text}");
    assert!(text.contains(r#"romana_check_disagreements{kind="leak"} 1"#), "the hand-made leak: {text}");
    assert!(text.contains(r#"romana_reclaimed_addresses_total{reason="dead-host"} 1"#), "{text}");
    assert!(text.contains(r#"romana_reclaimed_addresses_total{reason="leak"} 1"#), "{text}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beat.await.unwrap();
}

/// `romana_reclaimed_addresses_total{reason="leak"}` of one replica.
async fn leaks_reclaimed(url: &str) -> u64 {
    let text =
        romana_client::http().get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(r#"romana_reclaimed_addresses_total{reason="leak"}"#));
    line.and_then(|l| l.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap()
}

/// Two replicas on one etcd: each leaked address is released once, by the route manager's leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_reclaim_each_leak_once_on_the_leader() {
    let etcd = common::etcd("check-ha");
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("check-ha-{i}"))).collect();
    let replicas: Vec<_> = dirs
        .iter()
        .map(|d| {
            common::on_etcd(
                &etcd,
                "/check-ha/",
                &["--data-dir", &d.path().display().to_string(), "--leak-grace", "2"],
            )
        })
        .collect();
    let c = common::admin(&dirs[0]).await;
    c.apply_topology(&serde_json::from_str::<TopologyRequest>(FLAT).unwrap()).await.unwrap();
    let req = HostRequest {
        name: "h1".into(),
        ip: "192.168.9.1".into(),
        ipv6: None,
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    };
    c.add_host(&req).await.unwrap();
    for i in 0..5 {
        let a = AddressRequest {
            name: format!("cni:pods:c{i}:eth0"),
            host: "h1".into(),
            tenant: "t".into(),
            segment: String::new(),
            ip: None,
        };
        c.allocate(&a, None).await.unwrap();
    }
    let start = Instant::now();
    while !c.addresses("").await.unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "the leaks were never reclaimed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut counts = Vec::new();
    for r in &replicas {
        counts.push(leaks_reclaimed(&r.url).await);
    }
    counts.sort();
    assert_eq!(counts, vec![0, 5], "one replica (the leader) released every leak, once");
    drop(replicas);
}
