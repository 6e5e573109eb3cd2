//! The core's tests as data: events in, actions out, on a `State` built from values; no root, no
//! romanad, no kernel.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use romana_api::rest::{EndpointInfo, Segment, Tenant, WatchEvent, WatchKind};
use romana_store::follow::Followed;
use serde_json::json;

use super::inputs::Lists;
use super::*;

/// Feeds `events` in order and compares the actions of each with `expect`.
pub(super) fn check(s: &mut State, events: Vec<Event>, expect: &[&[Action]]) {
    let got: Vec<Vec<Action>> = events.into_iter().map(|e| step(s, e)).collect();
    let want: Vec<Vec<Action>> = expect.iter().map(|a| a.to_vec()).collect();
    assert_eq!(got, want);
}

pub fn endpoint(name: &str, ip: &str, tenant: &str, segment: &str, host: &str) -> EndpointInfo {
    EndpointInfo {
        name: name.into(),
        ip: ip.into(),
        tenant: tenant.into(),
        segment: segment.into(),
        host: host.into(),
        labels: Default::default(),
        ports: vec![],
        pod: String::new(),
    }
}

pub fn tenant(name: &str, segments: &[&str]) -> Tenant {
    Tenant {
        name: name.into(),
        external_id: String::new(),
        labels: Default::default(),
        number: 1,
        segments: segments
            .iter()
            .map(|s| Segment {
                name: (*s).into(),
                tenant: name.into(),
                external_id: String::new(),
                labels: Default::default(),
                number: 1,
            })
            .collect(),
        isolation: String::new(),
    }
}

/// A policy letting anyone reach tcp/80 of `tenant`'s `segment` (which isolates it).
pub fn policy(id: &str, tenant: &str, segment: &str) -> serde_json::Value {
    json!({"id": id, "applied_to": [{"tenant": tenant, "segment": segment}],
           "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "tcp", "ports": [80]}]}]})
}

pub fn lists() -> Lists {
    Lists {
        tenants: vec![tenant("red", &["web"]), tenant("blue", &["x"])],
        policies: vec![],
        netpols: vec![],
        endpoints: Some(vec![
            endpoint("a", "10.0.0.2", "red", "web", "h1"),
            endpoint("b", "10.0.0.3", "blue", "x", "h1"),
        ]),
    }
}

fn put(key: &str, value: serde_json::Value) -> Event {
    Event::Watched(
        Stream::Firewall,
        Followed::Event(WatchEvent::with_value(7, WatchKind::Put, key.into(), Some(&value))),
    )
}

pub(super) fn gw() -> Vec<std::net::IpAddr> {
    vec!["169.254.1.1".parse().unwrap()]
}

/// A state whose policies were read once and whose pass ran.
pub fn loaded() -> State {
    let mut s = State::new("h1".into(), gw(), true);
    let t0 = Instant::now();
    step(&mut s, Event::FirewallWake { now: t0 });
    step(&mut s, Event::ListsRead { lists: lists(), events_before: 0 });
    pass::snapshot(&mut s.inputs);
    s
}

fn add(info: EndpointInfo) -> Event {
    Event::CniAdd { info, now: Instant::now() }
}

#[test]
fn cni_add_enforces_before_plumbing() {
    const PASS: Action = Action::FirewallPass { read_kernel: false };
    // Policies never read: read them, then the endpoint's pass, then the plumbing.
    let mut s = State::new("h1".into(), gw(), true);
    let e = endpoint("c", "10.0.0.4", "red", "web", "h1");
    check(&mut s, vec![add(e.clone())], &[&[Action::ReadLists { endpoints: true }, PASS, Action::Plumb]]);
    assert!(s.inputs.endpoint("c").is_some(), "the endpoint is in the inputs before the pass");
    // Loaded: the endpoint's own elements (no compile), then the plumbing.
    let mut s = loaded();
    check(&mut s, vec![add(e.clone())], &[&[Action::EndpointPass, Action::Plumb]]);
    // With a policy change not yet compiled, ADD's pass compiles.
    let mut s = loaded();
    step(&mut s, put("policies/web", policy("web", "red", "web")));
    check(&mut s, vec![add(e.clone())], &[&[PASS, Action::Plumb]]);
    // No policy enforcement: only the plumbing.
    let mut s = State::new("h1".into(), gw(), false);
    check(&mut s, vec![add(e)], &[&[Action::Plumb]]);
    // DEL takes the endpoint out with an endpoint pass.
    let mut s = loaded();
    check(&mut s, vec![Event::CniForget("a".into())], &[&[Action::EndpointPass]]);
    assert!(s.inputs.endpoint("a").is_none());
}

/// Endpoint changes alone make endpoint passes; the table they leave is confirmed by a compile
/// `CONFIRM_AFTER` later (the loop sleeps until then), and not again once confirmed.
#[test]
fn endpoint_changes_make_endpoint_passes_then_one_confirming_compile() {
    let mut s = loaded();
    let t0 = Instant::now();
    let relabel = |app: &str| {
        let mut e = serde_json::to_value(endpoint("a", "10.0.0.2", "red", "web", "h1")).unwrap();
        e["labels"] = json!({ "app": app });
        put("endpoints/a", e)
    };
    check(
        &mut s,
        vec![relabel("x"), Event::FirewallWake { now: t0 }],
        &[&[Action::WakeFirewall], &[Action::EndpointPass]],
    );
    // The adapter's endpoint pass takes the changes; the table now wants confirming.
    assert!(pass::take_endpoint_changes(&mut s.inputs).is_some());
    assert_eq!(s.refresh_in(t0), Duration::ZERO, "the loop wakes to schedule the confirmation");
    check(&mut s, vec![Event::FirewallWake { now: t0 }], &[&[]]);
    assert_eq!(s.refresh_in(t0), CONFIRM_AFTER);
    // Another endpoint change meanwhile does not push the confirmation back.
    let t1 = t0 + Duration::from_millis(400);
    check(
        &mut s,
        vec![relabel("y"), Event::FirewallWake { now: t1 }],
        &[&[Action::WakeFirewall], &[Action::EndpointPass]],
    );
    assert!(pass::take_endpoint_changes(&mut s.inputs).is_some());
    check(&mut s, vec![Event::FirewallWake { now: t1 }], &[&[]]);
    assert_eq!(s.refresh_in(t1), CONFIRM_AFTER - Duration::from_millis(400));
    let due = t0 + CONFIRM_AFTER;
    check(&mut s, vec![Event::FirewallWake { now: due }], &[&[Action::ConfirmPass]]);
    pass::snapshot(&mut s.inputs);
    check(&mut s, vec![Event::FirewallWake { now: due }], &[&[]]);
    assert_eq!(s.confirm_at, None);
    // Refused changes come back, before later ones, and make the next pass a compile.
    step(&mut s, relabel("z"));
    let taken = pass::take_endpoint_changes(&mut s.inputs).unwrap();
    step(
        &mut s,
        put("endpoints/b", serde_json::to_value(endpoint("b", "10.0.0.9", "red", "web", "h1")).unwrap()),
    );
    pass::give_back(&mut s.inputs, taken);
    let order: Vec<&str> = s.inputs.pending.iter().map(|(_, n)| n.as_ref().unwrap().id.as_str()).collect();
    assert_eq!(order, ["a", "b"]);
    check(&mut s, vec![Event::FirewallWake { now: due }], &[&[Action::FirewallPass { read_kernel: false }]]);
    // A policy change is never an endpoint pass.
    pass::snapshot(&mut s.inputs);
    check(
        &mut s,
        vec![put("policies/web", policy("web", "red", "web")), Event::FirewallWake { now: due }],
        &[&[Action::WakeFirewall], &[Action::FirewallPass { read_kernel: false }]],
    );
}

/// The confirming compile waits for the CNI path to be quiet (no ADD for `CNI_QUIET`), so that a
/// burst of pod starts never shares the CPU with it, but never longer than `CONFIRM_LATEST`
/// past its time; and a confirming compile an endpoint pass overtook is due again.
#[test]
fn the_confirming_compile_waits_for_quiet_and_comes_back_when_dropped() {
    let ms = Duration::from_millis;
    let mut s = loaded();
    let t0 = Instant::now();
    let e = |n: u8| endpoint(&format!("p{n}"), &format!("10.0.0.{}", 10 + n), "red", "web", "h1");
    let add_at = |s: &mut State, n: u8, now: Instant| {
        let out = step(s, Event::CniAdd { info: e(n), now });
        assert!(pass::take_endpoint_changes(&mut s.inputs).is_some());
        out
    };
    assert_eq!(add_at(&mut s, 0, t0), [Action::EndpointPass, Action::Plumb]);
    check(&mut s, vec![Event::FirewallWake { now: t0 }], &[&[]]);
    assert_eq!(s.confirm_due(), Some(t0 + CONFIRM_AFTER));
    // ADDs every 200 ms past the confirmation's time: it waits for a quiet moment.
    let mut last = t0;
    for k in 1..=8u8 {
        last = t0 + ms(200) * u32::from(k);
        add_at(&mut s, k, last);
        check(&mut s, vec![Event::FirewallWake { now: last }], &[&[]]);
    }
    assert_eq!(s.confirm_due(), Some(last + CNI_QUIET));
    assert_eq!(s.refresh_in(last), CNI_QUIET, "the loop sleeps until the CNI path is quiet");
    check(&mut s, vec![Event::FirewallWake { now: last + CNI_QUIET - ms(1) }], &[&[]]);
    check(&mut s, vec![Event::FirewallWake { now: last + CNI_QUIET }], &[&[Action::ConfirmPass]]);
    assert_eq!(s.confirm_at, None);
    // The adapter's confirming compile: an endpoint pass overtook it, so it was dropped and is
    // due again, a full `CONFIRM_AFTER` later.
    let snap = pass::snapshot_confirm(&mut s.inputs);
    assert!(snap.is_some() && !s.inputs.confirm);
    pass::confirm_dropped(&mut s.inputs);
    let t1 = last + CNI_QUIET;
    assert_eq!(s.refresh_in(t1), Duration::ZERO);
    check(&mut s, vec![Event::FirewallWake { now: t1 }], &[&[]]);
    assert_eq!(s.confirm_due(), Some(t1 + CONFIRM_AFTER));
    // Steady churn (an ADD every 100 ms) cannot put it off past `CONFIRM_LATEST`.
    let mut now = t1;
    let mut confirmed = None;
    for k in 0..200u32 {
        now = t1 + ms(100) * k;
        add_at(&mut s, 9, now);
        if step(&mut s, Event::FirewallWake { now }) == [Action::ConfirmPass] {
            confirmed = Some(now);
            break;
        }
    }
    assert_eq!(confirmed, Some(t1 + CONFIRM_AFTER + CONFIRM_LATEST));
    // With changes waiting, the confirming compile has no snapshot of its own: the adapter runs
    // a locked pass, which takes them.
    step(&mut s, Event::CniAdd { info: e(20), now });
    assert!(pass::snapshot_confirm(&mut s.inputs).is_none());
    assert!(s.inputs.dirty && !s.inputs.pending.is_empty(), "nothing was taken");
}

#[test]
fn policy_changes_make_one_pass() {
    let mut s = loaded();
    let now = Instant::now();
    check(
        &mut s,
        vec![
            put("policies/web", policy("web", "red", "web")),
            put("policies/web2", policy("web2", "red", "web")),
            put("endpoints/c", serde_json::to_value(endpoint("c", "10.0.0.4", "red", "web", "h2")).unwrap()),
            Event::FirewallWake { now },
        ],
        &[
            &[Action::WakeFirewall],
            &[Action::WakeFirewall],
            &[Action::WakeFirewall],
            &[Action::FirewallPass { read_kernel: false }],
        ],
    );
    assert_eq!(s.inputs.romana.len(), 2);
    // Nothing changed since: a wake makes no pass.
    pass::snapshot(&mut s.inputs);
    check(&mut s, vec![Event::FirewallWake { now }], &[&[]]);
}

#[test]
fn unreadable_watch_values_are_problems_not_changes() {
    let mut s = loaded();
    check(
        &mut s,
        vec![put("endpoints/c", json!({"name": 3}))],
        &[&[
            Action::Problems(vec![
                "unreadable endpoint endpoints/c on the watch: invalid type: integer `3`, expected a string at line 1 column 9"
                    .into(),
            ]),
            Action::WakeFirewall,
        ]],
    );
    assert!(!s.inputs.dirty, "nothing changed");
}

#[test]
fn tenant_events_read_tenants_again() {
    let mut s = loaded();
    let now = Instant::now();
    check(
        &mut s,
        vec![put("tenants/red", json!({})), Event::FirewallWake { now }, Event::TenantsRead(lists().tenants)],
        &[&[Action::WakeFirewall], &[Action::ReadTenants], &[]],
    );
    check(&mut s, vec![Event::TenantsFailed], &[&[Action::RetryIn(Duration::from_secs(1))]]);
    assert!(s.tenants_stale);
}

#[test]
fn a_watch_gap_relists() {
    let mut s = loaded();
    let now = Instant::now();
    let synced = |relisted| Event::Watched(Stream::Firewall, Followed::Synced { relisted });
    let lost =
        Event::Watched(Stream::Firewall, Followed::Lost { error: "down".into(), retry_in: Duration::ZERO });
    // Resumed from its revision: nothing was missed, nothing is read.
    check(
        &mut s,
        vec![lost, synced(false), Event::FirewallWake { now }],
        &[&[], &[Action::WakeFirewall], &[]],
    );
    // Relisted (the revision was gone): everything is read again.
    check(
        &mut s,
        vec![synced(true), Event::FirewallWake { now }],
        &[&[Action::WakeFirewall], &[Action::ReadLists { endpoints: true }]],
    );
    // And once a minute whatever the watch says.
    check(
        &mut s,
        vec![Event::FirewallWake { now: now + FULL_REFRESH }],
        &[&[Action::ReadLists { endpoints: true }]],
    );
}

#[test]
fn a_read_overtaken_by_events_is_read_again() {
    let mut s = loaded();
    let before = s.events;
    step(&mut s, put("policies/web", policy("web", "red", "web")));
    let mut l = lists();
    l.endpoints = Some(vec![]);
    check(
        &mut s,
        vec![Event::ListsRead { lists: l, events_before: before }],
        &[&[Action::RetryIn(Duration::from_millis(50))]],
    );
    assert!(s.inputs.endpoint("a").is_some(), "the overtaken lists were dropped");
    assert!(s.stale);
    check(
        &mut s,
        vec![Event::ListsFailed { overtaken: false }],
        &[&[Action::RetryIn(Duration::from_millis(1_000))]],
    );
}

#[test]
fn no_pass_before_policies_were_read() {
    // A restarted agent must not replace the table in force with one compiled from nothing.
    let mut s = State::new("h1".into(), gw(), true);
    let now = Instant::now();
    check(
        &mut s,
        vec![
            put("policies/web", policy("web", "red", "web")),
            Event::RepairDue { now, unchanged: false },
            Event::FirewallWake { now },
        ],
        &[&[Action::WakeFirewall], &[], &[Action::ReadLists { endpoints: true }]],
    );
}

#[test]
fn repair_on_generation_mismatch() {
    const REPAIR: Action = Action::FirewallPass { read_kernel: true };
    let mut s = loaded();
    let t = Instant::now();
    check(
        &mut s,
        vec![
            Event::RepairDue { now: t, unchanged: true },
            Event::RepairDue { now: t + Duration::from_secs(2), unchanged: false },
            Event::RepairDue { now: t + Duration::from_secs(4), unchanged: true },
            // The generation cannot show everything: the table is listed every VERIFY_EVERY.
            Event::RepairDue { now: t + Duration::from_secs(2) + VERIFY_EVERY, unchanged: true },
        ],
        &[&[], &[REPAIR], &[], &[REPAIR]],
    );
    assert_eq!(repair_wait(Duration::from_secs(2), Duration::from_millis(300)), Duration::from_secs(3));
    assert_eq!(repair_wait(Duration::from_secs(2), Duration::from_millis(10)), Duration::from_secs(2));
}

#[test]
fn known_at_only_when_nothing_else_committed() {
    use pass::known_at;
    // (read at, before, after, applied) -> known at
    let cases = [
        ((Some(5), Some(5), Some(6), true), Some(6)),
        ((Some(5), Some(5), Some(5), false), Some(5)),
        // Someone committed between our read and our transaction.
        ((Some(5), Some(6), Some(7), true), None),
        // Someone committed during our transaction.
        ((Some(5), Some(5), Some(7), true), None),
        // An empty transaction commits nothing: a move is someone else's.
        ((Some(5), Some(5), Some(6), false), None),
        ((None, Some(5), Some(6), true), None),
        ((Some(u32::MAX), Some(u32::MAX), Some(0), true), Some(0)),
    ];
    for ((at, b, a, applied), want) in cases {
        assert_eq!(known_at(at, b, a, applied), want, "at {at:?} before {b:?} after {a:?} applied {applied}");
    }
}

/// At start the watch stream's first listing is the load: no list of every endpoint is read, only
/// the tenants, and the first pass compiles once they are in.
#[test]
fn the_streams_first_listing_loads_the_inputs() {
    const PASS: Action = Action::FirewallPass { read_kernel: false };
    let synced = |relisted| Event::Watched(Stream::Firewall, Followed::Synced { relisted });
    let lost = || {
        Event::Watched(Stream::Firewall, Followed::Lost { error: "down".into(), retry_in: Duration::ZERO })
    };
    let t0 = Instant::now();
    let streaming = || {
        let mut s = State::new("h1".into(), gw(), true);
        s.stream_loads = true;
        s
    };
    let listing = || {
        let l = lists();
        let mut events: Vec<Event> = l
            .endpoints
            .unwrap()
            .into_iter()
            .map(|e| put(&format!("endpoints/{}", e.name), serde_json::to_value(&e).unwrap()))
            .collect();
        events.push(put("tenants/red", json!({})));
        events
    };
    let current = || Event::Watched(Stream::Firewall, Followed::Current);
    let mut s = streaming();
    // The first wake waits (and wakes again at the deadline at the latest); the stream opens.
    check(&mut s, vec![Event::FirewallWake { now: t0 }, synced(true)], &[&[], &[]]);
    assert_eq!(s.refresh_in(t0), STREAM_LOAD_WAIT);
    for e in listing() {
        assert_eq!(step(&mut s, e), vec![Action::WakeFirewall]);
    }
    check(&mut s, vec![Event::FirewallWake { now: t0 }], &[&[]]);
    assert!(!s.inputs.loaded, "no pass before the listing is whole");
    check(
        &mut s,
        vec![current(), Event::FirewallWake { now: t0 }, Event::TenantsRead(lists().tenants)],
        &[&[Action::WakeFirewall], &[Action::ReadTenants], &[PASS]],
    );
    assert!(s.inputs.loaded && s.inputs.endpoint("a").is_some() && s.inputs.endpoint("b").is_some());
    // Loaded: the full re-read comes a minute after the start, and a later relist reads all.
    check(
        &mut s,
        vec![Event::FirewallWake { now: t0 + FULL_REFRESH }],
        &[&[Action::ReadLists { endpoints: true }]],
    );
    check(
        &mut s,
        vec![synced(true), Event::FirewallWake { now: t0 + FULL_REFRESH }, current()],
        &[&[Action::WakeFirewall], &[Action::ReadLists { endpoints: true }], &[]],
    );

    // The listing broke off: what came is partial, the lists load.
    let mut s = streaming();
    step(&mut s, Event::FirewallWake { now: t0 });
    step(&mut s, listing().remove(0));
    check(
        &mut s,
        vec![lost(), Event::FirewallWake { now: t0 }],
        &[&[Action::WakeFirewall], &[Action::ReadLists { endpoints: true }]],
    );
    assert!(!s.inputs.loaded);

    // A stream that never lists nor fails: the lists load at the deadline.
    let mut s = streaming();
    check(
        &mut s,
        vec![Event::FirewallWake { now: t0 }, Event::FirewallWake { now: t0 + STREAM_LOAD_WAIT }],
        &[&[], &[Action::ReadLists { endpoints: true }]],
    );

    // A pod started before the listing ended: the lists load at once (fail-closed ADD).
    let mut s = streaming();
    step(&mut s, Event::FirewallWake { now: t0 });
    let e = endpoint("c", "10.0.0.4", "red", "web", "h1");
    check(&mut s, vec![add(e)], &[&[Action::ReadLists { endpoints: true }, PASS, Action::Plumb]]);
}
