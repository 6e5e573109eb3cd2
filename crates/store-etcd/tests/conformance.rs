//! The store conformance suite against a real etcd (Debian etcd-server 3.4) started for this test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use romana_store::conformance;
use romana_store_etcd::EtcdStore;
use romana_store_etcd::server::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms() {
    let Some(etcd) = EtcdServer::start("conformance").expect("etcd starts") else {
        panic!("etcd is not installed: run scripts/setup.sh");
    };
    let store = EtcdStore::connect(&etcd.endpoints()).await.expect("connect");
    conformance::run(Arc::new(store), "/romana-test/").await;
}
