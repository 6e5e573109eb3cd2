//! Host liveness: a host whose agent stops its heartbeat has its routes withdrawn from the other
//! hosts' route sets (served, and announced on the watch), and they come back when it returns;
//! the notices on the watch name the sets `GET /routes/{host}` serves.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, HostRequest, HostRoutesInfo};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_test_support::TempDir;

const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

async fn via(c: &Client, host: &str) -> Vec<String> {
    c.routes(host).await.unwrap().routes.into_iter().map(|r| r.kind.via().to_owned()).collect()
}

/// The notice the route manager publishes for `host`'s set as `GET /routes/{host}` serves it
/// now: the host and the stamp the set is served with.
async fn notice_now(c: &Client, host: &str) -> serde_json::Value {
    let set = c.routes(host).await.unwrap();
    serde_json::json!({"host": host, "stamp": set.stamp.expect("a known host's set has a stamp")})
}

/// A watch line's value as JSON.
fn value_of(ev: &romana_api::rest::WatchEvent) -> serde_json::Value {
    serde_json::from_str(ev.value.as_ref().unwrap().get()).unwrap()
}

/// Host `name` with underlay address 192.168.9.(i + 1).
async fn add_host(c: &Client, i: usize, name: &str) {
    let req = HostRequest {
        name: name.to_owned(),
        ip: format!("192.168.9.{}", i + 1),
        ipv6: None,
        agent_port: None,
        tags: BTreeMap::new(),
        k8s_info: None,
    };
    c.add_host(&req).await.unwrap();
}

async fn heartbeat(url: &str, token: &str, host: &str) -> u16 {
    romana_client::http()
        .put(format!("{url}/hosts/{host}/alive"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn liveness(url: &str, token: &str) -> serde_json::Value {
    romana_client::http()
        .get(format!("{url}/liveness"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_hosts_lose_their_routes_and_get_them_back() {
    let dir = TempDir::new("liveness");
    let d = common::embedded(&dir, &["--host-liveness-ttl", "2"]);
    let c = common::admin(&dir).await;
    let token = c.token().unwrap();
    c.apply_topology(&serde_json::from_str::<TopologyRequest>(FLAT).unwrap()).await.unwrap();
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        add_host(&c, i, h).await;
        let a = AddressRequest {
            name: format!("pod-{h}"),
            host: h.to_string(),
            tenant: "t".into(),
            segment: String::new(),
            ip: None,
        };
        c.allocate(&a, None).await.unwrap();
    }
    assert_eq!(heartbeat(&d.url, &token, "nohost").await, 404);
    assert_eq!(via(&c, "h1").await, vec!["h2", "h3"], "hosts that never sent a heartbeat are not judged");

    // h2's agent sends heartbeats.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beat = {
        let (url, token, stop) = (d.url.clone(), token.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(heartbeat(&url, &token, "h2").await, 200);
                last = Instant::now();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            last
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(via(&c, "h1").await, vec!["h2", "h3"]);
    let mut published = c.watch("routes/h1", 0).await.unwrap();
    let first = published.recv().await.unwrap().unwrap();
    let before = notice_now(&c, "h1").await;
    assert_eq!(value_of(&first), before, "the notice names the set served, which routes to h2");

    // The agent dies: its routes go from h1's set, served and published.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last_beat = beat.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while via(&c, "h1").await.contains(&"h2".to_owned()) {
        assert!(Instant::now() < deadline, "h2's routes were never withdrawn");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let withdrawn = last_beat.elapsed();
    assert_eq!(via(&c, "h1").await, vec!["h3"]);
    let after = notice_now(&c, "h1").await;
    assert_ne!(after["stamp"], before["stamp"]);
    let mut saw_withdrawal = false;
    while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(5), published.recv()).await {
        if ev.kind == "put" && value_of(&ev) == after {
            saw_withdrawal = true;
            break;
        }
    }
    assert!(saw_withdrawal, "the withdrawal is published on the watch");
    println!("h2's routes withdrawn {:.2} s after its last heartbeat (TTL 2 s)", withdrawn.as_secs_f64());

    // The agent comes back: so do its routes.
    assert_eq!(heartbeat(&d.url, &token, "h2").await, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !via(&c, "h1").await.contains(&"h2".to_owned()) {
        assert!(Instant::now() < deadline, "h2's routes never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live = liveness(&d.url, &token).await;
    assert_eq!(live["alive"], serde_json::json!(["h2"]));

    // A removed host stops being monitored: its liveness keys go with it.
    let del =
        romana_client::http().delete(format!("{}/hosts/h2", d.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(del.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = liveness(&d.url, &token).await;
        if live["monitored"] == serde_json::json!([]) && live["alive"] == serde_json::json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "h2 still monitored after removal: {live}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The route manager publishes the other hosts' sets when an allocation takes a block (the IPAM
/// actor's own change, issue 22) or its last address gives it back, and writes nothing for an
/// address in a block already held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_taken_and_given_back_are_published_and_nothing_else() {
    let dir = TempDir::new("publish");
    let _d = common::embedded(&dir, &[]);
    let c = common::admin(&dir).await;
    c.apply_topology(&serde_json::from_str::<TopologyRequest>(FLAT).unwrap()).await.unwrap();
    for (i, h) in ["h1", "h2"].iter().enumerate() {
        add_host(&c, i, h).await;
    }
    let on_h2 = |name: &str, tenant: &str| AddressRequest {
        name: name.into(),
        host: "h2".into(),
        tenant: tenant.into(),
        segment: String::new(),
        ip: None,
    };
    let mut published = c.watch("routes/h1", 0).await.unwrap();
    // The next notice published for h1 (within 10 s); the stream's `synced` skipped.
    let mut next = async || -> Option<serde_json::Value> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), published.recv()).await {
                Ok(Some(Ok(ev))) if ev.kind == "put" => return Some(value_of(&ev)),
                Ok(Some(Ok(ev))) if ev.kind == "synced" => continue,
                _ => return None,
            }
        }
    };
    let dests = async |c: &Client| -> Vec<String> {
        c.routes("h1").await.unwrap().routes.into_iter().map(|r| r.dest).collect()
    };
    // h2's own set before it holds a block: empty, read with its `ETag`.
    let first_read = c.routes_json_if_changed("h2", None).await.unwrap();
    let (empty, h2_tag) = first_read.changed.expect("a first read");
    let h2_tag = h2_tag.expect("an ETag");
    let h2_stamp = serde_json::from_slice::<HostRoutesInfo>(&empty).unwrap().stamp;
    assert_eq!(first_read.stamp, h2_stamp, "the stamp's header names the body's stamp");
    // The first block of h2's: in h1's set, and announced.
    c.allocate(&on_h2("a", "t"), None).await.unwrap();
    assert_eq!(dests(&c).await, ["10.20.0.0/28"]);
    let first = notice_now(&c, "h1").await;
    while next().await.expect("h2's first block announced in h1's notices") != first {}
    // h2's own stamp moved (it owns a block now), its routes did not (its own blocks are not in
    // its set): a read with the `ETag` it holds is answered 304, without the set.
    let moved = c.routes("h2").await.unwrap().stamp;
    assert_ne!(moved, h2_stamp);
    let unchanged = c.routes_json_if_changed("h2", Some(&h2_tag)).await.unwrap();
    assert!(unchanged.changed.is_none(), "h2's routes unchanged");
    // The 304 names the stamp the set was computed from: the new one.
    assert_eq!(unchanged.stamp, moved, "a 304 carries the stamp");
    // h1's routes did change: the `ETag` of the empty set it held (any empty set's: the tag is
    // of the routes alone) gets the set, with another tag.
    let (set, h1_tag) =
        c.routes_json_if_changed("h1", Some(&h2_tag)).await.unwrap().changed.expect("h1's set changed");
    assert_eq!(serde_json::from_slice::<HostRoutesInfo>(&set).unwrap().routes.len(), 1);
    assert!(h1_tag.as_ref().is_some_and(|t| *t != h2_tag));
    assert!(c.routes_json_if_changed("h1", h1_tag.as_deref()).await.unwrap().changed.is_none());
    // Another address in that block: the same set, nothing written (the route manager ticks
    // every 200 ms).
    c.allocate(&on_h2("b", "t"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // A block of another tenant next to it (h1 reaches both through one /27): published; its
    // last address released, withdrawn.
    c.allocate(&on_h2("c", "u"), None).await.unwrap();
    assert_eq!(dests(&c).await, ["10.20.0.0/27"]);
    let second = next().await.expect("the second block announced");
    assert_eq!(second, notice_now(&c, "h1").await, "the next notice after an address in a held block");
    c.release("c").await.unwrap();
    let third = next().await.expect("the emptied block withdrawn");
    assert_eq!(third, first);
}
