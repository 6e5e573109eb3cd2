//! The core's route loop as data: route reads, the kernel's observations and applies in, the
//! converges they make out; no root, no romanad, no kernel.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use romana_api::rest::{HostRoutesInfo, RouteInfo, RouteKind, WatchEvent, WatchKind};
use romana_dataplane::{HostState, LinkKind, LinkName, NextHop, PeerRoute};
use romana_store::follow::Followed;

use super::route_loop::KERNEL_RECHECK;
use super::tests::{check, gw};
use super::*;

fn route(dest: &str, kind: &str, via_ip: &str) -> RouteInfo {
    let kind = match kind {
        "throw" => RouteKind::Throw,
        _ => RouteKind::Host { via: String::new(), via_ip: via_ip.into() },
    };
    RouteInfo { dest: dest.into(), kind }
}

#[test]
fn a_route_set_change_converges() {
    let mut s = State::new("h1".into(), gw(), true);
    let r = HostRoutesInfo {
        host: "h1".into(),
        revision: 3,
        routes: vec![
            route("10.1.0.0/28", "host", "192.168.0.2"),
            route("10.2.0.0/16", "throw", ""),
            // romanad's mistakes are left out; the rest applies.
            route("10.3.0.0/33", "host", "192.168.0.3"),
            route("10.4.0.0/28", "host", "h3"),
        ],
        per_block: None,
        per_endpoint: None,
        stamp: None,
    };
    let want_routes = vec![
        PeerRoute { dest: "10.1.0.0/28".parse().unwrap(), via: Some("192.168.0.2".parse().unwrap()) },
        PeerRoute { dest: "10.2.0.0/16".parse().unwrap(), via: None },
    ];
    let converge = [Action::ObserveKernel, Action::SyncFastPath];
    check(
        &mut s,
        vec![
            Event::Tick { now: Instant::now() },
            Event::RoutesRead(Some(routes::peer_routes(&r)), None),
            Event::RoutesRead(None, None),
        ],
        // romanad unreachable: the last set stays.
        &[&[Action::Heartbeat, Action::ReadRoutes], &converge, &converge],
    );
    assert_eq!(s.routes, want_routes);
    // The kernel holds the gateway and an endpoint (the CNI's): the plan adds the routes and
    // leaves the endpoint alone.
    let veth = LinkName::new("romana-a1b2c3").unwrap();
    let mut observed = routes::desired(&gw(), &[]).unwrap();
    observed.links.insert(veth.clone(), LinkKind::Endpoint);
    observed.routes.insert("10.0.0.2/32".parse().unwrap(), NextHop::Dev(veth.clone()));
    let plan = match step(&mut s, Event::KernelObserved(observed)).as_slice() {
        [Action::ApplyRoutes(p)] => p.clone(),
        other => panic!("expected one plan, got {other:?}"),
    };
    let text: Vec<String> = plan.steps.iter().map(|s| s.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(text.iter().any(|s| s.contains("10.1.0.0/28") && s.contains("192.168.0.2")), "{text:?}");
    assert!(text.iter().any(|s| s.contains("10.2.0.0/16")), "{text:?}");
    assert!(!text.iter().any(|s| s.contains("romana-a1b2c3") || s.contains("10.0.0.2/32")), "{text:?}");
    // Routes that do not compile (the same destination twice): nothing is observed, nothing
    // applied.
    let twice = HostRoutesInfo {
        host: "h1".into(),
        revision: 4,
        routes: vec![
            route("10.1.0.0/28", "host", "192.168.0.2"),
            route("10.1.0.0/28", "host", "192.168.0.3"),
        ],
        per_block: None,
        per_endpoint: None,
        stamp: None,
    };
    check(
        &mut s,
        vec![Event::RoutesRead(Some(routes::peer_routes(&twice)), None)],
        &[&[Action::RoutesDoNotCompile("the route manager sent two routes for 10.1.0.0/28".into())]],
    );
    check(&mut s, vec![Event::KernelObserved(HostState::default())], &[&[]]);
}

/// A read answered 304 converges where reads are the only converges (the watch not followed:
/// the kernel, the gateway's addresses and the fast path are checked on each), and nothing while
/// the watch follows the set (the recheck does).
#[test]
fn an_unchanged_route_set_converges_only_while_not_followed() {
    let mut s = State::new("h1".into(), gw(), true);
    let converge = [Action::ObserveKernel, Action::SyncFastPath];
    check(
        &mut s,
        vec![Event::Tick { now: Instant::now() }, Event::RoutesUnchanged(None)],
        &[&[Action::Heartbeat, Action::ReadRoutes], &converge],
    );
    check(
        &mut s,
        vec![
            Event::Watched(Stream::Routes, Followed::Synced { relisted: true }),
            Event::RoutesUnchanged(None),
        ],
        &[&[Action::WakeRoutes], &[]],
    );
}

#[test]
fn only_this_hosts_route_key_wakes_the_route_loop() {
    let mut s = State::new("h1".into(), gw(), true);
    let ev = |key: &str| {
        Event::Watched(
            Stream::Routes,
            Followed::Event(WatchEvent { revision: 1, kind: WatchKind::Put, key: key.into(), value: None }),
        )
    };
    check(
        &mut s,
        vec![
            ev("routes/h1"),
            ev("routes/h10"),
            Event::Watched(Stream::Routes, Followed::Synced { relisted: true }),
        ],
        &[&[Action::WakeRoutes], &[], &[Action::WakeRoutes]],
    );
}

/// A notice names the set's stamp; a read answered by a replica that has not applied it yet
/// (another stamp, as a set or a 304) is read again at the next tick, until one names it.
#[test]
fn a_read_answered_with_an_older_stamp_is_read_again() {
    let mut s = State::new("h1".into(), gw(), true);
    let start = Instant::now();
    let tick = |ms: u64| Event::Tick { now: start + Duration::from_millis(ms) };
    let notice = |stamp: &str| {
        let value = serde_json::value::RawValue::from_string(format!(r#"{{"host":"h1","stamp":"{stamp}"}}"#));
        Event::Watched(
            Stream::Routes,
            Followed::Event(WatchEvent {
                revision: 2,
                kind: WatchKind::Put,
                key: "routes/h1".into(),
                value: Some(value.unwrap()),
            }),
        )
    };
    let read = [Action::Heartbeat, Action::ReadRoutes];
    check(
        &mut s,
        vec![
            Event::Watched(Stream::Routes, Followed::Synced { relisted: false }),
            tick(0),
            Event::RoutesUnchanged(Some("aa".into())),
            tick(500),
            notice("bb"),
            tick(1_000),
            // The replica answering still computes from before the change.
            Event::RoutesUnchanged(Some("aa".into())),
            tick(1_500),
            set_stamped(&[("10.1.0.0/28", "192.168.0.2")], Some("aa")),
        ],
        &[
            &[Action::WakeRoutes],
            &read,
            &[],
            // The first converge is owed (no read brought a set yet): a recheck.
            &[Action::Heartbeat, Action::ObserveKernel, Action::SyncFastPath],
            &[Action::WakeRoutes],
            &read,
            // 304 with the old stamp: read again at the next tick, from another replica.
            &[Action::RoutesLagged],
            &read,
            // The set the lagging replica has is still taken (the kernel unknown: observed).
            &[Action::RoutesLagged, Action::ObserveKernel, Action::SyncFastPath],
        ],
    );
    // Read again; the answer names the notice's stamp: no more reads.
    let mut out = step(&mut s, tick(2_000));
    out.extend(step(&mut s, set_stamped(&[("10.1.0.0/28", "192.168.0.2")], Some("bb"))));
    out.extend(step(&mut s, tick(2_500)));
    assert_eq!(out.iter().filter(|a| matches!(a, Action::ReadRoutes)).count(), 1, "{out:?}");
}

/// A set of routes via other hosts, as read, from the set of `stamp`.
fn set_stamped(routes: &[(&str, &str)], stamp: Option<&str>) -> Event {
    let r = HostRoutesInfo {
        host: "h1".into(),
        revision: 1,
        routes: routes.iter().map(|(dest, via)| route(dest, "host", via)).collect(),
        per_block: None,
        per_endpoint: None,
        stamp: stamp.map(str::to_owned),
    };
    Event::RoutesRead(Some(routes::peer_routes(&r)), stamp.map(str::to_owned))
}

/// A set of routes via other hosts, as read.
fn set(routes: &[(&str, &str)]) -> Event {
    set_stamped(routes, None)
}

/// An event's actions as text: a plan as its steps, the rest by name.
fn said(s: &mut State, ev: Event) -> Vec<String> {
    step(s, ev)
        .into_iter()
        .flat_map(|a| match a {
            Action::ApplyRoutes(p) => p.steps.iter().map(|s| s.to_string()).collect(),
            other => vec![format!("{other:?}")],
        })
        .collect()
}

/// Once a converge applied, the kernel is known: a changed set is planned from it (the change
/// alone, no observation). The recheck observes anyway and repairs; a failed apply leaves the
/// kernel unknown, and a failed plan from the kernel as known observes at the next tick.
#[test]
fn a_changed_set_is_planned_from_the_kernel_as_known() {
    let (mut s, t) = (State::new("h1".into(), gw(), true), Instant::now());
    let (a, b) = (("10.1.0.0/28", "192.168.0.2"), ("10.1.0.16/28", "192.168.0.3"));
    step(&mut s, Event::Watched(Stream::Routes, Followed::Synced { relisted: true }));
    assert_eq!(said(&mut s, Event::Tick { now: t }), ["Heartbeat", "ReadRoutes"]);
    // At start nothing is known: observed, planned from what was seen, applied.
    assert_eq!(said(&mut s, set(&[a])), ["ObserveKernel", "SyncFastPath"]);
    assert_eq!(
        said(&mut s, Event::KernelObserved(HostState::default())),
        [
            "add link romana-gw (Gateway)",
            "add address 169.254.1.1/32 dev romana-gw",
            "add route 10.1.0.0/28 via 192.168.0.2"
        ]
    );
    assert_eq!(s.kernel, None, "known once applied");
    assert!(said(&mut s, Event::RoutesApplied(true)).is_empty());
    assert_eq!(s.kernel, s.desired);
    // The set changes: its change alone, from the kernel as known.
    assert_eq!(said(&mut s, set(&[a, b])), ["add route 10.1.0.16/28 via 192.168.0.3", "SyncFastPath"]);
    step(&mut s, Event::RoutesApplied(true));
    assert_eq!(said(&mut s, set(&[b])), ["delete route 10.1.0.0/28", "SyncFastPath"]);
    step(&mut s, Event::RoutesApplied(true));
    // The recheck observes: a route deleted behind our back is put back.
    assert_eq!(
        said(&mut s, Event::Tick { now: t + KERNEL_RECHECK }),
        ["Heartbeat", "ObserveKernel", "SyncFastPath"]
    );
    let mut seen = HostState::clone(s.kernel.as_ref().unwrap());
    seen.routes.clear();
    assert_eq!(said(&mut s, Event::KernelObserved(seen)), ["add route 10.1.0.16/28 via 192.168.0.3"]);
    // That apply fails: the kernel is unknown, and the recheck tries again (a failure that
    // persists costs a kernel dump every 5 s, not every tick).
    step(&mut s, Event::RoutesApplied(false));
    assert_eq!(s.kernel, None);
    let next = |ms: u64| Event::Tick { now: t + KERNEL_RECHECK + Duration::from_millis(ms) };
    assert_eq!(said(&mut s, next(500)), ["Heartbeat"]);
    // A read meanwhile observes; this time it applies.
    assert_eq!(said(&mut s, set(&[a, b])), ["ObserveKernel", "SyncFastPath"]);
    said(&mut s, Event::KernelObserved(HostState::default()));
    step(&mut s, Event::RoutesApplied(true));
    assert_eq!(s.kernel, s.desired);
    // A plan from the kernel as known fails (the kernel was not as known): the next tick
    // observes.
    assert_eq!(said(&mut s, set(&[a])), ["delete route 10.1.0.16/28", "SyncFastPath"]);
    step(&mut s, Event::RoutesApplied(false));
    assert_eq!(said(&mut s, next(1_000)), ["Heartbeat", "ObserveKernel", "SyncFastPath"]);
    // A failed observation (no plan) leaves it unknown too, without asking for a converge.
    step(&mut s, Event::RoutesApplied(false));
    assert_eq!(said(&mut s, next(1_500)), ["Heartbeat"]);
}

/// A VIP's address goes on the gateway at the next tick (not at the recheck), planned from the
/// kernel as known, or with the read due at that tick even when it is answered 304; the apply in
/// flight when it came leaves the kernel as that apply planned.
#[test]
fn a_vip_change_converges_at_the_next_tick() {
    let (mut s, t) = (State::new("h1".into(), gw(), true), Instant::now());
    step(&mut s, Event::Watched(Stream::Routes, Followed::Synced { relisted: true }));
    step(&mut s, Event::Tick { now: t });
    step(&mut s, set(&[]));
    said(&mut s, Event::KernelObserved(HostState::default()));
    // The VIP comes while that plan applies.
    assert!(said(&mut s, Event::VipsChanged(vec!["192.0.2.10".parse().unwrap()])).is_empty());
    step(&mut s, Event::RoutesApplied(true));
    assert_eq!(
        s.kernel.as_ref().map(|k| k.addresses.len()),
        Some(1),
        "the kernel holds what the applied plan made, without the VIP"
    );
    assert_eq!(
        said(&mut s, Event::Tick { now: t + Duration::from_millis(500) }),
        ["Heartbeat", "add address 192.0.2.10/32 dev romana-gw", "SyncFastPath"]
    );
    step(&mut s, Event::RoutesApplied(true));
    assert_eq!(said(&mut s, Event::Tick { now: t + Duration::from_millis(1_000) }), ["Heartbeat"]);
    // A second VIP while a read is due: the read comes first, is answered 304, and converges the
    // VIP (it does not wait for the recheck).
    let key = WatchEvent { revision: 2, kind: WatchKind::Put, key: "routes/h1".into(), value: None };
    step(&mut s, Event::Watched(Stream::Routes, Followed::Event(key)));
    step(&mut s, Event::VipsChanged(vec!["192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()]));
    assert_eq!(
        said(&mut s, Event::Tick { now: t + Duration::from_millis(1_500) }),
        ["Heartbeat", "ReadRoutes"]
    );
    assert_eq!(
        said(&mut s, Event::RoutesUnchanged(None)),
        ["add address 192.0.2.11/32 dev romana-gw", "SyncFastPath"]
    );
    step(&mut s, Event::RoutesApplied(true));
    assert_eq!(said(&mut s, Event::Tick { now: t + Duration::from_millis(2_000) }), ["Heartbeat"]);
}
