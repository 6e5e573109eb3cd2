//! The replicated control plane: three romanad replicas on a three-member etcd (Debian's etcd on
//! 127.0.0.1, ports chosen at run time). A replica never decides from a copy older than what
//! another replica acknowledged.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "ha_parts/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::ha::{PREFIX, ha};
use load::{Figures, Load};
use romana_api::rest::{AddressRequest, HostRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_store::StoreExt;
use romana_store_etcd::EtcdStore;
use romana_store_etcd::cluster::EtcdCluster;
use romana_store_etcd::election_log::{Election, Step};
use romana_test_support::TempDir;

fn topology(json: &str) -> TopologyRequest {
    serde_json::from_str(json).unwrap()
}

fn host(name: &str, ip: &str, tags: &[(&str, &str)]) -> HostRequest {
    HostRequest {
        name: name.into(),
        ip: ip.into(),
        ipv6: None,
        agent_port: None,
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        k8s_info: None,
    }
}

const ROUNDS: usize = 200;

/// Right after one replica acknowledges a change, another replica acts on it: `DELETE /address`
/// finds the address `POST /address` made elsewhere, and `POST /hosts` sees the topology
/// `POST /topology` set elsewhere (and `DELETE /hosts` the host). 200 rounds of each, zero misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_never_answers_from_a_stale_copy() {
    let h = ha("stale").await;
    let c = &h.clients;
    c[0].apply_topology(&topology(
        r#"{"networks":[{"name":"pods","cidr":"10.40.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#,
    ))
    .await
    .unwrap();
    // No waiting anywhere: each call goes to another replica than the one before.
    c[1].add_host(&host("h0", "192.168.9.250", &[])).await.expect("the host, right after the topology");
    // Another user of the same etcd: its changes move the store's revision, and no replica's
    // watch ever delivers them (the replicas then fence, `ipam_catch_up.rs`).
    let other = EtcdStore::connect(&h.etcd.endpoints()).await.expect("etcd");
    let mut misses = Vec::new();
    for i in 0..ROUNDS {
        if i % 10 == 0 {
            other.put("/someone-else/key", format!("{i}").into_bytes()).await.expect("put");
        }
        let req = AddressRequest {
            name: format!("s{i}"),
            host: "h0".into(),
            tenant: "t".into(),
            segment: String::new(),
            ip: None,
        };
        let a = c[i % 3].allocate(&req, None).await.unwrap_or_else(|e| panic!("allocate s{i}: {e}"));
        if let Err(e) = c[(i + 1) % 3].release(&format!("s{i}")).await {
            misses.push(format!("release s{i} ({}) on replica {}: {e}", a.ip, (i + 1) % 3));
        }
    }
    assert_eq!(misses, Vec::<String>::new(), "every release found what another replica allocated");
    c[2].remove_host("h0").await.expect("remove h0");

    for k in 0..ROUNDS {
        let t = format!(
            r#"{{"networks":[{{"name":"pods","cidr":"10.40.0.0/16","block_mask":28}}],"topologies":[{{"networks":["pods"],"map":[{{"name":"g","assignment":{{"rack":"r{k}"}},"groups":[]}}]}}]}}"#
        );
        c[k % 3].apply_topology(&topology(&t)).await.unwrap_or_else(|e| panic!("topology {k}: {e}"));
        let name = format!("h{k}");
        let rack = format!("r{k}");
        if let Err(e) =
            c[(k + 1) % 3].add_host(&host(&name, &format!("192.168.9.{}", k + 1), &[("rack", &rack)])).await
        {
            misses.push(format!("add {name} (rack {rack}) on replica {}: {e}", (k + 1) % 3));
            continue;
        }
        if let Err(e) = c[(k + 2) % 3].remove_host(&name).await {
            misses.push(format!("remove {name} on replica {}: {e}", (k + 2) % 3));
        }
    }
    assert_eq!(misses, Vec::<String>::new(), "every host call saw the topology and host set elsewhere");
}

async fn setup_two_hosts(c: &Client) {
    c.apply_topology(&topology(
        r#"{"networks":[{"name":"pods","cidr":"10.48.0.0/14","block_mask":26}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#,
    ))
    .await
    .unwrap();
    for k in 0..2 {
        c.add_host(&host(&format!("h{k}"), &format!("192.168.8.{}", k + 1), &[])).await.unwrap();
    }
}

/// Which member leads, waiting (bounded) for an election to finish.
async fn leader(etcd: &EtcdCluster) -> usize {
    for _ in 0..100 {
        if let Some(l) = etcd.leader().await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the etcd cluster elected no leader in 10 s");
}

/// A hang, not a measurement: the figures are printed, and go to docs/benchmarks.md.
const HANG: Duration = Duration::from_secs(10);

/// Kill rounds per kind of kill (`HA_ROUNDS` to change; docs/benchmarks.md used 5).
fn rounds() -> usize {
    std::env::var("HA_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2)
}

/// `GET {url}/readyz`'s status (0 when nothing answered).
async fn readyz(url: &str) -> u16 {
    match romana_client::http().get(format!("{url}/readyz")).timeout(HANG).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn unix_ms_now() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// etcd's election after a leader kill at `killed` (`killed_wall` on the wall clock, as etcd
/// logs it), from the members' logs, and how long after the new leader's election the first
/// allocation was acknowledged.
fn election_line(etcd: &EtcdCluster, load: &Load, killed: Instant, killed_wall: u64) -> String {
    let e = Election::after(&etcd.election_events(), killed_wall);
    let first = e.leader.as_ref().and_then(|(_, _, ms)| {
        let elected = killed + Duration::from_millis(*ms);
        load.first_ack_after(elected)
    });
    let first = first.map_or("none".to_owned(), |d| format!("+{} ms", d.as_millis()));
    let day_ms = killed_wall % 86_400_000;
    let at = format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1_000 % 60,
        day_ms % 1_000
    );
    format!("  election (killed at {at} UTC): {e}; first allocation after the new leader: {first}")
}

/// Under allocation load from clients that fail over between the replicas, etcd members are
/// killed with SIGKILL, round after round: a follower (the member the replicas talk to first,
/// when it is not the leader), then the leader. Then all of etcd: every write answers 503 (and
/// is not done later), `/readyz` says 503, and once etcd is back every replica is ready again
/// and allocation works, by itself. Nothing acknowledged is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_carries_on_when_etcd_members_die() {
    let mut h = ha("members").await;
    setup_two_hosts(&h.clients[0]).await;
    let load = Load::start(&h.urls(), h.clients[0].token(), 6);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The baseline of the same run: the longest interval with nothing killed.
    let baseline = load.window(started + Duration::from_millis(500), Instant::now()).gap;
    let mut figures = Figures::default();
    let mut report = vec![format!(
        "no kill (baseline): longest interval without an allocation {} ms",
        baseline.as_millis()
    )];
    let mut leader_kills = 0;
    for round in 0..rounds() {
        for kind in ["follower", "leader"] {
            let l = leader(&h.etcd).await;
            let victim = if kind == "leader" {
                l
            } else if l == 0 {
                1
            } else {
                0
            };
            let (killed, killed_wall) = (Instant::now(), unix_ms_now());
            h.etcd.kill9(victim);
            let elected = leader(&h.etcd).await;
            let new_leader = killed.elapsed();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let w = load.window(killed - Duration::from_millis(500), Instant::now());
            let election = (kind == "leader").then(|| election_line(&h.etcd, &load, killed, killed_wall));
            if std::env::var("HA_DEBUG").is_ok() {
                load.print_errors_since(killed);
            }
            report.push(format!(
                "round {round}: etcd {kind} (member {victim}) killed: longest interval without an allocation {} \
                 ms (from {:+} ms), slowest acknowledged call {} ms, {} failed calls{}; member {elected} leads (seen \
                 after {} ms)",
                w.gap.as_millis(),
                w.gap_at.as_millis() as i64 - 500,
                w.slowest.as_millis(),
                w.failed,
                w.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default(),
                new_leader.as_millis(),
            ));
            if let Some(line) = election {
                report.push(line);
                leader_kills += 1;
            }
            figures.add(&format!("etcd {kind}"), w.gap);
            assert!(w.gap < HANG, "allocation hung after the etcd {kind} died: {report:?}");
            h.etcd.restart(victim).expect("member restarts");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let acked = load.stop().await;
    // Elections nobody caused: every leader but the first and those after a leader kill.
    let elections = h.etcd.election_events().iter().filter(|e| e.step == Step::Leader).count();
    report.push(format!(
        "etcd leaders elected: {elections}, of which not after a leader kill (the first one aside): {}",
        elections.saturating_sub(1 + leader_kills)
    ));

    // All of etcd down: writes are refused at once, and not done later; not ready.
    for m in 0..3 {
        h.etcd.kill9(m);
    }
    let mut refused = Vec::new();
    for (r, c) in h.clients.iter().enumerate() {
        for k in 0..3 {
            let name = format!("down-{r}-{k}");
            let req = AddressRequest {
                name: name.clone(),
                host: "h0".into(),
                tenant: "t".into(),
                segment: String::new(),
                ip: None,
            };
            let sent = Instant::now();
            let got = c.allocate(&req, None).await;
            let took = sent.elapsed();
            assert_eq!(
                got.as_ref().err().and_then(|e| e.status()),
                Some(503),
                "{name} with etcd down: {got:?}"
            );
            assert!(took < HANG, "{name} hung {took:?}");
            refused.push((name, took));
        }
    }
    for url in h.urls() {
        assert_eq!(readyz(&url).await, 503, "{url}/readyz with all of etcd down");
    }
    let slowest = refused.iter().map(|(_, t)| *t).max().unwrap();
    report.push(format!(
        "all of etcd down: {} writes refused with 503, the slowest in {} ms; /readyz 503 on every replica",
        refused.len(),
        slowest.as_millis()
    ));
    // Down for a while (the replicas retry meanwhile), then back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for m in 0..3 {
        h.etcd.restart(m).expect("member restarts");
    }
    let back = Instant::now();
    let req = AddressRequest {
        name: "after".into(),
        host: "h1".into(),
        tenant: "t".into(),
        segment: String::new(),
        ip: None,
    };
    let mut served = None;
    while back.elapsed() < Duration::from_secs(60) {
        if h.clients[1].allocate(&req, None).await.is_ok() {
            served = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.expect("allocation works again within 60 s of etcd's return");
    let mut ready = Vec::new();
    for url in h.urls() {
        let mut status = 0;
        while back.elapsed() < Duration::from_secs(60) {
            status = readyz(&url).await;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, 200, "{url} ready again within 60 s of etcd's return, by itself");
        ready.push(back.elapsed().as_millis().to_string());
    }
    report.push(format!(
        "etcd back: allocation served again after {} ms; replicas ready after {} ms",
        served.as_millis(),
        ready.join(" / ")
    ));

    // Nothing acknowledged lost, moved or duplicated; nothing refused done anyway.
    let listed: BTreeMap<String, String> =
        h.clients[2].addresses("").await.unwrap().into_iter().map(|a| (a.name, a.ip)).collect();
    for (name, ip) in &acked {
        assert_eq!(listed.get(name), Some(ip), "{name} was acknowledged at {ip}");
    }
    let ips: std::collections::BTreeSet<&String> = listed.values().collect();
    assert_eq!(ips.len(), listed.len(), "an address is held twice");
    for (name, _) in &refused {
        assert!(!listed.contains_key(name), "{name} was refused with 503 and then allocated");
    }
    report.extend(figures.lines());
    eprintln!("{} allocations acknowledged\n{}", acked.len(), report.join("\n"));
}

/// A `romana-agent` process, killed when dropped (even when the test fails).
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent whose credentials list two replicas starts while both are down (it waits, retrying),
/// registers once one is up, and when the replica it uses is killed it carries on through the
/// other: its heartbeat lease (2 s) is still renewed seconds later. Needs root (a namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_starts_before_romanad_and_fails_over() {
    let Some(ns) = romana_test_support::Netns::new(&format!("rha-{}", std::process::id())) else {
        eprintln!("skipped: cannot make network namespaces here (needs root and iproute2)");
        return;
    };
    let etcd = common::etcd("agent-ha");
    let (da, db, work) = (TempDir::new("agent-ha-a"), TempDir::new("agent-ha-b"), TempDir::new("agent-ha-w"));
    let mut a = common::on_etcd(&etcd, PREFIX, &["--data-dir", &da.path().display().to_string()]);
    let mut b = common::on_etcd(&etcd, PREFIX, &["--data-dir", &db.path().display().to_string()]);
    let admin = common::admin(&da).await;
    admin
        .apply_topology(&topology(
            r#"{"networks":[{"name":"pods","cidr":"10.52.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#,
        ))
        .await
        .unwrap();
    let user = romana_api::rest::UserRequest {
        name: "agent-h1".into(),
        password: "agent-h1-password-long-enough".into(),
        roles: vec!["service".into()],
        tenants: vec![],
        hosts: vec!["h1".into()],
    };
    admin.create_user(&user).await.unwrap();
    let creds = romana_api::rest::Credentials {
        endpoint: format!("{},{}", a.url, b.url),
        username: user.name.clone(),
        password: user.password.clone(),
        ca: None,
    };
    let creds_file = work.path().join("agent.credentials");
    std::fs::write(&creds_file, serde_json::to_vec(&creds).unwrap()).unwrap();
    a.kill9();
    b.kill9();

    let log = work.path().join("agent.log");
    let agent_bin = romana_test_support::sibling_bin(common::BIN, "romana-agent");
    let child = std::process::Command::new(agent_bin)
        .args([
            "--host",
            "h1",
            "--host-ip",
            "192.168.77.1",
            "--netns",
            &ns.0,
            "--no-policy",
            "--no-fast-path",
        ])
        .args(["--interval-ms", "300", "--credentials"])
        .arg(&creds_file)
        .arg("--socket")
        .arg(work.path().join("agent.sock"))
        .arg("--state-dir")
        .arg(work.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("romana-agent starts");
    let mut agent = Agent(child);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // With every replica down the agent waits rather than exiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(agent.0.try_wait().unwrap().is_none(), "the agent exited with romanad down:\n{}", log_text());
    assert!(log_text().contains("romanad not reachable yet"), "the agent says it waits:\n{}", log_text());

    a.restart().expect("replica a restarts");
    let registered = async {
        for _ in 0..300 {
            if admin.host("h1").await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(registered.await, "the agent registered h1 once a replica was up:\n{}", log_text());

    // Heartbeats keep the host's liveness key (2 s lease) in the store.
    let store = EtcdStore::connect(&etcd.endpoints()).await.unwrap();
    let alive = || async {
        romana_store::Store::get(&store, &format!("{PREFIX}liveness/h1")).await.unwrap().is_some()
    };
    b.restart().expect("replica b restarts");
    let mut seen = false;
    for _ in 0..100 {
        if alive().await {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the agent's heartbeat reached the store:\n{}", log_text());

    // The agent talks to a (listed first, and answering): kill it. Three lease times later the
    // heartbeat is still renewed, through b.
    a.kill9();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(agent.0.try_wait().unwrap().is_none(), "the agent exited when a died:\n{}", log_text());
    assert!(alive().await, "the heartbeat lapsed after replica a died: no failover\n{}", log_text());
    assert_eq!(
        common::same_token(&admin, &b.url).host("h1").await.map(|h| h.name).ok(),
        Some("h1".to_owned()),
        "b serves the host"
    );
    drop(agent);
    drop((a, b));
}

/// The route manager's leader replica is killed with SIGKILL: another replica leads (the leader
/// key names it) and publishes route set notices again: a host added right after the kill gets
/// its notice.
/// The time from the kill to that first publication is printed (docs/benchmarks.md); only a hang
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_managers_leader_hands_over() {
    let mut h = ha("leader").await;
    setup_two_hosts(&h.clients[0]).await;
    let store = EtcdStore::connect(&h.etcd.endpoints()).await.unwrap();
    let key = format!("{PREFIX}leader/route-manager");
    let holder = || async {
        romana_store::Store::get(&store, &key)
            .await
            .unwrap()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    };
    let mut lines = Vec::new();
    for round in 0..rounds().max(2) {
        let mut leader = None;
        for _ in 0..100 {
            leader = holder().await;
            if leader.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leader = leader.expect("a replica leads within 10 s");
        // The instance name is "PID-PORT".
        let victim = h
            .replicas
            .iter()
            .position(|r| r.pid().is_some_and(|p| leader.starts_with(&format!("{p}-"))))
            .unwrap_or_else(|| panic!("the leader {leader} is one of the replicas"));
        let killed = Instant::now();
        h.replicas[victim].kill9();
        // A new host right after the kill: only a leader publishes its set's notice, so the
        // notice appearing is the new leader's first publication.
        let alive = h.replicas.iter().position(|r| r.pid().is_some()).unwrap();
        let name = format!("late{round}");
        h.clients[alive].add_host(&host(&name, &format!("192.168.6.{}", round + 1), &[])).await.unwrap();
        let routes = format!("{PREFIX}routes/{name}");
        let (mut next, mut published) = (None, None);
        while killed.elapsed() < HANG && (published.is_none() || next.is_none()) {
            // The set first: the key was taken before it was published, so it is read after.
            if published.is_none() && romana_store::Store::get(&store, &routes).await.unwrap().is_some() {
                published = Some(killed.elapsed());
            }
            if next.is_none()
                && let Some(l) = holder().await
                && l != leader
            {
                next = Some((l, killed.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (next, took_key) =
            next.unwrap_or_else(|| panic!("round {round}: nobody took over from {leader} in {HANG:?}"));
        let published = published
            .unwrap_or_else(|| panic!("round {round}: the new leader {next} published {name}'s set"));
        lines.push(format!(
            "hand-over {round}: {leader} -> {next}: leader key after {} ms, first publication after {} ms",
            took_key.as_millis(),
            published.as_millis()
        ));
        h.replicas[victim].restart().expect("the killed replica restarts");
    }
    eprintln!("{}", lines.join("\n"));
}

/// Under allocation load from clients over every replica, replicas are killed with SIGKILL one
/// at a time (and restarted), round after round: the clients move to the others. The longest
/// interval without an allocation is printed (docs/benchmarks.md); nothing acknowledged is lost
/// or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_carries_on_when_a_replica_dies() {
    let mut h = ha("replicas").await;
    setup_two_hosts(&h.clients[0]).await;
    let load = Load::start(&h.urls(), h.clients[0].token(), 6);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The baseline of the same run: the longest interval with nothing killed.
    let baseline = load.window(started + Duration::from_millis(500), Instant::now()).gap;
    let mut figures = Figures::default();
    let mut report = vec![format!(
        "no kill (baseline): longest interval without an allocation {} ms",
        baseline.as_millis()
    )];
    for round in 0..rounds() {
        for victim in 0..3 {
            let killed = Instant::now();
            h.replicas[victim].kill9();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let w = load.window(killed - Duration::from_millis(500), Instant::now());
            report.push(format!(
                "round {round}: replica {victim} killed: longest interval without an allocation {} ms (from {:+} \
                 ms), slowest acknowledged call {} ms, {} failed calls",
                w.gap.as_millis(),
                w.gap_at.as_millis() as i64 - 500,
                w.slowest.as_millis(),
                w.failed
            ));
            figures.add("romanad replica", w.gap);
            assert!(w.gap < HANG, "allocation hung after replica {victim} died: {report:?}");
            h.replicas[victim].restart().expect("the replica restarts");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let acked = load.stop().await;
    let listed: BTreeMap<String, String> =
        h.clients[2].addresses("").await.unwrap().into_iter().map(|a| (a.name, a.ip)).collect();
    for (name, ip) in &acked {
        assert_eq!(listed.get(name), Some(ip), "{name} was acknowledged at {ip}");
    }
    let ips: std::collections::BTreeSet<&String> = listed.values().collect();
    assert_eq!(ips.len(), listed.len(), "an address is held twice");
    report.extend(figures.lines());
    eprintln!("{} allocations acknowledged\n{}", acked.len(), report.join("\n"));
}
