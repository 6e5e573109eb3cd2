//! Fan-out: N simulated agents, each following romanad's watch as `romana-agent` does (the same
//! client code, one stream for all of its prefixes, its own service-user token bound to its
//! host; `--streams per-prefix`: one stream per prefix, as agents did before), against one
//! romanad on the embedded store and against three replicas on a three-member etcd. For one change
//! of each kind (a new block on a host, a policy, a label on an endpoint): the time until every
//! agent that follows the changed key has it, p50/p99/max over rounds; romanad's resident memory
//! idle, with one agent and with N. Baseline: the same rounds with one agent, same run.
//!
//! `cargo bench -p romanad --bench fanout [-- --agents 1000,5000] [--rounds 10] [--store embedded|ha|both]
//! [--streams shared|per-prefix] [--quick]`

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "fanout/fleet.rs"]
mod fleet;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use romana_api::rest::{AddressRequest, EndpointInfo, HostRequest, LabelsRequest, TenantRequest};
use romana_api::topology::TopologyRequest;
use romana_auth::{Claims, Role, TokenKind};
use romana_client::Client;
use romana_test_support::{Romanad, TempDir};

use fleet::{AGENT_PREFIXES, Delivery, Fleet, deliver};

/// Hosts per rack (a leaf group); a host's route set holds its rack's hosts.
const RACK: usize = 50;
/// The streams a real agent opens: `routes/<host>` and `AGENT_PREFIXES`.
const AGENT_STREAMS: usize = 1 + AGENT_PREFIXES.len();
/// Quiet time after which a round's changes are taken as all written.
const QUIET: Duration = Duration::from_millis(1000);
/// How long an agent may take before it counts as missing the change.
const LIMIT: Duration = Duration::from_secs(60);

/// romanad's connection caps raised for the benchmark: by default it holds 4,096 connections and
/// 256 from one address, and every simulated agent connects from 127.0.0.1 (real agents each
/// from their own host) with one connection per stream (see docs/operations.md).
const SERVE: &[&str] = &["--max-connections", "19000", "--max-connections-per-source", "19000"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Embedded,
    Ha,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Block,
    Policy,
    Label,
}

struct Args {
    agents: Vec<usize>,
    rounds: usize,
    stores: Vec<Store>,
    /// One stream per agent (the agent's way), or one per prefix (before).
    shared: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let value = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).cloned();
    let quick = argv.iter().any(|a| a == "--quick");
    let agents = value("--agents")
        .map(|v| v.split(',').map(|n| n.parse().expect("--agents: numbers")).collect())
        .unwrap_or_else(|| if quick { vec![20] } else { vec![1000] });
    let rounds =
        value("--rounds").map_or(if quick { 2 } else { 10 }, |v| v.parse().expect("--rounds: a number"));
    let stores = match value("--store").as_deref() {
        Some("embedded") => vec![Store::Embedded],
        Some("ha") => vec![Store::Ha],
        Some("both") | None => vec![Store::Embedded, Store::Ha],
        Some(other) => panic!("--store: embedded, ha or both, not {other}"),
    };
    let shared = match value("--streams").as_deref() {
        Some("shared") | None => true,
        Some("per-prefix") => false,
        Some(other) => panic!("--streams: shared or per-prefix, not {other}"),
    };
    Args { agents, rounds, stores, shared }
}

/// The romanad processes of one setup.
enum Setup {
    Embedded(Romanad, TempDir),
    Ha(common::ha::Ha),
}

impl Setup {
    async fn start(store: Store, tag: &str) -> Setup {
        match store {
            Store::Embedded => {
                let dir = TempDir::new(tag);
                let d = common::embedded(&dir, SERVE);
                Setup::Embedded(d, dir)
            }
            Store::Ha => Setup::Ha(common::ha::ha_with(tag, SERVE).await),
        }
    }

    fn urls(&self) -> Vec<String> {
        match self {
            Setup::Embedded(d, _) => vec![d.url.clone()],
            Setup::Ha(h) => h.urls(),
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Setup::Embedded(d, _) => d.pid().into_iter().collect(),
            Setup::Ha(h) => h.replicas.iter().filter_map(Romanad::pid).collect(),
        }
    }

    /// The data directory holding `admin.credentials` and the first replica's signing key.
    fn dir(&self) -> &Path {
        match self {
            Setup::Embedded(_, d) => d.path(),
            Setup::Ha(h) => h.dirs[0].path(),
        }
    }
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

/// This process's open-file limit (`Max open files`, soft).
fn fd_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

fn host_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// Tokens as romanad issues them to an agent's service user bound to `host` (`auth_state.rs`,
/// `issue`), signed with the replica's own key: creating and logging in thousands of users would
/// measure argon2, not the watch.
fn agent_token(key: &romana_auth::SigningKey, host: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    key.sign(&Claims {
        sub: format!("agent-{host}"),
        roles: vec![Role::Service],
        tenants: vec![],
        hosts: vec![host.to_owned()],
        iat: now,
        exp: now + 4 * 3600,
        typ: TokenKind::Access,
    })
}

/// The topology (racks of `RACK`), `hosts` hosts, a tenant and one endpoint; returns the hosts
/// of the first host's rack (where the block rounds allocate).
async fn populate(admin: Arc<Client>, hosts: usize) -> Vec<String> {
    let racks = hosts.div_ceil(RACK).max(1);
    let groups: Vec<String> = (0..racks).map(|r| format!(r#"{{"name":"r{r}","groups":[]}}"#)).collect();
    let t: TopologyRequest = serde_json::from_str(&format!(
        r#"{{"networks":[{{"name":"pods","cidr":"10.0.0.0/8","block_mask":28}}],
            "topologies":[{{"networks":["pods"],"map":[{}]}}]}}"#,
        groups.join(",")
    ))
    .expect("topology");
    admin.apply_topology(&t).await.expect("topology applies");
    let chunks: Vec<Vec<usize>> =
        (0..hosts).collect::<Vec<_>>().chunks(hosts.div_ceil(16)).map(<[usize]>::to_vec).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in chunks {
        let admin = Arc::clone(&admin);
        tasks.spawn(async move {
            for i in chunk {
                let req = HostRequest {
                    name: host_name(i),
                    ip: format!("172.16.{}.{}", i / 250, i % 250 + 1),
                    ipv6: None,
                    agent_port: None,
                    tags: BTreeMap::new(),
                    k8s_info: None,
                };
                admin.add_host(&req).await.expect("host");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("hosts added");
    }
    admin
        .create_tenant(
            &serde_json::from_value::<TenantRequest>(serde_json::json!({"name": "fan"})).expect("tenant"),
        )
        .await
        .expect("tenant");
    let req = AddressRequest {
        name: "ep-0".into(),
        host: host_name(0),
        tenant: "fan".into(),
        segment: String::new(),
        ip: None,
    };
    let a = admin.allocate(&req, None).await.expect("address");
    admin
        .put_endpoint(&EndpointInfo {
            name: "ep-0".into(),
            ip: a.ip,
            tenant: "fan".into(),
            segment: String::new(),
            host: host_name(0),
            labels: BTreeMap::new(),
            ports: vec![],
            pod: String::new(),
        })
        .await
        .expect("endpoint");
    let list = admin.hosts().await.expect("hosts");
    let group = |h: &romana_api::rest::Host| h.placements.first().map(|p| p.group.clone());
    let first = list.hosts.iter().find(|h| h.name == host_name(0)).and_then(group);
    list.hosts
        .iter()
        .filter(|h| h.name != host_name(0) && group(h) == first)
        .map(|h| h.name.clone())
        .collect()
}

/// One change of `kind` (round `r` of the run `run`).
async fn change(admin: &Client, kind: Change, run: &str, r: usize, rack: &[String]) {
    match kind {
        Change::Block => {
            // A new tenant: its first address takes a new block on the host.
            let req = AddressRequest {
                name: format!("blk-{run}-{r}"),
                host: rack[r % rack.len()].clone(),
                tenant: format!("t-{run}-{r}"),
                segment: String::new(),
                ip: None,
            };
            admin.allocate(&req, None).await.expect("block");
        }
        Change::Policy => {
            let p = serde_json::json!({"id": format!("p-{run}-{r}"), "applied_to": [{"tenant": "fan"}],
                "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "tcp", "ports": [8000 + r]}]}]});
            admin.add_policy(&p).await.expect("policy");
        }
        Change::Label => {
            let labels = BTreeMap::from([("round".to_owned(), format!("{run}-{r}"))]);
            admin.set_endpoint_labels("ep-0", &LabelsRequest { labels }).await.expect("labels");
        }
    }
}

/// Per change kind the figures; romanad's RSS per replica; streams broken while connecting,
/// broken during the rounds, and open.
type Measured = (BTreeMap<Change, Figures>, Vec<f64>, (usize, usize, usize));

#[derive(Default)]
struct Figures {
    /// Per round: the slowest agent's delivery.
    rounds: Vec<Duration>,
    /// Every agent's delivery, every round.
    each: Vec<Duration>,
    /// Per round: when the observer saw the last change (the route manager's publication).
    published: Vec<Duration>,
    missing: usize,
    agents_per_round: Vec<usize>,
    /// Rounds in which the observer saw nothing of the change within 5 s: every block round
    /// changes its rack's route sets, so one here means the route manager did not publish
    /// (before the election fix, a leader whose lease had lapsed never led again).
    unseen: usize,
}

fn pct(xs: &[Duration], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

/// The rounds with the first `n` hosts' agents following romanad.
async fn measure(
    setup: &Setup,
    admin: &Client,
    n: usize,
    rounds: usize,
    rack: &[String],
    shared: bool,
) -> Measured {
    let urls = setup.urls();
    let key = romana_services::key_file::read(&setup.dir().join("signing-key.pem")).expect("signing key");
    // Past the open-file limit, the agents follow only the prefixes the measured changes use.
    let full = !shared && n * AGENT_STREAMS + 1000 < fd_limit() || shared && n * 2 + 1000 < fd_limit();
    let mut members = Vec::new();
    for i in 0..n {
        let host = host_name(i);
        // Each agent lists every replica, starting at another one.
        let mut mine = urls.clone();
        mine.rotate_left(i % urls.len());
        let c = Client::new(mine);
        c.set_token(Some(agent_token(&key, &host)));
        let mut prefixes = vec![format!("routes/{host}")];
        let extra: &[&str] = if full { &AGENT_PREFIXES } else { &["endpoints/", "policies/"] };
        prefixes.extend(extra.iter().map(|p| p.to_string()));
        members.push((Arc::new(c), prefixes));
    }
    let fleet = Fleet::spawn(members, shared);
    let observer = Fleet::spawn(
        vec![(
            Arc::new(common::same_token(admin, &urls[0])),
            vec!["routes/".into(), "policies/".into(), "endpoints/".into()],
        )],
        shared,
    );
    let t = Instant::now();
    assert!(
        fleet.all_synced(Duration::from_secs(600)).await
            && observer.all_synced(Duration::from_secs(60)).await,
        "{} of {} streams synced",
        fleet.synced(),
        fleet.streams()
    );
    println!(
        "  {n} agents, {} streams ({}), synced in {:.1} s",
        fleet.streams(),
        if full { "the agent's full set" } else { "routes, endpoints, policies: the open-file limit" },
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss: Vec<f64> = setup.pids().into_iter().map(rss_mib).collect();
    // Streams that broke while thousands connected at once are counted apart from those that
    // broke during the rounds.
    let lost_at_start = fleet.lost();
    let seen = &observer.watchers[0].seen;
    let run = format!("{n}");
    let mut out: BTreeMap<Change, Figures> = BTreeMap::new();
    for r in 0..rounds {
        for kind in [Change::Block, Change::Policy, Change::Label] {
            let t0 = Instant::now();
            change(admin, kind, &run, r, rack).await;
            let d: Delivery = deliver(&fleet, seen, t0, QUIET, LIMIT).await;
            eprintln!(
                "  round {r} {kind:?}: {} agents, slowest {:.1} ms, {} missing",
                d.latencies.len(),
                d.latencies.iter().max().map_or(0.0, |m| m.as_secs_f64() * 1e3),
                d.missing
            );
            let f = out.entry(kind).or_default();
            if d.keys == 0 {
                f.unseen += 1;
                continue;
            }
            if let Some(max) = d.latencies.iter().max() {
                f.rounds.push(*max);
            }
            f.each.extend(&d.latencies);
            f.published.push(d.published);
            f.missing += d.missing;
            f.agents_per_round.push(d.latencies.len() + d.missing);
        }
    }
    for (count, reason) in fleet.reasons() {
        println!("  streams broken {count} times: {reason}");
    }
    (out, rss, (lost_at_start, fleet.lost() - lost_at_start, fleet.streams()))
}

fn report(store: Store, n: usize, idle: &[f64], one: &Measured, many: &Measured) {
    println!("\n### {store:?}: {n} agents against 1 agent (same run)\n");
    println!(
        "| change | agents reached per round | all have it: p50 / p99 / max (ms) | each agent: p50 / p99 (ms) | published (p50 ms) | 1 agent: p50 / max (ms) | p99 ratio N:1 | missing | rounds unseen N / 1 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for kind in [Change::Block, Change::Policy, Change::Label] {
        let (Some(a), Some(b)) = (many.0.get(&kind), one.0.get(&kind)) else { continue };
        let reached = a.agents_per_round.iter().max().copied().unwrap_or(0);
        println!(
            "| {kind:?} | {reached} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.1} | {} | {} / {} |",
            pct(&a.rounds, 0.5),
            pct(&a.rounds, 0.99),
            pct(&a.rounds, 1.0),
            pct(&a.each, 0.5),
            pct(&a.each, 0.99),
            pct(&a.published, 0.5),
            pct(&b.rounds, 0.5),
            pct(&b.rounds, 1.0),
            pct(&a.rounds, 0.99) / pct(&b.rounds, 0.99),
            a.missing + b.missing,
            a.unseen,
            b.unseen
        );
    }
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    println!(
        "\nromanad RSS (MiB, per replica): idle {idle:.1?}, 1 agent {:.1?}, {n} agents {:.1?}; {n} agents minus idle: {:.1} MiB in all",
        one.1,
        many.1,
        sum(&many.1) - sum(idle)
    );
    let per_stream = (sum(&many.1) - sum(&one.1)) * 1024.0 / (many.2.2 - one.2.2).max(1) as f64;
    println!("  about {per_stream:.1} KiB per watch stream ({} streams)", many.2.2);
    println!(
        "watch streams that broke and reconnected: 1 agent {} while connecting / {} during the rounds; {n} agents {} / {}",
        one.2.0, one.2.1, many.2.0, many.2.1
    );
}

/// Raises this process's open-file limit to its hard limit (romanad, started from here,
/// inherits it): every simulated agent holds a socket, and romanad one per agent.
#[allow(unsafe_code)]
fn raise_fd_limit() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn main() {
    raise_fd_limit();
    let a = args();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        println!(
            "fan-out: racks of {RACK} hosts, /28 blocks, open-file limit {}, {}",
            fd_limit(),
            if a.shared { "one stream per agent" } else { "one stream per prefix" }
        );
        for store in &a.stores {
            for &n in &a.agents {
                let setup = Setup::start(*store, &format!("fanout-{n}")).await;
                let admin = Arc::new(common::admin_at(setup.dir(), setup.urls()).await);
                let t = Instant::now();
                let rack = populate(admin.clone(), n).await;
                println!(
                    "{store:?}: {n} hosts added in {:.1} s; rack of node-00000: {} hosts",
                    t.elapsed().as_secs_f64(),
                    rack.len() + 1
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
                let idle: Vec<f64> = setup.pids().into_iter().map(rss_mib).collect();
                let one = measure(&setup, &admin, 1, a.rounds, &rack, a.shared).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let many = measure(&setup, &admin, n, a.rounds, &rack, a.shared).await;
                report(*store, n, &idle, &one, &many);
                drop(admin);
                drop(setup);
            }
        }
    });
}
