//! Firewall compiler benchmark: a synthetic cluster (10 tenants, 100 hosts, endpoints with app
//! and role labels, Kubernetes-style policies selecting by app and admitting by role and tenant
//! labels) compiled for one host at growing scale. Reports compile time (cold, cached, and
//! a restart's compile plus its plan against the kernel's table read back), the table's rules and
//! set elements, and what one more endpoint or one more policy changes (the transaction), against
//! what a set-less compiler (one rule per allowed peer address, iptables-style) would hold.
//! Run with `cargo bench -p romana-policy --bench firewall` (`-- --quick` for the small scales,
//! `-- --only=5000` for one scale).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use romana_policy::eval::{Endpoint, NamedPort, World, endpoints_peer_matches, selects};
use romana_policy::firewall::{CompileCache, FirewallInput, compile, compile_cached};
use romana_policy::incremental::{endpoint_changes, plan_part};
use romana_policy::nftplan::{Observed, plan};
use romana_policy::{Peer, PolicyRules, Port, PortRule, Protocol, Rule, Scope, Selector};

fn endpoint(i: usize) -> Endpoint {
    Endpoint {
        id: format!("e{i}"),
        tenant: format!("ns{}", i % 10),
        labels: BTreeMap::from([
            ("app".to_owned(), format!("app{}", i % 100)),
            ("role".to_owned(), format!("r{}", i % 7)),
        ]),
        ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32 + 1))),
        ports: if i.is_multiple_of(2) {
            vec![NamedPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }]
        } else {
            vec![]
        },
        host: format!("h{}", i % 100),
        is_host: false,
    }
}

fn policy(j: usize) -> PolicyRules {
    let tenants = (j.is_multiple_of(3)).then(|| Selector::label_is("tier", "a"));
    let port = if j.is_multiple_of(5) {
        Port::Named("http".into())
    } else {
        Port::Range(80 + (j % 50) as u16, 80 + (j % 50) as u16)
    };
    PolicyRules {
        id: format!("k8s:ns{}/p{j}", j % 10),
        tenant: format!("ns{}", j % 10),
        scope: Scope::Tenant,
        target: Selector::label_is("app", &format!("app{}", j % 100)),
        ingress: Some(vec![Rule {
            peers: Some(vec![Peer::Endpoints {
                tenants,
                endpoints: Some(Selector::label_is("role", &format!("r{}", j % 7))),
            }]),
            ports: Some(vec![PortRule { protocol: Protocol::Tcp, port: Some(port) }]),
        }]),
        egress: (j.is_multiple_of(10)).then(|| {
            vec![Rule {
                peers: Some(vec![Peer::Endpoints {
                    tenants: None,
                    endpoints: Some(Selector::label_is("role", &format!("r{}", (j + 1) % 7))),
                }]),
                ports: Some(vec![PortRule { protocol: Protocol::Udp, port: Some(Port::Range(53, 53)) }]),
            }]
        }),
    }
}

fn world() -> World {
    World {
        tenants: (0..10u32)
            .map(|k| {
                (
                    format!("ns{k}"),
                    BTreeMap::from([(
                        "tier".to_owned(),
                        if k.is_multiple_of(2) { "a" } else { "b" }.to_owned(),
                    )]),
                )
            })
            .collect(),
    }
}

/// Rules a set-less compiler needs on `host`: per policy and local target, one rule per peer
/// address the rule admits (per port), the way per-endpoint iptables rules grow.
fn setless_rules(policies: &[Arc<PolicyRules>], w: &World, eps: &[Endpoint], host: &str) -> usize {
    let mut n = 0;
    // Peers are counted once per distinct (tenant, selector): policies share a few dozen.
    let mut memo: BTreeMap<String, usize> = BTreeMap::new();
    for p in policies {
        let targets = eps.iter().filter(|e| e.host == host && selects(p, e)).count();
        for r in p.ingress.iter().chain(&p.egress).flatten() {
            let peers: usize = r
                .peers
                .iter()
                .flatten()
                .map(|peer| match peer {
                    Peer::Endpoints { tenants, endpoints } => {
                        *memo.entry(format!("{}|{tenants:?}|{endpoints:?}", p.tenant)).or_insert_with(|| {
                            eps.iter()
                                .filter(|e| {
                                    endpoints_peer_matches(
                                        w,
                                        &p.tenant,
                                        tenants.as_ref(),
                                        endpoints.as_ref(),
                                        e,
                                    )
                                })
                                .count()
                        })
                    }
                    _ => 1,
                })
                .sum();
            n += targets * peers * r.ports.as_ref().map_or(1, Vec::len);
        }
        n += targets; // the isolation drop
    }
    n
}

/// The CPU time this thread has run (the kernel's schedstat, nanoseconds, brought up to date at
/// scheduler ticks: a few ms of resolution, enough for the compiles at scale): on a shared machine
/// other load moves it far less than wall time, which also counts the time spent waiting for a
/// core. On an idle machine the two agree.
struct Cpu(u64);

impl Cpu {
    fn read() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
        s.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat's first field")
    }
    fn now() -> Cpu {
        Cpu(Cpu::read())
    }
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(Cpu::read() - self.0)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scales: &[(usize, usize)] = if quick {
        &[(100, 1_000), (1_000, 10_000)]
    } else {
        &[(100, 1_000), (300, 3_000), (1_000, 10_000), (3_000, 30_000), (5_000, 50_000)]
    };
    // `--only=5000`: the scale with that many policies alone (for a profiler).
    let only: Option<usize> =
        std::env::args().find_map(|a| a.strip_prefix("--only=").map(|n| n.parse().expect("--only=POLICIES")));
    let scales: Vec<(usize, usize)> =
        scales.iter().copied().filter(|(p, _)| only.is_none_or(|o| o == *p)).collect();
    let w = world();
    println!("firewall compiler, host h0 of 100 (synthetic cluster: 10 tenants, Kubernetes-style policies)");
    println!(
        "times: medians (ms) of the compiling thread's CPU time; cached, pass and endpoint pass: of wall time \
         (below the CPU clock's 4 ms tick)"
    );
    println!(
        "{:>8} {:>9} {:>11} {:>10} {:>8} {:>10} {:>7} {:>9} {:>13} {:>9} {:>22} {:>22} {:>21}",
        "policies",
        "endpoints",
        "compile ms",
        "cached ms",
        "pass ms",
        "restart ms",
        "rules",
        "elements",
        "set-less rules",
        "ratio",
        "+1 endpoint (el/rules)",
        "+1 policy (rules/sets)",
        "endpoint pass ms (s/u)"
    );
    for (np, ne) in scales {
        let eps: Vec<Endpoint> = (0..ne).map(endpoint).collect();
        let pols: Vec<Arc<PolicyRules>> = (0..np).map(|i| Arc::new(policy(i))).collect();
        let input = FirewallInput { host: "h0", policies: &pols, world: &w, endpoints: &eps };
        let times: Vec<Duration> = (0..if quick { 3 } else { 5 })
            .map(|_| {
                let t = Cpu::now();
                black_box(compile(black_box(input)));
                t.elapsed()
            })
            .collect();
        let base = compile(input);
        let (rules, elements) = base.counts();
        let setless = setless_rules(&pols, &w, &eps, "h0");
        // One more endpoint on h0, selected by some policies and admitted by others.
        let mut more = eps.clone();
        more.push(Endpoint { id: "new".into(), host: "h0".into(), ..endpoint(ne) });
        let after = compile(FirewallInput { endpoints: &more, ..input });
        let pe = plan(Some(&Observed::of(&base)), &after).summary;
        let mut pols2 = pols.clone();
        pols2.push(Arc::new(PolicyRules { id: "k8s:ns0/extra".into(), ..policy(np) }));
        let after = compile(FirewallInput { policies: &pols2, ..input });
        let pp = plan(Some(&Observed::of(&base)), &after).summary;
        // An agent's restart: nothing cached, and the kernel's table read back (equal, but no
        // set shared with the compile, so the planner compares every element): the compile and
        // the plan before its first transaction, which is empty.
        let read_back = Observed {
            sets: Observed::of(&base).sets.into_iter().map(|(n, s)| (n, Arc::new((*s).clone()))).collect(),
            ..Observed::of(&base)
        };
        let restarts: Vec<Duration> = (0..if quick { 3 } else { 5 })
            .map(|_| {
                let t = Cpu::now();
                let rs = compile(black_box(input));
                let p = plan(Some(&read_back), &rs);
                assert!(p.is_empty(), "a restart over its own table changes nothing: {:?}", p.summary);
                t.elapsed()
            })
            .collect();
        // The agent's case for a policy change: endpoints unchanged, the cache warm.
        let mut cache = CompileCache::default();
        black_box(compile_cached(input, &mut cache, 1));
        let cached: Vec<Duration> = (0..if quick { 3 } else { 5 })
            .map(|k| {
                let ps = if k % 2 == 0 { &pols2 } else { &pols };
                let t = std::time::Instant::now();
                black_box(compile_cached(FirewallInput { policies: ps, ..input }, &mut cache, 1));
                t.elapsed()
            })
            .collect();
        // The agent's whole pure pass for that change: compile, plan against the table as last
        // applied, and keep the new table as the applied one.
        let mut known = Observed::of(&compile_cached(input, &mut cache, 1));
        let passes: Vec<Duration> = (0..if quick { 3 } else { 5 })
            .map(|k| {
                let ps = if k % 2 == 0 { &pols2 } else { &pols };
                let t = std::time::Instant::now();
                let rs = compile_cached(FirewallInput { policies: ps, ..input }, &mut cache, 1);
                black_box(plan(Some(&known), &rs));
                known = Observed::of(&rs);
                t.elapsed()
            })
            .collect();
        // CNI ADD's firewall work (the agent's endpoint pass): one new endpoint on h0 and then its
        // removal, each applied to the table as it stands (`incremental::endpoint_changes`, then
        // its plan); wall time of the adds (sub-millisecond: below the CPU clock's resolution).
        // Selected: like h0's other endpoints (app0), the target of 50 policies with h0's 500
        // endpoints; unselected: labels no policy names (the policy bench's new pods).
        let mut cache = CompileCache::default();
        let mut table = Observed::of(&compile_cached(input, &mut cache, 1));
        let selected = Endpoint { id: "new".into(), host: "h0".into(), ..endpoint(ne) };
        let unselected = Endpoint {
            labels: BTreeMap::from([("app".to_owned(), "none".to_owned())]),
            ports: vec![],
            ..selected.clone()
        };
        let mut pass_ms = |new: &Endpoint| {
            let mut adds = Vec::new();
            for k in 0..40 {
                let change = if k % 2 == 0 { (None, Some(new.clone())) } else { (Some(new.clone()), None) };
                let t = std::time::Instant::now();
                let part =
                    endpoint_changes(&mut cache, &w, "h0", 1, &table, &[change]).expect("an endpoint pass");
                black_box(plan_part(&table, &part));
                if k % 2 == 0 {
                    adds.push(t.elapsed());
                }
                table.apply_part(&part);
            }
            median(adds).as_secs_f64() * 1e3
        };
        let (pass_selected, pass_unselected) = (pass_ms(&selected), pass_ms(&unselected));
        println!(
            "{np:>8} {ne:>9} {:>11.1} {:>10.2} {:>8.2} {:>10.1} {rules:>7} {elements:>9} {setless:>13} {:>9.3} {:>22} {:>22} {:>21}",
            median(times).as_secs_f64() * 1e3,
            median(cached).as_secs_f64() * 1e3,
            median(passes).as_secs_f64() * 1e3,
            median(restarts).as_secs_f64() * 1e3,
            rules as f64 / setless.max(1) as f64,
            format!("+{} / +{}", pe.elements_added, pe.rules_added),
            format!("+{} / +{}", pp.rules_added, pp.sets_added),
            format!("{pass_selected:.3} / {pass_unselected:.3}"),
        );
    }
}
