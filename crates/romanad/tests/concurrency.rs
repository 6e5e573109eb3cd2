//! Concurrency and crashes: parallel clients never get a duplicate or lose an allocation, two
//! replicas on one etcd agree, and `kill -9` in the middle (rounds of it, on the embedded store
//! and on etcd) loses, moves or duplicates nothing acknowledged and leaves nothing half-allocated.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use romana_api::records::{BlockRecord, NameRecord};
use romana_api::rest::{AddressRequest, HostRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_store::{EmbeddedStore, Store};
use romana_store_etcd::EtcdStore;
use romana_test_support::{Romanad, TempDir};

const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

async fn setup(c: &Client, hosts: usize) {
    let topo: TopologyRequest = serde_json::from_str(FLAT).expect("topology");
    c.apply_topology(&topo).await.expect("topology");
    for h in 0..hosts {
        let req = HostRequest {
            name: format!("h{h}"),
            ip: format!("192.168.7.{}", h + 1),
            ipv6: None,
            agent_port: None,
            tags: BTreeMap::new(),
            k8s_info: None,
        };
        c.add_host(&req).await.expect("host");
    }
}

/// `clients` tasks, each with its own client over `urls` (round robin), allocate `per` addresses each.
async fn storm(urls: &[String], token: Option<String>, clients: usize, per: usize) -> Vec<(String, String)> {
    let mut tasks = Vec::new();
    for t in 0..clients {
        let url = urls[t % urls.len()].clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::new(vec![url]);
            c.set_token(token);
            let mut got = Vec::new();
            for i in 0..per {
                let name = format!("c{t}-{i}");
                let req = AddressRequest {
                    name: name.clone(),
                    host: format!("h{}", (t + i) % 4),
                    tenant: format!("t{}", t % 3),
                    segment: String::new(),
                    ip: None,
                };
                // 503 means "nothing happened, try again" (the replicas gave up on a contended
                // block); a client retries it, as the CNI plugin will. Anything else fails.
                let mut tries = 0;
                let a = loop {
                    match c.allocate(&req, None).await {
                        Ok(a) => break a,
                        Err(e) if e.status() == Some(503) && tries < 5 => {
                            tries += 1;
                            eprintln!("{name}: {e}; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(50 * tries)).await;
                        }
                        Err(e) => panic!("{name}: {e}"),
                    }
                };
                got.push((name, a.ip));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

fn assert_unique(all: &[(String, String)]) {
    let ips: BTreeSet<&String> = all.iter().map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), all.len(), "an address was handed out twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_one_thousand_allocations_embedded() {
    let dir = TempDir::new("storm");
    let d = common::embedded(&dir, &[]);
    let c = common::admin(&dir).await;
    setup(&c, 4).await;
    let all = storm(std::slice::from_ref(&d.url), c.token(), 50, 20).await;
    assert_eq!(all.len(), 1000);
    assert_unique(&all);
    let listed = c.addresses("").await.expect("list");
    assert_eq!(listed.len(), 1000, "no allocation lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_etcd_agree() {
    let etcd = common::etcd("replicas");
    let (da, db) = (TempDir::new("rep-a"), TempDir::new("rep-b"));
    let a = common::on_etcd(&etcd, "/romana-rep/", &["--data-dir", &da.path().display().to_string()]);
    let b = common::on_etcd(&etcd, "/romana-rep/", &["--data-dir", &db.path().display().to_string()]);
    let admin = common::admin(&da).await;
    setup(&admin, 4).await;
    // b learns the topology and hosts through the watch, and accepts a's tokens (same keys).
    let cb = common::same_token(&admin, &b.url);
    for _ in 0..50 {
        if cb.hosts().await.expect("hosts").hosts.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = storm(&[a.url.clone(), b.url.clone()], admin.token(), 50, 20).await;
    assert_eq!(all.len(), 1000);
    assert_unique(&all);
    // Both replicas converge on the same 1000 allocations.
    for url in [&a.url, &b.url] {
        let c = common::same_token(&admin, url);
        let mut n = 0;
        for _ in 0..100 {
            n = c.addresses("").await.expect("list").len();
            if n == 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(n, 1000, "replica {url} sees every allocation");
    }
    let la: BTreeSet<(String, String)> = common::same_token(&admin, &a.url)
        .addresses("")
        .await
        .expect("a")
        .into_iter()
        .map(|x| (x.name, x.ip))
        .collect();
    let lb: BTreeSet<(String, String)> = common::same_token(&admin, &b.url)
        .addresses("")
        .await
        .expect("b")
        .into_iter()
        .map(|x| (x.name, x.ip))
        .collect();
    assert_eq!(la, lb);
    assert_eq!(la, all.into_iter().collect());

    // A client given both replicas fails over when one dies, and Root no longer lists it.
    let both = Client::new(vec![a.url.clone(), b.url.clone()]);
    both.set_token(admin.token());
    let mut a = a;
    a.kill9();
    let req = AddressRequest {
        name: "after-failover".into(),
        host: "h0".into(),
        tenant: "t0".into(),
        segment: String::new(),
        ip: None,
    };
    assert!(both.allocate(&req, None).await.is_ok(), "allocation through the surviving replica");
    let mut listed = usize::MAX;
    for _ in 0..150 {
        listed = both.discover("ipam").await.expect("discover").len();
        if listed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed, 1, "the dead replica's registration expires with its lease");
}

/// A bigger network for the `kill -9` rounds, so that long runs never run out of addresses.
const KILL9_TOPOLOGY: &str = r#"{"networks":[{"name":"pods","cidr":"10.32.0.0/12","block_mask":26}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

/// One round of allocations cut by `kill -9`.
#[derive(Debug, Default)]
struct Round {
    /// Requests sent.
    tried: usize,
    /// Requests answered with an address.
    acked: usize,
    /// Acknowledged (in this or an earlier round) and missing after the restart.
    lost: usize,
    /// Acknowledged and held at another address after the restart.
    moved: usize,
    /// Addresses held by more than one name after the restart.
    duplicated: usize,
}

/// `rounds` times: 20 clients allocate until romanad is killed with SIGKILL (at a different
/// moment each round), then romanad restarts on the same store and every acknowledged allocation
/// is checked, with those of earlier rounds. Returns the counts per round.
async fn kill9_rounds(d: &mut Romanad, dir: &TempDir, rounds: usize) -> Vec<Round> {
    let c = common::admin(dir).await;
    let topo: TopologyRequest = serde_json::from_str(KILL9_TOPOLOGY).expect("topology");
    c.apply_topology(&topo).await.expect("topology");
    for h in 0..4 {
        let req = HostRequest {
            name: format!("h{h}"),
            ip: format!("192.168.8.{}", h + 1),
            ipv6: None,
            agent_port: None,
            tags: BTreeMap::new(),
            k8s_info: None,
        };
        c.add_host(&req).await.expect("host");
    }
    let mut all_acked: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for round in 0..rounds {
        let c = Arc::new(common::admin(dir).await);
        let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
        let tried = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..20 {
            let (c, acked, tried) = (Arc::clone(&c), Arc::clone(&acked), Arc::clone(&tried));
            tasks.push(tokio::spawn(async move {
                for i in 0..100_000 {
                    let name = format!("r{round}-k{t}-{i}");
                    let req = AddressRequest {
                        name: name.clone(),
                        host: format!("h{}", i % 4),
                        tenant: format!("t{}", t % 2),
                        segment: String::new(),
                        ip: None,
                    };
                    tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match c.allocate(&req, None).await {
                        Ok(a) => acked.lock().expect("lock").push((name, a.ip)),
                        Err(_) => return,
                    }
                }
            }));
        }
        // Kill at a different point of the batching each round.
        tokio::time::sleep(Duration::from_millis(400 + 550 * (round as u64 % 3))).await;
        d.kill9();
        for t in tasks {
            let _ = t.await;
        }
        let acked = acked.lock().expect("lock").clone();
        assert!(
            acked.len() > 10,
            "round {round}: allocations were running when romanad was killed ({})",
            acked.len()
        );
        all_acked.extend(acked.iter().cloned());

        // Every acknowledged allocation is there after a restart, at the same address.
        d.restart().expect("restart");
        let c = common::admin(dir).await;
        let listed: BTreeMap<String, String> =
            c.addresses("").await.expect("list").into_iter().map(|a| (a.name, a.ip)).collect();
        let mut r = Round {
            tried: tried.load(std::sync::atomic::Ordering::Relaxed),
            acked: acked.len(),
            ..Round::default()
        };
        for (name, ip) in &all_acked {
            match listed.get(name) {
                None => r.lost += 1,
                Some(held) if held != ip => r.moved += 1,
                Some(_) => {}
            }
        }
        let ips: BTreeSet<&String> = listed.values().collect();
        r.duplicated = listed.len() - ips.len();
        eprintln!(
            "round {round}: tried {} acknowledged {} lost {} moved {} duplicated {} (held after restart: {})",
            r.tried,
            r.acked,
            r.lost,
            r.moved,
            r.duplicated,
            listed.len()
        );
        out.push(r);
    }
    out
}

fn assert_rounds(backend: &str, rounds: &[Round]) {
    let sum = |f: fn(&Round) -> usize| rounds.iter().map(f).sum::<usize>();
    eprintln!(
        "{backend}, {} rounds: tried {} acknowledged {} lost {} moved {} duplicated {}",
        rounds.len(),
        sum(|r| r.tried),
        sum(|r| r.acked),
        sum(|r| r.lost),
        sum(|r| r.moved),
        sum(|r| r.duplicated)
    );
    for (i, r) in rounds.iter().enumerate() {
        assert_eq!(
            (r.lost, r.moved, r.duplicated),
            (0, 0, 0),
            "{backend} round {i}: nothing acknowledged lost, moved or duplicated: {r:?}"
        );
    }
}

/// Nothing half-done in the store: every name record matches a block record and back, and
/// romanad serves exactly that.
async fn assert_store_agrees(store: &dyn Store, prefix: &str, served: &BTreeMap<String, String>) {
    let (names, _) = store.range(&format!("{prefix}ipam/names/")).await.expect("names");
    let (blocks, _) = store.range(&format!("{prefix}ipam/blocks/")).await.expect("blocks");
    let mut in_blocks: BTreeMap<String, String> = BTreeMap::new();
    for kv in &blocks {
        let b: BlockRecord = serde_json::from_slice(&kv.value).expect("block record");
        for (ip, name) in b.addresses {
            assert!(in_blocks.insert(name, ip).is_none(), "a name in two blocks");
        }
    }
    let by_name: BTreeMap<String, String> = names
        .iter()
        .map(|kv| {
            let r: NameRecord = serde_json::from_slice(&kv.value).expect("name record");
            (kv.key.trim_start_matches(&format!("{prefix}ipam/names/")).to_owned(), r.ip)
        })
        .collect();
    assert_eq!(&by_name, &in_blocks, "name records and block records agree");
    assert_eq!(&by_name, served, "romanad serves exactly what is stored");
}

/// Rounds of `kill -9` per test: `ROMANA_KILL9_ROUNDS` (default 3).
fn kill9_round_count() -> usize {
    std::env::var("ROMANA_KILL9_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_loses_nothing_acknowledged() {
    let dir = TempDir::new("kill9");
    let mut d = common::embedded(&dir, &[]);
    let rounds = kill9_rounds(&mut d, &dir, kill9_round_count()).await;
    assert_rounds("embedded", &rounds);
    let c = common::admin(&dir).await;
    let served: BTreeMap<String, String> =
        c.addresses("").await.expect("list").into_iter().map(|a| (a.name, a.ip)).collect();
    drop(d);
    let store = EmbeddedStore::open(dir.path()).await.expect("open");
    assert_store_agrees(&store, "/romana/", &served).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_loses_nothing_acknowledged_on_etcd() {
    let etcd = common::etcd("kill9");
    let dir = TempDir::new("kill9-etcd");
    let mut d = common::on_etcd(&etcd, "/romana-k9/", &["--data-dir", &dir.path().display().to_string()]);
    let rounds = kill9_rounds(&mut d, &dir, kill9_round_count()).await;
    assert_rounds("etcd", &rounds);
    let c = common::admin(&dir).await;
    let served: BTreeMap<String, String> =
        c.addresses("").await.expect("list").into_iter().map(|a| (a.name, a.ip)).collect();
    drop(d);
    let store = EtcdStore::connect(&etcd.endpoints()).await.expect("connect");
    assert_store_agrees(&store, "/romana-k9/", &served).await;
}
