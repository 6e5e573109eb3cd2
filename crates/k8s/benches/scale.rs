//! Scale benchmark of romana-k8s (`cargo bench -p romana-k8s --bench scale`): with 1,000
//! namespaces, 10,000 pods, 100 nodes and 1,000 NetworkPolicies in the test API server and a
//! romanad in this process, measures the first sync, the relist after a kill -9 and restart
//! (romanad already equal), the controller's memory, and a NetworkPolicy change from the API
//! server to romanad (p50/p99) against the same change posted to romanad directly (what
//! `romana policy apply` does) in the same run, and a pod label change to romanad's pod record
//! against `PUT /pods` directly. Sizes: `SCALE_NS`, `SCALE_PODS`, `SCALE_CHANGES`; `-- --quick` runs a tenth.

use std::time::{Duration, Instant};

use reqwest::Method;
use romana_client::Client;
use serde_json::{Value, json};

// The controller tests' harness: romanad in this process with the controller's service user, the
// test API server and its kubeconfig.
#[path = "../tests/common/mod.rs"]
mod common;

const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.0.0.0/8","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn netpol(ns: &str, name: &str, app: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": app}}}]}]}})
}

/// The controller as the benchmark runs it: identity `bench` (a restart takes its own lease back
/// at once), no periodic resync during the measurements.
fn start(env: &common::Env, log: &str) -> common::Controller {
    let extra = ["--lease-duration", "5", "--resync-interval", "3600"];
    common::Controller::spawn(env, "bench", &env.dir.path().join(log), &extra, "warn")
}

async fn metric(url: &str, series: &str) -> Option<f64> {
    let text = romana_client::http().get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Polls romanad until policy ns/name selects `app` in its first peer; returns when.
async fn seen(c: &Client, ns: &str, name: &str, app: &str) -> Instant {
    loop {
        if let Ok(r) = c.send(Method::GET, &format!("/networkpolicies/{ns}/{name}"), None).await
            && let Ok(v) = r.json::<Value>().await
            && v["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"] == app
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `-- --quick` (scripts/test.sh): a tenth of the size, to keep the benchmark working.
    let quick = std::env::args().any(|a| a == "--quick");
    let (ns0, pods0, changes0) = if quick { (100, 1000, 30) } else { (1000, 10_000, 300) };
    let (n_ns, n_pods, n_changes) =
        (env_usize("SCALE_NS", ns0), env_usize("SCALE_PODS", pods0), env_usize("SCALE_CHANGES", changes0));
    let n_nodes = 100;
    let env = common::Env::start_with("k8s-scale", FLAT).await;
    let (api, c) = (&env.api, &env.admin);
    let put = |v: &str, r: &str, o: Value| drop(api.put_object(v, r, o).expect("put_object"));
    put(
        "v1",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "romana-system"}}),
    );
    for i in 0..n_ns {
        put(
            "v1",
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns{i}"), "labels": {"team": format!("t{}", i % 10)}}}),
        );
        put("networking.k8s.io/v1", "networkpolicies", netpol(&format!("ns{i}"), "np", "web"));
    }
    for i in 0..n_nodes {
        put(
            "v1",
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node{i}")},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.{}.{}", i / 250, i % 250 + 1)}]}}),
        );
    }
    for i in 0..n_pods {
        put(
            "v1",
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "namespace": format!("ns{}", i % n_ns), "labels": {"app": "db", "i": i.to_string()}},
            "spec": {"nodeName": format!("node{}", i % n_nodes), "containers": [{"name": "c", "image": "x", "ports": [{"name": "pg", "containerPort": 5432}]}]}}),
        );
    }
    println!("objects: {n_ns} namespaces, {n_pods} pods, {n_nodes} nodes, {n_ns} NetworkPolicies");

    // First sync: everything written to romanad.
    let t0 = Instant::now();
    let ctl = start(&env, "c1.log");
    // Nothing is planned before every kind is listed, so the first plan holds every write.
    while metric(&ctl.metrics_url, "romana_k8s_plans_total").await.unwrap_or(0.0) < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = t0.elapsed();
    assert_eq!(c.pods().await.expect("pods").len(), n_pods, "every pod record written");
    let (rss, hwm) = rss_kib(ctl.pid().expect("running"));
    println!(
        "first sync (list + {} writes): {:.2} s; RSS {} MiB, peak {} MiB",
        n_pods + 2 * n_ns + n_nodes,
        first.as_secs_f64(),
        rss / 1024,
        hwm / 1024
    );
    drop(ctl);

    // Restart with romanad equal: relist, read romanad, plan (no writes).
    let t0 = Instant::now();
    let ctl = start(&env, "c2.log");
    while metric(&ctl.metrics_url, "romana_k8s_plans_total").await.unwrap_or(0.0) < 1.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let relist = t0.elapsed();
    let writes = metric(&ctl.metrics_url, "romana_k8s_last_plan_writes").await;
    let (rss, hwm) = rss_kib(ctl.pid().expect("running"));
    println!(
        "restart relist to converged plan: {:.2} s (writes in it: {writes:?}); RSS {} MiB, peak {} MiB",
        relist.as_secs_f64(),
        rss / 1024,
        hwm / 1024
    );

    // NetworkPolicy change: API server -> controller -> romanad, against posting to romanad.
    let mut through = Vec::new();
    let mut direct = Vec::new();
    for k in 0..n_changes {
        let ns = format!("ns{}", k % n_ns);
        let app = format!("a{k}");
        let t = Instant::now();
        put("networking.k8s.io/v1", "networkpolicies", netpol(&ns, "np", &app));
        through.push(seen(c, &ns, "np", &app).await - t);
        // Baseline: the same kind of change, posted directly, confirmed the same way.
        let app2 = format!("b{k}");
        let ns2 = format!("direct{}", k % 50);
        let t = Instant::now();
        c.apply_netpol(&netpol(&ns2, "np", &app2)).await.expect("apply");
        direct.push(seen(c, &ns2, "np", &app2).await - t);
    }
    let (tp50, tp99) = (pct(&mut through, 0.5), pct(&mut through, 0.99));
    let (dp50, dp99) = (pct(&mut direct, 0.5), pct(&mut direct, 0.99));
    println!("NetworkPolicy change, {n_changes} changes among {n_ns} policies and {n_pods} pods:");
    println!("  through the API server and romana-k8s: p50 {tp50:.2} ms, p99 {tp99:.2} ms");
    println!("  posted to romanad directly (baseline): p50 {dp50:.2} ms, p99 {dp99:.2} ms");
    println!(
        "  added by the controller path: p50 {:.2} ms, p99 {:.2} ms; ratio p99 {:.1}x",
        tp50 - dp50,
        tp99 - dp99,
        tp99 / dp99.max(1e-9)
    );

    // Pod label change: API server -> controller -> romanad's pod record (and its endpoint's
    // labels, in the same transaction), against PUT /pods directly.
    let mut through = Vec::new();
    let mut direct = Vec::new();
    for k in 0..n_changes {
        let i = k % n_pods;
        let (ns, name) = (format!("ns{}", i % n_ns), format!("p{i}"));
        let v = format!("v{k}");
        let t = Instant::now();
        put(
            "v1",
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "db", "i": i.to_string(), "v": v}},
            "spec": {"nodeName": format!("node{}", i % n_nodes), "containers": [{"name": "c", "image": "x", "ports": [{"name": "pg", "containerPort": 5432}]}]}}),
        );
        through.push(pod_seen(c, &ns, &name, &v).await - t);
        let mut p = c.pod(&ns, &name).await.expect("pod");
        let v2 = format!("w{k}");
        p.labels.insert("v".into(), v2.clone());
        let t_put = Instant::now();
        c.put_pod(&p).await.expect("put pod");
        direct.push(pod_seen(c, &ns, &name, &v2).await - t_put);
    }
    let (tp50, tp99) = (pct(&mut through, 0.5), pct(&mut through, 0.99));
    let (dp50, dp99) = (pct(&mut direct, 0.5), pct(&mut direct, 0.99));
    let text = romana_client::http()
        .get(format!("{}/metrics", ctl.metrics_url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let plan_sum = text.lines().find_map(|l| l.strip_prefix("romana_k8s_plan_seconds_sum ")).unwrap_or("0");
    let plan_n = text.lines().find_map(|l| l.strip_prefix("romana_k8s_plan_seconds_count ")).unwrap_or("0");
    let (sum, n): (f64, f64) = (plan_sum.trim().parse().unwrap_or(0.0), plan_n.trim().parse().unwrap_or(0.0));
    println!("  plans: {n} computed, mean {:.2} ms each", 1000.0 * sum / n.max(1.0));
    println!("Pod label change, {n_changes} changes among {n_pods} pods:");
    println!("  through the API server and romana-k8s: p50 {tp50:.2} ms, p99 {tp99:.2} ms");
    println!("  PUT /pods to romanad directly (baseline): p50 {dp50:.2} ms, p99 {dp99:.2} ms");
    drop(ctl);
}

/// Polls romanad until pod ns/name has label v=`v`; returns when.
async fn pod_seen(c: &Client, ns: &str, name: &str, v: &str) -> Instant {
    loop {
        if let Ok(p) = c.pod(ns, name).await
            && p.labels.get("v").map(String::as_str) == Some(v)
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}
