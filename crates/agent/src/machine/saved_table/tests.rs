//! The saved table's format: what is saved comes back equal, what cannot be saved is not, bad
//! text is refused with the line, and a saved table is used only where and when it is true.
#![allow(clippy::unwrap_used)]

use super::*;
use romana_policy::ruleset::Hook;

fn place() -> Place {
    Place { boot: "6f1d2c9e-1b2a-4c7d-9e0f-0123456789ab".into(), netns: 4_294_967_299 }
}

/// A table with every set type, empty and full sets, base and regular chains, empty chains.
fn table() -> Observed {
    let mut t = Observed::default();
    let set = |ty, elements: &[Element]| Arc::new(Set { ty, elements: elements.iter().cloned().collect() });
    let a = |s: &str| s.parse::<IpAddr>().unwrap();
    t.sets.insert(
        "local-4".into(),
        set(SetType::Addr(Family::V4), &[Element::Addr(a("10.1.0.2")), Element::Addr(a("10.1.0.3"))]),
    );
    t.sets.insert("local-6".into(), set(SetType::Addr(Family::V6), &[Element::Addr(a("fd00:1::2"))]));
    t.sets.insert("sel-8485d72791625c66-6".into(), set(SetType::Addr(Family::V6), &[]));
    t.sets.insert(
        "np-web-tcp-1a2b-4".into(),
        set(SetType::AddrPort(Family::V4), &[Element::AddrPort(a("10.1.0.2"), 8080)]),
    );
    t.sets.insert(
        "np-web-tcp-1a2b-6".into(),
        set(SetType::AddrPort(Family::V6), &[Element::AddrPort(a("fd00:1::2"), 443)]),
    );
    let chain = |base, rules: &[&str]| ObservedChain {
        base,
        rules: Arc::new(rules.iter().map(|r| r.to_string()).collect()),
    };
    t.chains.insert(
        "fwd-ingress".into(),
        chain(Some((Hook::Forward, 1)), &["b3854bb523e9f4de", "c5ca5f3dcca612ff"]),
    );
    t.chains.insert("egress-nat".into(), chain(Some((Hook::Postrouting, -100)), &["0504f7465d5d2248"]));
    t.chains.insert("ingress-b29".into(), chain(None, &["9fdcb53bdc4e1d8d"]));
    t.chains.insert("egress-policies".into(), chain(None, &[]));
    t
}

fn saved(table: Observed) -> SavedTable {
    SavedTable { place: place(), generation: 4711, table }
}

#[test]
fn a_saved_table_comes_back_equal() {
    let s = saved(table());
    let text = encode(&s).expect("savable");
    assert_eq!(decode(&text), Ok(s.clone()));
    // And what it decodes to saves to the same text.
    assert_eq!(encode(&decode(&text).unwrap()).as_deref(), Some(text.as_str()));
    let empty = saved(Observed::default());
    assert_eq!(decode(&encode(&empty).unwrap()), Ok(empty));
}

#[test]
fn what_the_format_cannot_hold_is_not_saved() {
    let mut t = table();
    t.foreign_sets.insert("someone-elses".into());
    assert_eq!(encode(&saved(t)), None);
    let mut t = table();
    t.chains.get_mut("ingress-b29").unwrap().rules = Arc::new(vec![String::new()]);
    assert_eq!(encode(&saved(t)), None, "a rule without our comment");
    let mut t = table();
    t.chains.insert("has space".into(), ObservedChain { base: None, rules: Arc::default() });
    assert_eq!(encode(&saved(t)), None);
}

#[test]
fn bad_text_is_refused_with_its_line() {
    let good = encode(&saved(table())).unwrap();
    let check = |text: &str, want: &str| {
        let got = decode(text).expect_err(text);
        assert!(got.contains(want), "{text:?}: {got}");
    };
    check("", "ends before `romana-table`");
    check("romana-table 1\n", "not `romana-table 2`");
    check(&good.replace("netns 4294967299", "netns x"), "line 3: netns");
    check(&good.replace("generation 4711", "generation -1"), "line 4: generation");
    check(&good.replace(" 10.1.0.3", " 10.1.0.300"), "bad element `10.1.0.300`");
    check(&good.replace("port4", "ports"), "unknown set type `ports`");
    check(
        &good.replace("chain fwd-ingress forward", "chain fwd-ingress sideways"),
        "unknown hook `sideways`",
    );
    check(&format!("{good}chain lone\n"), "expected `set NAME TYPE ...`");
    check(&format!("{good}chain lone -\n"), "chain without a priority");
    check(&format!("{good}rule x\n"), &format!("line {}", good.lines().count() + 1));
}

#[test]
fn a_saved_table_is_exact_at_its_generation_and_checked_after_another_commit() {
    let check = |place: Place, now: Option<u32>, want: Restore| {
        assert_eq!(saved(table()).restore(&place, now), want, "{place:?} at {now:?}");
    };
    check(place(), Some(4711), Restore::Exact(table(), 4711));
    // Someone else committed since (an agent would have removed the file): check the structure.
    check(place(), Some(4712), Restore::CheckStructure(table()));
    check(place(), None, Restore::CheckStructure(table()));
    check(Place { boot: "another-boot".into(), ..place() }, Some(4711), Restore::Read);
    check(Place { netns: 4_294_967_300, ..place() }, Some(4711), Restore::Read);
}

#[test]
fn the_structure_is_the_sets_types_and_the_chains_not_the_elements() {
    // What a read without elements gives for the saved table.
    let bare = |t: &Observed| {
        let mut t = t.clone();
        for s in t.sets.values_mut() {
            *s = Arc::new(Set::new(s.ty));
        }
        t
    };
    let check = |read: Observed, same: bool| assert_eq!(same_structure(&table(), &read), same, "{read:?}");
    check(bare(&table()), true);
    check(table(), true);
    let mut t = bare(&table());
    t.sets.remove("local-6");
    check(t, false);
    let mut t = bare(&table());
    t.sets.insert("local-7".into(), Arc::new(Set::new(SetType::Addr(Family::V6))));
    check(t, false);
    let mut t = bare(&table());
    t.sets.insert("local-6".into(), Arc::new(Set::new(SetType::AddrPort(Family::V6))));
    check(t, false);
    let mut t = bare(&table());
    t.foreign_sets.insert("local-5".into());
    check(t, false);
    let mut t = bare(&table());
    t.chains.get_mut("ingress-b29").unwrap().rules = Arc::new(vec!["9fdcb53bdc4e1d8d".into(), "0000".into()]);
    check(t, false);
    let mut t = bare(&table());
    t.chains.get_mut("fwd-ingress").unwrap().base = Some((Hook::Forward, 0));
    check(t, false);
    let mut t = bare(&table());
    t.chains.remove("egress-policies");
    check(t, false);
}
