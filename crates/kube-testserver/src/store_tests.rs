//! Tests of the store core: over a long random history, the state served for a past
//! resourceVersion (paginated and exact lists) is the state that was current then, and it plus
//! the events after it gives today's state.

use super::*;
use crate::resources::find;

fn stamp(i: u64) -> Stamp {
    Stamp { now: "2026-01-01T00:00:00Z".into(), uid: format!("uid-{i}"), suffix: format!("s{i}") }
}

/// Replays `events` onto `state` (name-keyed), as a watching client would.
fn replay(state: &mut BTreeMap<(String, String), Value>, events: &[Event]) {
    for e in events {
        let k = (e.key.ns.clone(), e.key.name.clone());
        match e.kind {
            EventType::Deleted => state.remove(&k),
            _ => state.insert(k, (*e.object).clone()),
        };
    }
}

fn listed(store: &Store, res: usize, at: Option<u64>) -> BTreeMap<(String, String), Value> {
    let page = store.list(res, None, at, None, None, |_| true).expect("list");
    page.items
        .iter()
        .map(|o| ((meta_str(o, "namespace").to_string(), meta_str(o, "name").to_string()), (**o).clone()))
        .collect()
}

#[test]
fn past_state_plus_events_is_present_state() {
    let pods = find("", "v1", "pods").expect("pods");
    let mut s = Store::new(100_000);
    for ns in ["a", "b", "c"] {
        s.create(NAMESPACES, "", json!({"metadata": {"name": ns}}), &stamp(0)).expect("namespace");
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut checkpoints = vec![(s.rv(), listed(&s, pods, None))];
    for i in 0..2_000u64 {
        let ns = ["a", "b", "c"][(next() % 3) as usize];
        let name = format!("p{}", next() % 40);
        let key = Key { res: pods, ns: ns.into(), name: name.clone() };
        let label = format!("v{}", next() % 5);
        // Errors (exists, absent) are part of the workload: they must change nothing.
        let _ = match next() % 4 {
            0 | 1 => s.create(
                pods,
                ns,
                json!({"metadata": {"name": name, "labels": {"l": label}}, "spec": {}}),
                &stamp(i),
            ),
            2 => s.patch(&key, &json!({"metadata": {"labels": {"l": label}}}), false),
            _ => s.delete(&key, &Preconditions::default()),
        };
        if next() % 50 == 0 {
            checkpoints.push((s.rv(), listed(&s, pods, None)));
        }
    }
    let now = listed(&s, pods, None);
    assert!(!now.is_empty());
    assert!(checkpoints.len() > 10);
    for (rv, then) in checkpoints {
        let mut state = listed(&s, pods, Some(rv));
        assert_eq!(state, then, "the list at {rv} is the state current at {rv}");
        replay(&mut state, &s.events_after(pods, None, rv).expect("history reaches back"));
        assert_eq!(state, now, "state at {rv} plus the events after it");
    }
}

#[test]
fn history_cap_compacts_and_namespace_delete_cascades() {
    let pods = find("", "v1", "pods").expect("pods");
    let mut s = Store::new(3);
    s.create(NAMESPACES, "", json!({"metadata": {"name": "a"}}), &stamp(0)).expect("ns");
    let first = s.rv();
    for i in 0..4 {
        s.create(pods, "a", json!({"metadata": {"name": format!("p{i}")}}), &stamp(i)).expect("pod");
    }
    assert_eq!(s.events_after(pods, None, first).map_err(|e| e.code).err(), Some(410));
    assert_eq!(s.events_after(pods, None, s.rv() - 2).map(|e| e.len()).ok(), Some(2));
    let ns_key = Key { res: NAMESPACES, ns: String::new(), name: "a".into() };
    s.delete(&ns_key, &Preconditions::default()).expect("delete namespace");
    assert!(s.all(pods).is_empty());
    assert_eq!(
        s.create(pods, "a", json!({"metadata": {"name": "late"}}), &stamp(9)).map_err(|e| e.message),
        Err("namespaces \"a\" not found".to_string())
    );
}

#[test]
fn snapshot_restores_objects_and_compacts() {
    let mut s = Store::new(10);
    s.create(NAMESPACES, "", json!({"metadata": {"name": "a"}}), &stamp(0)).expect("ns");
    let rv = s.rv();
    let r = Store::restore(&s.snapshot(), 10).expect("restore");
    assert_eq!(r.all(NAMESPACES), s.all(NAMESPACES));
    assert!(r.rv() > rv);
    assert_eq!(r.events_after(NAMESPACES, None, rv).map_err(|e| e.code).err(), Some(410));
    assert!(Store::restore(&json!({"objects": []}), 10).is_err());
}
