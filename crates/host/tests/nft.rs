//! The nftables adapter against a real kernel, inside network namespaces this test creates
//! (`rmn-*`, deleted by their guards): the compiler's tables load, read back into exactly what
//! was applied (the plan after applying is empty), change incrementally, recover from a foreign
//! process's deletions, and never touch another table.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use romana_host::{in_netns, nft};
use romana_policy::eval::{Endpoint, World};
use romana_policy::firewall::{FirewallInput, compile};
use romana_policy::nftplan::{Observed, plan};
use romana_policy::ruleset::Ruleset;
use romana_policy::{Peer, PolicyRules, Port, PortRule, Protocol, Rule, Selector, nftjson};
use romana_test_support::Netns;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn netns() -> Option<Netns> {
    Netns::new(&format!("rmn-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn observe(ns: &Netns) -> Option<Observed> {
    in_netns(&ns.0, || async { nft::list_table(false).unwrap().map(|j| nftjson::parse(&j).unwrap()) })
        .unwrap()
}

fn apply(ns: &Netns, script: String) {
    in_netns(&ns.0, move || async move { nft::apply(&script) }).unwrap().unwrap();
}

/// Applies the plan from what the kernel holds to `want`, and checks that the table the agent
/// would keep (`Observed::of`, instead of reading back) is exactly what the kernel reports.
fn apply_plan(ns: &Netns, want: &Ruleset) -> romana_policy::nftplan::PlanSummary {
    let p = plan(observe(ns).as_ref(), want);
    apply(ns, p.script.clone());
    assert_eq!(Observed::of(want), observe(ns).unwrap(), "the applied table differs from the kernel's");
    p.summary
}

/// `nft ARGS` inside the namespace, as a foreign process would run it.
fn foreign(ns: &Netns, args: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft"])
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(out.status.success(), "nft {args}: {}", String::from_utf8_lossy(&out.stderr));
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

fn policy(id: &str, from: &str) -> PolicyRules {
    let sel = |v: &str| Selector::label_is("app", v);
    PolicyRules {
        id: id.into(),
        tenant: "t".into(),
        scope: romana_policy::Scope::Tenant,
        target: sel("web"),
        ingress: Some(vec![Rule {
            peers: Some(vec![
                Peer::Endpoints { tenants: None, endpoints: Some(sel(from)) },
                Peer::Cidr {
                    cidr: "10.9.0.0/16".parse().unwrap(),
                    except: vec!["10.9.1.0/24".parse().unwrap()],
                },
                Peer::Host,
            ]),
            ports: Some(vec![
                PortRule { protocol: Protocol::Tcp, port: Some(Port::Named("http".into())) },
                PortRule { protocol: Protocol::Udp, port: Some(Port::Range(53, 60)) },
                PortRule { protocol: Protocol::Icmp, port: Some(Port::Icmp { icmp_type: 8, code: Some(0) }) },
            ]),
        }]),
        egress: Some(vec![]),
    }
}

fn table(eps: &[Endpoint], policies: &[PolicyRules]) -> Ruleset {
    let world = World { tenants: BTreeMap::from([("t".to_owned(), BTreeMap::new())]) };
    let policies: Vec<Arc<PolicyRules>> = policies.iter().cloned().map(Arc::new).collect();
    compile(FirewallInput { host: "h0", policies: &policies, world: &world, endpoints: eps })
}

fn converged(ns: &Netns, want: &Ruleset) {
    let p = plan(observe(ns).as_ref(), want);
    assert!(p.is_empty(), "the kernel's table differs from what was applied; plan:\n{}", p.script);
}

#[test]
fn tables_load_read_back_and_change_incrementally() {
    let Some(ns) = netns() else { return eprintln!("skipped: cannot create namespaces") };
    assert!(observe(&ns).is_none(), "a fresh namespace has no romana table");
    // Someone else's table, which must survive everything we do.
    foreign(&ns, "add table inet other");
    foreign(&ns, "add chain inet other c { type filter hook forward priority -5 ; }");
    foreign(&ns, "add rule inet other c counter");
    let mut eps = vec![pod("w1", "10.0.0.1", "web", "h0"), pod("c1", "10.0.0.2", "client", "h1")];
    eps[0].ports.push(romana_policy::NamedPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 });
    eps.push(pod("w6", "fd00::1", "web", "h0"));
    let first = table(&eps, &[policy("p1", "client")]);
    assert!(apply_plan(&ns, &first).replace_table);
    converged(&ns, &first);

    // An endpoint arrives and a policy is added: no table replacement; p2's chains and its bucket
    // chains are new, and only the two dispatch chains (one jump per bucket) are rewritten.
    eps.push(pod("c2", "10.0.0.3", "client", "h2"));
    let second = table(&eps, &[policy("p1", "client"), policy("p2", "other")]);
    let s = apply_plan(&ns, &second);
    assert!(!s.replace_table && s.chains_added == 4 && s.chains_rewritten <= 2, "{s:?}");
    converged(&ns, &second);

    // A foreign process deletes one of our rules and one element, and adds a rule to one of our
    // chains: the next plan rewrites those two chains and puts the element back.
    let obs = observe(&ns).unwrap();
    let chain = obs.chains.keys().find(|c| c.starts_with("p-p1") && c.ends_with("-in")).unwrap().clone();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-a", "list", "chain", "inet", "romana", &chain])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    // The first "# handle" is the chain's own; the next one is its first rule's.
    let handle = listing
        .lines()
        .filter_map(|l| l.rsplit_once("# handle "))
        .map(|(_, h)| h.trim().to_owned())
        .nth(1)
        .unwrap();
    foreign(&ns, &format!("delete rule inet romana {chain} handle {handle}"));
    foreign(&ns, "delete element inet romana local-4 { 10.0.0.1 }");
    foreign(&ns, "add rule inet romana ingress-policies accept");
    let p = plan(observe(&ns).as_ref(), &second);
    assert_eq!((p.summary.chains_rewritten, p.summary.elements_added), (2, 1), "{}", p.script);
    apply_plan(&ns, &second);
    converged(&ns, &second);
    // A base chain emptied is rewritten too.
    foreign(&ns, "flush chain inet romana fwd-ingress");
    assert_eq!(apply_plan(&ns, &second).chains_rewritten, 1);

    // Back to the first table: p2's two chains, its buckets and its sets go.
    eps.pop();
    let s = apply_plan(&ns, &first);
    assert!(s.chains_deleted == 4 && !s.replace_table, "{s:?}");
    converged(&ns, &first);

    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "list", "table", "inet", "other"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("counter"), "the foreign table is intact");
}

#[test]
fn golden_tables_load_into_the_kernel() {
    let Some(ns) = netns() else { return eprintln!("skipped: cannot create namespaces") };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/tests/data/firewall");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        apply(&ns, text);
        assert!(observe(&ns).is_some(), "{} loaded", path.display());
        n += 1;
    }
    assert!(n >= 3, "golden files found: {n}");
}

#[test]
fn a_broken_transaction_changes_nothing() {
    let Some(ns) = netns() else { return eprintln!("skipped: cannot create namespaces") };
    let t = table(&[pod("w1", "10.0.0.1", "web", "h0")], &[policy("p1", "client")]);
    apply(&ns, plan(None, &t).script);
    let script = "add element inet romana local-4 { 10.0.0.9 }\nadd rule inet romana no-such-chain accept\n"
        .to_owned();
    let e = in_netns(&ns.0, move || async move { nft::apply(&script) }).unwrap().unwrap_err();
    assert!(e.to_string().contains("no-such-chain") || e.to_string().contains("No such file"), "{e}");
    converged(&ns, &t);
}

fn generation(ns: &Netns) -> u32 {
    in_netns(&ns.0, || async { nft::generation() }).unwrap().unwrap()
}

/// The agent skips reading the table while the generation stands still: it must move with every
/// committed change (ours, a foreign table's, a foreign edit of ours) and not with reads, a
/// refused transaction or another namespace's change.
#[test]
fn the_generation_moves_with_every_commit_and_only_then() {
    let (Some(ns), Some(other)) = (netns(), netns()) else {
        return eprintln!("skipped: cannot create namespaces");
    };
    let g0 = generation(&ns);
    let t = table(&[pod("w1", "10.0.0.1", "web", "h0")], &[policy("p1", "client")]);
    apply(&ns, plan(None, &t).script);
    let g1 = generation(&ns);
    assert_eq!(g1, g0.wrapping_add(1), "one transaction, one generation");
    observe(&ns);
    assert_eq!(generation(&ns), g1, "a listing is not a change");
    let script = "add rule inet romana no-such-chain accept\n".to_owned();
    in_netns(&ns.0, move || async move { nft::apply(&script) }).unwrap().unwrap_err();
    assert_eq!(generation(&ns), g1, "a refused transaction is not a change");
    apply(&other, plan(None, &t).script);
    assert_eq!(generation(&ns), g1, "another namespace's change is not ours");
    foreign(&ns, "delete element inet romana local-4 { 10.0.0.1 }");
    let g2 = generation(&ns);
    assert_ne!(g2, g1, "a foreign edit of our table");
    foreign(&ns, "add table ip someone-else");
    assert_ne!(generation(&ns), g2, "a foreign table");
}

/// The agent's kept connections: transactions through libnftables (installed with nft) land as
/// `nft -f` would, a refused one changes nothing and names the problem, and the kept generation
/// socket sees every commit.
#[test]
fn a_kept_library_session_applies_refuses_and_counts() {
    let Some(ns) = netns() else { return eprintln!("skipped: cannot create namespaces") };
    let t = table(&[pod("w1", "10.0.0.1", "web", "h0")], &[policy("p1", "client")]);
    let first = plan(None, &t).script;
    let (library, err, g) = in_netns(&ns.0, move || async move {
        let mut nft = nft::Nft::default();
        let g0 = nft.generation().unwrap();
        nft.apply(&first).unwrap();
        let g1 = nft.generation().unwrap();
        let err = nft.apply(
            "add element inet romana local-4 { 10.0.0.9 }\nadd rule inet romana no-such-chain accept\n",
        );
        (nft.uses_library(), err, (g0, g1, nft.generation().unwrap()))
    })
    .unwrap();
    assert_eq!(
        library,
        Some(true),
        "libnftables (Debian's libnftables1, installed with nftables) did not load"
    );
    let err = err.unwrap_err().to_string();
    assert!(err.contains("no-such-chain") || err.contains("No such file"), "{err}");
    assert_eq!((g.1, g.2), (g.0.wrapping_add(1), g.1), "one commit, then none");
    converged(&ns, &t);
    // Later changes through a new session, from what the kernel holds, converge too.
    let second = table(
        &[pod("w1", "10.0.0.1", "web", "h0"), pod("w2", "10.0.0.2", "web", "h0")],
        &[policy("p1", "db")],
    );
    let script = plan(observe(&ns).as_ref(), &second).script;
    in_netns(&ns.0, move || async move { nft::Nft::default().apply(&script) }).unwrap().unwrap();
    converged(&ns, &second);
}
