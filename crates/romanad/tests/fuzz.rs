//! Hostile requests on every route of the route table: random bodies on the routes that take one,
//! then every path parameter, the query parameters handlers read, headers and bodies at once.
//! romanad answers 2xx or 4xx with the JSON error body, never 5xx, and keeps answering.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use romana_store::MemStore;
use serde_json::{Value, json};

const FIELDS: &[&str] = &[
    "name",
    "ip",
    "host",
    "tenant",
    "segment",
    "cidr",
    "tags",
    "labels",
    "external_id",
    "agent_port",
    "id",
    "applied_to",
    "ingress",
    "egress",
    "peers",
    "rules",
    "protocol",
    "ports",
    "port_ranges",
    "icmp_type",
    "icmp_code",
    "peer",
    "dest",
    "direction",
    "networks",
    "topologies",
    "map",
    "groups",
    "block_mask",
    "tenants",
    "assignment",
    "classic",
    "host_bits",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..70000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("10.0.0.0/8"),
            Just("10.1.2.3/33"),
            Just("::/0"),
            Just("192.168.0.1"),
            Just("tcp"),
            Just("any"),
            Just("h1"),
            Just("")
        ]
        .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(FIELDS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

#[test]
fn random_bodies_never_cause_a_server_error() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (url, _server) = rt.block_on(common::serve(Arc::new(MemStore::new())));
    let http = romana_client::http();
    rt.block_on(async {
        let topo = std::fs::read_to_string(common::topology_file("multi-zone.json")).expect("topology");
        http.post(format!("{url}/topology"))
            .header("content-type", "application/json")
            .body(topo)
            .send()
            .await
            .expect("topology");
    });
    let routes: Vec<_> = romana_services::rest_routes::ROUTES
        .iter()
        .filter(|r| r.method == "POST" || r.method == "PUT")
        .collect();
    let mut runner = TestRunner::new(Config { cases: 300, ..Config::default() });
    runner
        .run(&(proptest::sample::select(routes), value(), any::<bool>()), |(route, body, raw)| {
            let path = route
                .path
                .replace("{service}", "ipam")
                .replace("{tenant}", "t")
                .replace("{host}", "h1")
                .replace("{id}", "p");
            let text =
                if raw { body.to_string().chars().rev().collect::<String>() } else { body.to_string() };
            let status = rt.block_on(async {
                let req = http
                    .request(
                        reqwest::Method::from_bytes(route.method.as_bytes()).expect("method"),
                        format!("{url}{path}"),
                    )
                    .header("content-type", "application/json")
                    .body(text.clone());
                req.send().await.expect("romanad answers").status().as_u16()
            });
            prop_assert!(status < 500, "{} {path} with {text} -> {status}", route.method);
            Ok(())
        })
        .expect("no 5xx");
    let alive = rt.block_on(async {
        http.get(format!("{url}/healthz")).send().await.expect("alive").status().as_u16()
    });
    assert_eq!(alive, 200);
}

/// Path parameter values: sane ones (so handlers get past lookups) and hostile ones, as they
/// appear in the URL (percent-escapes included: `%FF` is not UTF-8, `%2e%2e` is `..`).
fn path_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(vec!["ipam", "t", "h1", "p", "red", "default", "pods", "x"])
            .prop_map(str::to_owned),
        1 => proptest::sample::select(vec![
            "%00", "a%00b", "..", "%2e%2e", "%2E%2E%2Fauth", "..%2F..%2Fauth", "%FF", "%C0%80",
            "%ED%A0%80", "%F0%9F%98%80", "p%C3%B6d", "%20", "%25", "a%2Fb", "*", "~", "-", ".",
            "%0d%0aX-Injected:%201", "%3Cscript%3E", "10.0.0.1", "10.0.0.0%2F8", "%", "%zz",
        ])
        .prop_map(str::to_owned),
        1 => (1usize..20_000).prop_map(|n| "a".repeat(n)),
        1 => "[a-zA-Z0-9._~-]{1,40}",
    ]
}

/// A query string over the parameters the handlers read (`addressName`, `cidr`, `host`,
/// `tenant`, `network`, `RequestToken`, and the watch's `from` and `prefix`), with hostile values.
fn query() -> impl Strategy<Value = String> {
    let key = proptest::sample::select(vec![
        "addressName",
        "cidr",
        "host",
        "tenant",
        "network",
        "RequestToken",
        "request_token",
        "from",
        "prefix",
        "junk",
    ]);
    let value = prop_oneof![
        path_value(),
        proptest::sample::select(vec![
            "0",
            "-1",
            "1",
            "18446744073709551615",
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999999999999999",
            "1e9",
            "0x10",
            "ipam/",
            "../",
            "10.0.0.0/8",
            "10.1.2.3/33",
            "::/0",
        ])
        .prop_map(str::to_owned),
    ];
    proptest::collection::vec((key, value), 0..4).prop_map(|kv| {
        let q: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
    })
}

/// A body: random JSON (right and wrong shapes), reversed, deeply nested, oversized, not UTF-8.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => value().prop_map(|v| v.to_string().into_bytes()),
        2 => value().prop_map(|v| v.to_string().chars().rev().collect::<String>().into_bytes()),
        1 => (1usize..100_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        1 => (1usize..20_000).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes()),
        1 => Just(vec![b' '; romana_services::BODY_LIMIT + 1]),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => Just(Vec::new()),
    ]
}

/// Extra headers: a garbage Authorization (instead of the admin's), a wrong Content-Type, a big
/// or non-ASCII header.
fn headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let one = prop_oneof![
        proptest::sample::select(vec![
            &b"Bearer x"[..],
            b"Bearer ",
            b"Basic YWRtaW46YWRtaW4=",
            b"bearer eyJhbGciOiJub25lIn0.e30.",
            b"Bearer \xff\xfe",
            b"Bearer a.b.c.d.e",
        ])
        .prop_map(|v| ("authorization", v.to_vec())),
        (1usize..20_000).prop_map(|n| ("authorization", format!("Bearer {}", "A".repeat(n)).into_bytes())),
        proptest::sample::select(vec![
            &b"text/plain"[..],
            b"application/yaml",
            b"application/json; charset=latin1",
            b"multipart/form-data; boundary=x",
            b"\xe9t\xe9",
            b"",
        ])
        .prop_map(|v| ("content-type", v.to_vec())),
        (1usize..100_000).prop_map(|n| ("x-junk", vec![b'j'; n])),
        Just(("x-junk", b"\x80\xff".to_vec())),
    ];
    proptest::collection::vec(one, 0..3)
}

/// One answer, read by `raw`.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// One HTTP/1.1 request written byte for byte (no client normalises `..` or escapes away), the
/// body written concurrently with reading the answer: romanad may answer a body it refuses (413)
/// before reading it, and a client that stops at the failed write would never see the answer.
/// `head_only` stops after the headers (a watch streams forever).
async fn raw(addr: &str, head: Vec<u8>, body: Vec<u8>, head_only: bool) -> Result<Answer, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&head).await;
        let _ = wr.write_all(&body).await;
        // Kept open until the answer is read: a half-closed connection may be dropped unanswered.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if head_only || len.is_some_and(|n| buf.len() >= end + 4 + n) {
                    break;
                }
            }
            match rd.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after the answer (romanad closing on an unread body) loses nothing.
                Err(e) if buf.windows(4).any(|w| w == b"\r\n\r\n") => {
                    let _ = e;
                    break;
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(buf)
    };
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), read).await;
    writer.abort();
    let buf = got.map_err(|_| "no answer within 30 s".to_owned())??;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        format!("no HTTP answer: {:?}", String::from_utf8_lossy(&buf[..buf.len().min(200)]))
    })?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let mut body = buf[end + 4..].to_vec();
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.truncate(n);
    }
    Ok(Answer { status, content_type: header("content-type"), body })
}

/// What one answer should have been: `Ok(())` or what was wrong.
fn judge(status: u16, content_type: Option<&str>, body: &[u8]) -> Result<(), String> {
    if status >= 500 {
        return Err(format!("server error {status}: {}", String::from_utf8_lossy(body)));
    }
    if status < 400 {
        return Ok(());
    }
    if content_type != Some("application/json") {
        return Err(format!(
            "{status} with content type {content_type:?}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    let e: romana_api::rest::ErrorBody = serde_json::from_slice(body)
        .map_err(|e| format!("{status} without the error body ({e}): {}", String::from_utf8_lossy(body)))?;
    if e.status_code != status || e.error.is_empty() || e.error == "internal" || e.message.is_empty() {
        return Err(format!("{status} with a wrong error body: {e:?}"));
    }
    Ok(())
}

#[test]
fn hostile_requests_on_every_route_get_json_errors_and_never_5xx() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = romana_test_support::TempDir::new("rest-fuzz");
    let creds_path = dir.path().join("admin.credentials");
    let (url, token, creds) = rt.block_on(async {
        let url =
            romana_services::serve_loopback("fuzz", None, Some(creds_path.clone())).await.expect("serves");
        let creds: romana_api::rest::Credentials =
            serde_json::from_str(&std::fs::read_to_string(&creds_path).expect("credentials")).unwrap();
        let admin = romana_client::Client::from_credentials(&creds).await.expect("admin logs in");
        let token = admin.token().expect("a token");
        let topo = std::fs::read_to_string(common::topology_file("multi-zone.json")).expect("topology");
        let r = romana_client::http()
            .post(format!("{url}/topology"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(topo)
            .send()
            .await
            .expect("topology");
        assert!(r.status().is_success(), "topology: {}", r.status());
        (url, token, creds)
    });
    let token = std::cell::RefCell::new(token);
    let addr = url.trim_start_matches("http://").to_owned();
    let http = romana_client::http();
    let methods = prop_oneof![
        9 => Just(None),
        1 => proptest::sample::select(vec!["PATCH", "OPTIONS", "GET", "POST", "PUT", "DELETE"]).prop_map(Some),
    ];
    let strategy = (
        proptest::sample::select(romana_services::rest_routes::ROUTES),
        methods,
        proptest::collection::vec(path_value(), 3),
        query(),
        headers(),
        prop::option::weighted(0.7, body()),
    );
    let cases = 3000;
    let (tried, handled) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    let failures = std::cell::RefCell::new(Vec::new());
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(route, method, params, query, headers, body)| {
            let mut path = route.path.to_owned();
            for v in &params {
                if let (Some(a), Some(b)) = (path.find('{'), path.find('}')) {
                    path.replace_range(a..=b, v);
                }
            }
            let method = method.unwrap_or(route.method);
            let what = format!("{method} {:.200}{:.200}", path, query);
            let outcome = rt.block_on(async {
                let mut head =
                    format!("{method} {path}{query} HTTP/1.1\r\nHost: romanad\r\nConnection: close\r\n")
                        .into_bytes();
                let mut extra: Vec<(&str, Vec<u8>)> = vec![
                    ("authorization", format!("Bearer {}", token.borrow()).into_bytes()),
                    ("content-type", b"application/json".to_vec()),
                ];
                for (name, value) in headers {
                    extra.retain(|(n, _)| *n != name);
                    extra.push((name, value));
                }
                let body = body.unwrap_or_default();
                extra.push(("content-length", body.len().to_string().into_bytes()));
                for (name, value) in extra {
                    head.extend_from_slice(name.as_bytes());
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(&value);
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"\r\n");
                let watching = route.path == "/watch" && method == "GET";
                let a = raw(&addr, head, body, watching).await?;
                // Rotations retire the oldest key, the admin's token's in the end: log in again.
                if route.path == "/auth/keys/rotate" {
                    let admin = romana_client::Client::from_credentials(&creds).await.expect("admin logs in");
                    *token.borrow_mut() = admin.token().expect("a token");
                }
                *statuses.borrow_mut().entry(a.status).or_insert(0u32) += 1;
                // A watch that started streams forever: its status is the answer.
                if watching && a.status == 200 {
                    return Ok(());
                }
                judge(a.status, a.content_type.as_deref(), &a.body)
            });
            tried.set(tried.get() + 1);
            match outcome {
                Ok(()) => handled.set(handled.get() + 1),
                Err(e) => failures.borrow_mut().push(format!("{what}: {e:.400}")),
            }
            Ok(())
        })
        .expect("the runner completes");
    let failures = failures.into_inner();
    println!(
        "REST fuzz: tried {}, handled {}, failures {} ({} routes)",
        tried.get(),
        handled.get(),
        failures.len(),
        romana_services::rest_routes::ROUTES.len()
    );
    println!("REST fuzz: answers by status {:?}", statuses.borrow());
    let alive = rt.block_on(async {
        http.get(format!("{url}/healthz")).send().await.expect("alive").status().as_u16()
    });
    assert_eq!(alive, 200, "romanad still answers");
    assert_eq!(tried.get(), cases);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
