//! The dual-stack underlay over REST, against romanad's services in this process on the memory
//! store: a host registered with an IPv6 underlay address beside its IPv4 one (`POST /hosts`
//! with `ipv6`) shows it in `GET /hosts`, `GET /topology` and after a second replica loads the
//! stored record; a bad one is 422 naming `ipv6`, a taken one 409; a client that never sends
//! `ipv6` keeps working. Routes: another host's IPv6 blocks lead to its IPv6 address and its IPv4
//! blocks to its IPv4 one; the IPv6 blocks of a host without an IPv6 underlay are a throw; a
//! removed host's routes leave the set.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use romana_api::rest::{AddressRequest, HostRequest, RouteKind};
use romana_client::Client;
use romana_store::MemStore;
use serde_json::json;

fn host(name: &str, ip: &str, ipv6: Option<&str>) -> HostRequest {
    HostRequest {
        name: name.into(),
        ip: ip.into(),
        ipv6: ipv6.map(Into::into),
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    }
}

/// `dest` -> `via_ip` (or `throw`) for each route of `host`'s set.
async fn routes(c: &Client, host: &str) -> Vec<(String, String)> {
    let r = c.routes(host).await.unwrap();
    r.routes
        .iter()
        .map(|x| {
            let via = match &x.kind {
                RouteKind::Host { via_ip, .. } => via_ip.clone(),
                RouteKind::Throw => "throw".into(),
                RouteKind::Group { via } => format!("group {via}"),
            };
            (x.dest.clone(), via)
        })
        .collect()
}

async fn stack(c: &Client, name: &str, host: &str) -> Vec<String> {
    let req = AddressRequest {
        name: name.into(),
        host: host.into(),
        tenant: "red".into(),
        segment: String::new(),
        ip: None,
    };
    c.allocate_stack(&req).await.unwrap().into_iter().map(|a| a.ip).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_carry_an_ipv6_underlay_and_ipv6_routes_lead_to_it() {
    let store = Arc::new(MemStore::new());
    let (url, _task) = common::serve(store.clone()).await;
    let c = common::client(&url);
    let topo = serde_json::from_value(json!({
        "networks": [
            {"name": "net4", "cidr": "10.60.0.0/24", "block_mask": 29},
            {"name": "net6", "cidr": "fd00:60::/120", "block_mask": 125}
        ],
        "topologies": [{"networks": ["net4", "net6"], "map": [{"groups": []}]}]
    }))
    .unwrap();
    c.apply_topology(&topo).await.unwrap();

    // Refusals name the field and the problem; nothing is registered.
    for (req, status, text) in [
        (host("h9", "192.0.2.9", Some("10.0.0.9")), 422, "ipv6: 10.0.0.9 is IPv4"),
        (host("h9", "192.0.2.9", Some("fe80::9")), 422, "ipv6: fe80::9 is link-local"),
        (host("h9", "192.0.2.9", Some("bogus")), 422, "ipv6: \"bogus\" is not an IP address"),
        (host("h9", "fd00:1::9", Some("fd00:1::10")), 422, "ipv6: fd00:1::10 goes beside an IPv4 ip"),
    ] {
        let e = c.add_host(&req).await.unwrap_err();
        assert_eq!(e.status(), Some(status), "{e}");
        assert!(e.to_string().contains(text), "{e} should say {text}");
    }
    assert!(c.hosts().await.unwrap().hosts.is_empty());

    // Two dual-stack hosts and one with an IPv4 underlay only (an old client's request).
    let h1 = c.add_host(&host("h1", "192.0.2.1", Some("fd00:1::1"))).await.unwrap();
    assert_eq!(h1.ipv6.as_deref(), Some("fd00:1::1"));
    c.add_host(&host("h2", "192.0.2.2", Some("fd00:1::2"))).await.unwrap();
    let old = c.send(reqwest::Method::POST, "/hosts", Some(json!({"name": "h3", "ip": "192.0.2.3"}))).await;
    assert_eq!(old.unwrap().status().as_u16(), 201);
    assert_eq!(c.host("h3").await.unwrap().ipv6, None);
    // The same address again is the same host; another host cannot take it.
    c.add_host(&host("h2", "192.0.2.2", Some("fd00:1::2"))).await.unwrap();
    let e = c.add_host(&host("h4", "192.0.2.4", Some("fd00:1::2"))).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("fd00:1::2 is already used by host h2"), "{e}");

    // Routes from h1: h2's blocks via h2's address of their family, h3's IPv6 block a throw.
    let a2 = stack(&c, "pod-2", "h2").await;
    let a3 = stack(&c, "pod-3", "h3").await;
    // Longest match over h1's set: where each address goes.
    let mut table = routes(&c, "h1").await;
    table.sort();
    let via = |addr: &str| -> String {
        let addr: std::net::IpAddr = addr.parse().unwrap();
        let best = table
            .iter()
            .filter_map(|(d, v)| Some((d.parse::<romana_model::Cidr>().ok()?, v)))
            .filter(|(d, _)| d.contains_addr(addr))
            .max_by_key(|(d, _)| d.prefix_len());
        best.map_or("none".into(), |(_, v)| v.clone())
    };
    assert_eq!(
        [&a2[0], &a2[1], &a3[0], &a3[1]].map(|a| via(a)),
        ["192.0.2.2", "fd00:1::2", "192.0.2.3", "throw"].map(String::from),
        "{table:?}"
    );
    assert_eq!(table.len(), 4, "one route per block: {table:?}");

    // The topology shows the IPv6 underlay, and a second replica on the same store loads it.
    let rendered = serde_json::to_value(c.topology().await.unwrap()).unwrap();
    assert!(rendered.to_string().contains("\"ipv6\":\"fd00:1::2\""), "{rendered}");
    let (url2, _task2) = common::serve(store).await;
    let c2 = common::client(&url2);
    assert_eq!(c2.host("h2").await.unwrap().ipv6.as_deref(), Some("fd00:1::2"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut r = routes(&c2, "h1").await;
        r.sort();
        if r == table {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the second replica's routes: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // h2 leaves: its routes of both families go from h1's set.
    c.remove_host("h2").await.unwrap();
    let got = routes(&c, "h1").await;
    assert!(got.iter().all(|(_, v)| v != "fd00:1::2" && v != "192.0.2.2"), "{got:?}");
}
