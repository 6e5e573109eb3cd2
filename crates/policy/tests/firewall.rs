//! The firewall compiler against the evaluator: on random worlds (tenants with isolation modes,
//! endpoints of both families on three hosts, named ports, random policies of every peer and
//! port kind), every connection's verdict through the compiled tables of the hosts on its path
//! equals `eval::allowed`. Then the transaction planner: changes touch only what they must.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::interp::path_allows;
use proptest::prelude::*;
use romana_model::Cidr;
use romana_policy::eval::{Endpoint, NamedPort, Probe, World, allowed};
use romana_policy::firewall::{FirewallInput, compile};
use romana_policy::isolation::{Isolation, implicit_policies};
use romana_policy::nftplan::{Observed, plan};
use romana_policy::ruleset::Ruleset;
use romana_policy::{
    Operator, Peer, PolicyRules, Port, PortRule, Protocol, Requirement, Rule, SEGMENT_LABEL, Scope, Selector,
};

/// A small deterministic generator driven by proptest's seed (xorshift64*).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
const HOSTS: [&str; 3] = ["h0", "h1", "h2"];
const KEYS: [&str; 3] = ["app", "role", SEGMENT_LABEL];
const VALUES: [&str; 3] = ["a", "b", "c"];

fn labels(g: &mut Gen) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    for k in KEYS {
        if g.chance(60) {
            l.insert(k.to_owned(), (*g.pick(&VALUES)).to_owned());
        }
    }
    l
}

fn selector(g: &mut Gen) -> Selector {
    let mut requirements = Vec::new();
    for _ in 0..g.below(3) {
        let op = *g.pick(&[Operator::In, Operator::NotIn, Operator::Exists, Operator::DoesNotExist]);
        let values = match op {
            Operator::In | Operator::NotIn => {
                (0..1 + g.below(2)).map(|_| (*g.pick(&VALUES)).to_owned()).collect()
            }
            _ => BTreeSet::new(),
        };
        requirements.push(Requirement { key: (*g.pick(&KEYS)).to_owned(), op, values });
    }
    Selector { requirements }
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn peer(g: &mut Gen) -> Peer {
    match g.below(8) {
        0 | 1 => Peer::Endpoints {
            tenants: g.chance(50).then(|| selector(g)),
            endpoints: g.chance(70).then(|| selector(g)),
        },
        2 | 3 => {
            let (c, x): (&str, &[&str]) = *g.pick(&[
                ("10.0.0.0/24", &["10.0.0.2/32", "10.0.0.8/29"][..]),
                ("10.0.0.0/28", &[][..]),
                ("0.0.0.0/0", &["10.0.0.0/29"][..]),
                ("192.168.0.0/24", &[][..]),
                ("fd00::/64", &["fd00::4/126"][..]),
                ("::/0", &[][..]),
            ]);
            let except = x.iter().filter(|_| g.chance(60)).map(|s| cidr(s)).collect();
            Peer::Cidr { cidr: cidr(c), except }
        }
        4 => Peer::Any,
        5 => Peer::Host,
        _ => Peer::Local,
    }
}

fn port_rule(g: &mut Gen) -> PortRule {
    let protocol = *g.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp, Protocol::Icmpv6]);
    let port = if protocol.is_icmp() {
        // Echo request: 8 in ICMP, 128 in ICMPv6.
        let echo = if protocol == Protocol::Icmp { 8 } else { 128 };
        match g.below(3) {
            0 => None,
            1 => Some(Port::Icmp { icmp_type: echo, code: None }),
            _ => Some(Port::Icmp { icmp_type: echo, code: Some(g.below(2) as u8) }),
        }
    } else {
        match g.below(4) {
            0 => None,
            1 => Some(Port::Range(80, 80)),
            2 => Some(Port::Range(80, 81)),
            _ => Some(Port::Named((*g.pick(&["http", "dns"])).to_owned())),
        }
    };
    PortRule { protocol, port }
}

fn rules(g: &mut Gen) -> Option<Vec<Rule>> {
    g.chance(60).then(|| {
        (0..g.below(3))
            .map(|_| Rule {
                peers: g.chance(80).then(|| (0..1 + g.below(2)).map(|_| peer(g)).collect()),
                ports: g.chance(60).then(|| (0..1 + g.below(2)).map(|_| port_rule(g)).collect()),
            })
            .collect()
    })
}

struct Case {
    world: World,
    endpoints: Vec<Endpoint>,
    hosts: Vec<Endpoint>,
    policies: Vec<PolicyRules>,
}

fn case(seed: u64) -> Case {
    let mut g = Gen(seed | 1);
    let world = World { tenants: TENANTS.iter().map(|t| ((*t).to_owned(), labels(&mut g))).collect() };
    let mut endpoints = Vec::new();
    for i in 0..4 + g.below(6) {
        let v6 = g.chance(35);
        let ip = if v6 { format!("fd00::{}", i + 1) } else { format!("10.0.0.{}", i + 1) };
        let mut ports = Vec::new();
        if g.chance(50) {
            ports.push(NamedPort { name: "http".into(), protocol: Protocol::Tcp, port: *g.pick(&[80, 81]) });
        }
        if g.chance(40) {
            ports.push(NamedPort {
                name: "dns".into(),
                protocol: *g.pick(&[Protocol::Udp, Protocol::Tcp]),
                port: 81,
            });
        }
        endpoints.push(Endpoint {
            id: format!("e{i}"),
            tenant: (*g.pick(&TENANTS)).to_owned(),
            labels: labels(&mut g),
            ip: Some(ip.parse().unwrap()),
            ports,
            host: (*g.pick(&HOSTS)).to_owned(),
            is_host: false,
        });
    }
    // Each host with an address of each family (as two sources or destinations).
    let hosts = HOSTS
        .iter()
        .enumerate()
        .flat_map(|(i, _)| [format!("192.168.0.{}", i + 1), format!("fd01::{}", i + 1)])
        .zip(HOSTS.iter().flat_map(|h| [h, h]))
        .map(|(ip, h)| Endpoint {
            id: format!("{h}/{ip}"),
            ip: Some(ip.parse().unwrap()),
            host: (*h).to_owned(),
            is_host: true,
            ..Endpoint::default()
        })
        .collect();
    let mut policies: Vec<PolicyRules> = (0..g.below(5))
        .map(|i| {
            // Mostly tenant-scoped, as both front ends make them; Romana's CIDR, `dest: local` and
            // `dest: host` (ingress only) targets too.
            let scope = match g.below(10) {
                0 => {
                    let blocks: [&str; 3] = ["10.0.0.0/29", "10.0.0.4/30", "fd00::/64"];
                    let block: &&str = g.pick(&blocks);
                    Scope::Cidr(cidr(block))
                }
                1 => Scope::All,
                2 => Scope::Host,
                _ => Scope::Tenant,
            };
            let (tenant, target, ingress) = ((*g.pick(&TENANTS)).to_owned(), selector(&mut g), rules(&mut g));
            let egress = rules(&mut g).filter(|_| scope != Scope::Host);
            PolicyRules { id: format!("pol/{i}"), tenant, scope, target, ingress, egress }
        })
        .collect();
    let modes: BTreeMap<String, Isolation> = TENANTS
        .iter()
        .map(|t| ((*t).to_owned(), *g.pick(&[Isolation::None, Isolation::Tenant, Isolation::Segment])))
        .collect();
    let segments =
        TENANTS.iter().map(|t| ((*t).to_owned(), VALUES.iter().map(|v| (*v).to_owned()).collect())).collect();
    policies.extend(implicit_policies(&modes, &segments));
    Case { world, endpoints, hosts, policies }
}

fn check_case(seed: u64) {
    let c = case(seed);
    let shared = arcs(&c.policies);
    let tables: BTreeMap<&str, Ruleset> = HOSTS
        .iter()
        .map(|h| {
            let input =
                FirewallInput { host: h, policies: &shared, world: &c.world, endpoints: &c.endpoints };
            (*h, compile(input))
        })
        .collect();
    let lookup = |h: &str| tables[h].clone();
    let probes = [
        Probe { protocol: Protocol::Tcp, port: 80 },
        Probe { protocol: Protocol::Tcp, port: 81 },
        Probe { protocol: Protocol::Udp, port: 81 },
        Probe { protocol: Protocol::Sctp, port: 80 },
        Probe { protocol: Protocol::Icmp, port: 8 << 8 },
        Probe { protocol: Protocol::Icmp, port: (8 << 8) | 1 },
        Probe { protocol: Protocol::Icmpv6, port: 128 << 8 },
        Probe { protocol: Protocol::Icmpv6, port: (128 << 8) | 1 },
        // Neighbour solicitation and router advertisement: always allowed.
        Probe { protocol: Protocol::Icmpv6, port: 135 << 8 },
        Probe { protocol: Protocol::Icmpv6, port: 134 << 8 },
    ];
    let all: Vec<&Endpoint> = c.endpoints.iter().chain(&c.hosts).collect();
    for src in &all {
        for dst in &all {
            let (s, d) = (src.ip.unwrap(), dst.ip.unwrap());
            // A connection has one family; ICMP is carried in IPv4, ICMPv6 in IPv6.
            if src.id == dst.id || s.is_ipv4() != d.is_ipv4() {
                continue;
            }
            for probe in probes {
                if probe.protocol.family().is_some_and(|f| f != romana_model::Family::of(s)) {
                    continue;
                }
                let want = allowed(&c.policies, &c.world, src, dst, probe);
                let got = path_allows(&lookup, src, dst, probe.protocol, probe.port);
                assert_eq!(
                    got, want,
                    "seed {seed}: {} -> {} {probe:?}\npolicies: {:#?}\nsrc: {src:?}\ndst: {dst:?}",
                    src.id, dst.id, c.policies
                );
            }
        }
    }
}

/// Where two tables differ, by set and chain name (the whole tables are too long to read).
fn differences(a: &Ruleset, b: &Ruleset) -> Vec<String> {
    let names = |x: &Ruleset| x.sets.keys().chain(x.chains.keys()).cloned().collect::<BTreeSet<_>>();
    names(a)
        .union(&names(b))
        .filter(|n| a.sets.get(*n) != b.sets.get(*n) || a.chains.get(*n) != b.chains.get(*n))
        .map(|n| {
            format!(
                "{n}: {:?} {:?} / {:?} {:?}",
                a.sets.get(n),
                a.chains.get(n),
                b.sets.get(n),
                b.chains.get(n)
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn compiled_tables_agree_with_the_evaluator(seed in any::<u64>()) {
        check_case(seed);
    }

    /// A cache kept across compiles with the same endpoints and tenants (the agent's case when
    /// only policies change) gives exactly what a fresh compile gives.
    #[test]
    fn a_cached_compile_equals_a_fresh_one(seed in any::<u64>()) {
        let c = case(seed);
        // The same objects from compile to compile (known unchanged without a comparison), and
        // below copies (compared) and other rules under the same ids.
        let shared = arcs(&c.policies);
        let mut cache = romana_policy::firewall::CompileCache::default();
        for n in [shared.len(), shared.len() / 2, 0, shared.len()] {
            let policies = &shared[..n];
            let input = FirewallInput { host: "h0", policies, world: &c.world, endpoints: &c.endpoints };
            let cached = romana_policy::firewall::compile_cached(input, &mut cache, 7);
            let fresh = compile(input);
            prop_assert!(cached == fresh, "{:?}", differences(&cached, &fresh));
        }
        // The same ids with other contents (each policy takes the next one's rules): a policy
        // kept by id must not come back as it was.
        let n = c.policies.len();
        let changed: Vec<Arc<PolicyRules>> = c
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| Arc::new(PolicyRules { id: p.id.clone(), ..c.policies[(i + 1) % n].clone() }))
            .collect();
        let input = FirewallInput { host: "h0", policies: &changed, world: &c.world, endpoints: &c.endpoints };
        let (cached, fresh) = (romana_policy::firewall::compile_cached(input, &mut cache, 7), compile(input));
        prop_assert!(cached == fresh, "after policies changed: {:?}", differences(&cached, &fresh));
        // Then endpoints change one at a time (relabelled, removed, added, moved to h0), the
        // cache is told, and a compile still equals a fresh one.
        let mut eps = c.endpoints.clone();
        let mut g = Gen(seed ^ 0x5555);
        for step in 0..6 {
            let i = g.below(eps.len());
            let old = eps[i].clone();
            let new = match step % 3 {
                0 => Some(Endpoint { labels: labels(&mut g), ..old.clone() }),
                1 => Some(Endpoint { host: "h0".into(), ..old.clone() }),
                _ => None,
            };
            match &new {
                Some(n) => eps[i] = n.clone(),
                None => {
                    // As the agent removes: the last endpoint takes the place (order must not matter).
                    eps.swap_remove(i);
                }
            }
            cache.endpoint_changed(&c.world, Some(&old), new.as_ref());
            let copies = arcs(&c.policies);
            let input = FirewallInput { host: "h0", policies: &copies, world: &c.world, endpoints: &eps };
            let cached = romana_policy::firewall::compile_cached(input, &mut cache, 7);
            let fresh = compile(input);
            prop_assert!(cached == fresh, "after step {}: {:?}", step, differences(&cached, &fresh));
        }
        let added = Endpoint { id: "new".into(), ip: Some("10.0.0.200".parse().unwrap()), host: "h0".into(), ..c.endpoints[0].clone() };
        eps.push(added.clone());
        cache.endpoint_changed(&c.world, None, Some(&added));
        let input = FirewallInput { host: "h0", policies: &shared, world: &c.world, endpoints: &eps };
        let (cached, fresh) = (romana_policy::firewall::compile_cached(input, &mut cache, 7), compile(input));
        prop_assert!(cached == fresh, "after an endpoint was added: {:?}", differences(&cached, &fresh));
    }

    /// Compile after compile with policies added, changed and removed in any mix (the cache
    /// patches the table it returned last), the table equals a fresh compile: also after an
    /// endpoint change (the cache builds the table again) and with two policies of one id.
    #[test]
    fn a_patched_table_equals_a_fresh_one(seed in any::<u64>()) {
        let c = case(seed);
        let n = c.policies.len();
        let originals = arcs(&c.policies);
        // Each id also with the next policy's rules.
        let variants: Vec<Arc<PolicyRules>> = c
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| Arc::new(PolicyRules { id: p.id.clone(), ..c.policies[(i + 1) % n].clone() }))
            .collect();
        let (mut g, mut eps) = (Gen(seed ^ 0x9a7c), c.endpoints.clone());
        let mut cache = romana_policy::firewall::CompileCache::default();
        for step in 0..12 {
            let mut list: Vec<Arc<PolicyRules>> = (0..n)
                .filter_map(|i| match g.below(3) {
                    0 => None,
                    1 => Some(originals[i].clone()),
                    _ => Some(variants[i].clone()),
                })
                .collect();
            if step == 6 {
                let i = g.below(eps.len());
                let old = eps[i].clone();
                eps[i] = Endpoint { labels: labels(&mut g), host: "h0".into(), ..old.clone() };
                cache.endpoint_changed(&c.world, Some(&old), Some(&eps[i]));
            }
            if step == 9 && !list.is_empty() {
                list.push(list[0].clone());
            }
            let input = FirewallInput { host: "h0", policies: &list, world: &c.world, endpoints: &eps };
            let cached = romana_policy::firewall::compile_cached(input, &mut cache, 7);
            let fresh = compile(input);
            prop_assert!(cached == fresh, "step {}: {:?}", step, differences(&cached, &fresh));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// CNI ADD's shortcut: endpoint changes applied to the table in force (`incremental`) give
    /// the very table a full compile gives, or are refused (segments only), change after change.
    #[test]
    fn endpoint_changes_on_the_table_equal_a_full_compile(seed in any::<u64>()) {
        if let Err(e) = endpoint_walk(seed) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// How often a walk's parts brought a policy into the table (its first local target) and took
/// one out (its last).
#[derive(Debug, Default)]
struct Activations {
    activated: usize,
    deactivated: usize,
}

/// Eight random endpoint changes on host `h0`, applied to the table in force by `incremental`
/// one by one or two at once (or, when refused, by a compile, as the agent does), each pass
/// compared with a compile from scratch.
fn endpoint_walk(seed: u64) -> Result<Activations, String> {
    use romana_policy::firewall::{CompileCache, compile_cached};
    use romana_policy::incremental::{Refusal, endpoint_changes, plan_part};
    let c = case(seed);
    let shared = arcs(&c.policies);
    let (mut cache, mut eps, mut g) = (CompileCache::default(), c.endpoints.clone(), Gen(seed ^ 0xadd));
    let input = FirewallInput { host: "h0", policies: &shared, world: &c.world, endpoints: &eps };
    let mut known = Observed::of(&compile_cached(input, &mut cache, 7));
    let mut seen = Activations::default();
    let policy_chain = |n: &String| n.starts_with("p-");
    let mut batch = Vec::new();
    for step in 0..8 {
        let i = g.below(eps.len());
        let old = eps[i].clone();
        let (old, new) = match step % 4 {
            0 => (
                None,
                Endpoint {
                    id: format!("n{step}"),
                    ip: Some(format!("10.0.1.{step}").parse().unwrap()),
                    host: "h0".into(),
                    labels: labels(&mut g),
                    ..old
                },
            ),
            1 => (Some(old.clone()), Endpoint { labels: labels(&mut g), ..old }),
            2 => (Some(old.clone()), Endpoint { host: "h0".into(), ..old }),
            _ => (Some(old.clone()), Endpoint { ip: None, ..old }),
        };
        let gone = new.ip.is_none();
        match (&old, gone) {
            (_, true) => {
                eps.swap_remove(i);
            }
            (Some(_), false) => eps[i] = new.clone(),
            (None, false) => eps.push(new.clone()),
        }
        batch.push((old, Some(new).filter(|_| !gone)));
        // Steps 1 and 4 wait for the next one: a pass then takes two changes at once, as the
        // agent's does when changes come faster than its passes.
        if step == 1 || step == 4 {
            continue;
        }
        let input = FirewallInput { host: "h0", policies: &shared, world: &c.world, endpoints: &eps };
        let changes = std::mem::take(&mut batch);
        match endpoint_changes(&mut cache, &c.world, "h0", 7, &known, &changes) {
            Ok(part) => {
                let before = known.clone();
                known.apply_part(&part);
                let p = plan_part(&before, &part);
                if p.is_empty() != (known == before) {
                    return Err(format!("step {step}: the plan's emptiness is not the table's"));
                }
                check_deltas(&before, &p, &known);
                seen.activated += usize::from(part.chains_added.keys().any(policy_chain));
                seen.deactivated += usize::from(part.chains_removed.iter().any(policy_chain));
            }
            // Refused before the cache took the change: a compile takes it, as the agent's does.
            Err(Refusal::NewSegment { .. } | Refusal::SegmentMayEmpty { .. }) => {
                for (old, new) in &changes {
                    cache.endpoint_changed(&c.world, old.as_ref(), new.as_ref());
                }
                known = Observed::of(&compile_cached(input, &mut cache, 7));
            }
            Err(e) => return Err(format!("step {step}: refused: {e}")),
        }
        let fresh = Observed::of(&compile(input));
        if known != fresh {
            return Err(format!("step {step}: {:?}", differences_observed(&known, &fresh)));
        }
    }
    Ok(seen)
}

/// The walk must bring policies into the table and take them out, or the property above says
/// nothing about activation.
#[test]
fn endpoint_walks_activate_and_deactivate_policies() {
    let mut total = Activations::default();
    for seed in 0..200u64 {
        let a = endpoint_walk(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
        total.activated += a.activated;
        total.deactivated += a.deactivated;
    }
    assert!(total.activated >= 20 && total.deactivated >= 20, "{total:?}");
}

fn differences_observed(a: &Observed, b: &Observed) -> Vec<String> {
    let names = |x: &Observed| x.sets.keys().chain(x.chains.keys()).cloned().collect::<BTreeSet<_>>();
    let d = |n: &String| {
        (a.sets.get(n) != b.sets.get(n) || a.chains.get(n) != b.chains.get(n)).then(|| n.clone())
    };
    names(a).union(&names(b)).filter_map(d).collect()
}

/// The generator must produce the interesting cases, or the property says little.
#[test]
fn generator_covers_every_peer_and_port_kind() {
    let mut seen = BTreeSet::new();
    for seed in 0..300u64 {
        let c = case(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for p in &c.policies {
            for r in p.ingress.iter().chain(&p.egress).flatten() {
                for peer in r.peers.iter().flatten() {
                    seen.insert(format!("{:?}", std::mem::discriminant(peer)));
                }
                for port in r.ports.iter().flatten() {
                    seen.insert(format!("{:?}", port.port.as_ref().map(std::mem::discriminant)));
                }
            }
        }
    }
    assert!(seen.len() >= 9, "kinds seen: {seen:?}");
}

// ---- the transaction planner ----

fn world_with(
    endpoints: Vec<Endpoint>,
    policies: Vec<PolicyRules>,
) -> (World, Vec<Endpoint>, Vec<PolicyRules>) {
    let world = World { tenants: BTreeMap::from([("t".to_owned(), BTreeMap::new())]) };
    (world, endpoints, policies)
}

fn pod(id: &str, ip: &str, app: &str, host: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        tenant: "t".into(),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ip: Some(ip.parse().unwrap()),
        host: host.into(),
        ..Endpoint::default()
    }
}

fn web_policy(id: &str, from: &str) -> PolicyRules {
    let sel = |v: &str| Selector::label_is("app", v);
    PolicyRules {
        id: id.into(),
        tenant: "t".into(),
        scope: Scope::Tenant,
        target: sel("web"),
        ingress: Some(vec![Rule {
            peers: Some(vec![Peer::Endpoints { tenants: None, endpoints: Some(sel(from)) }]),
            ports: Some(vec![PortRule { protocol: Protocol::Tcp, port: Some(Port::Range(80, 80)) }]),
        }]),
        egress: None,
    }
}

fn table(w: &(World, Vec<Endpoint>, Vec<PolicyRules>)) -> Ruleset {
    compile(FirewallInput { host: "h0", policies: &arcs(&w.2), world: &w.0, endpoints: &w.1 })
}

/// The compiler's policies: shared, each its own object.
fn arcs(policies: &[PolicyRules]) -> Vec<Arc<PolicyRules>> {
    policies.iter().cloned().map(Arc::new).collect()
}

/// Plans `before` -> `after`, checks that applying the plan's effect gives `after` (no-op plan on
/// a second pass) and returns the summary for the caller's expectations.
fn check_plan(before: &Ruleset, after: &Ruleset) -> romana_policy::nftplan::PlanSummary {
    let p = plan(Some(&Observed::of(before)), after);
    assert!(plan(Some(&Observed::of(after)), after).is_empty(), "a converged table needs no transaction");
    check_deltas(&Observed::of(before), &p, &Observed::of(after));
    p.summary
}

/// A plan's element deltas, when it has them, take `before` to exactly `after`; it has them
/// exactly when it changes elements only.
fn check_deltas(before: &Observed, p: &romana_policy::nftplan::NftPlan, after: &Observed) {
    let s = &p.summary;
    let only = !s.replace_table
        && (s.sets_added, s.sets_deleted, s.chains_added, s.chains_rewritten, s.chains_deleted)
            == (0, 0, 0, 0, 0)
        && (s.rules_added, s.rules_deleted) == (0, 0);
    assert_eq!(p.elements.is_some(), only, "{s:?}");
    let Some(deltas) = &p.elements else { return };
    let mut t = before.clone();
    for d in deltas {
        let mut set = romana_policy::ruleset::Set::clone(&t.sets[&d.set]);
        for e in &d.delete {
            assert!(set.elements.remove(e), "{e} deleted from {} but not there", d.set);
        }
        for e in &d.add {
            assert!(set.elements.insert(e.clone()), "{e} added to {} but there", d.set);
        }
        t.sets.insert(d.set.clone(), std::sync::Arc::new(set));
    }
    assert!(t == *after, "the deltas do not make the table: {:?}", differences_observed(&t, after));
}

#[test]
fn an_endpoint_or_label_change_is_a_set_element_change() {
    // w2 keeps h0 isolated throughout (the last isolated endpoint's going is the next test's).
    let base = vec![
        pod("w1", "10.0.0.1", "web", "h0"),
        pod("c1", "10.0.0.2", "client", "h1"),
        pod("w2", "10.0.0.4", "web", "h0"),
    ];
    let before = table(&world_with(base.clone(), vec![web_policy("p1", "client")]));
    let mut more = base.clone();
    more.push(pod("c2", "10.0.0.3", "client", "h2"));
    let after = table(&world_with(more, vec![web_policy("p1", "client")]));
    let s = check_plan(&before, &after);
    assert_eq!((s.elements_added, s.elements_deleted), (1, 0), "{s:?}");
    let p = plan(Some(&Observed::of(&before)), &after);
    assert!(p.elements.as_ref().is_some_and(|d| d.len() == 1), "{:?}", p.elements);
    assert_eq!((s.rules_added, s.rules_deleted, s.chains_added, s.chains_rewritten), (0, 0, 0, 0), "{s:?}");
    // A label change: w1 is no longer a web pod.
    let mut relabel = base.clone();
    relabel[0].labels.insert("app".into(), "db".into());
    let after = table(&world_with(relabel, vec![web_policy("p1", "client")]));
    let s = check_plan(&before, &after);
    assert_eq!(s.rules_added + s.rules_deleted + s.chains_added + s.chains_rewritten, 0, "{s:?}");
    // Out of p1's targets and of the ingress-isolated set.
    assert_eq!((s.elements_added, s.elements_deleted), (0, 2), "{s:?}");
}

#[test]
fn base_chains_exist_only_while_a_local_endpoint_is_isolated() {
    let bases = |rs: &Ruleset| -> Vec<String> {
        rs.chains.iter().filter(|(_, c)| c.base.is_some()).map(|(n, _)| n.clone()).collect()
    };
    let open = table(&world_with(vec![pod("w1", "10.0.0.1", "web", "h0")], vec![]));
    assert_eq!(bases(&open), Vec::<String>::new(), "no isolation, no hooks:\n{}", open.render_replace());
    // A policy selecting w1 isolates it for ingress: the ingress base chains come, in place.
    let isolated =
        table(&world_with(vec![pod("w1", "10.0.0.1", "web", "h0")], vec![web_policy("p1", "client")]));
    assert_eq!(bases(&isolated), ["fwd-ingress", "out-ingress"]);
    let s = check_plan(&open, &isolated);
    assert!(!s.replace_table, "{s:?}");
    assert_eq!(s.chains_deleted, 0, "{s:?}");
    // And go again, deleted in place, with the policy.
    let s = check_plan(&isolated, &open);
    assert!(!s.replace_table, "{s:?}");
    assert!(s.chains_deleted >= 2, "{s:?}");
    let p = plan(Some(&Observed::of(&isolated)), &open);
    for chain in ["fwd-ingress", "out-ingress"] {
        assert!(p.script.contains(&format!("delete chain inet romana {chain}\n")), "{}", p.script);
    }
}

/// The chains a transaction creates or rewrites.
fn touched(script: &str) -> BTreeSet<String> {
    script
        .lines()
        .filter_map(|l| {
            l.strip_prefix("flush chain inet romana ").or_else(|| l.strip_prefix("add chain inet romana "))
        })
        .map(|c| c.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[test]
fn a_policy_change_touches_only_its_own_chains() {
    let eps = vec![pod("w1", "10.0.0.1", "web", "h0"), pod("c1", "10.0.0.2", "client", "h1")];
    let many: Vec<PolicyRules> = (0..200).map(|i| web_policy(&format!("p{i}"), "client")).collect();
    let before = table(&world_with(eps.clone(), many.clone()));
    let mut plus = many.clone();
    plus.push(web_policy("new", "other"));
    let after = table(&world_with(eps.clone(), plus));
    let p = plan(Some(&Observed::of(&before)), &after);
    assert!(plan(Some(&Observed::of(&after)), &after).is_empty(), "a converged table needs no transaction");
    let base = romana_policy::firewall::policy_base("new");
    let bucket =
        format!("ingress-b{:02}", romana_policy::ruleset::fnv1a(b"new") % romana_policy::firewall::BUCKETS);
    let allowed: BTreeSet<String> =
        [format!("{base}-in"), bucket.clone(), "ingress-policies".to_owned()].into();
    let t = touched(&p.script);
    assert!(t.is_subset(&allowed) && t.contains(&format!("{base}-in")), "touched {t:?}\n{}", p.script);
    // Its target sets and the selector set it uses (one per family); w1 into its targets.
    assert_eq!((p.summary.sets_added, p.summary.elements_added), (4, 1), "{:?}", p.summary);
    // The bucket it shares holds a few of the 200 policies' jumps, not all of them.
    let bucket_rules = after.chains[&bucket].lines().len();
    assert!(bucket_rules < 40, "bucket {bucket} has {bucket_rules} rules");
    assert!(p.summary.rules_added <= 2 + bucket_rules + 64, "{:?}", p.summary);
    assert!(!p.summary.replace_table);
    // Removing it again deletes exactly its chain and sets.
    let p = plan(Some(&Observed::of(&after)), &before);
    assert!(touched(&p.script).is_subset(&allowed), "{}", p.script);
    assert_eq!((p.summary.sets_deleted, p.summary.elements_deleted), (4, 0), "{:?}", p.summary);
    assert!(p.script.contains(&format!("delete chain inet romana {base}-in")), "{}", p.script);
}

#[test]
fn what_a_foreign_process_deletes_is_put_back() {
    let w = world_with(vec![pod("w1", "10.0.0.1", "web", "h0")], vec![web_policy("p1", "client")]);
    let want = table(&w);
    let mut tampered = Observed::of(&want);
    // A rule gone from a policy chain, an element gone from a set, a base chain emptied.
    let chain = tampered.chains.keys().find(|k| k.starts_with("p-p1")).unwrap().clone();
    std::sync::Arc::make_mut(&mut tampered.chains.get_mut(&chain).unwrap().rules).clear();
    std::sync::Arc::make_mut(tampered.sets.get_mut("local-4").unwrap()).elements.clear();
    std::sync::Arc::make_mut(&mut tampered.chains.get_mut("fwd-ingress").unwrap().rules).pop();
    let p = plan(Some(&tampered), &want);
    // The policy chain's two rules, the base chain's five (established, always-allowed ICMPv6,
    // the jump, a drop per family).
    assert_eq!((p.summary.rules_added, p.summary.elements_added, p.summary.chains_rewritten), (2 + 5, 1, 2));
    assert_eq!(touched(&p.script), [chain, "fwd-ingress".to_owned()].into(), "{}", p.script);
    // A rule that is not ours (no key) in one of our chains: that chain is rewritten.
    let mut foreign = Observed::of(&want);
    std::sync::Arc::make_mut(&mut foreign.chains.get_mut("ingress-policies").unwrap().rules)
        .push(String::new());
    let p = plan(Some(&foreign), &want);
    assert_eq!(touched(&p.script), ["ingress-policies".to_owned()].into(), "{}", p.script);
    // No table at all: one transaction creates it whole.
    let p = plan(None, &want);
    assert!(
        p.summary.replace_table && p.script.starts_with("add table inet romana\ndelete table inet romana\n")
    );
}

#[test]
fn only_local_endpoints_isolated_in_neither_direction_may_skip_the_forward_hook() {
    use romana_policy::firewall::unfiltered;
    let ips = |rs: &Ruleset| -> Vec<String> { unfiltered(rs).iter().map(|ip| ip.to_string()).collect() };
    // Dual-stack pods are two endpoint records with the same labels (`<name>` and `<name>#v6`).
    let eps = vec![
        pod("w1", "10.0.0.1", "web", "h0"),
        pod("w1#v6", "fd00::1", "web", "h0"),
        pod("c1", "10.0.0.2", "client", "h0"),
        pod("c1#v6", "fd00::2", "client", "h0"),
        pod("w2", "10.0.0.3", "web", "h1"),
        pod("w2#v6", "fd00::3", "web", "h1"),
        pod("o6", "fd00::9", "other", "h0"),
    ];
    // No isolation: every local endpoint of both families (not h1's).
    assert_eq!(
        ips(&table(&world_with(eps.clone(), vec![]))),
        ["10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2", "fd00::9"]
    );
    // A policy isolates the web pods for ingress: w1 leaves in both families, c1 and o6 stay.
    assert_eq!(
        ips(&table(&world_with(eps.clone(), vec![web_policy("p1", "client")]))),
        ["10.0.0.2", "fd00::2", "fd00::9"]
    );
    // Egress isolation too: replies are accepted by conntrack state, which needs the request.
    let mut egress = web_policy("p2", "client");
    egress.ingress = None;
    egress.egress = Some(vec![]);
    assert_eq!(ips(&table(&world_with(eps, vec![egress]))), ["10.0.0.2", "fd00::2", "fd00::9"]);
}
