//! Policy dataplane at scale, on one host namespace (`rmq-*`) with a real agent, romanad in this
//! process, and a synthetic cluster loaded through the API: 1,000 Kubernetes NetworkPolicies and
//! 10,000 endpoints over 100 hosts and 10 tenants (`-- --quick`: 200 and 2,000; `-- --scale`:
//! 5,000 and 50,000).
//! Measures, each against its baseline in the same run:
//! - policy write -> enforcement, by probing: a deny policy on a pod is written, then a client pod
//!   connects every few ms until it is refused; the policy is deleted, until it connects again;
//! - a label change of one pod (the client's role) -> enforcement, probed the same way;
//! - CNI ADD of a new pod with that cluster loaded, against an empty cluster (this host holds a
//!   resident pod that its share of the policies, 1 in 100, applies to: their chains and sets are
//!   in its table); and ADD and DEL of pods that bring their app's policies into the table and
//!   take them out again;
//! - the agent's memory (RSS) and CPU per firewall pass, and an agent restart until its first
//!   pass is done (the table converged);
//! - the table's rules and set elements;
//! - TCP throughput (iperf3) and CPU per GB moved between the same two pods, with the loaded table
//!   against the same table with every set emptied, in alternating rounds (the agent is paused
//!   meanwhile, the bench swaps the tables, and the agent's table is back in place before it
//!   resumes).
//!
//! `cargo build --release -p romana-agent && cargo bench -p romana-cni --bench policy`
//! (`-- --samples=N`: N probes per measure; `-- --no-throughput`: without the iperf3 rounds;
//! `-- --adds=N`: ADDs on each cluster; `-- --activations=N`: pods that bring policies)

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "policy/steps.rs"]
mod steps;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{agent_metric, cni, conf, iperf, nft_in, nft_script, probe, signal, wait_for};
use romana_api::rest::{AddressRequest, Credentials, EndpointInfo, HostRequest, TenantRequest};
use romana_client::Client;
use romana_test_support::{Netns, TempDir};
use serde_json::json;
use steps::{Write, add_steps, epoch_now, write_steps};

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `nft -f` of `script` inside a namespace this bench created.
/// An `nft list table` listing with every set emptied: the same chains and rules, no elements.
fn without_elements(listing: &str) -> String {
    let mut out = String::new();
    let mut in_elements = false;
    for line in listing.lines() {
        in_elements |= line.trim_start().starts_with("elements = {");
        if in_elements {
            // A set's elements run from `elements = {` to the line that closes the brace.
            in_elements = !line.trim_end().ends_with('}');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The agent's resident memory, MiB.
fn rss_mb(a: &common::Agent) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.0.id())).expect("agent status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// The agent's CPU time so far (user + system), seconds.
fn agent_cpu_seconds(a: &common::Agent) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", a.0.id())).expect("agent stat");
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').expect("stat").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f[i].parse::<f64>().expect("ticks");
    (ticks(11) + ticks(12)) / 100.0
}

/// The agent on the bench's host, its table read by `nft -j` or over netlink, logging at
/// `filter` (`RUST_LOG`; at debug level each pass's times).
fn agent_reading(
    creds: &std::path::Path,
    netns: &str,
    socket: &std::path::Path,
    log: &std::path::Path,
    netlink: bool,
    filter: &str,
    saved: &std::path::Path,
) -> common::Agent {
    let bin = romana_test_support::sibling_bin(env!("CARGO_BIN_EXE_romana-cni"), "romana-agent");
    let child = std::process::Command::new(bin)
        .args(["--host", "hq", "--host-ip", "192.168.77.1", "--netns", netns, "--interval-ms", "200"])
        .arg("--socket")
        .arg(socket)
        .arg("--credentials")
        .arg(creds)
        .arg("--firewall-state")
        .arg(saved)
        .env("ROMANA_NFT_NETLINK_READ", if netlink { "1" } else { "0" })
        .env("RUST_LOG", filter)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("agent log"))
        .spawn()
        .expect("agent");
    common::Agent(child)
}

/// `compile_ms`, `read_wait_ms` (the table's read runs beside the compile; what was left of it
/// after) and `pass_ms` (plan and apply) of the first `firewall pass` line of an agent's debug
/// log (0 when absent).
fn first_pass_times(log: &str) -> (f64, f64, f64) {
    let line =
        log.lines().find(|l| l.contains("firewall pass") && l.contains("compile_ms=")).unwrap_or_default();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit() && c != '.').parse().ok())
            .unwrap_or(0.0)
    };
    (field("compile_ms="), field("read_wait_ms="), field("pass_ms="))
}

fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.0)
}

/// From inside `from` (a namespace path): connects to `to:80` every 2 ms until the outcome is
/// `open`; returns when it was first seen, measured from `start`. The probe runs on a thread of
/// its own (it enters the pod's namespace) and is awaited, not joined: romanad runs on this
/// process's runtime, and a worker held by the bench is one romanad cannot use.
async fn until(from: String, to: IpAddr, open: bool, start: Instant) -> Duration {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&from).expect("pod namespace");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        loop {
            let ok = TcpStream::connect_timeout(&SocketAddr::new(to, 80), Duration::from_millis(5)).is_ok();
            if ok == open {
                let _ = tx.send(start.elapsed());
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no change within 30 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    rx.await.expect("probe thread")
}

/// Runs the CNI plugin's `command` for container `cid` in `ns`. The plugin runs (and is waited
/// for) on a blocking thread: a runtime worker waiting for it is one the in-process romanad
/// cannot use for the call's own requests (with two workers, an ADD's allocation and
/// registration queued behind romanad's other work on the one left).
async fn plugin(
    command: &'static str,
    cid: &str,
    ns: &Netns,
    sock: &std::path::Path,
    args: String,
) -> (i32, serde_json::Value) {
    let (cid, netns, conf) = (cid.to_owned(), netns_path(ns), conf("1.0.0", sock));
    tokio::task::spawn_blocking(move || cni(command, &cid, &netns, &conf, &args))
        .await
        .expect("the plugin's thread")
}

async fn add_pod(ns: &Netns, cid: &str, sock: &std::path::Path, tenant: &str, labels: &str) -> (IpAddr, f64) {
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={tenant};ROMANA_LABELS={labels}");
    let t = Instant::now();
    let (rc, r) = plugin("ADD", cid, ns, sock, args).await;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(rc, 0, "ADD of {}: {r}", ns.0);
    let ip =
        r["ips"][0]["address"].as_str().expect("address").split('/').next().expect("ip").parse().expect("ip");
    (ip, ms)
}

/// `count` pods, each of an app none of this host's pods has (`app<a>` in `ns<a % 10>`): its ADD
/// brings that app's policies into this host's table, its DEL takes them out again. Each waits
/// for the agent's count of active policies to show it (from `base`), so that the samples do not
/// overlap. Returns the ADDs' and the DELs' times (ms).
async fn activations(sock: &std::path::Path, pid: u32, count: usize, base: f64) -> (Vec<f64>, Vec<f64>) {
    let active = || agent_metric(sock, "romana_agent_firewall_policies_active");
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for (i, a) in (0..100).filter(|a| *a != 7).take(count).enumerate() {
        let ns = Netns::new(&format!("rmq-{pid}-v{i}")).expect("pod");
        let cid = format!("v{i}");
        adds.push(add_pod(&ns, &cid, sock, &format!("ns{}", a % 10), &format!("app=app{a}")).await.1);
        wait_for("the pod's policies are active here", 30, || active() > base).await;
        let t = Instant::now();
        let (rc, r) = plugin("DEL", &cid, &ns, sock, String::new()).await;
        dels.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(rc, 0, "DEL of {}: {r}", ns.0);
        wait_for("the pod's policies are gone from here", 30, || active() == base).await;
    }
    (adds, dels)
}

/// The synthetic cluster's tenants `ns0`..`ns9` (`tier` a or b), before the empty cluster's
/// ADDs: this host's resident pod is in one of them.
async fn tenants(c: &Client) {
    for k in 0..10u32 {
        let labels = [("tier".to_owned(), if k.is_multiple_of(2) { "a" } else { "b" }.to_owned())].into();
        c.create_tenant(&TenantRequest {
            name: format!("ns{k}"),
            external_id: String::new(),
            labels,
            isolation: String::new(),
        })
        .await
        .expect("tenant");
    }
}

/// Loads the synthetic cluster: hosts, `endpoints` allocations with records, `policies`
/// NetworkPolicies. Requests run 16 at a time.
async fn load(c: &Arc<Client>, endpoints: usize, policies: usize) {
    for h in 0..100 {
        let req = HostRequest {
            name: format!("s{h}"),
            ip: format!("198.18.0.{}", h + 1),
            ipv6: None,
            agent_port: None,
            tags: Default::default(),
            k8s_info: None,
        };
        c.add_host(&req).await.expect("host");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in (0..endpoints).collect::<Vec<_>>().chunks(endpoints.div_ceil(16)) {
        let (c, chunk) = (c.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for i in chunk {
                let (name, host, tenant) =
                    (format!("bench:{i}"), format!("s{}", i % 100), format!("ns{}", i % 10));
                let req = AddressRequest {
                    name: name.clone(),
                    host: host.clone(),
                    tenant: tenant.clone(),
                    segment: String::new(),
                    ip: None,
                };
                let a = c.allocate(&req, None).await.expect("allocate");
                let labels = [
                    ("app".to_owned(), format!("app{}", i % 100)),
                    ("role".to_owned(), format!("r{}", i % 7)),
                ]
                .into();
                let e = EndpointInfo {
                    name,
                    ip: a.ip,
                    tenant,
                    segment: String::new(),
                    host,
                    labels,
                    ports: vec![],
                    pod: String::new(),
                };
                c.put_endpoint(&e).await.expect("endpoint");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("loader");
    }
    for j in 0..policies {
        let mut from = json!({"podSelector": {"matchLabels": {"role": format!("r{}", j % 7)}}});
        if j.is_multiple_of(3) {
            from["namespaceSelector"] = json!({"matchLabels": {"tier": "a"}});
        }
        let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": format!("p{j}"), "namespace": format!("ns{}", j % 10)},
            "spec": {"podSelector": {"matchLabels": {"app": format!("app{}", j % 100)}},
                     "ingress": [{"from": [from], "ports": [{"port": 80 + (j % 50)}]}]}});
        c.apply_netpol(&np).await.expect("policy");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = std::env::args().any(|a| a == "--scale");
    // 50 ADDs on each cluster: on the loaded one they take three new blocks or more (blocks of
    // 16 addresses), so that the ADDs a new block's route pass meets are among them.
    let (n_policies, n_endpoints, samples, admits) = match (quick, scale) {
        (true, _) => (200, 2_000, 10, 5),
        (false, true) => (5_000, 50_000, 100, 50),
        (false, false) => (1_000, 10_000, 100, 50),
    };
    // `--samples=N`: fewer probes per measure (a shorter run; p99 of fewer samples is near the
    // maximum). `--no-throughput`: leave out the iperf3 rounds (table swaps at 5x take long).
    let samples: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--samples=").map(|n| n.parse().expect("--samples=N")))
        .unwrap_or(samples);
    let throughput = !std::env::args().any(|a| a == "--no-throughput");
    let admits: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--adds=").map(|n| n.parse().expect("--adds=N")))
        .unwrap_or(admits);
    // Pods that bring policies here, one app each (each app's policies select nothing here yet);
    // `--activations=N`.
    let acts: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--activations=").map(|n| n.parse().expect("--activations=N")))
        .unwrap_or(if quick { 5 } else { 20 });
    // `ROMANA_BENCH_ROMANAD_LOG=FILE`: romanad (in this process) logs its passes there (the
    // route manager's and the consistency check's times, at debug level).
    if let Some(path) = std::env::var_os("ROMANA_BENCH_ROMANAD_LOG") {
        let file = std::fs::File::create(&path).expect("the romanad log file");
        tracing_subscriber::fmt()
            .with_env_filter("warn,romana_services::route_manager=debug,romana_services::reclaim=debug,romana_services::ipam_sync=debug")
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init();
    }
    let pid = std::process::id();
    let Some(host) = Netns::new(&format!("rmq-{pid}-h")) else {
        println!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    // The synthetic hosts' addresses (198.18.0.0/24) on a link of the host namespace, so that
    // the routes the route manager gives toward them are valid (nothing answers there).
    host.ip("link set lo up");
    host.ip("link add up0 type veth peer name up1");
    host.ip("addr add 198.18.0.254/24 dev up0");
    host.ip("link set up0 up");
    host.ip("link set up1 up");
    let dir = TempDir::new("policy-bench");
    let creds = common::romanad(dir.path()).await;
    let admin = Arc::new(
        Client::from_credentials(
            &serde_json::from_str::<Credentials>(&std::fs::read_to_string(&creds).expect("creds"))
                .expect("creds"),
        )
        .await
        .expect("login"),
    );
    admin
        .create_tenant(&TenantRequest {
            name: "bench".into(),
            external_id: String::new(),
            labels: Default::default(),
            isolation: String::new(),
        })
        .await
        .expect("tenant");
    let sock = dir.path().join("h.sock");
    // The release agent: `cargo bench` builds this binary in release, the agent must be too.
    // Its firewall at debug level: each watch event's arrival and each pass's times, for the
    // write -> enforced breakdown.
    let _agent = agent_reading(
        &creds,
        &host.0,
        &sock,
        &dir.path().join("agent.log"),
        false,
        "info,romana_agent::firewall=debug,romana_agent::drive=debug",
        &dir.path().join("firewall-table"),
    );
    wait_for("agent ready", 30, || cni("STATUS", "", "", &conf("1.1.0", &sock), "").0 == 0).await;

    let srv = Netns::new(&format!("rmq-{pid}-srv")).expect("pod");
    let cli = Netns::new(&format!("rmq-{pid}-cli")).expect("pod");
    let (srv_ip, _) = add_pod(&srv, "srv", &sock, "bench", "app=bench-srv").await;
    let (_, _) = add_pod(&cli, "cli", &sock, "bench", "role=bench-cli").await;
    probe::serve(&netns_path(&srv));
    until(netns_path(&cli), srv_ip, true, Instant::now()).await;
    // The resident pod: this host's share of the synthetic cluster's policies once it is loaded
    // (app7 in ns7: the 50 in 5,000 (10 in 1,000) policies that select app7, as each of the 100
    // hosts' pods are selected by theirs). In both phases, so that each has the same local pods.
    tenants(&admin).await;
    let resident = Netns::new(&format!("rmq-{pid}-r")).expect("pod");
    add_pod(&resident, "res", &sock, "ns7", "app=app7").await;

    // Baselines on an empty cluster: ADD latency and throughput.
    let pods: Vec<Netns> =
        (0..admits * 2).map(|i| Netns::new(&format!("rmq-{pid}-a{i}")).expect("pod")).collect();
    let mut empty_add = Vec::new();
    for (i, ns) in pods[..admits].iter().enumerate() {
        empty_add.push(add_pod(ns, &format!("a{i}"), &sock, "bench", "app=admit").await.1);
    }

    // The empty cluster's pods go before the load: the loaded ADDs then start with as many pods
    // on this host as the empty ones did (3: srv, cli, the resident), and the cluster's size is
    // the one difference (each pod on the host is an entry the fast path's map and the host's
    // sets hold).
    let mut empty_del = Vec::new();
    for (i, ns) in pods[..admits].iter().enumerate() {
        let t = Instant::now();
        let (rc, r) = plugin("DEL", &format!("a{i}"), ns, &sock, String::new()).await;
        empty_del.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(rc, 0, "DEL of {}: {r}", ns.0);
    }
    let t = Instant::now();
    load(&admin, n_endpoints, n_policies).await;
    let loaded_in = t.elapsed();
    // The pods' own policy: srv admits the client on 80 (and iperf3's 5201), so it is a target.
    let srv_policy = |from: &str| {
        json!({"metadata": {"name": "srv", "namespace": "bench"},
            "spec": {"podSelector": {"matchLabels": {"app": "bench-srv"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": from}}}], "ports": [{"port": 80}, {"port": 5201}]}]}})
    };
    admin.apply_netpol(&srv_policy("bench-cli")).await.expect("srv policy");
    wait_for("the agent has the loaded cluster", 600, || {
        agent_metric(&sock, "romana_agent_firewall_endpoints") >= n_endpoints as f64
            && agent_metric(&sock, "romana_agent_firewall_policies") > n_policies as f64
    })
    .await;
    // Samples start once the agent is idle (no pass for a while): the elements can be in while
    // the last policies of the load are still streaming in, and those passes are not the
    // measurement. A pass counts when it ends, so the quiet window must outlast the load's
    // longest pass (seconds at the 5x scale).
    let idle_from = Instant::now();
    let quiet = Duration::from_secs(if n_endpoints > 10_000 { 10 } else { 1 });
    let mut last = agent_metric(&sock, "romana_agent_firewall_syncs_total");
    loop {
        tokio::time::sleep(quiet).await;
        let now = agent_metric(&sock, "romana_agent_firewall_syncs_total");
        if std::mem::replace(&mut last, now) == now {
            break;
        }
        assert!(idle_from.elapsed() < Duration::from_secs(600), "the agent never became idle");
    }
    let rules = agent_metric(&sock, "romana_agent_firewall_rules");
    let elements = agent_metric(&sock, "romana_agent_firewall_elements");
    let active = agent_metric(&sock, "romana_agent_firewall_policies_active");

    let rss_mb = rss_mb(&_agent);
    let (cpu0, syncs0) =
        (agent_cpu_seconds(&_agent), agent_metric(&sock, "romana_agent_firewall_syncs_total"));
    // `ROMANA_BENCH_MARKS=DIR`: files mark the phases for a profiler (`perf record -a` between
    // them): `DIR/writes` and `DIR/writes-done` the policy writes, `DIR/loaded-adds` and
    // `DIR/loaded-adds-done` the ADDs with the cluster loaded, `DIR/restart` and
    // `DIR/restart-done` the first agent restart.
    let marks = std::env::var_os("ROMANA_BENCH_MARKS").map(std::path::PathBuf::from);
    let mark = |name: &str| {
        if let Some(d) = &marks {
            let _ = std::fs::write(d.join(name), "");
        }
    };
    mark("writes");
    if marks.is_some() {
        // Time for the profiler to start.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Write -> enforcement: one write each way. srv's policy is updated to admit another role
    // (the client is refused from then on), then back (admitted again).
    let (mut closing, mut opening) = (Vec::new(), Vec::new());
    // Each write's wall-clock times (sent, answered, seen enforced), for the breakdown below.
    let mut writes: Vec<Write> = Vec::new();
    for _ in 0..samples {
        for (role, open, into) in [("nobody", false, &mut closing), ("bench-cli", true, &mut opening)] {
            let (start, sent) = (Instant::now(), epoch_now());
            admin.apply_netpol(&srv_policy(role)).await.expect("update");
            let answered = sent + start.elapsed().as_secs_f64();
            let took = until(netns_path(&cli), srv_ip, open, start).await.as_secs_f64();
            into.push(took * 1e3);
            writes.push(Write { sent, answered, enforced: sent + took });
        }
    }

    mark("writes-done");
    let cpu_per_pass_ms = (agent_cpu_seconds(&_agent) - cpu0) * 1e3
        / (agent_metric(&sock, "romana_agent_firewall_syncs_total") - syncs0).max(1.0);

    // A label change of one pod: the client's endpoint record takes another role (refused),
    // then its own again (admitted), as romana-k8s writes a pod's new labels.
    let cli_ip = admin
        .endpoint_list()
        .await
        .expect("endpoints")
        .into_iter()
        .find(|e| e.labels.get("role").map(String::as_str) == Some("bench-cli"))
        .expect("the client's endpoint");
    let relabel = |role: &str| {
        let mut e = cli_ip.clone();
        e.labels.insert("role".into(), role.into());
        e
    };
    let (mut label_closing, mut label_opening) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let start = Instant::now();
        admin.put_endpoint(&relabel("elsewhere")).await.expect("relabel");
        label_closing.push(until(netns_path(&cli), srv_ip, false, start).await.as_secs_f64() * 1e3);
        let start = Instant::now();
        admin.put_endpoint(&relabel("bench-cli")).await.expect("relabel back");
        label_opening.push(until(netns_path(&cli), srv_ip, true, start).await.as_secs_f64() * 1e3);
    }

    // ADD with the cluster loaded.
    mark("loaded-adds");
    if marks.is_some() {
        // Time for the profiler to start: the phase itself lasts well under a second.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut loaded_add = Vec::new();
    for (i, ns) in pods[admits..].iter().enumerate() {
        loaded_add.push(add_pod(ns, &format!("b{i}"), &sock, "bench", "app=admit").await.1);
    }
    mark("loaded-adds-done");
    let (activating_add, deactivating_del) = activations(&sock, pid, acts, active).await;
    // Throughput: the same pods, the loaded table and the very same table with every set emptied
    // (the same chains, rules and conntrack; no elements) in alternating rounds. The agent is
    // paused so that it does not repair the swap; its own table is back before it resumes.
    let secs = if quick { 2 } else { 3 };
    let rounds = if quick { 2 } else { 6 };
    let (mut tput_loaded, mut tput_empty) = (Vec::new(), Vec::new());
    let (mut cpu_loaded, mut cpu_empty) = (Vec::new(), Vec::new());
    if throughput {
        let loaded_table = nft_in(&host.0, "list table inet romana");
        let empty = format!("delete table inet romana\n{}", without_elements(&loaded_table));
        let restore = format!("delete table inet romana\n{loaded_table}");
        signal(&_agent, "STOP");
        // The paused agent's heartbeat lease runs out within 3 s and romanad (in this process)
        // withdraws its routes and recomputes every host's set: several percent of the machine for a
        // moment (seen with `perf`), which would land on the first, loaded run. Let it pass first.
        std::thread::sleep(Duration::from_secs(6));
        // In the order loaded, empty, empty, loaded, ...: each kind is measured as often right after
        // a swap as not, so the swap's own after-effects fall on both.
        let mut loaded_now = true;
        for k in 0..rounds * 2 {
            let want_loaded = matches!(k % 4, 0 | 3);
            if want_loaded != loaded_now {
                nft_script(&host.0, if want_loaded { &restore } else { &empty });
                loaded_now = want_loaded;
            }
            let busy = common::busy_seconds();
            let v = iperf(&srv.0, &cli.0, &srv_ip.to_string(), secs);
            // CPU seconds per GB moved: steadier than throughput on this shared machine.
            let c = (common::busy_seconds() - busy) / (v * f64::from(secs) / 8.0);
            let (tput, cpu) = if want_loaded {
                (&mut tput_loaded, &mut cpu_loaded)
            } else {
                (&mut tput_empty, &mut cpu_empty)
            };
            tput.push(v);
            cpu.push(c);
        }
        if !loaded_now {
            nft_script(&host.0, &restore);
        }
        assert_eq!(
            nft_in(&host.0, "list table inet romana"),
            loaded_table,
            "the agent's table was not restored"
        );
        signal(&_agent, "CONT");
    }
    let syncs = agent_metric(&sock, "romana_agent_firewall_syncs_total");
    let sync_s = agent_metric(&sock, "romana_agent_firewall_sync_seconds_sum");

    println!(
        "policy dataplane: {n_policies} NetworkPolicies, {n_endpoints} endpoints on 100 hosts (loaded in {:.1} s)",
        loaded_in.as_secs_f64()
    );
    println!(
        "  table on this host: {rules} rules, {elements} set elements ({active} of {} policies apply here)",
        n_policies + 1
    );
    println!(
        "  policy write -> enforced (refuse, probed): p50 {:.1} ms, p99 {:.1} ms; -> admitted again: p50 {:.1} ms, p99 {:.1} ms ({samples} samples)",
        pct(&closing, 0.5),
        pct(&closing, 0.99),
        pct(&opening, 0.5),
        pct(&opening, 0.99)
    );
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    println!("    where a write's time went (p50/p99, ms): {}", write_steps(&log, &writes));
    println!(
        "  CNI ADD: loaded p50 {:.1} ms p99 {:.1} ms vs empty cluster p50 {:.1} ms p99 {:.1} ms (ratio p50 {:.2})",
        pct(&loaded_add, 0.5),
        pct(&loaded_add, 0.99),
        pct(&empty_add, 0.5),
        pct(&empty_add, 0.99),
        pct(&loaded_add, 0.5) / pct(&empty_add, 0.5)
    );
    // Where each ADD's time went, as the agent saw it (p50/p99, ms); the rest of an ADD is the
    // plugin's process start and the socket round trip.
    println!("    agent's steps, loaded: {}", add_steps(&log, "b"));
    println!("    agent's steps, empty:  {}", add_steps(&log, "a"));
    println!(
        "  CNI ADD of a pod that brings its app's {} policies here (their first local target): p50 {:.1} ms p99 {:.1} ms; its DEL (takes them out): p50 {:.1} ms p99 {:.1} ms ({acts} pods); DEL on the empty cluster p50 {:.1} ms p99 {:.1} ms",
        n_policies / 100,
        pct(&activating_add, 0.5),
        pct(&activating_add, 0.99),
        pct(&deactivating_del, 0.5),
        pct(&deactivating_del, 0.99),
        pct(&empty_del, 0.5),
        pct(&empty_del, 0.99)
    );
    println!("    agent's steps, bringing policies: {}", add_steps(&log, "v"));
    if throughput {
        println!(
            "  throughput pod->pod (iperf3 {secs} s, {rounds} runs each in ABBA order, median): sets loaded {:.2} Gbit/s vs the same table with its sets emptied {:.2} Gbit/s (ratio {:.3})",
            pct(&tput_loaded, 0.5),
            pct(&tput_empty, 0.5),
            pct(&tput_loaded, 0.5) / pct(&tput_empty, 0.5)
        );
        let rounds_shown = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" ");
        println!(
            "    rounds, loaded: {}; empty sets: {}",
            rounds_shown(&tput_loaded),
            rounds_shown(&tput_empty)
        );
        println!(
            "    CPU per GB moved (median): loaded {:.3} s vs emptied {:.3} s (ratio {:.3})",
            pct(&cpu_loaded, 0.5),
            pct(&cpu_empty, 0.5),
            pct(&cpu_loaded, 0.5) / pct(&cpu_empty, 0.5)
        );
    }
    println!(
        "  label change of one pod -> enforced (refuse, probed): p50 {:.1} ms, p99 {:.1} ms; -> admitted again: p50 {:.1} ms, p99 {:.1} ms ({samples} samples)",
        pct(&label_closing, 0.5),
        pct(&label_closing, 0.99),
        pct(&label_opening, 0.5),
        pct(&label_opening, 0.99)
    );
    println!("  agent firewall passes (compiles): {syncs}, mean {:.1} ms", sync_s * 1e3 / syncs.max(1.0));
    println!(
        "  agent: RSS {rss_mb:.0} MiB with the cluster loaded; CPU {cpu_per_pass_ms:.1} ms per compile during the writes"
    );
    // A restart: the agent reads everything from romanad, compiles, and converges (no change is
    // due: the table in force is its own). First with the table the agent saved: nothing
    // committed since (taken as it is), then after a commit by someone else (a table come and
    // gone in the host's namespace: taken once its structure is checked); then without it (the
    // file removed), reading the kernel's table: once with each reader, netlink (the default)
    // and `nft -j` (`ROMANA_NFT_NETLINK_READ=0`).
    // The table is saved once the passes have been quiet for a moment: wait until they are.
    let mut syncs = -1.0;
    for _ in 0..60 {
        let now = agent_metric(&sock, "romana_agent_firewall_syncs_total");
        if now == syncs {
            break;
        }
        syncs = now;
        std::thread::sleep(Duration::from_millis(1_000));
    }
    drop(_agent);
    let saved = dir.path().join("firewall-table");
    for (what, netlink, foreign, unsaved) in [
        ("saved table, nothing committed since", true, false, false),
        ("saved table, its structure checked after a foreign commit", true, true, false),
        ("no saved table, netlink read", true, true, true),
        ("no saved table, nft -j read", false, true, true),
    ] {
        if foreign {
            nft_in(&host.0, &format!("add table inet rmq-{pid}-foreign"));
            nft_in(&host.0, &format!("delete table inet rmq-{pid}-foreign"));
        }
        if unsaved {
            let _ = std::fs::remove_file(&saved);
        }
        let log = dir.path().join(format!("agent-restart-{netlink}-{foreign}-{unsaved}.log"));
        // The first restart is marked for a profiler, like the loaded ADDs.
        let first = !foreign;
        if first {
            mark("restart");
            if marks.is_some() {
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        let t = Instant::now();
        let restarted =
            agent_reading(&creds, &host.0, &sock, &log, netlink, "info,romana_agent=debug", &saved);
        // Polled every 5 ms (wait_for's 100 ms would be the resolution).
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok()
                && agent_metric(&sock, "romana_agent_firewall_syncs_total") >= 1.0
            {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "the restarted agent never made a pass");
            std::thread::sleep(Duration::from_millis(5));
        }
        let total = t.elapsed().as_secs_f64() * 1e3;
        if first {
            mark("restart-done");
        }
        let reads = agent_metric(&sock, "romana_agent_firewall_reads_total");
        let (compile_ms, wait_ms, pass_ms) =
            first_pass_times(&std::fs::read_to_string(&log).unwrap_or_default());
        println!(
            "  agent restart ({what}) -> first pass done: {total:.0} ms; its pass: compile {compile_ms:.0} ms, then waiting for the table's read (beside the compile) {wait_ms:.0} ms, plan + apply {pass_ms:.0} ms ({:.0} set elements after it, {reads} table reads)",
            agent_metric(&sock, "romana_agent_firewall_elements")
        );
        drop(restarted);
        let kept = std::env::temp_dir()
            .join(format!("romana-policy-bench-agent-restart-{netlink}-{foreign}-{unsaved}.log"));
        let _ = std::fs::copy(&log, kept);
    }
    // The agent's log outlives the run for a closer look (RUST_LOG=romana_agent=debug shows
    // each pass's compile, read and apply times).
    let kept = std::env::temp_dir().join("romana-policy-bench-agent.log");
    if std::fs::copy(dir.path().join("agent.log"), &kept).is_ok() {
        println!("  agent log: {}", kept.display());
    }
}
