//! Login floods, black box (romanad processes with authentication on, real HTTP on loopback):
//! the username cap, lockout per source address as well as per user, shedding when the hashing
//! pool is full, and (ignored, run by hand) `/healthz` and heartbeat latency under a flood of
//! anonymous logins, the measurement in docs/benchmarks.md. Clients speak from distinct loopback
//! addresses (127.0.0.0/8 is all on `lo`) to stand for distinct sources.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use romana_api::rest::Credentials;
use romana_test_support::{Romanad, TempDir};
use serde_json::{Value, json};

/// A client whose connections come from `source` (a loopback address).
fn from(source: &str) -> reqwest::Client {
    romana_client::ensure_crypto();
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A login's status, its `Retry-After` and its body.
async fn login(c: &reqwest::Client, url: &str, user: &str, password: &str) -> (u16, Option<String>, Value) {
    let r = c
        .post(format!("{url}/auth/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    (status, retry, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn creds(dir: &TempDir) -> Credentials {
    serde_json::from_str(&std::fs::read_to_string(dir.path().join("admin.credentials")).unwrap()).unwrap()
}

/// An error body as the API promises it: JSON with the status and a message.
fn is_error_body(body: &Value, status: u16) -> bool {
    body["status_code"] == json!(status) && body["message"].as_str().is_some_and(|m| !m.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usernames_are_capped_before_any_work() {
    let dir = TempDir::new("login-cap");
    let d = common::embedded(&dir, &[]);
    let c = from("127.0.0.1");
    for (len, expect) in [(253, 401), (254, 400), (1 << 20, 400)] {
        let (status, _, body) = login(&c, &d.url, &"u".repeat(len), "x").await;
        assert_eq!(status, expect, "{len} bytes: {body}");
        assert!(is_error_body(&body, expect), "{len} bytes: {body}");
        if expect == 400 {
            assert!(body["message"].as_str().unwrap().contains("username"), "{body}");
        }
    }
    // Refused names were never counted: the address is not locked after many of them.
    for _ in 0..30 {
        assert_eq!(login(&c, &d.url, &"v".repeat(300), "x").await.0, 400);
    }
    assert_eq!(login(&c, &d.url, "admin", &creds(&dir).password).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_is_per_source_address_as_well_as_per_user() {
    let dir = TempDir::new("login-lock");
    let d = common::embedded(&dir, &[]);
    let password = creds(&dir).password;

    // Five wrong passwords for admin from one address lock admin there only.
    let attacker = from("127.0.0.2");
    for _ in 0..5 {
        assert_eq!(login(&attacker, &d.url, "admin", "wrong").await.0, 401);
    }
    let (status, retry, body) = login(&attacker, &d.url, "admin", &password).await;
    assert_eq!(status, 429, "{body}");
    assert!(is_error_body(&body, 429), "{body}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    assert_eq!(login(&from("127.0.0.3"), &d.url, "admin", &password).await.0, 200, "admin elsewhere");
    assert_eq!(login(&attacker, &d.url, "bob", "wrong").await.0, 401, "other users from there");

    // Spraying names from one address locks the address, for every name; not other addresses.
    let sprayer = from("127.0.0.4");
    for i in 0..20 {
        assert_eq!(login(&sprayer, &d.url, &format!("user{i}"), "wrong").await.0, 401, "user{i}");
    }
    let (status, retry, body) = login(&sprayer, &d.url, "someone-else", "wrong").await;
    assert_eq!(status, 429, "{body}");
    assert!(retry.is_some() && body["message"].as_str().unwrap().contains("from this address"), "{body}");
    assert_eq!(login(&from("127.0.0.5"), &d.url, "someone-else", "wrong").await.0, 401);

    // Thirty wrong passwords for admin from six addresses: admin is locked for remote sources
    // (tested in login_limit.rs; every address here is loopback), never for loopback.
    for a in 0..6 {
        let c = from(&format!("127.0.1.{}", a + 1));
        for _ in 0..5 {
            assert_eq!(login(&c, &d.url, "admin", "wrong").await.0, 401);
        }
    }
    assert_eq!(login(&from("127.0.0.1"), &d.url, "admin", &password).await.0, 200, "loopback is exempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_shed_with_503_and_health_stays_up() {
    let dir = TempDir::new("login-shed");
    let d = common::embedded(&dir, &[]);
    let password = creds(&dir).password;
    // 128 concurrent logins of unknown users, each from its own address (no lock applies).
    let mut tasks = Vec::new();
    for i in 0..128u32 {
        let url = d.url.clone();
        tasks.push(tokio::spawn(async move {
            let c = from(&format!("127.0.{}.{}", 2 + i / 200, 1 + i % 200));
            login(&c, &url, &format!("nobody-{i}"), "wrong").await
        }));
    }
    let health = romana_client::http().get(format!("{}/healthz", d.url)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "healthz answers during the flood");
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        *counts.entry(status).or_insert(0) += 1;
        match status {
            401 => {}
            503 => {
                assert!(is_error_body(&body, 503), "{body}");
                assert_eq!(retry.as_deref(), Some("1"), "{body}");
            }
            other => panic!("a flooded login answered {other}: {body}"),
        }
    }
    assert!(counts.get(&503).is_some_and(|n| *n > 0), "the full pool shed some logins: {counts:?}");
    assert!(counts.get(&401).is_some_and(|n| *n > 0), "and hashed others: {counts:?}");
    assert_eq!(login(&from("127.0.0.1"), &d.url, "admin", &password).await.0, 200, "a login after the flood");
}

/// p50 and p99 of `samples`.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

/// `/healthz` and heartbeat latency with 0, 16 and 64 concurrent anonymous logins, for
/// romanad as built and, when `ROMANAD_BASELINE_BIN` names another romanad binary, for that one
/// in the same run. Prints a table; asserts nothing about time. Run:
/// `ROMANAD_BASELINE_BIN=/path/to/old/romanad cargo test -p romanad --test login -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement (docs/benchmarks.md), not a test"]
async fn healthz_and_heartbeat_latency_under_a_login_flood() {
    let seconds: u64 = std::env::var("FLOOD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let mut bins = vec![("this build".to_owned(), common::BIN.to_owned())];
    if let Ok(b) = std::env::var("ROMANAD_BASELINE_BIN") {
        bins.insert(0, ("baseline".to_owned(), b));
    }
    println!(
        "| romanad | concurrent logins | /healthz p50 | p99 | heartbeat p50 | p99 | logins answered (status: count) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, bin) in bins {
        for flood in [0usize, 16, 64] {
            let dir = TempDir::new("login-flood");
            let d = Romanad::start(
                std::path::Path::new(&bin),
                &["--data-dir".into(), dir.path().display().to_string()],
            )
            .unwrap();
            let admin = romana_client::Client::from_credentials(&creds(&dir)).await.unwrap();
            let topo =
                serde_json::from_str(&std::fs::read_to_string(common::topology_file("flat.json")).unwrap())
                    .unwrap();
            admin.apply_topology(&topo).await.unwrap();
            admin
                .add_host(&romana_api::rest::HostRequest {
                    name: "h1".into(),
                    ip: "192.0.2.1".into(),
                    ipv6: None,
                    agent_port: None,
                    tags: Default::default(),
                    k8s_info: None,
                })
                .await
                .unwrap();
            let token = admin.token().unwrap();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            // Each flooder speaks from 8 addresses in turn, a distinct name each time: an
            // attacker with many addresses, whom no lock slows down (clients made beforehand).
            let clients: Vec<Vec<reqwest::Client>> = (0..flood)
                .map(|f| (0..8).map(|k| from(&format!("127.{}.{}.1", 10 + f, 1 + k))).collect())
                .collect();
            let mut flooders = Vec::new();
            for (f, clients) in clients.into_iter().enumerate() {
                let (url, stop) = (d.url.clone(), std::sync::Arc::clone(&stop));
                flooders.push(tokio::spawn(async move {
                    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                    let mut n = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let c = &clients[n % clients.len()];
                        let r = c
                            .post(format!("{url}/auth/login"))
                            .json(&json!({"username": format!("flood-{f}-{n}"), "password": "wrong"}))
                            .send()
                            .await;
                        *statuses.entry(r.map_or(0, |r| r.status().as_u16())).or_default() += 1;
                        n += 1;
                    }
                    statuses
                }));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let probe = romana_client::http();
            let (mut health, mut beat) = (Vec::new(), Vec::new());
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                let t = Instant::now();
                let r = probe.get(format!("{}/healthz", d.url)).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                health.push(t.elapsed());
                let t = Instant::now();
                let r =
                    probe.put(format!("{}/hosts/h1/alive", d.url)).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                beat.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            for f in flooders {
                for (s, n) in f.await.unwrap() {
                    *statuses.entry(s).or_default() += n;
                }
            }
            let (h50, h99) = percentiles(&mut health);
            let (b50, b99) = percentiles(&mut beat);
            let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
            println!(
                "| {label} | {flood} | {} | {} | {} | {} | {statuses:?} |",
                ms(h50),
                ms(h99),
                ms(b50),
                ms(b99)
            );
        }
    }
}

/// romanad's resident memory before and after 200 logins with distinct 1 MiB usernames, and
/// again a minute later, for romanad as built and (with `ROMANAD_BASELINE_BIN`) another binary.
/// Prints a table; asserts nothing. Run as the latency measurement above, filtered to `rss`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (docs/benchmarks.md), not a test"]
async fn rss_after_logins_with_long_usernames() {
    let mut bins = vec![("this build".to_owned(), common::BIN.to_owned())];
    if let Ok(b) = std::env::var("ROMANAD_BASELINE_BIN") {
        bins.insert(0, ("baseline".to_owned(), b));
    }
    let rss = |pid: u32| -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb / 1024.0
    };
    println!("| romanad | RSS before (MiB) | after 200 logins | 60 s later | statuses |");
    println!("|---|---|---|---|---|");
    for (label, bin) in bins {
        let dir = TempDir::new("login-rss");
        let d = Romanad::start(
            std::path::Path::new(&bin),
            &["--data-dir".into(), dir.path().display().to_string()],
        )
        .unwrap();
        let pid = d.pid().unwrap();
        let before = rss(pid);
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for i in 0..200u32 {
            // Distinct names from distinct addresses, so that no lock cuts the run short.
            let c = from(&format!("127.0.{}.{}", 1 + i / 200, 1 + i % 200));
            let name = format!("{i:06}{}", "n".repeat((1 << 20) - 6));
            *statuses.entry(login(&c, &d.url, &name, "wrong").await.0).or_default() += 1;
        }
        let after = rss(pid);
        tokio::time::sleep(Duration::from_secs(60)).await;
        println!("| {label} | {before:.1} | {after:.1} | {:.1} | {statuses:?} |", rss(pid));
    }
}
