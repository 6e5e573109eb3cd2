//! Kubernetes write -> enforced on a host, end to end: the test API server, the release
//! `romana-k8s` as a process, romanad in this process, a real agent programming a test host
//! namespace (`rme-<pid>-*`), and pods started by romana-cni the way kubelet starts them
//! (`K8S_POD_*` in `CNI_ARGS`, labels from the pod record). With 1,000 NetworkPolicies and 10,000
//! pods loaded through the API server and mirrored by the controller (`-- --quick`: a tenth),
//! each round measures, by probing from a client pod until the server pod refuses (then accepts
//! again), in the same run:
//! - a deny NetworkPolicy created in the API server, then deleted, against the same policy
//!   posted to romanad (`POST /networkpolicies`) and deleted there;
//! - a merge patch of the server pod's labels in the API server, so that a deny policy starts
//!   (then stops) selecting it, against the same label change as `PUT /pods/...` to romanad.
//!
//! Needs root (namespaces); skips with a reason otherwise.
//! `cargo build --release -p romana-agent -p romana-cni && cargo bench -p romana-k8s --bench enforce`

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, EndpointInfo};
use romana_client::Client;
use romana_kube_testserver::ApiServer;
use romana_test_support::{Netns, sibling_bin};
use serde_json::{Value, json};

// The controller tests' harness: romanad in this process with the controller's service user, the
// test API server and its kubeconfig.
#[path = "../tests/common/mod.rs"]
mod common;

const HOSTS: usize = 100;
const TENANTS: usize = 10;

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A child process the bench started, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The controller as the benchmark runs it: no periodic resync during the rounds, the binary's
/// own lease duration, its log in the benchmark's directory.
fn controller(env: &common::Env) -> common::Controller {
    let extra = ["--lease-duration", "15", "--resync-interval", "3600"];
    common::Controller::spawn(env, "bench", &env.dir.path().join("k8s.log"), &extra, "warn")
}

/// The sum of a metric's series (every label set) on the controller's `/metrics`.
async fn ctl_metric(url: &str, name: &str) -> f64 {
    let text = romana_client::http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("controller metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// The release agent beside the release controller, programming `netns`.
fn agent(creds: &Path, netns: &str, socket: &Path, log: &Path) -> Proc {
    let bin = sibling_bin(env!("CARGO_BIN_EXE_romana-k8s"), "romana-agent");
    let child = Command::new(bin)
        .args(["--host", "hq", "--host-ip", "192.168.77.1", "--netns", netns, "--interval-ms", "200"])
        .arg("--socket")
        .arg(socket)
        .arg("--credentials")
        .arg(creds)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("agent log"))
        .spawn()
        .expect("romana-agent starts");
    Proc(child)
}

/// `GET path` on the agent's Unix socket: the body.
fn agent_get(socket: &Path, path: &str) -> String {
    use std::io::Read;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else { return String::new() };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

fn agent_metric(socket: &Path, name: &str) -> f64 {
    agent_get(socket, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(-1.0)
}

/// romana-cni, called as kubelet calls it: (exit status, stdout as JSON or Null).
fn cni(command: &str, cid: &str, netns: &str, socket: &Path, args: &str) -> (i32, Value) {
    let bin = sibling_bin(env!("CARGO_BIN_EXE_romana-k8s"), "romana-cni");
    // No tenant in the configuration: the tenant is the pod's namespace, as on a cluster.
    let conf =
        json!({"cniVersion": "1.0.0", "name": "romana-bench", "type": "romana-cni", "agent_socket": socket});
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("romana-cni runs");
    child.stdin.take().expect("stdin").write_all(conf.to_string().as_bytes()).expect("conf");
    let out = child.wait_with_output().expect("romana-cni output");
    (out.status.code().unwrap_or(-1), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// CNI ADD of pod bench/`pod` into `ns`, as kubelet does: its address.
fn add_pod(ns: &Netns, pod: &str, socket: &Path) -> IpAddr {
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={pod}"
    );
    let (rc, r) = cni("ADD", pod, &format!("/run/netns/{}", ns.0), socket, &args);
    assert_eq!(rc, 0, "ADD {pod}: {r}");
    r["ips"][0]["address"].as_str().and_then(|a| a.split('/').next()?.parse().ok()).expect("an address")
}

async fn wait_for(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// TCP servers on port 80 inside `netns` (a `/run/netns/...` path) for the life of the process.
fn serve(netns: &str) {
    let ns = netns.to_owned();
    let l = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("pod namespace");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        std::net::TcpListener::bind(("0.0.0.0", 80)).expect("bind :80")
    })
    .join()
    .expect("server thread");
    std::thread::spawn(move || l.incoming().for_each(drop));
}

/// From inside `from` (a namespace path): connects to `to:80` every 2 ms until the outcome is
/// `open`; returns when it was first seen, measured from `start`.
fn until(from: &str, to: IpAddr, open: bool, start: Instant) -> f64 {
    let from = from.to_owned();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&from).expect("pod namespace");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        loop {
            let ok = TcpStream::connect_timeout(&SocketAddr::new(to, 80), Duration::from_millis(5)).is_ok();
            if ok == open {
                return start.elapsed().as_secs_f64() * 1e3;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no change to open={open} within 30 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .expect("probe thread")
}

/// One request to the API server, as kubectl makes it; panics on a status other than 2xx.
async fn kube(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    ctype: &str,
    body: Option<&Value>,
) {
    let mut req = http.request(method.clone(), &url).header("Content-Type", ctype);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = req.send().await.expect("API server answers");
    let status = r.status();
    assert!(status.is_success(), "{method} {url}: {status} {}", r.text().await.unwrap_or_default());
}

fn deny(name: &str, selector: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"]}})
}

/// The synthetic cluster in the API server: namespaces (tenants), nodes (hosts, addressed on the
/// host namespace's uplink), pods and NetworkPolicies as the cni policy bench has them.
fn load_api(api: &ApiServer, pods: usize, policies: usize) {
    let put = |v: &str, r: &str, o: Value| drop(api.put_object(v, r, o).expect("put_object"));
    let ns = |name: &str, labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
    // The controller's Lease lives in romana-system, as deploy/kubernetes/romana.yaml has it.
    put("v1", "namespaces", ns("romana-system", json!({})));
    put("v1", "namespaces", ns("bench", json!({})));
    for k in 0..TENANTS {
        put("v1", "namespaces", ns(&format!("ns{k}"), json!({"tier": if k % 2 == 0 { "a" } else { "b" }})));
    }
    for h in 0..HOSTS {
        put(
            "v1",
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("s{h}")},
                "status": {"addresses": [{"type": "InternalIP", "address": format!("198.18.0.{}", h + 1)}]}}),
        );
    }
    let pod = |ns: &str, name: &str, node: &str, labels: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
    };
    put("v1", "pods", pod("bench", "srv", "hq", json!({"app": "bench-srv"})));
    put("v1", "pods", pod("bench", "cli", "hq", json!({"role": "bench-cli"})));
    for i in 0..pods {
        let labels = json!({"app": format!("app{}", i % 100), "role": format!("r{}", i % 7)});
        put(
            "v1",
            "pods",
            pod(&format!("ns{}", i % TENANTS), &format!("p{i}"), &format!("s{}", i % HOSTS), labels),
        );
    }
    for j in 0..policies {
        let mut from = json!({"podSelector": {"matchLabels": {"role": format!("r{}", j % 7)}}});
        if j % 3 == 0 {
            from["namespaceSelector"] = json!({"matchLabels": {"tier": "a"}});
        }
        put(
            "networking.k8s.io/v1",
            "networkpolicies",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("p{j}"), "namespace": format!("ns{}", j % TENANTS)},
                "spec": {"podSelector": {"matchLabels": {"app": format!("app{}", j % 100)}},
                         "ingress": [{"from": [from], "ports": [{"port": 80 + (j % 50)}]}]}}),
        );
    }
    // The label rounds' policy: whatever pod of bench carries deny=yes admits nothing.
    put("networking.k8s.io/v1", "networkpolicies", deny("deny-labeled", json!({"deny": "yes"})));
}

/// The synthetic pods' endpoints, registered as their agents do: an address each, and the
/// endpoint with its `pod` field (romanad takes labels from the pod record). 16 at a time.
async fn register(c: &Arc<Client>, pods: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in (0..pods).collect::<Vec<_>>().chunks(pods.div_ceil(16)) {
        let (c, chunk) = (c.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for i in chunk {
                let (name, host, tenant) =
                    (format!("c{i}:eth0"), format!("s{}", i % HOSTS), format!("ns{}", i % TENANTS));
                let req = AddressRequest {
                    name: name.clone(),
                    host: host.clone(),
                    tenant: tenant.clone(),
                    segment: String::new(),
                    ip: None,
                };
                let a = c.allocate(&req, None).await.expect("allocate");
                let e = EndpointInfo {
                    name,
                    ip: a.ip,
                    pod: format!("{tenant}/p{i}"),
                    tenant,
                    segment: String::new(),
                    host,
                    labels: Default::default(),
                    ports: vec![],
                };
                c.put_endpoint(&e).await.expect("endpoint");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("registration");
    }
}

fn line(what: &str, through: &[f64], direct: &[f64]) {
    let (t50, t99, d50, d99) = (pct(through, 0.5), pct(through, 0.99), pct(direct, 0.5), pct(direct, 0.99));
    println!(
        "  {what}: through the API server p50 {t50:.1} ms p99 {t99:.1} ms; direct to romanad p50 {d50:.1} ms p99 {d99:.1} ms; added p50 {:.1} ms p99 {:.1} ms (ratio p99 {:.2})",
        t50 - d50,
        t99 - d99,
        t99 / d99.max(1e-9)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_policies, n_pods, rounds) = if quick { (100, 1_000, 10) } else { (1_000, 10_000, 30) };
    let pid = std::process::id();
    let Some(host) = Netns::new(&format!("rme-{pid}-h")) else {
        println!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    for bin in ["romana-agent", "romana-cni"] {
        let p: PathBuf = Path::new(env!("CARGO_BIN_EXE_romana-k8s")).with_file_name(bin);
        assert!(p.exists(), "{} missing: cargo build --release -p romana-agent -p romana-cni", p.display());
    }
    // The synthetic nodes' addresses (198.18.0.0/24) on a link of the host namespace, so that the
    // routes toward them are valid (nothing answers there).
    host.ip("link set lo up");
    host.ip("link add up0 type veth peer name up1");
    host.ip("addr add 198.18.0.254/24 dev up0");
    host.ip("link set up0 up");
    host.ip("link set up1 up");

    let env = common::Env::start("k8s-enforce").await;
    let (dir, api, admin_creds) = (&env.dir, &env.api, &env.admin_creds);
    let c = Arc::clone(&env.admin);
    let t = Instant::now();
    load_api(api, n_pods, n_policies);
    let ctl = controller(&env);
    let ctl_url = ctl.metrics_url.clone();
    let start = Instant::now();
    loop {
        let pods = c.pods().await.map(|p| p.len()).unwrap_or(0);
        let pols = c.netpols().await.map(|p| p.len()).unwrap_or(0);
        if pods == n_pods + 2 && pols == n_policies + 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "romanad has {pods} of {} pod records and {pols} of {} policies after 300 s",
            n_pods + 2,
            n_policies + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mirrored_in = t.elapsed();

    let sock = dir.path().join("agent.sock");
    let _agent = agent(admin_creds, &host.0, &sock, &dir.path().join("agent.log"));
    wait_for("agent ready", 60, async || agent_metric(&sock, "romana_agent_firewall_syncs_total") >= 0.0)
        .await;
    let srv = Netns::new(&format!("rme-{pid}-srv")).expect("pod namespace");
    let cli = Netns::new(&format!("rme-{pid}-cli")).expect("pod namespace");
    let srv_ip = add_pod(&srv, "srv", &sock);
    add_pod(&cli, "cli", &sock);
    let cli_ns = format!("/run/netns/{}", cli.0);
    serve(&format!("/run/netns/{}", srv.0));

    let t = Instant::now();
    register(&c, n_pods).await;
    let registered_in = t.elapsed();
    wait_for("the agent has the loaded cluster", 300, async || {
        agent_metric(&sock, "romana_agent_firewall_endpoints") >= n_pods as f64
    })
    .await;
    // Samples start once the agent is idle (no pass for a second).
    let mut last = agent_metric(&sock, "romana_agent_firewall_syncs_total");
    let idle_from = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = agent_metric(&sock, "romana_agent_firewall_syncs_total");
        if std::mem::replace(&mut last, now) == now {
            break;
        }
        assert!(idle_from.elapsed() < Duration::from_secs(120), "the agent never became idle");
    }
    until(&cli_ns, srv_ip, true, Instant::now());
    let rules = agent_metric(&sock, "romana_agent_firewall_rules");
    let elements = agent_metric(&sock, "romana_agent_firewall_elements");

    let http = reqwest::Client::new();
    let base = api.url();
    let netpols = format!("{base}/apis/networking.k8s.io/v1/namespaces/bench/networkpolicies");
    let srv_pod = format!("{base}/api/v1/namespaces/bench/pods/srv");
    const JSON: &str = "application/json";
    const MERGE: &str = "application/merge-patch+json";
    let (mut np_api, mut np_direct, mut lb_api, mut lb_direct) = (vec![], vec![], vec![], vec![]);
    let mut direct_phase_writes = 0.0;
    let writes = "romana_k8s_writes_total";
    for _ in 0..rounds {
        // (a) NetworkPolicy through the API server: created (refused), deleted (admitted).
        let pol = deny("deny-api", json!({"app": "bench-srv"}));
        let t = Instant::now();
        kube(&http, reqwest::Method::POST, netpols.clone(), JSON, Some(&pol)).await;
        np_api.push(until(&cli_ns, srv_ip, false, t));
        let t = Instant::now();
        kube(&http, reqwest::Method::DELETE, format!("{netpols}/deny-api"), JSON, None).await;
        np_api.push(until(&cli_ns, srv_ip, true, t));

        // (b) the same policy to romanad directly, as `romana policy apply` does.
        let w0 = ctl_metric(&ctl_url, writes).await;
        let pol = deny("deny-direct", json!({"app": "bench-srv"}));
        let t = Instant::now();
        c.apply_netpol(&pol).await.expect("apply");
        np_direct.push(until(&cli_ns, srv_ip, false, t));
        let t = Instant::now();
        c.delete_netpol("bench", "deny-direct").await.expect("delete");
        np_direct.push(until(&cli_ns, srv_ip, true, t));

        // (d) the label change to romanad's pod record directly (PUT /pods/bench/srv).
        let mut rec = c.pod("bench", "srv").await.expect("pod record");
        rec.labels.insert("deny".into(), "yes".into());
        let t = Instant::now();
        c.put_pod(&rec).await.expect("put pod");
        lb_direct.push(until(&cli_ns, srv_ip, false, t));
        rec.labels.remove("deny");
        let t = Instant::now();
        c.put_pod(&rec).await.expect("put pod");
        lb_direct.push(until(&cli_ns, srv_ip, true, t));
        // The controller took no part in the direct rounds (it would, were it to undo them).
        direct_phase_writes += ctl_metric(&ctl_url, writes).await - w0;

        // (c) the label change as a merge patch of the pod in the API server.
        let t = Instant::now();
        kube(
            &http,
            reqwest::Method::PATCH,
            srv_pod.clone(),
            MERGE,
            Some(&json!({"metadata": {"labels": {"deny": "yes"}}})),
        )
        .await;
        lb_api.push(until(&cli_ns, srv_ip, false, t));
        let t = Instant::now();
        kube(
            &http,
            reqwest::Method::PATCH,
            srv_pod.clone(),
            MERGE,
            Some(&json!({"metadata": {"labels": {"deny": null}}})),
        )
        .await;
        lb_api.push(until(&cli_ns, srv_ip, true, t));
    }
    assert_eq!(direct_phase_writes, 0.0, "the controller wrote to romanad during the direct rounds");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", ctl.pid().expect("running")))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    println!(
        "Kubernetes write -> enforced: {n_policies} NetworkPolicies, {n_pods} pods on {HOSTS} nodes in the API server (mirrored by romana-k8s in {:.1} s, endpoints registered in {:.1} s)",
        mirrored_in.as_secs_f64(),
        registered_in.as_secs_f64()
    );
    println!(
        "  table on this host: {rules} rules, {elements} set elements; controller RSS {} MiB",
        rss_kib / 1024
    );
    println!(
        "  {rounds} rounds; each sample is one write (refuse) or its undo (admit again), probed every 2 ms:"
    );
    line("NetworkPolicy create/delete", &np_api, &np_direct);
    line("pod label change", &lb_api, &lb_direct);
    drop(ctl);
}
