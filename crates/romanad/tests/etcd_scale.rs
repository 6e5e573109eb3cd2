//! romanad on a real etcd holding 100,000 addresses (about 12 MB, past gRPC's 4 MiB message
//! limit): a fresh romanad loads and serves, allocates and releases, and after an etcd restart
//! `/readyz` says 503 (the replica reloading) until it says 200, and then allocation works again.
//! The same fresh start on the embedded store, for comparison (load times: docs/benchmarks.md).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use romana_api::records::{BlockRecord, HostRecord, NameRecord};
use romana_api::rest::{AddressRequest, HostRequest};
use romana_api::topology::TopologyRequest;
use romana_ipam::spec::HostSpec;
use romana_ipam::{AllocRequest, HostOrigin, Ipam};
use romana_model::NetworkName;
use romana_store::{EmbeddedStore, Op, Store, Txn};
use romana_store_etcd::EtcdStore;
use romana_test_support::{Romanad, TempDir};

const PREFIX: &str = "/romana/";
const ADDRESSES: usize = 100_000;
const HOSTS: usize = 4;
const TOPOLOGY: &str = r#"{"networks":[{"name":"pods","cidr":"10.64.0.0/12","block_mask":26}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

/// The records romanad would have written for `ADDRESSES` allocations: the same pure IPAM, on the
/// topology and host placements read back from the store. Returns the store operations and the
/// addresses handed out (name -> address).
async fn records(store: &dyn Store) -> (Vec<Op>, BTreeMap<String, String>) {
    let topo: TopologyRequest = serde_json::from_str(TOPOLOGY).unwrap();
    let mut ipam = Ipam::new(topo.to_spec().unwrap()).unwrap();
    let (hosts, _) = store.range(&format!("{PREFIX}ipam/hosts/")).await.unwrap();
    assert_eq!(hosts.len(), HOSTS);
    for kv in &hosts {
        let rec: HostRecord = serde_json::from_slice(&kv.value).unwrap();
        let spec = HostSpec::new(rec.name.parse().unwrap(), rec.ip.parse().unwrap());
        let paths: BTreeMap<NetworkName, String> =
            rec.placements.into_iter().map(|(n, p)| (NetworkName::new(n).unwrap(), p)).collect();
        ipam.add_host_at(spec, HostOrigin::Dynamic, &paths).unwrap();
    }
    let mut blocks: BTreeMap<String, BlockRecord> = BTreeMap::new();
    let mut ops = Vec::with_capacity(ADDRESSES + ADDRESSES / 32);
    let mut held = BTreeMap::new();
    for i in 0..ADDRESSES {
        let req = AllocRequest {
            name: format!("pod-{i}").parse().unwrap(),
            host: format!("h{}", i % HOSTS).parse().unwrap(),
            tenant: format!("t{}", i % 3).parse().unwrap(),
            segment: "".parse().unwrap(),
        };
        let a = ipam.allocate(&req).unwrap();
        let key = format!("{PREFIX}ipam/blocks/{}/{}", a.network, a.block.to_string().replace('/', "_"));
        blocks
            .entry(key)
            .or_insert_with(|| BlockRecord {
                network: a.network.to_string(),
                cidr: a.block.to_string(),
                tenant: a.tenant.to_string(),
                segment: a.segment.to_string(),
                host: a.host.to_string(),
                addresses: BTreeMap::new(),
            })
            .addresses
            .insert(a.ip.to_string(), a.name.to_string());
        let nr =
            NameRecord { ip: a.ip.to_string(), network: a.network.to_string(), block: a.block.to_string() };
        ops.push(Op::put(format!("{PREFIX}ipam/names/{}", a.name), serde_json::to_vec(&nr).unwrap()));
        held.insert(a.name.to_string(), a.ip.to_string());
    }
    for (key, rec) in blocks {
        ops.push(Op::put(key, serde_json::to_vec(&rec).unwrap()));
    }
    (ops, held)
}

/// Writes `ops` in transactions of 120 (etcd allows 128), 8 at a time.
async fn write(store: &Arc<dyn Store>, ops: Vec<Op>) {
    let chunks: Vec<Vec<Op>> = ops.chunks(120).map(<[Op]>::to_vec).collect();
    let chunks = Arc::new(std::sync::Mutex::new(chunks));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, chunks) = (Arc::clone(store), Arc::clone(&chunks));
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(ops) = chunks.lock().unwrap().pop() else { return };
                assert!(store.txn(Txn::when(vec![], ops)).await.unwrap().succeeded);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn get(url: &str) -> (u16, String) {
    match romana_client::http().get(url).timeout(Duration::from_secs(15)).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// `romana_ipam_allocated_addresses` from `/metrics`.
async fn allocated(base: &str) -> u64 {
    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("romana_ipam_allocated_addresses "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address count in /metrics:\n{text}"))
}

/// Polls `/readyz` until `done(status, body)`, at most `within`; returns the last answer.
async fn readyz_until(base: &str, within: Duration, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(&format!("{base}/readyz")).await;
        if done(status, &body) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn put_bytes(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        _ => 0,
    }
}

fn in_use(held: &BTreeMap<String, String>) -> BTreeSet<&String> {
    held.values().collect()
}

fn request(name: &str, host: usize) -> AddressRequest {
    AddressRequest {
        name: name.into(),
        host: format!("h{host}"),
        tenant: "t0".into(),
        segment: String::new(),
        ip: None,
    }
}

/// The topology and `HOSTS` hosts, through romanad's REST API.
async fn setup(dir: &TempDir) {
    let admin = common::admin(dir).await;
    admin.apply_topology(&serde_json::from_str(TOPOLOGY).unwrap()).await.unwrap();
    for h in 0..HOSTS {
        let req = HostRequest {
            name: format!("h{h}"),
            ip: format!("192.168.9.{}", h + 1),
            ipv6: None,
            agent_port: None,
            tags: BTreeMap::new(),
            k8s_info: None,
        };
        admin.add_host(&req).await.unwrap();
    }
}

/// 100,000 addresses, written as romanad writes them, straight into the store.
async fn fill(store: Arc<dyn Store>) -> BTreeMap<String, String> {
    let t = Instant::now();
    let (ops, held) = records(&*store).await;
    let (keys, bytes) = (ops.len(), ops.iter().map(put_bytes).sum::<usize>());
    write(&store, ops).await;
    eprintln!("{}: wrote {keys} keys, {bytes} bytes, in {:.1} s", store.backend(), t.elapsed().as_secs_f64());
    assert!(bytes > 8 << 20, "the store is well past gRPC's 4 MiB default ({bytes} bytes)");
    assert_eq!(held.len(), ADDRESSES);
    held
}

/// Kills romanad and starts it again on the filled store; it must load everything and serve.
async fn fresh_start(d: &mut Romanad, backend: &str) {
    let t = Instant::now();
    d.restart().expect("a fresh romanad starts on the 100,000-address store");
    eprintln!(
        "fresh romanad on {backend} with {ADDRESSES} addresses ready in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(allocated(&d.url).await, ADDRESSES as u64);
    let (status, body) = get(&format!("{}/readyz", d.url)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn romanad_on_the_embedded_store_with_100000_addresses_loads_and_serves() {
    let dir = TempDir::new("scale-embedded");
    let mut d = common::embedded(&dir, &[]);
    setup(&dir).await;
    d.kill9();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let held = fill(Arc::clone(&store)).await;
    drop(store);
    fresh_start(&mut d, "the embedded store").await;
    let admin = common::admin(&dir).await;
    let a = admin.allocate(&request("new", 0), None).await.unwrap();
    assert!(!in_use(&held).contains(&a.ip), "{} handed out twice", a.ip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn romanad_on_etcd_with_100000_addresses_loads_serves_and_survives_an_etcd_restart() {
    let mut etcd = common::etcd("scale");
    let dir = TempDir::new("scale");
    let data_dir = dir.path().display().to_string();
    let mut d = common::on_etcd(&etcd, PREFIX, &["--data-dir", &data_dir]);
    setup(&dir).await;
    let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(&etcd.endpoints()).await.unwrap());
    let mut held = fill(store).await;

    // A fresh romanad loads it all and serves (it used to exit at start).
    fresh_start(&mut d, "etcd").await;
    let admin = common::admin(&dir).await;

    // Allocation and release through REST, never an address already held.
    for i in 0..20 {
        let name = format!("new-{i}");
        let a = admin.allocate(&request(&name, i % HOSTS), None).await.unwrap();
        assert!(!in_use(&held).contains(&a.ip), "{} handed out twice", a.ip);
        held.insert(name, a.ip);
    }
    for i in 0..10 {
        for name in [format!("new-{i}"), format!("pod-{i}")] {
            let gone = admin.release(&name).await.unwrap();
            assert_eq!(held.remove(&name), Some(gone.ip));
        }
    }
    assert_eq!(allocated(&d.url).await, ADDRESSES as u64 + 20 - 20);

    // etcd dies: the replica loses its watch and reloads; readiness says so, and a write is
    // answered at once with 503 rather than left to time out.
    etcd.kill9();
    let (status, body) =
        readyz_until(&d.url, Duration::from_secs(30), |s, b| s == 503 && b.contains("reloading")).await;
    assert_eq!(status, 503, "/readyz while etcd is down: {body}");
    assert!(body.contains("reloading"), "/readyz says the replica is reloading: {body}");
    let _: serde_json::Value = serde_json::from_str(&body).expect("/readyz's 503 is a JSON body");
    let err = admin.allocate(&request("while-down", 0), None).await.expect_err("no allocation without etcd");
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(err.to_string().contains("reloading"), "the 503 says why: {err}");

    // etcd comes back on the same data: /readyz turns 200 once the replica has reloaded the
    // 100,000 addresses, and from then on allocation works.
    let t = Instant::now();
    etcd.restart().expect("etcd restarts on its data directory");
    // etcd answers again, but the replica is still reading 100,000 addresses: not ready yet.
    let (status, body) = get(&format!("{}/readyz", d.url)).await;
    assert_eq!(status, 503, "/readyz while the replica reloads: {body}");
    assert!(body.contains("reloading"), "/readyz says the replica is reloading: {body}");
    let (status, body) = readyz_until(&d.url, Duration::from_secs(120), |s, _| s == 200).await;
    assert_eq!(status, 200, "/readyz after etcd came back: {body}");
    eprintln!("ready again {:.2} s after etcd restarted", t.elapsed().as_secs_f64());
    let a =
        admin.allocate(&request("after-restart", 1), None).await.expect("allocation once /readyz says 200");
    assert!(!in_use(&held).contains(&a.ip), "{} handed out twice", a.ip);
    assert_eq!(allocated(&d.url).await, ADDRESSES as u64 + 1);
    assert_eq!(
        admin.address("pod-99999").await.unwrap().name,
        "pod-99999",
        "the store's addresses are served"
    );
}
