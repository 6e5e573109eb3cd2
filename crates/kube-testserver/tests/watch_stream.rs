//! Open watch streams against the library server: live events reach an open watch, periodic
//! bookmarks arrive without a timeout, and `compact()` closes open watches so that a client
//! resuming from what it saw gets 410 Expired and must relist. No root, no namespaces.

mod common;

use romana_kube_testserver::{ApiServer, Options};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Waits (without a deadline: the test harness's own timeout applies) until a watch request
/// has been recorded.
fn wait_for_watches(server: &ApiServer, n: usize) {
    while server.requests().iter().filter(|r| r.verb == "watch").count() < n {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn put_pod(server: &ApiServer, name: &str) -> Value {
    server
        .put_object("v1", "pods", json!({"metadata": {"name": name, "namespace": "w"}, "spec": {}}))
        .expect("put a pod")
}

/// Opens a watch on `path` and returns a function giving the next event (None at the end of
/// the stream).
fn open_watch(server: &ApiServer, path: &str) -> impl FnMut() -> Option<Value> + use<> {
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut lines = BufReader::new(s).lines();
    // Skip the header block and chunk-size lines; keep the JSON event lines.
    move || loop {
        let l = lines.next()?.ok()?;
        if l.starts_with('{') {
            return Some(serde_json::from_str::<Value>(&l).expect("event JSON"));
        }
    }
}

#[test]
fn compact_closes_open_watches_and_resuming_is_410() {
    let server = ApiServer::start().expect("start");
    server.put_object("v1", "namespaces", json!({"metadata": {"name": "w"}})).expect("namespace");
    let rv = server.resource_version();
    let mut next_event =
        open_watch(&server, &format!("/api/v1/namespaces/w/pods?watch=true&resourceVersion={rv}"));
    wait_for_watches(&server, 1);
    let pod = put_pod(&server, "live");
    let event = next_event().expect("the live event");
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["resourceVersion"], pod["metadata"]["resourceVersion"]);
    server.compact();
    assert_eq!(next_event(), None, "compaction ends the stream without an event");
    let seen = pod["metadata"]["resourceVersion"].as_str().expect("rv");
    let addr = server.addr();
    let resumed = common::request(
        addr,
        "GET",
        &format!("/api/v1/namespaces/w/pods?watch=true&resourceVersion={seen}"),
        &[],
        None,
    );
    let events = resumed.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["reason"].as_str()),
        (Some("ERROR"), Some("Expired"))
    );
    // A relist gives a version to watch from again.
    let list = common::request(addr, "GET", "/api/v1/namespaces/w/pods", &[], None).json();
    assert_eq!(list["items"][0]["metadata"]["name"], "live");
}

#[test]
fn periodic_bookmarks_and_live_events_on_one_stream() {
    let server =
        ApiServer::start_with(Options { bookmark_interval: Duration::from_millis(50), ..Options::default() })
            .expect("start");
    server.put_object("v1", "namespaces", json!({"metadata": {"name": "w"}})).expect("namespace");
    let rv = server.resource_version();
    let path = format!("/api/v1/pods?watch=true&allowWatchBookmarks=true&resourceVersion={rv}");
    let mut next = open_watch(&server, &path);
    let mut next_event = move || next().expect("the stream stays open");
    let first = next_event();
    assert_eq!(first["type"], "BOOKMARK");
    assert_eq!(first["object"]["metadata"]["resourceVersion"], rv.to_string());
    let pod = put_pod(&server, "p");
    let event = loop {
        let e = next_event();
        if e["type"] != "BOOKMARK" {
            break e;
        }
    };
    assert_eq!(
        (event["type"].as_str(), event["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("p"))
    );
    // Bookmarks after the write carry its version.
    let later = next_event();
    assert_eq!(later["type"], "BOOKMARK");
    assert_eq!(later["object"]["metadata"]["resourceVersion"], pod["metadata"]["resourceVersion"]);
}
