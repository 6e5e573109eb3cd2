//! Shared helpers of romanad's black-box tests: romanad processes and in-process servers on
//! 127.0.0.1 with ports chosen at run time, on the embedded store or a throwaway etcd.
#![allow(dead_code)]

pub mod ha;

use std::path::Path;
use std::sync::Arc;

use romana_client::Client;
use romana_store::{EmbeddedStore, Store};
use romana_store_etcd::server::EtcdServer;
use romana_test_support::{Romanad, TempDir};
#[allow(unused_imports)]
use serde_json as _;

pub const BIN: &str = env!("CARGO_BIN_EXE_romanad");

pub fn topology_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/topologies").join(name)
}

/// A romanad process on the embedded store.
pub fn embedded(dir: &TempDir, extra: &[&str]) -> Romanad {
    let mut args = vec!["--data-dir".to_owned(), dir.path().display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Romanad::start(Path::new(BIN), &args).expect("romanad starts")
}

pub fn etcd(tag: &str) -> EtcdServer {
    EtcdServer::start(tag).expect("etcd starts").expect("etcd is installed (scripts/setup.sh)")
}

/// A romanad process on etcd under `prefix`.
pub fn on_etcd(etcd: &EtcdServer, prefix: &str, extra: &[&str]) -> Romanad {
    let mut args =
        vec!["--etcd-endpoints".to_owned(), etcd.endpoint.clone(), "--prefix".to_owned(), prefix.to_owned()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Romanad::start(Path::new(BIN), &args).expect("romanad starts")
}

/// romanad's services in this process (for many short-lived servers), over real HTTP.
pub async fn serve(store: Arc<dyn Store>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let opts = romana_services::Options {
        prefix: "/romana/".into(),
        services: romana_services::ALL_SERVICES.iter().map(|s| s.to_string()).collect(),
        instance: "test".into(),
        url: url.clone(),
        initial_topology: None,
        auth: false,
        credentials: None,
        ca_pem: None,
        access_ttl: 900,
        liveness_ttl: 2,
        graces: Default::default(),
        signing_key: None,
    };
    let state = romana_services::start(store, &opts).await.expect("services start");
    let app = romana_services::router(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

pub async fn embedded_in_process(dir: &TempDir) -> (String, tokio::task::JoinHandle<()>) {
    let store = EmbeddedStore::open(dir.path()).await.expect("open store");
    serve(Arc::new(store)).await
}

/// A client of an in-process server (no authentication).
pub fn client(url: &str) -> Client {
    Client::new(vec![url.to_owned()])
}

/// The admin client of a romanad process, from the credentials it wrote in its data directory.
pub async fn admin(dir: &TempDir) -> Client {
    let text =
        std::fs::read_to_string(dir.path().join("admin.credentials")).expect("romanad wrote its credentials");
    let creds: romana_api::rest::Credentials = serde_json::from_str(&text).expect("credentials");
    Client::from_credentials(&creds).await.expect("admin logs in")
}

/// The admin client over `urls` (every replica), from the credentials written in `dir`.
pub async fn admin_at(dir: &Path, urls: Vec<String>) -> Client {
    let text = std::fs::read_to_string(dir.join("admin.credentials")).expect("romanad wrote its credentials");
    let creds: romana_api::rest::Credentials = serde_json::from_str(&text).expect("credentials");
    let c = Client::new(urls);
    c.login(&creds.username, &creds.password).await.expect("admin logs in");
    c
}

/// A client for another URL with the same token.
pub fn same_token(c: &Client, url: &str) -> Client {
    let other = Client::new(vec![url.to_owned()]);
    other.set_token(c.token());
    other
}
