//! romanad's watch through the agent's `RestWatch` and the store's follower, against real
//! romanad services in this process on 127.0.0.1 (no root): the state first, then `synced`, then
//! changes; and a stream opened from a revision resumes there (what the follower does after a
//! break), deletes included; several prefixes on one stream, each consumer of the agent's
//! `SharedWatch` handed its own.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use romana_agent::rest_watch::{RestWatch, SharedWatch};
use romana_api::rest::{SegmentRequest, TenantRequest};
use romana_client::Client;
use romana_store::follow::{Backoff, Followed, WatchSource, follow};
use romana_test_support::TempDir;

async fn romanad() -> (TempDir, Arc<Client>) {
    let dir = TempDir::new("agent-watch");
    let creds = dir.path().join("admin.credentials");
    romana_services::serve_loopback("agent-watch", None, Some(creds.clone())).await.unwrap();
    let text = std::fs::read_to_string(&creds).unwrap();
    let admin = Client::from_credentials(&serde_json::from_str(&text).unwrap()).await.unwrap();
    (dir, Arc::new(admin))
}

fn tenant(name: &str) -> TenantRequest {
    TenantRequest {
        name: name.into(),
        external_id: String::new(),
        labels: Default::default(),
        isolation: String::new(),
    }
}

async fn next<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_sees_state_then_changes() {
    let (_dir, admin) = romanad().await;
    admin.create_tenant(&tenant("red")).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let c = admin.clone();
    let task = tokio::spawn(async move {
        let mut source = RestWatch::new("tenants/", move || c.clone());
        follow(&mut source, Backoff::new(Duration::from_millis(10), Duration::from_millis(100)), |f| {
            tx.send(f).is_ok()
        })
        .await;
    });
    // The follower lists (nothing: REST), opens from 0, and says synced once the stream is open;
    // the stream starts with the current state.
    assert_eq!(next(&mut rx).await, Followed::Synced { relisted: true });
    match next(&mut rx).await {
        Followed::Event(ev) => assert_eq!((ev.kind.as_str(), ev.key.as_str()), ("put", "tenants/red")),
        other => panic!("expected red's put, got {other:?}"),
    }
    // The state the stream opened with is in.
    assert_eq!(next(&mut rx).await, Followed::Current);
    admin.create_tenant(&tenant("blue")).await.unwrap();
    match next(&mut rx).await {
        Followed::Event(ev) => assert_eq!((ev.kind.as_str(), ev.key.as_str()), ("put", "tenants/blue")),
        other => panic!("expected blue's put, got {other:?}"),
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_from_a_revision_resumes_there() {
    let (_dir, admin) = romanad().await;
    admin.create_tenant(&tenant("red")).await.unwrap();
    let c = admin.clone();
    let mut source = RestWatch::new("tenants/", move || c.clone());
    // The state, then `synced` with the revision to resume from (no event, only progress).
    let mut s = source.open(0).await.unwrap();
    let first = source.next(&mut s).await.unwrap().unwrap();
    assert_eq!(first.event.map(|e| e.key), Some("tenants/red".into()));
    let synced = source.next(&mut s).await.unwrap().unwrap();
    assert!(synced.event.is_none() && synced.revision >= first.revision, "{synced:?}");
    drop(s);
    // While nobody watches: blue comes, red goes.
    admin.create_tenant(&tenant("blue")).await.unwrap();
    admin.delete_tenant("red").await.unwrap();
    let mut s = source.open(synced.revision + 1).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let c = tokio::time::timeout(Duration::from_secs(10), source.next(&mut s))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(e) = c.event {
            seen.push(format!("{} {}", e.kind, e.key));
        }
    }
    assert_eq!(seen, ["put tenants/blue", "delete tenants/red"]);
}

fn label(f: Followed<romana_api::rest::WatchEvent>) -> String {
    match f {
        Followed::Event(e) => format!("{} {}", e.kind, e.key),
        Followed::Synced { relisted } => format!("synced {relisted}"),
        Followed::Current => "current".into(),
        Followed::Lost { .. } => "lost".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_serves_every_consumer_its_prefixes() {
    let (_dir, admin) = romanad().await;
    admin.create_tenant(&tenant("red")).await.unwrap();
    let (tx_t, mut tenants) = tokio::sync::mpsc::unbounded_channel();
    let (tx_p, mut policies) = tokio::sync::mpsc::unbounded_channel();
    let mut w = SharedWatch::new();
    w.add(&["tenants/"], move |f| tx_t.send(label(f)).is_ok());
    w.add(&["policies/", "vips/"], move |f| tx_p.send(label(f)).is_ok());
    assert_eq!(w.prefixes(), ["policies/", "tenants/", "vips/"]);
    let c = admin.clone();
    let task = tokio::spawn(
        w.run(move || c.clone(), Backoff::new(Duration::from_millis(10), Duration::from_millis(100))),
    );
    assert_eq!(next(&mut tenants).await, "synced true");
    assert_eq!(next(&mut tenants).await, "put tenants/red");
    // The listing the stream opened with is whole: every consumer is told, once.
    assert_eq!(next(&mut tenants).await, "current");
    assert_eq!(next(&mut policies).await, "synced true");
    assert_eq!(next(&mut policies).await, "current");
    admin
        .add_policy(&serde_json::json!({"id": "p1", "applied_to": [{"tenant": "red"}],
            "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "tcp", "ports": [80]}]}]}))
        .await
        .unwrap();
    admin
        .add_segment(
            "red",
            &SegmentRequest { name: "web".into(), external_id: String::new(), labels: Default::default() },
        )
        .await
        .unwrap();
    admin.create_tenant(&tenant("blue")).await.unwrap();
    assert_eq!(next(&mut policies).await, "put policies/p1");
    // The segment is under segments/, which nobody follows here: only what the tenants'
    // consumer follows reaches it (the segment rewrites red's record), up to blue.
    let mut got = vec![next(&mut tenants).await];
    while got.last().is_some_and(|l| l != "put tenants/blue") {
        got.push(next(&mut tenants).await);
    }
    assert!(got.iter().all(|l| l.starts_with("put tenants/")), "{got:?}");
    let p = policies.try_recv();
    assert!(p.is_err(), "{p:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_several_prefixes_resumes_there() {
    let (_dir, admin) = romanad().await;
    admin.create_tenant(&tenant("red")).await.unwrap();
    let c = admin.clone();
    let mut source =
        RestWatch { prefixes: vec!["tenants/".into(), "policies/".into()], client: move || c.clone() };
    let mut s = source.open(0).await.unwrap();
    let first = source.next(&mut s).await.unwrap().unwrap();
    assert_eq!(first.event.map(|e| e.key), Some("tenants/red".into()));
    let synced = source.next(&mut s).await.unwrap().unwrap();
    assert!(synced.event.is_none(), "{synced:?}");
    drop(s);
    admin
        .add_policy(&serde_json::json!({"id": "p2", "applied_to": [{"tenant": "red"}],
            "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "tcp", "ports": [81]}]}]}))
        .await
        .unwrap();
    admin.delete_tenant("red").await.unwrap();
    let mut s = source.open(synced.revision + 1).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let c = tokio::time::timeout(Duration::from_secs(10), source.next(&mut s))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(e) = c.event {
            seen.push(format!("{} {}", e.kind, e.key));
        }
    }
    assert_eq!(seen, ["put policies/p2", "delete tenants/red"]);
}
