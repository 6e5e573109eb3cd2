//! Data tests of the consistency core: each kind of disagreement made up in a picture and found,
//! a consistent picture giving none, and the reclaim decision before and after its graces.

use super::*;

const G: Graces = Graces { leak_ms: 60_000, dead_ms: 600_000 };

fn alloc(name: &str, ip: &str, host: &str) -> Alloc {
    Alloc { name: name.into(), ip: ip.into(), host: host.into() }
}
fn ep(name: &str, ip: &str, host: &str) -> Endpoint {
    Endpoint { name: name.into(), ip: ip.into(), host: host.into(), kind: "pod".into() }
}
fn vm(name: &str, ip: &str, host: &str) -> Endpoint {
    Endpoint { kind: "vm".into(), ..ep(name, ip, host) }
}
fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Two live hosts, a pod and a VM, each with its allocation: consistent.
fn base() -> Picture {
    Picture {
        allocations: vec![alloc("a", "10.0.0.1", "h1"), alloc("v", "10.0.0.2", "h2")],
        endpoints: vec![ep("a", "10.0.0.1", "h1"), vm("v", "10.0.0.2", "h2")],
        hosts: set(&["h1", "h2"]),
        monitored: set(&["h1", "h2"]),
        live: set(&["h1", "h2"]),
        blocks: vec![Block { network: "pods".into(), cidr: "10.0.0.0/28".into(), host: "h1".into() }],
        reports: BTreeMap::new(),
    }
}

/// Runs the check on `p` with suspects first seen at 0 and looked at `now`; expects exactly
/// `want` as (kind, subject) pairs.
fn check_case(what: &str, p: &Picture, now: u64, want: &[(Kind, &str)]) {
    let seen = observe(&Sightings::new(), p, 0);
    let seen = observe(&seen, p, now);
    let got: Vec<(Kind, String)> = check(p, &seen, now, G).into_iter().map(|d| (d.kind, d.subject)).collect();
    let want: Vec<(Kind, String)> = want.iter().map(|(k, s)| (*k, s.to_string())).collect();
    assert_eq!(got, want, "{what}");
}

#[test]
fn each_disagreement_is_found_and_a_consistent_picture_gives_none() {
    check_case("consistent", &base(), 1_000_000, &[]);

    let mut p = base();
    p.allocations.push(alloc("lost", "10.0.0.3", "h1"));
    check_case("allocation without endpoint, within the grace", &p, 59_999, &[]);
    check_case("allocation without endpoint, past the grace", &p, 60_000, &[(Kind::Leak, "lost")]);

    let mut p = base();
    p.endpoints.push(ep("ghost", "10.0.0.9", "h1"));
    check_case("endpoint without allocation", &p, 0, &[(Kind::Unallocated, "ghost")]);

    let mut p = base();
    p.endpoints[0].ip = "10.0.0.7".into();
    check_case("endpoint whose name holds another address", &p, 0, &[(Kind::WrongOwner, "a")]);

    let mut p = base();
    p.endpoints.push(ep("b", "10.0.0.1", "h1"));
    check_case(
        "address allocated under another name, claimed twice",
        &p,
        0,
        &[(Kind::WrongOwner, "b"), (Kind::DuplicateAddress, "a"), (Kind::DuplicateAddress, "b")],
    );

    let mut p = base();
    p.allocations[1].host = "h9".into();
    p.endpoints[1].host = "h9".into();
    check_case("VM on a host IPAM does not know", &p, 0, &[(Kind::UnknownHost, "v")]);

    let mut p = base();
    p.live.remove("h2");
    check_case("VM on a dead host", &p, 0, &[(Kind::DeadHost, "v")]);

    let mut p = base();
    p.monitored.remove("h2");
    p.live.remove("h2");
    check_case("a host that never sent a heartbeat is not judged", &p, 0, &[]);

    let mut p = base();
    p.blocks.push(Block { network: "pods".into(), cidr: "10.0.1.0/28".into(), host: "gone".into() });
    check_case("block of a host that no longer exists", &p, 0, &[(Kind::OrphanBlock, "pods/10.0.1.0/28")]);
}

#[test]
fn counts_name_every_kind() {
    let mut p = base();
    p.endpoints.push(ep("ghost", "10.0.0.9", "h1"));
    let c = counts(&check(&p, &Sightings::new(), 0, G));
    assert_eq!(c.len(), Kind::ALL.len());
    assert_eq!(c["unallocated"], 1);
    assert_eq!(c.values().sum::<u64>(), 1);
}

#[test]
fn sightings_keep_their_first_time_and_forget_what_cleared() {
    let mut p = base();
    p.allocations.push(alloc("lost", "10.0.0.3", "h1"));
    p.live.remove("h2");
    let s = observe(&Sightings::new(), &p, 5);
    let s = observe(&s, &p, 9);
    assert_eq!(s, [("dead:h2".to_owned(), 5), ("leak:lost".to_owned(), 5)].into_iter().collect());
    p.live.insert("h2".into());
    let s = observe(&s, &p, 11);
    assert_eq!(s, [("leak:lost".to_owned(), 5)].into_iter().collect(), "a host back alive is forgotten");
}

/// Reclaims at `now` after suspects were first seen at 0, as (reason, name) pairs.
fn reclaim_at(p: &Picture, now: u64) -> Vec<(Reason, String)> {
    let seen = observe(&observe(&Sightings::new(), p, 0), p, now);
    reclaim(p, &seen, now, G).into_iter().map(|r| (r.reason, r.name)).collect()
}

#[test]
fn reclaim_waits_for_its_graces_and_never_touches_live_hosts() {
    let mut p = base();
    p.live.remove("h2");
    p.allocations.push(alloc("cni:pods:c1:eth0", "10.0.0.3", "h1"));
    p.allocations.push(alloc("by-hand", "10.0.0.4", "h1"));
    assert_eq!(reclaim_at(&p, 59_999), vec![], "nothing before a grace");
    let lost = (Reason::Leak, "cni:pods:c1:eth0".to_owned());
    assert_eq!(reclaim_at(&p, 60_000), vec![lost.clone()], "a CNI leak; the hand-made one is only reported");
    assert_eq!(
        reclaim_at(&p, 600_000),
        vec![(Reason::DeadHost, "v".to_owned()), lost],
        "the dead host's VM after its grace; h1's pod never"
    );
    // The host came back just before the decision: nothing of it is reclaimed.
    let seen = observe(&Sightings::new(), &p, 0);
    p.live.insert("h2".into());
    assert!(reclaim(&p, &seen, 700_000, G).iter().all(|r| r.host != "h2"));
}
