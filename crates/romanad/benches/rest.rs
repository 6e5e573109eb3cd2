//! REST allocation benchmark: allocations/s and p50/p99 latency through romanad on the embedded
//! store and on etcd, romanad's resident memory with 1,000 hosts and 100,000 addresses, and a
//! Romana 2.0-style baseline (the whole IPAM in one key, read-modify-CAS per allocation) on the
//! same store in the same run. `cargo bench -p romanad --bench rest [-- --quick]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, HostRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_store::{Compare, EmbeddedStore, Op, Store, Txn};
use romana_store_etcd::server::EtcdServer;
use romana_test_support::{Romanad, TempDir};

const TOPOLOGY: &str = r#"{"networks":[{"name":"pods","cidr":"10.0.0.0/8","block_mask":27}],
 "topologies":[{"networks":["pods"],"map":[{"name":"r0","groups":[]},{"name":"r1","groups":[]},{"name":"r2","groups":[]},{"name":"r3","groups":[]},
 {"name":"r4","groups":[]},{"name":"r5","groups":[]},{"name":"r6","groups":[]},{"name":"r7","groups":[]}]}]}"#;

const ETCD_CLIENTS: usize = 8;
/// etcd rounds; the median round is reported (the machine is shared and noisy).
const ETCD_ROUNDS: usize = 3;

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// The admin's token from the credentials romanad wrote (`None` with `--auth off`).
async fn token(dir: &TempDir) -> Option<String> {
    let text = std::fs::read_to_string(dir.path().join("admin.credentials")).ok()?;
    let creds: romana_api::rest::Credentials = serde_json::from_str(&text).expect("credentials");
    let c = Client::from_credentials(&creds).await.expect("login");
    c.token()
}

fn client(url: &str, token: &Option<String>) -> Client {
    let c = Client::new(vec![url.to_owned()]);
    c.set_token(token.clone());
    c
}

async fn setup(url: &str, token: &Option<String>, hosts: usize) {
    let c = client(url, token);
    let t: TopologyRequest = serde_json::from_str(TOPOLOGY).expect("topology");
    c.apply_topology(&t).await.expect("apply");
    for h in 0..hosts {
        let req = HostRequest {
            name: format!("node-{h:04}"),
            ip: format!("192.168.{}.{}", h / 250, h % 250 + 1),
            ipv6: None,
            agent_port: None,
            tags: BTreeMap::new(),
            k8s_info: None,
        };
        c.add_host(&req).await.expect("host");
    }
}

/// `count` allocations from `clients` concurrent clients; names start at `start`.
async fn allocate(
    url: &str,
    token: &Option<String>,
    hosts: usize,
    clients: usize,
    start: usize,
    count: usize,
) -> Run {
    let c = Arc::new(client(url, token));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let c = Arc::clone(&c);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = start + k;
            while i < start + count {
                let req = AddressRequest {
                    name: format!("pod-{i:07}"),
                    host: format!("node-{:04}", i % hosts),
                    tenant: format!("t{}", i % 5),
                    segment: "default".into(),
                    ip: None,
                };
                let s = Instant::now();
                c.allocate(&req, None).await.expect("allocation");
                lat.push(s.elapsed());
                i += clients;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort();
    Run { rate: count as f64 / secs, p50: lat[lat.len() / 2], p99: lat[lat.len() * 99 / 100] }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Romana 2.0's shape: every allocation reads the whole document, adds one address and writes it
/// back with compare-and-swap.
async fn document_baseline(store: &dyn Store, existing: usize, count: usize) -> f64 {
    let key = "/baseline/ipam/data";
    let doc: BTreeMap<String, String> = (0..existing)
        .map(|i| (format!("pod-{i:07}"), format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)))
        .collect();
    store
        .txn(Txn::when(vec![], vec![Op::put(key, serde_json::to_vec(&doc).expect("doc"))]))
        .await
        .expect("seed");
    let t0 = Instant::now();
    for i in existing..existing + count {
        loop {
            let kv = store.get(key).await.expect("get").expect("doc");
            let mut doc: BTreeMap<String, String> = serde_json::from_slice(&kv.value).expect("parse");
            doc.insert(format!("pod-{i:07}"), format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255));
            let txn = Txn::when(
                vec![Compare::unchanged(key, kv.mod_revision)],
                vec![Op::put(key, serde_json::to_vec(&doc).expect("doc"))],
            );
            if store.txn(txn).await.expect("txn").succeeded {
                break;
            }
        }
    }
    count as f64 / t0.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (hosts, warm, measured, total, etcd_count, clients) =
        if quick { (100, 500, 2_000, 3_000, 1_000, 32) } else { (1_000, 5_000, 20_000, 100_000, 10_000, 64) };
    let bin = Path::new(env!("CARGO_BIN_EXE_romanad"));

    // Embedded store, authentication on (the default).
    let dir = TempDir::new("bench-embedded");
    let d = Romanad::start(bin, &["--data-dir".into(), dir.path().display().to_string()]).expect("romanad");
    let tok = token(&dir).await;
    setup(&d.url, &tok, hosts).await;
    allocate(&d.url, &tok, hosts, clients, 0, warm).await;
    let emb = allocate(&d.url, &tok, hosts, clients, warm, measured).await;
    allocate(&d.url, &tok, hosts, clients, warm + measured, total - warm - measured).await;
    let rss = rss_mib(d.pid().expect("pid"));
    drop(d);

    // The same with authentication off, for the cost of checking tokens. Two alternating
    // rounds each (on, off) so that machine noise hits both.
    let mut on_off = [Vec::new(), Vec::new()];
    for round in 0..2 {
        // Alternate which goes first, so that order effects cancel.
        let order: [(usize, &str); 2] =
            if round % 2 == 0 { [(0, "on"), (1, "off")] } else { [(1, "off"), (0, "on")] };
        for (i, auth) in order.iter() {
            let i = *i;
            let dir = TempDir::new("bench-auth");
            let args =
                vec!["--data-dir".into(), dir.path().display().to_string(), "--auth".into(), (*auth).into()];
            let d = Romanad::start(bin, &args).expect("romanad");
            let tok = token(&dir).await;
            setup(&d.url, &tok, hosts.min(100)).await;
            allocate(&d.url, &tok, hosts.min(100), clients, 0, warm).await;
            let count = std::env::var("ROMANA_BENCH_AUTH_COUNT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(measured / 2);
            on_off[i].push(allocate(&d.url, &tok, hosts.min(100), clients, warm, count).await.rate);
        }
    }
    let auth_on = on_off[0].iter().sum::<f64>() / on_off[0].len() as f64;
    let auth_off = on_off[1].iter().sum::<f64>() / on_off[1].len() as f64;

    // etcd.
    let etcd = EtcdServer::start("bench").expect("etcd").expect("etcd installed");
    let edir = TempDir::new("bench-etcd");
    let args = vec![
        "--etcd-endpoints".into(),
        etcd.endpoint.clone(),
        "--prefix".into(),
        "/bench/".into(),
        "--data-dir".into(),
        edir.path().display().to_string(),
    ];
    let d = Romanad::start(bin, &args).expect("romanad");
    let tok = token(&edir).await;
    setup(&d.url, &tok, hosts.min(200)).await;
    allocate(&d.url, &tok, hosts.min(200), clients, 0, etcd_count / 5).await;
    // etcd is measured at a moderate concurrency: its latency target is per request.
    let mut rounds = Vec::new();
    for r in 0..ETCD_ROUNDS {
        rounds.push(
            allocate(&d.url, &tok, hosts.min(200), ETCD_CLIENTS, etcd_count / 5 + r * etcd_count, etcd_count)
                .await,
        );
    }
    rounds.sort_by_key(|r| r.p99);
    let et = rounds.swap_remove(ETCD_ROUNDS / 2);
    drop(d);

    // The 2.0-style single document on the embedded store, same machine, same run.
    let bdir = TempDir::new("bench-baseline");
    let store = EmbeddedStore::open(bdir.path()).await.expect("store");
    let base_1k = document_baseline(&store, 1_000, if quick { 100 } else { 500 }).await;
    let base_10k = document_baseline(&store, 10_000, if quick { 50 } else { 200 }).await;

    println!("REST benchmark: {hosts} hosts, {clients} concurrent clients, /27 blocks, 5 tenants");
    println!("| measure | value | target or baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| embedded: allocations/s ({measured} after {warm}) | {:.0} | target 5,000 | {:.2} |",
        emb.rate,
        emb.rate / 5000.0
    );
    println!("| embedded: latency p50 / p99 (ms) | {:.2} / {:.2} | - | - |", ms(emb.p50), ms(emb.p99));
    println!(
        "| etcd: allocations/s ({etcd_count}, {ETCD_CLIENTS} clients, median of {ETCD_ROUNDS} rounds) | {:.0} | target 1,000 | {:.2} |",
        et.rate,
        et.rate / 1000.0
    );
    println!(
        "| etcd: latency p50 / p99 (ms) | {:.2} / {:.2} | target p99 20 ms | {:.2} |",
        ms(et.p50),
        ms(et.p99),
        ms(et.p99) / 20.0
    );
    println!(
        "| romanad resident memory with {hosts} hosts and {total} addresses (MiB) | {rss:.1} | target 100 | {:.2} |",
        rss / 100.0
    );
    println!(
        "| embedded with authentication on / off: allocations/s (mean of 2 rounds each) | {auth_on:.0} / {auth_off:.0} | target ratio 0.9 | {:.2} |",
        auth_on / auth_off
    );
    println!(
        "| 2.0-style single document, 1,000 addresses: allocations/s | {base_1k:.0} | embedded REST above | {:.1}x |",
        emb.rate / base_1k
    );
    println!(
        "| 2.0-style single document, 10,000 addresses: allocations/s | {base_10k:.0} | embedded REST above | {:.1}x |",
        emb.rate / base_10k
    );
}
