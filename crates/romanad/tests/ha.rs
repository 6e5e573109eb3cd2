//! The replicated control plane: three romanad replicas on a three-member etcd (Debian's etcd on
//! 127.0.0.1, ports chosen at run time). A replica never decides from a copy older than what
//! another replica acknowledged.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use romana_api::rest::{AddressRequest, HostRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_store::StoreExt;
use romana_store_etcd::EtcdStore;
use romana_store_etcd::cluster::EtcdCluster;
use romana_test_support::{Romanad, TempDir};

const PREFIX: &str = "/romana-ha/";

/// Three replicas on a three-member etcd, and an admin client on each.
/// Fields drop in order: the replicas stop before etcd does.
struct Ha {
    replicas: Vec<Romanad>,
    clients: Vec<Client>,
    etcd: EtcdCluster,
    _dirs: Vec<TempDir>,
}

async fn ha(tag: &str) -> Ha {
    let etcd =
        EtcdCluster::start(tag, 3).expect("etcd starts").expect("etcd is installed (scripts/setup.sh)");
    let endpoints = etcd.endpoints().join(",");
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("{tag}-{i}"))).collect();
    let mut replicas = Vec::new();
    // The first replica creates the admin and writes admin.credentials; the others find it in etcd.
    for d in &dirs {
        let args: Vec<String> = [
            "--etcd-endpoints",
            &endpoints,
            "--prefix",
            PREFIX,
            "--data-dir",
            &d.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        replicas.push(Romanad::start(Path::new(common::BIN), &args).expect("romanad starts"));
    }
    let admin = common::admin(&dirs[0]).await;
    let clients = replicas.iter().map(|r| common::same_token(&admin, &r.url)).collect();
    Ha { replicas, clients, etcd, _dirs: dirs }
}

fn topology(json: &str) -> TopologyRequest {
    serde_json::from_str(json).unwrap()
}

fn host(name: &str, ip: &str, tags: &[(&str, &str)]) -> HostRequest {
    HostRequest {
        name: name.into(),
        ip: ip.into(),
        agent_port: None,
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        k8s_info: None,
    }
}

const ROUNDS: usize = 200;

/// Right after one replica acknowledges a change, another replica acts on it: `DELETE /address`
/// finds the address `POST /address` made elsewhere, and `POST /hosts` sees the topology
/// `POST /topology` set elsewhere (and `DELETE /hosts` the host). 200 rounds of each, zero misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_never_answers_from_a_stale_copy() {
    let h = ha("stale").await;
    let c = &h.clients;
    c[0].apply_topology(&topology(
        r#"{"networks":[{"name":"pods","cidr":"10.40.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#,
    ))
    .await
    .unwrap();
    // No waiting anywhere: each call goes to another replica than the one before.
    c[1].add_host(&host("h0", "192.168.9.250", &[])).await.expect("the host, right after the topology");
    // Another user of the same etcd: its changes move the store's revision, and no replica's
    // watch ever delivers them (the replicas then fence, `ipam_catch_up.rs`).
    let other = EtcdStore::connect(&h.etcd.endpoints()).await.expect("etcd");
    let mut misses = Vec::new();
    for i in 0..ROUNDS {
        if i % 10 == 0 {
            other.put("/someone-else/key", format!("{i}").into_bytes()).await.expect("put");
        }
        let req = AddressRequest {
            name: format!("s{i}"),
            host: "h0".into(),
            tenant: "t".into(),
            segment: String::new(),
            ip: None,
        };
        let a = c[i % 3].allocate(&req, None).await.unwrap_or_else(|e| panic!("allocate s{i}: {e}"));
        if let Err(e) = c[(i + 1) % 3].release(&format!("s{i}")).await {
            misses.push(format!("release s{i} ({}) on replica {}: {e}", a.ip, (i + 1) % 3));
        }
    }
    assert_eq!(misses, Vec::<String>::new(), "every release found what another replica allocated");
    c[2].remove_host("h0").await.expect("remove h0");

    for k in 0..ROUNDS {
        let t = format!(
            r#"{{"networks":[{{"name":"pods","cidr":"10.40.0.0/16","block_mask":28}}],"topologies":[{{"networks":["pods"],"map":[{{"name":"g","assignment":{{"rack":"r{k}"}},"groups":[]}}]}}]}}"#
        );
        c[k % 3].apply_topology(&topology(&t)).await.unwrap_or_else(|e| panic!("topology {k}: {e}"));
        let name = format!("h{k}");
        let rack = format!("r{k}");
        if let Err(e) =
            c[(k + 1) % 3].add_host(&host(&name, &format!("192.168.9.{}", k + 1), &[("rack", &rack)])).await
        {
            misses.push(format!("add {name} (rack {rack}) on replica {}: {e}", (k + 1) % 3));
            continue;
        }
        if let Err(e) = c[(k + 2) % 3].remove_host(&name).await {
            misses.push(format!("remove {name} on replica {}: {e}", (k + 2) % 3));
        }
    }
    assert_eq!(misses, Vec::<String>::new(), "every host call saw the topology and host set elsewhere");
}
