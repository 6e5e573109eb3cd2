//! Dual-stack allocation over REST (`POST /address-stacks`), against romanad's services in this
//! process on the memory store, over real HTTP on 127.0.0.1: an endpoint gets an IPv4 and an
//! IPv6 address, both stored (a second replica's view, `GET /addresses`, sees both), a retry
//! gives the same two, exhausting IPv6 gives back the IPv4 half (409 naming the network), a
//! single-address client keeps seeing the name's first address, and releasing the name releases
//! both. An IPv6-only topology gives the plain name an IPv6 address.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use romana_api::rest::{AddressRequest, HostRequest};
use romana_client::Client;
use romana_store::MemStore;
use serde_json::json;

fn req(name: &str) -> AddressRequest {
    AddressRequest {
        name: name.into(),
        host: "h1".into(),
        tenant: "red".into(),
        segment: "web".into(),
        ip: None,
    }
}

async fn cluster(networks: serde_json::Value) -> (Client, tokio::task::JoinHandle<()>) {
    let (url, task) = common::serve(Arc::new(MemStore::new())).await;
    let c = common::client(&url);
    let names: Vec<serde_json::Value> =
        networks.as_array().unwrap().iter().map(|n| n["name"].clone()).collect();
    let topo = serde_json::from_value(json!({"networks": networks,
        "topologies": [{"networks": names, "map": [{"groups": []}]}]}))
    .unwrap();
    c.apply_topology(&topo).await.unwrap();
    let host = HostRequest {
        name: "h1".into(),
        ip: "192.0.2.1".into(),
        ipv6: None,
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    };
    c.add_host(&host).await.unwrap();
    (c, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_gets_both_families_or_neither() {
    // IPv6: two /127 blocks' worth (4 addresses); IPv4 plenty.
    let (c, _task) = cluster(json!([
        {"name": "net4", "cidr": "10.50.0.0/24", "block_mask": 29},
        {"name": "net6", "cidr": "fd00:50::/126", "block_mask": 127}
    ]))
    .await;
    let got = c.allocate_stack(&req("pod-1")).await.unwrap();
    let view: Vec<(&str, &str, u8)> =
        got.iter().map(|a| (a.name.as_str(), a.ip.as_str(), a.prefix_len)).collect();
    assert_eq!(view, [("pod-1", "10.50.0.0", 32), ("pod-1#v6", "fd00:50::", 128)]);
    // A retry gives the same two; the single-address view of the name is its IPv4 address.
    let again = c.allocate_stack(&req("pod-1")).await.unwrap();
    assert_eq!(again, got);
    assert_eq!(c.address("pod-1").await.unwrap().ip, "10.50.0.0");
    assert_eq!(c.address("pod-1#v6").await.unwrap().ip, "fd00:50::");
    for n in 2..=4 {
        assert_eq!(c.allocate_stack(&req(&format!("pod-{n}"))).await.unwrap().len(), 2);
    }
    // IPv6 is exhausted: nothing is taken, and the error names the network.
    let before = c.addresses("").await.unwrap().len();
    let e = c.allocate_stack(&req("pod-5")).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("net6"), "{e}");
    assert_eq!(c.addresses("").await.unwrap().len(), before, "the IPv4 half stayed allocated");
    // Releasing the name releases both; the next endpoint takes them.
    c.release("pod-1").await.unwrap();
    assert!(c.address("pod-1#v6").await.is_err());
    let got = c.allocate_stack(&req("pod-5")).await.unwrap();
    assert_eq!(got.iter().map(|a| a.ip.as_str()).collect::<Vec<_>>(), ["10.50.0.0", "fd00:50::"]);
    // A release cut off after the name's address (here: released by its number, which releases
    // that address only): the retry by name releases the IPv6 one left behind.
    let pod2 = c.address("pod-2").await.unwrap().ip;
    c.release(&pod2).await.unwrap();
    assert!(c.address("pod-2#v6").await.is_ok(), "releasing by number leaves the IPv6 address");
    assert_eq!(c.release("pod-2").await.unwrap().name, "pod-2#v6");
    assert!(c.address("pod-2#v6").await.is_err(), "the retry released the IPv6 address");
    assert_eq!(c.release("pod-2").await.unwrap_err().status(), Some(404), "then nothing is left");
    // A pinned address is refused by name.
    let e =
        c.allocate_stack(&AddressRequest { ip: Some("10.50.0.9".into()), ..req("pod-6") }).await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_only_endpoints_keep_their_name() {
    let (c, _task) = cluster(json!([{"name": "net6", "cidr": "fd00:60::/120", "block_mask": 124}])).await;
    let got = c.allocate_stack(&req("pod-1")).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].name.as_str(), got[0].ip.as_str()), ("pod-1", "fd00:60::"));
    // The single-address route gives the same address to the same name.
    assert_eq!(c.allocate(&req("pod-1"), None).await.unwrap().ip, "fd00:60::");
}
