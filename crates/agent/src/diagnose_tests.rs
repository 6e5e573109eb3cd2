//! The self-diagnosis as data: a desired state, what the kernel shows, the findings expected
//! (`kind: what`).
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use romana_dataplane::{NextHop, PeerRoute};
use romana_policy::nftplan::{Observed, ObservedChain};

use super::*;
use crate::machine::routes::desired;

fn routes(rs: &[(&str, Option<&str>)]) -> HostState {
    let gw: IpAddr = "169.254.1.1".parse().unwrap();
    let peers: Vec<PeerRoute> = rs
        .iter()
        .map(|(d, v)| PeerRoute { dest: d.parse().unwrap(), via: v.map(|v| v.parse().unwrap()) })
        .collect();
    desired(&[gw], &peers).unwrap()
}

fn healthy() -> (Expect, Seen) {
    let want = routes(&[("10.1.0.0/24", Some("192.168.1.12")), ("10.0.0.0/8", None)]);
    let table = chains(&[("forward", &["a", "b"])]);
    let e = Expect {
        host: "h1".into(),
        desired: Some(want.clone()),
        policy: true,
        firewall_loaded: true,
        known_table: Some(table.clone()),
        fast_path: Some(FastPath::default()),
        contact_age_ms: Some(100),
        contact_budget_ms: 3_000,
        pending_change_ms: None,
        auth_refusals: 0,
    };
    let s = Seen {
        forwarding: vec![("/proc/sys/net/ipv4/ip_forward".into(), Ok("1\n".into()))],
        kernel: Ok(want),
        table: Some(Ok(Some(table))),
    };
    (e, s)
}

fn chains(cs: &[(&str, &[&str])]) -> Observed {
    let mut o = Observed::default();
    for (name, rules) in cs {
        o.chains.insert(
            (*name).to_owned(),
            ObservedChain {
                base: None,
                rules: std::sync::Arc::new(rules.iter().map(|r| (*r).to_owned()).collect()),
            },
        );
    }
    o
}

fn check(change: impl FnOnce(&mut Expect, &mut Seen), expect: &[&str]) {
    let (mut e, mut s) = healthy();
    change(&mut e, &mut s);
    let got: Vec<String> =
        diagnose(&e, &s).iter().map(|f| format!("{}: {}", f.kind.as_str(), f.what)).collect();
    assert_eq!(got, expect);
}

#[test]
fn a_healthy_host_has_no_findings() {
    check(|_, _| {}, &[]);
}

#[test]
fn each_kind_of_drift_is_named_with_its_data() {
    check(
        |_, s| s.forwarding[0].1 = Ok("0\n".into()),
        &["forwarding-off: /proc/sys/net/ipv4/ip_forward is 0 on h1"],
    );
    check(
        |_, s| {
            let k = s.kernel.as_mut().unwrap();
            k.routes.remove(&"10.1.0.0/24".parse().unwrap());
            k.routes.insert("10.2.0.0/24".parse().unwrap(), NextHop::Via("192.168.1.13".parse().unwrap()));
            k.routes.insert("10.0.0.0/8".parse().unwrap(), NextHop::Via("192.168.1.14".parse().unwrap()));
        },
        &[
            "route-missing: route 10.1.0.0/24 via 192.168.1.12 is missing",
            "route-wrong: route 10.0.0.0/8 is via 192.168.1.14, the set says throw",
            "route-extra: route 10.2.0.0/24 (protocol 77) is not in the route manager's set",
        ],
    );
    check(
        |_, s| {
            let k = s.kernel.as_mut().unwrap();
            k.addresses.clear();
        },
        &["gateway: address 169.254.1.1/32 is missing on romana-gw"],
    );
    check(|_, s| s.table = Some(Ok(None)), &["table-missing: table inet romana is missing"]);
    check(
        |_, s| s.table = Some(Ok(Some(chains(&[("forward", &["a"]), ("extra", &[])])))),
        &[
            "table-differs: chain extra is not the agent's",
            "table-differs: chain forward has 1 rules, the last transaction left 2 (1 missing, 0 not ours)",
        ],
    );
    check(
        |e, _| e.firewall_loaded = false,
        &[
            "firewall-not-loaded: the firewall has not read tenants and policies from romanad yet: nothing is enforced",
        ],
    );
    check(
        |e, _| e.fast_path = Some(FastPath { blockers: vec!["table inet other hooks forward".into()] }),
        &["fast-path: the fast path delivers nothing: table inet other hooks forward"],
    );
    check(
        |e, _| e.contact_age_ms = Some(9_000),
        &["romanad-silent: romanad last answered 9 s ago (budget 3 s)"],
    );
    check(
        |e, _| e.pending_change_ms = Some(7_000),
        &["watch-lag: a route change seen on the watch 7 s ago is not in the kernel yet"],
    );
    check(
        |e, _| e.auth_refusals = 3,
        &["credentials: romanad refused the agent's credentials 3 times in a row"],
    );
}

#[test]
fn what_the_agent_does_not_hold_is_not_judged() {
    // No policy: no table expected, whatever the kernel shows.
    check(
        |e, s| {
            e.policy = false;
            s.table = Some(Ok(None));
        },
        &[],
    );
    // Routes not read yet: nothing to compare them with.
    check(
        |e, s| {
            e.desired = None;
            s.kernel.as_mut().unwrap().routes.clear();
        },
        &[],
    );
    // Endpoint links and their routes are the CNI path's.
    check(
        |_, s| {
            let k = s.kernel.as_mut().unwrap();
            let l = romana_dataplane::LinkName::new("romanaabc").unwrap();
            k.links.insert(l.clone(), romana_dataplane::LinkKind::Endpoint);
            k.routes.insert("10.1.1.5/32".parse().unwrap(), NextHop::Dev(l));
        },
        &[],
    );
}

#[test]
fn the_report_counts_every_finding_and_keeps_a_few() {
    let (mut e, mut s) = healthy();
    e.auth_refusals = 5;
    s.forwarding[0].1 = Ok("0".into());
    let r = report(&diagnose(&e, &s), 7);
    assert_eq!(
        r.counts.into_iter().collect::<Vec<_>>(),
        [("credentials".into(), 1), ("forwarding-off".into(), 1)]
    );
    assert_eq!(r.details.len(), 2);
    assert_eq!(r.agent_ms, 7);
}
