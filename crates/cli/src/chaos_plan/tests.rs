//! The chaos scenario's pure core: reproducible choices, the model's bookkeeping, and a kill
//! schedule that never takes down more than the quorum allows.

use super::*;

#[test]
fn the_same_seed_makes_the_same_choices() {
    let run = |seed| {
        let mut rng = Rng::new(seed);
        let mut m = Model::default();
        (0..50)
            .map(|i| {
                let op = m.next_op(&mut rng, 3, 6);
                m.outcome(&op, i % 4 != 0, &["10.0.0.1".into()]);
                format!("{op:?}")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

/// Applies `ops` with their answers and returns (live, deleting, gone, policies).
fn check(ops: &[(Op, bool)], expect: (&[&str], &[&str], &[&str], &[usize])) {
    let mut m = Model::default();
    for (op, ok) in ops {
        m.outcome(op, *ok, &["10.1.0.2".to_owned()]);
    }
    let live: Vec<&str> = m.live().map(|(n, _)| n.as_str()).collect();
    let deleting = m.pending_deletes();
    let deleting: Vec<&str> = deleting.iter().map(String::as_str).collect();
    let gone: Vec<&str> = m.gone.iter().map(String::as_str).collect();
    let policies: Vec<usize> = m.policies.iter().copied().collect();
    assert_eq!(
        (live.as_slice(), deleting.as_slice(), gone.as_slice(), policies.as_slice()),
        (expect.0, expect.1, expect.2, expect.3)
    );
}

fn add(pod: &str) -> Op {
    Op::Add { pod: pod.into(), host: 0, tenant: "red".into(), labels: BTreeMap::new() }
}

fn del(pod: &str) -> Op {
    Op::Del { pod: pod.into() }
}

#[test]
fn answers_move_pods_through_their_states() {
    check(&[(add("a"), true)], (&["a"], &[], &[], &[]));
    // A failed ADD is deleted later, as a runtime does.
    check(&[(add("a"), false)], (&[], &["a"], &[], &[]));
    check(&[(add("a"), false), (del("a"), true)], (&[], &[], &["a"], &[]));
    // A failed DEL leaves the pod to delete (not live: it may be half gone).
    check(&[(add("a"), true), (del("a"), false)], (&[], &["a"], &[], &[]));
    check(&[(add("a"), true), (add("b"), true), (del("a"), true)], (&["b"], &[], &["a"], &[]));
    let t = |i| Op::TogglePolicy { index: i };
    check(&[(t(1), true), (t(2), true), (t(1), true), (t(3), false)], (&[], &[], &[], &[2]));
}

#[test]
fn relabels_count_only_when_acknowledged() {
    let mut m = Model::default();
    m.outcome(&add("a"), true, &[]);
    let labels = BTreeMap::from([("app".to_owned(), "db".to_owned())]);
    m.outcome(&Op::Relabel { pod: "a".into(), labels: labels.clone() }, false, &[]);
    assert!(m.pods["a"].labels.is_empty());
    assert!(m.pods["a"].labels_unsure, "a failed relabel may have been applied");
    m.outcome(&Op::Relabel { pod: "a".into(), labels: labels.clone() }, true, &[]);
    assert_eq!(m.pods["a"].labels, labels);
    assert!(!m.pods["a"].labels_unsure);
    let t = Op::TogglePolicy { index: 0 };
    m.outcome(&t, false, &[]);
    assert_eq!((m.policies.len(), m.policies_unsure.len()), (0, 1));
    m.outcome(&t, true, &[]);
    assert_eq!((m.policies.len(), m.policies_unsure.len()), (1, 0));
}

#[test]
fn adds_stop_at_the_pod_limit() {
    let mut rng = Rng::new(1);
    let mut m = Model::default();
    for _ in 0..500 {
        let op = m.next_op(&mut rng, 2, 4);
        m.outcome(&op, true, &[]);
        assert!(m.live().count() <= 4, "{op:?}");
    }
}

#[test]
fn the_killer_keeps_quorum_and_restarts_everything() {
    let sizes = Sizes { agents: 3, replicas: 3, members: 3 };
    assert_eq!([Kind::Agent, Kind::Romanad, Kind::Etcd].map(|k| sizes.may_be_down(k)), [1, 2, 1]);
    assert_eq!(Sizes { agents: 0, replicas: 0, members: 0 }.may_be_down(Kind::Etcd), 0);
    assert_eq!(Sizes { agents: 2, replicas: 1, members: 5 }.may_be_down(Kind::Etcd), 2);
    let mut rng = Rng::new(42);
    let mut k = Killer::new(sizes, &mut rng);
    let mut down: BTreeSet<Target> = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for now in (0..600_000).step_by(100) {
        for a in k.tick(now, &mut rng) {
            match a {
                KillAction::Kill(t) => {
                    assert!(down.insert(t), "{t:?} killed twice");
                    kinds.insert(t.0);
                }
                KillAction::Restart(t) => assert!(down.remove(&t), "{t:?} restarted while up"),
            }
        }
        for kind in [Kind::Agent, Kind::Romanad, Kind::Etcd] {
            let n = down.iter().filter(|(d, _)| *d == kind).count();
            assert!(n <= sizes.may_be_down(kind), "{n} {kind:?} down at {now}: {down:?}");
        }
    }
    assert_eq!(kinds.len(), 3, "every kind was killed in 10 minutes");
    let rest: BTreeSet<Target> = k.all_down().into_iter().collect();
    assert_eq!(rest, down, "what is still down is handed back for restart");
}

#[test]
fn nothing_is_killed_when_nothing_is_ours() {
    let mut rng = Rng::new(3);
    let mut k = Killer::new(Sizes { agents: 0, replicas: 0, members: 0 }, &mut rng);
    for now in (0..60_000).step_by(100) {
        assert!(k.tick(now, &mut rng).is_empty());
    }
}
