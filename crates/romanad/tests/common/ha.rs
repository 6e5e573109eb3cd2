//! The replicated control plane as a fixture: three romanad replicas on a three-member etcd
//! (Debian's etcd on 127.0.0.1, ports chosen at run time), and an admin client on each. Shared by
//! `tests/ha.rs` and `benches/fanout.rs`.

use std::path::Path;

use romana_client::Client;
use romana_store_etcd::cluster::EtcdCluster;
use romana_test_support::{Romanad, TempDir};

/// Where the replicas keep their records in etcd.
pub const PREFIX: &str = "/romana-ha/";

/// Three replicas on a three-member etcd, and an admin client on each.
/// Fields drop in order: the replicas stop before etcd does.
pub struct Ha {
    pub replicas: Vec<Romanad>,
    pub clients: Vec<Client>,
    pub etcd: EtcdCluster,
    /// Each replica's data directory (its signing key; the first one's `admin.credentials`).
    pub dirs: Vec<TempDir>,
}

impl Ha {
    /// The replicas' URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.url.clone()).collect()
    }
}

/// Starts the cluster; `tag` names its directories.
pub async fn ha(tag: &str) -> Ha {
    ha_with(tag, &[]).await
}

/// `ha` with more romanad flags for every replica.
pub async fn ha_with(tag: &str, extra: &[&str]) -> Ha {
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
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        replicas.push(Romanad::start(Path::new(super::BIN), &args).expect("romanad starts"));
    }
    let admin = super::admin(&dirs[0]).await;
    let clients = replicas.iter().map(|r| super::same_token(&admin, &r.url)).collect();
    Ha { replicas, clients, etcd, dirs }
}
