//! The runners against fake ports: the order of a firewall transaction around the fast path,
//! the generation bookkeeping, and a converge that leaves the CNI's endpoints alone. No root.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use romana_dataplane::{HostState, LinkKind, LinkName, NextHop, Plan, Step};
use romana_host::nft::NftError;
use romana_policy::nftplan::Observed;
use romana_store::BoxFut;
use serde_json::json;

use super::*;
use crate::machine::inputs::{Inputs, Lists};
use crate::machine::pass::{Compiled, PassState, snapshot};
use crate::ports::{FastPathMap, KernelRoutes, Nftables};

/// nftables as a log of calls and a generation counter; `intruder`: someone commits right
/// after our listing.
#[derive(Default)]
struct FakeNft {
    log: RefCell<Vec<String>>,
    generation: RefCell<u32>,
    table: RefCell<Option<Observed>>,
    intruder: bool,
}

impl Nftables for FakeNft {
    fn generation(&self) -> Result<u32, NftError> {
        Ok(*self.generation.borrow())
    }
    fn list(&self, _background: bool) -> Result<Option<Observed>, FirewallError> {
        self.log.borrow_mut().push("list".into());
        if self.intruder {
            *self.generation.borrow_mut() += 1;
        }
        Ok(self.table.borrow().clone())
    }
    fn apply(&self, script: &str) -> Result<(), NftError> {
        self.log.borrow_mut().push(format!("apply {} lines", script.lines().count()));
        *self.generation.borrow_mut() += 1;
        Ok(())
    }
    fn uses_library(&self) -> Option<bool> {
        Some(true)
    }
}

/// The fast path's map as a log shared with the nft fake, so the order shows.
struct FakeFastPath<'a>(&'a RefCell<Vec<String>>);

fn ips(s: &BTreeSet<IpAddr>) -> String {
    s.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

impl FastPathMap for FakeFastPath<'_> {
    fn narrow(&self, allowed: &BTreeSet<IpAddr>) -> Result<usize, romana_host::BpfError> {
        self.0.borrow_mut().push(format!("narrow to {}", ips(allowed)));
        Ok(allowed.len())
    }
    fn allow(&self, allowed: BTreeSet<IpAddr>) -> Result<usize, romana_host::BpfError> {
        self.0.borrow_mut().push(format!("allow {}", ips(&allowed)));
        Ok(allowed.len())
    }
}

fn endpoint(name: &str, ip: &str, tenant: &str, segment: &str) -> romana_api::rest::EndpointInfo {
    serde_json::from_value(json!({"name": name, "ip": ip, "tenant": tenant, "segment": segment,
        "host": "h1", "labels": {}, "ports": []}))
    .unwrap()
}

/// Compiles h1's table: `a` (red/web) and `b` (blue/x) local, and `policies`.
fn compiled(pass: &mut PassState, policies: Vec<serde_json::Value>) -> Compiled {
    pass.compile("h1", snapshot(&mut inputs(policies)))
}

/// h1's inputs: `a` (red/web) and `b` (blue/x) local, and `policies`.
fn inputs(policies: Vec<serde_json::Value>) -> Inputs {
    let tenant = |name: &str, seg: &str| {
        serde_json::from_value(json!({"name": name, "external_id": "", "labels": {}, "number": 1,
            "segments": [{"name": seg, "tenant": name, "external_id": "", "labels": {}, "number": 1}]}))
        .unwrap()
    };
    let mut i = Inputs::default();
    i.replace(Lists {
        tenants: vec![tenant("red", "web"), tenant("blue", "x")],
        policies: policies.into_iter().map(|p| serde_json::from_value(p).unwrap()).collect(),
        netpols: vec![],
        endpoints: Some(vec![
            endpoint("a", "10.0.0.2", "red", "web"),
            endpoint("b", "10.0.0.3", "blue", "x"),
        ]),
    });
    assert_eq!(i.problems, Vec::<String>::new());
    i
}

fn web_policy() -> serde_json::Value {
    json!({"id": "web", "applied_to": [{"tenant": "red", "segment": "web"}],
           "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "tcp", "ports": [80]}]}]})
}

#[test]
fn a_transaction_narrows_the_fast_path_first_and_widens_it_last() {
    let nft = FakeNft::default();
    let fp = FakeFastPath(&nft.log);
    let mut pass = PassState::default();
    // `a` is isolated by the policy: it leaves the fast path before its rules come.
    let c = compiled(&mut pass, vec![web_policy()]);
    let base = pass.base(None);
    let a = run_pass(&nft, Some(&fp), base, &c).unwrap();
    let log = nft.log.borrow().clone();
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[0], "list");
    assert_eq!(log[1], "narrow to 10.0.0.3");
    assert!(log[2].starts_with("apply "), "{log:?}");
    assert_eq!(log[3], "allow 10.0.0.3");
    // Read at 0, applied alone: known at 1.
    assert!(a.listed);
    assert_eq!(a.known_at, Some(1));
    pass.applied(a.after, a.known_at, &a.summary);
    assert!(pass.unchanged(Some(1)));
    assert!(!pass.unchanged(Some(2)), "someone else committed: repair");

    // Nothing changed: the next pass neither lists nor applies, and the table stays known.
    nft.log.borrow_mut().clear();
    let c = compiled(&mut pass, vec![web_policy()]);
    let base = pass.base(None);
    let a = run_pass(&nft, Some(&fp), base, &c).unwrap();
    assert_eq!(*nft.log.borrow(), ["narrow to 10.0.0.3", "allow 10.0.0.3"]);
    assert_eq!(a.known_at, Some(1));

    // The policy goes: one transaction, and `a` joins the fast path only after it.
    nft.log.borrow_mut().clear();
    pass.applied(a.after, a.known_at, &a.summary);
    let c = compiled(&mut pass, vec![]);
    let base = pass.base(None);
    run_pass(&nft, Some(&fp), base, &c).unwrap();
    let log = nft.log.borrow().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[1].starts_with("apply "), "{log:?}");
    assert_eq!(log[2], "allow 10.0.0.2,10.0.0.3");
}

/// CNI ADD's pass: a new endpoint the policy selects is one small transaction of its own
/// elements (no chain, no other set), around the fast path as a compile's would be, and the
/// table it leaves is exactly what a compile gives.
#[test]
fn an_endpoint_pass_applies_only_the_new_endpoints_elements() {
    use crate::machine::pass::take_endpoint_changes;
    let nft = FakeNft::default();
    let fp = FakeFastPath(&nft.log);
    let mut pass = PassState::default();
    let mut i = Inputs::default();
    let tenant = |name: &str, seg: &str| {
        serde_json::from_value(json!({"name": name, "external_id": "", "labels": {}, "number": 1,
            "segments": [{"name": seg, "tenant": name, "external_id": "", "labels": {}, "number": 1}]}))
        .unwrap()
    };
    i.replace(Lists {
        tenants: vec![tenant("red", "web"), tenant("blue", "x")],
        policies: vec![serde_json::from_value(web_policy()).unwrap()],
        netpols: vec![],
        endpoints: Some(vec![
            endpoint("a", "10.0.0.2", "red", "web"),
            endpoint("b", "10.0.0.3", "blue", "x"),
        ]),
    });
    let c = pass.compile("h1", snapshot(&mut i));
    let a = run_pass(&nft, Some(&fp), pass.base(None), &c).unwrap();
    pass.applied(a.after, a.known_at, &a.summary);
    nft.log.borrow_mut().clear();

    i.upsert(&endpoint("c", "10.0.0.4", "red", "web"));
    let t = take_endpoint_changes(&mut i).unwrap();
    let tx = pass.endpoint_transaction("h1", &t).unwrap();
    let mut lines: Vec<&str> = tx.transaction.plan.script.lines().collect();
    lines.sort_unstable();
    let target = "p-romana_web-37a5459d"; // the Romana policy `web` as the core names it
    assert_eq!(
        lines,
        [
            "add element inet romana ingress-isolated-4 { 10.0.0.4 }".to_owned(),
            "add element inet romana local-4 { 10.0.0.4 }".to_owned(),
            format!("add element inet romana {target}-t-4 {{ 10.0.0.4 }}"),
        ]
    );
    let known_at = apply_transaction(&nft, Some(&fp), &tx.transaction, pass.known_gen).unwrap();
    assert_eq!(*nft.log.borrow(), ["narrow to 10.0.0.3", "apply 3 lines", "allow 10.0.0.3"]);
    assert_eq!(known_at, Some(2), "known after our own commit");
    pass.part_applied(&tx.part, known_at, &tx.transaction.plan.summary);
    assert!(i.confirm, "a compile is to confirm the table");
    let full = pass.compile("h1", snapshot(&mut i));
    assert_eq!(pass.known.clone().unwrap(), Observed::of(&full.desired));
}

#[test]
fn a_commit_behind_our_back_leaves_the_table_unknown() {
    let nft = FakeNft { intruder: true, ..FakeNft::default() };
    let mut pass = PassState::default();
    let c = compiled(&mut pass, vec![]);
    let a = run_pass::<_, FakeFastPath>(&nft, None, None, &c).unwrap();
    assert_eq!(a.known_at, None, "the next check reads the kernel");
    pass.applied(a.after, a.known_at, &a.summary);
    assert!(!pass.unchanged(Some(*nft.generation.borrow())));
}

#[test]
fn read_table_drops_a_generation_that_moved() {
    let nft = FakeNft { intruder: true, ..FakeNft::default() };
    assert_eq!(read_table(&nft, true).unwrap(), (None, None));
    let nft = FakeNft::default();
    assert_eq!(read_table(&nft, true).unwrap(), (None, Some(0)));
}

/// A kernel that holds `state` and records the plans applied.
struct FakeKernel {
    state: HostState,
    applied: Vec<Plan>,
}

impl KernelRoutes for FakeKernel {
    type Error = std::io::Error;
    fn observe(&mut self) -> BoxFut<'_, Result<HostState, std::io::Error>> {
        let s = self.state.clone();
        Box::pin(async move { Ok(s) })
    }
    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFut<'a, Result<(), std::io::Error>> {
        self.applied.push(plan.clone());
        Box::pin(async { Ok(()) })
    }
}

#[test]
fn converge_plans_the_routes_and_leaves_endpoints_alone() {
    let veth = LinkName::new("romana-a1b2c3").unwrap();
    let mut observed = HostState {
        links: BTreeMap::from([(veth.clone(), LinkKind::Endpoint)]),
        addresses: BTreeSet::new(),
        routes: BTreeMap::from([("10.0.0.2/32".parse().unwrap(), NextHop::Dev(veth.clone()))]),
    };
    observed.addresses.insert((veth.clone(), "169.254.1.1/32".parse().unwrap()));
    let mut k = FakeKernel { state: observed, applied: vec![] };
    let routes = [romana_dataplane::PeerRoute {
        dest: "10.1.0.0/28".parse().unwrap(),
        via: Some("192.168.0.2".parse().unwrap()),
    }];
    let desired = crate::machine::routes::desired(&["169.254.1.1".parse().unwrap()], &routes).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let plan = rt
        .block_on(converge(&mut k, |observed| {
            Some(romana_dataplane::diff(&crate::machine::routes::without_endpoints(observed), &desired))
        }))
        .unwrap()
        .unwrap();
    assert_eq!(k.applied, std::slice::from_ref(&plan));
    let text: Vec<String> = plan.steps.iter().map(|s| s.to_string()).collect();
    assert!(text.iter().any(|s| s.contains("10.1.0.0/28")), "{text:?}");
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::DelLink { name } if *name == veth))
            && !text.iter().any(|s| s.contains("10.0.0.2/32")),
        "the endpoint's link and route are the CNI's: {text:?}"
    );
    // The core asks for nothing: nothing is applied.
    k.applied.clear();
    assert_eq!(rt.block_on(converge(&mut k, |_| None)).unwrap(), None);
    assert!(k.applied.is_empty());
}

/// The confirming compile runs from scratch on a cache of its own, without the pass lock: it
/// lands (its cache becomes the pass's) only when no endpoint pass changed the cache since its
/// snapshot; and the table the endpoint passes left is the one it compiles.
#[test]
fn a_confirming_compile_lands_only_when_no_endpoint_pass_overtook_it() {
    use crate::machine::pass::{compile_with, snapshot_confirm, take_endpoint_changes};
    let nft = FakeNft::default();
    let mut pass = PassState::default();
    let mut i = inputs(vec![web_policy()]);
    let c = pass.compile("h1", snapshot(&mut i));
    let a = run_pass::<_, FakeFastPath>(&nft, None, pass.base(None), &c).unwrap();
    pass.applied(a.after, a.known_at, &a.summary);
    // An ADD's endpoint pass.
    let add = |pass: &mut PassState, i: &mut Inputs, name: &str, ip: &str| {
        i.upsert(&endpoint(name, ip, "red", "web"));
        let t = take_endpoint_changes(i).unwrap();
        let tx = pass.endpoint_transaction("h1", &t).unwrap();
        let known_at =
            apply_transaction::<_, FakeFastPath>(&nft, None, &tx.transaction, pass.known_gen).unwrap();
        pass.part_applied(&tx.part, known_at, &tx.transaction.plan.summary);
    };
    add(&mut pass, &mut i, "c", "10.0.0.4");
    assert!(i.confirm);
    let epoch = pass.epoch;
    let snap = snapshot_confirm(&mut i).unwrap();
    assert!(!i.confirm);
    let mut cache = romana_policy::firewall::CompileCache::default();
    let (confirmed, world) = compile_with(&mut cache, "h1", snap);
    assert!(pass.lands(epoch));
    assert_eq!(pass.known.clone().unwrap(), Observed::of(&confirmed.desired));
    // Had another ADD's endpoint pass come while it compiled, it would be stale.
    let mut later = PassState { known: pass.known.clone(), ..PassState::default() };
    later.compiled(cache, world);
    let epoch = later.epoch;
    add(&mut later, &mut i, "d", "10.0.0.5");
    assert!(!later.lands(epoch));
    // A compile holding the lock moves the epoch too; so does nothing else.
    let epoch = pass.epoch;
    assert!(pass.lands(epoch));
    compiled(&mut pass, vec![]);
    assert!(!pass.lands(epoch));
}
