//! romanad's allocation latency on a loaded cluster (issue 22): `POST /addresses` then
//! `PUT /endpoints/<name>` (what a CNI ADD asks of romanad), one after the other, timed from the
//! client, on an empty cluster, on a loaded one (10,000 endpoints with records, 1,000
//! NetworkPolicies, 100 hosts; `-- --quick`: 2,000 and 200; `-- --scale`: 50,000 and 5,000) while idle, and on the loaded one
//! while a writer rewrites a NetworkPolicy and relabels an endpoint in a loop (as the policy
//! bench's probes do). Each phase runs for at least `--seconds=N` (default 12: more than two of
//! the consistency check's 5 s passes) and `--samples=N` (default 300) allocations.
//!
//! romanad runs in this process (`serve_loopback`, memory store, 2 runtime workers like the
//! policy bench's); its debug lines (`ipam batch`: queued, catch-up and handling times per batch
//! of the IPAM actor; `consistency pass`; `policy write`) are collected per phase, so the
//! output says where a slow allocation's time went.
//!
//! `cargo bench -p romana-cni --bench alloc_tail [-- --quick]` (no root; in the CNI crate beside the
//! policy bench, whose end-to-end ADD it takes apart, and with the same dependencies).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, Credentials, EndpointInfo, HostRequest, TenantRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_test_support::TempDir;
use serde_json::json;

const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28,"nat_outgoing":false}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// romanad's log lines, kept in memory and cut into phases by the bench.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// Everything logged since the last call.
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner())))
            .into_owned()
    }
}

/// The values of `field=` on the lines containing `what`.
fn field(log: &str, what: &str, name: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            l.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<f64>().ok())
        })
        .collect()
}

fn summary(log: &str) -> String {
    let show = |what: &str, name: &str| {
        let v = field(log, what, name);
        format!(
            "{name} p50 {:.2} p99 {:.2} max {:.2} (n={})",
            pct(&v, 0.5),
            pct(&v, 0.99),
            pct(&v, 1.0),
            v.len()
        )
    };
    let fenced = log.lines().filter(|l| l.contains("ipam batch") && l.contains("fenced=true")).count();
    format!(
        "    ipam batches: {}; {}; {}; fenced {fenced}\n    consistency passes: {}; {}\n    route passes: {}; {}; {}\n    policy writes: {}",
        show("ipam batch", "queued_ms="),
        show("ipam batch", "catch_up_ms="),
        show("ipam batch", "handle_ms="),
        show("consistency pass", "gather_ms="),
        show("consistency pass", "check_ms="),
        show("route pass", "recomputed="),
        show("route pass", "compute_ms="),
        show("route pass", "publish_ms="),
        show("policy write", "total_ms="),
    )
}

fn netpol(j: usize, role: &str) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("p{j}"), "namespace": format!("ns{}", j % 10)},
        "spec": {"podSelector": {"matchLabels": {"app": format!("app{}", j % 100)}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": role}}}],
                              "ports": [{"port": 80 + (j % 50)}]}]}})
}

async fn endpoint(c: &Client, name: String, host: &str, tenant: &str, role: &str) -> (f64, f64) {
    let req = AddressRequest {
        name: name.clone(),
        host: host.into(),
        tenant: tenant.into(),
        segment: String::new(),
        ip: None,
    };
    let t = Instant::now();
    let a = c.allocate(&req, None).await.expect("allocate");
    let alloc = t.elapsed();
    let labels = [("app".to_owned(), "admit".to_owned()), ("role".to_owned(), role.to_owned())].into();
    let e = EndpointInfo {
        name,
        ip: a.ip,
        tenant: tenant.into(),
        segment: String::new(),
        host: host.into(),
        labels,
        ports: vec![],
        pod: String::new(),
    };
    c.put_endpoint(&e).await.expect("endpoint");
    (alloc.as_secs_f64() * 1e3, (t.elapsed() - alloc).as_secs_f64() * 1e3)
}

/// The synthetic cluster of the policy bench: 100 hosts, 10 tenants, `endpoints` allocations
/// with records (16 loaders), `policies` NetworkPolicies.
async fn load(c: &Arc<Client>, endpoints: usize, policies: usize) {
    for k in 0..10u32 {
        c.create_tenant(&TenantRequest {
            name: format!("ns{k}"),
            external_id: String::new(),
            labels: Default::default(),
            isolation: String::new(),
        })
        .await
        .expect("tenant");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in (0..endpoints).collect::<Vec<_>>().chunks(endpoints.div_ceil(16)) {
        let (c, chunk) = (c.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for i in chunk {
                let role = format!("r{}", i % 7);
                endpoint(&c, format!("bench:{i}"), &format!("s{}", i % 100), &format!("ns{}", i % 10), &role)
                    .await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("loader");
    }
    for j in 0..policies {
        c.apply_netpol(&netpol(j, &format!("r{}", j % 7))).await.expect("policy");
    }
}

/// Allocations with records on host `s0` until both `samples` and `seconds` are reached.
async fn phase(c: &Client, tag: &str, samples: usize, seconds: u64) -> (Vec<f64>, Vec<f64>) {
    let (mut alloc, mut reg) = (Vec::new(), Vec::new());
    let t = Instant::now();
    let mut i = 0;
    while i < samples || t.elapsed() < Duration::from_secs(seconds) {
        let (a, r) = endpoint(c, format!("{tag}:{i}"), "s0", "bench", "new").await;
        alloc.push(a);
        reg.push(r);
        i += 1;
    }
    (alloc, reg)
}

fn report(name: &str, (alloc, reg): &(Vec<f64>, Vec<f64>), log: &str) {
    println!(
        "  {name}: POST /addresses p50 {:.2} ms p99 {:.2} ms max {:.2} ms; PUT /endpoints p50 {:.2} p99 {:.2} ({} samples)",
        pct(alloc, 0.5),
        pct(alloc, 0.99),
        pct(alloc, 1.0),
        pct(reg, 0.5),
        pct(reg, 0.99),
        alloc.len()
    );
    println!("{}", summary(log));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let arg = |name: &str, default: u64| {
        std::env::args()
            .find_map(|a| a.strip_prefix(name).map(|n| n.parse().expect("a number")))
            .unwrap_or(default)
    };
    let (n_endpoints, n_policies) = match (quick, std::env::args().any(|a| a == "--scale")) {
        (true, _) => (2_000, 200),
        (false, true) => (50_000, 5_000),
        (false, false) => (10_000, 1_000),
    };
    let samples = arg("--samples=", 300) as usize;
    let seconds = arg("--seconds=", 12);
    let lines = Lines::default();
    let sink = lines.clone();
    tracing_subscriber::fmt()
        .with_env_filter(
            "warn,romana_services::ipam_sync=debug,romana_services::reclaim=debug,romana_services::netpols=debug,\
             romana_services::route_manager=debug",
        )
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let dir = TempDir::new("alloc-tail");
    let creds = dir.path().join("admin.credentials");
    romana_services::serve_loopback(
        "alloc-tail",
        Some(serde_json::from_str::<TopologyRequest>(FLAT).expect("topology")),
        Some(creds.clone()),
    )
    .await
    .expect("romanad");
    let creds: Credentials =
        serde_json::from_str(&std::fs::read_to_string(&creds).expect("credentials")).expect("credentials");
    let admin = Arc::new(Client::from_credentials(&creds).await.expect("login"));
    for h in 0..100 {
        let req = HostRequest {
            name: format!("s{h}"),
            ip: format!("198.18.0.{}", h + 1),
            ipv6: None,
            agent_port: None,
            tags: Default::default(),
            k8s_info: None,
        };
        admin.add_host(&req).await.expect("host");
    }
    admin
        .create_tenant(&TenantRequest {
            name: "bench".into(),
            external_id: String::new(),
            labels: Default::default(),
            isolation: String::new(),
        })
        .await
        .expect("tenant");

    lines.take();
    let empty = phase(&admin, "empty", samples, seconds).await;
    let empty_log = lines.take();

    let t = Instant::now();
    load(&admin, n_endpoints, n_policies).await;
    let loaded_in = t.elapsed();
    lines.take();
    let idle = phase(&admin, "idle", samples, seconds).await;
    let idle_log = lines.take();

    // The writer: the policy bench's probes (a policy rewritten each way, an endpoint relabelled
    // each way), one write every 5 ms, while the allocations run.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (admin.clone(), stop.clone());
        tokio::spawn(async move {
            let mut k = 0usize;
            let mut e = EndpointInfo {
                name: "bench:0".into(),
                ip: String::new(),
                tenant: "ns0".into(),
                segment: String::new(),
                host: "s0".into(),
                labels: Default::default(),
                ports: vec![],
                pod: String::new(),
            };
            let a = c.address("bench:0").await.expect("bench:0");
            e.ip = a.ip;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let role = if k.is_multiple_of(2) { "nobody" } else { "r0" };
                if (k / 2).is_multiple_of(2) {
                    c.apply_netpol(&netpol(0, role)).await.expect("policy write");
                } else {
                    e.labels =
                        [("app".to_owned(), "app0".to_owned()), ("role".to_owned(), role.to_owned())].into();
                    c.put_endpoint(&e).await.expect("relabel");
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            k
        })
    };
    let busy = phase(&admin, "busy", samples, seconds).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    let busy_log = lines.take();

    println!(
        "romanad allocation on a loaded cluster: {n_policies} NetworkPolicies, {n_endpoints} endpoints on 100 hosts (loaded in {:.1} s)",
        loaded_in.as_secs_f64()
    );
    report("empty cluster", &empty, &empty_log);
    report("loaded, idle", &idle, &idle_log);
    report(&format!("loaded, {writes} policy writes and relabels meanwhile"), &busy, &busy_log);
    println!(
        "  ratio loaded+writes / empty: POST /addresses p50 {:.2}, p99 {:.2}",
        pct(&busy.0, 0.5) / pct(&empty.0, 0.5),
        pct(&busy.0, 0.99) / pct(&empty.0, 0.99)
    );
}
