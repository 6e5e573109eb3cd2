//! Set elements over raw netlink against the nft text path, in a real kernel inside namespaces
//! this test creates (`rnl-*`, deleted by their guards): the same changes applied both ways
//! leave the same table (`nft -j list table inet romana`, read back by the policy crate), for
//! every set type we create; a batch the kernel refuses changes nothing and names the set; and
//! `Nft::apply_elements` goes over netlink and leaves the table as the text path does.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use romana_host::nftnl::{ElementKey, ElementOp, ElementPath, ElementSocket, SetElements, script};
use romana_host::{in_netns, nft};
use romana_policy::nftjson;
use romana_policy::nftplan::Observed;
use romana_test_support::Netns;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn netns() -> Option<Netns> {
    Netns::new(&format!("rnl-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn observe(ns: &Netns) -> Observed {
    in_netns(&ns.0, || async { nft::list_table(false).unwrap().map(|j| nftjson::parse(&j).unwrap()) })
        .unwrap()
        .expect("the table exists")
}

/// One set of each type we create, with a few elements.
const TABLE: &str = "add table inet romana
add set inet romana a4 { type ipv4_addr; }
add set inet romana a6 { type ipv6_addr; }
add set inet romana p4 { type ipv4_addr . inet_service; }
add set inet romana p6 { type ipv6_addr . inet_service; }
add element inet romana a4 { 10.0.0.1, 10.0.0.2 }
add element inet romana a6 { fd00::1 }
add element inet romana p4 { 10.0.0.1 . 80 }
add element inet romana p6 { fd00::1 . 443 }
add chain inet romana c
add rule inet romana c ip saddr @a4 accept
add rule inet romana c ip6 saddr @a6 accept
add rule inet romana c meta l4proto tcp ip daddr . th dport @p4 accept
add rule inet romana c meta l4proto tcp ip6 daddr . th dport @p6 accept
";

fn loaded() -> Option<Netns> {
    let ns = netns()?;
    let t = TABLE.to_owned();
    in_netns(&ns.0, move || async move { nft::apply(&t) }).unwrap().unwrap();
    Some(ns)
}

fn key(s: &str) -> ElementKey {
    match s.rsplit_once(" . ") {
        Some((a, p)) => ElementKey::AddrPort(a.parse().unwrap(), p.parse().unwrap()),
        None => ElementKey::Addr(s.parse::<IpAddr>().unwrap()),
    }
}

fn change(op: ElementOp, set: &str, keys: &[&str]) -> SetElements {
    SetElements { op, set: set.into(), keys: keys.iter().map(|k| key(k)).collect() }
}

fn by_netlink(ns: &Netns, changes: Vec<SetElements>) -> Result<(), nft::NftError> {
    in_netns(&ns.0, move || async move { ElementSocket::open()?.apply_elements(&changes) }).unwrap()
}

fn by_text(ns: &Netns, changes: &[SetElements]) {
    let s = script(changes);
    in_netns(&ns.0, move || async move { nft::apply(&s) }).unwrap().unwrap();
}

#[test]
fn netlink_and_text_leave_the_same_table() {
    let (Some(a), Some(b)) = (loaded(), loaded()) else {
        return eprintln!("skipped: cannot create namespaces");
    };
    let many: Vec<String> = (0..2500).map(|i| format!("10.1.{}.{}", i / 250, i % 250)).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let steps: Vec<Vec<SetElements>> = vec![
        // One pod's start: a few elements of several types in one transaction.
        vec![
            change(ElementOp::Add, "a4", &["10.0.0.3"]),
            change(ElementOp::Add, "a6", &["fd00::3", "fd00::4"]),
            change(ElementOp::Add, "p4", &["10.0.0.3 . 8080"]),
            change(ElementOp::Add, "p6", &["fd00::3 . 53"]),
        ],
        // A relabel: out of one set, into another; an element added again is no error.
        vec![
            change(ElementOp::Delete, "a4", &["10.0.0.1"]),
            change(ElementOp::Delete, "p6", &["fd00::1 . 443"]),
            change(ElementOp::Add, "a4", &["10.0.0.2", "10.0.0.9"]),
        ],
        // More than one message's worth for one set.
        vec![change(ElementOp::Add, "a4", &many)],
        vec![change(ElementOp::Delete, "a4", &many[..1500])],
    ];
    for (i, step) in steps.into_iter().enumerate() {
        by_text(&b, &step);
        by_netlink(&a, step).unwrap();
        assert_eq!(observe(&a), observe(&b), "after step {i}");
    }
    let t = observe(&a);
    assert_eq!(t.sets["a4"].elements.len(), 3 + 1000, "10.0.0.2, .3, .9 and the last 1,000");
    assert_eq!(t.chains["c"].rules.len(), 4, "rules are untouched");
}

#[test]
fn a_refused_batch_changes_nothing_and_names_the_set() {
    let Some(ns) = loaded() else { return eprintln!("skipped: cannot create namespaces") };
    let before = observe(&ns);
    let check = |changes: Vec<SetElements>, says: &str| {
        let e = by_netlink(&ns, changes).unwrap_err().to_string();
        assert!(e.contains(says), "{e} should say {says}");
        assert_eq!(observe(&ns), before, "a refused batch changed the table");
    };
    // The add comes first in the batch and must not stay.
    check(
        vec![change(ElementOp::Add, "a4", &["10.0.0.7"]), change(ElementOp::Delete, "a6", &["fd00::99"])],
        "set a6: No such file or directory",
    );
    check(vec![change(ElementOp::Add, "no-such-set", &["10.0.0.7"])], "set no-such-set");
    // An IPv6 key in an IPv4 set: the kernel checks the length.
    check(vec![change(ElementOp::Add, "a4", &["fd00::7"])], "set a4");
}

#[test]
fn the_kept_connections_apply_elements_over_netlink() {
    let (Some(a), Some(b)) = (loaded(), loaded()) else {
        return eprintln!("skipped: cannot create namespaces");
    };
    let changes = vec![
        change(ElementOp::Add, "p4", &["10.0.0.5 . 22"]),
        change(ElementOp::Delete, "a4", &["10.0.0.2"]),
    ];
    by_text(&b, &changes);
    let c = changes.clone();
    let used = in_netns(&a.0, move || async move {
        let mut n = nft::Nft::default();
        n.apply_elements(&c).map(|()| n.uses_batches())
    })
    .unwrap()
    .unwrap();
    assert_eq!(used, Some(true), "the batch path was taken");
    assert_eq!(observe(&a), observe(&b));
    // A change the kernel refuses both ways is the text path's error, and changes nothing.
    let before = observe(&a);
    let e = in_netns(&a.0, move || async move {
        nft::Nft::default().apply_elements(&[change(ElementOp::Delete, "a4", &["10.9.9.9"])])
    })
    .unwrap()
    .unwrap_err();
    assert!(matches!(e, nft::NftError::Failed { .. }), "{e}");
    assert_eq!(observe(&a), before);
}
