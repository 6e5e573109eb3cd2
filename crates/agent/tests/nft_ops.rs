//! Whole firewall transactions over raw netlink (`romana_agent::firewall_ops` lowering a plan,
//! `romana_host::nftnl::ops` sending it) against nft's text of the same plan, in a real kernel
//! inside namespaces this test creates (`rno-*`, deleted by their guards): from the same table,
//! the same plan applied both ways leaves the same table as `nft -j list` prints it (every rule's
//! expressions, every set's type and elements), for each rule form policy and bucket chains use;
//! and a batch the kernel refuses changes nothing and names what it refused.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use romana_agent::firewall_ops;
use romana_host::in_netns;
use romana_host::nft::{self, Nft, NftError};
use romana_host::nftnl::ElementSocket;
use romana_host::nftnl::ops::{Expr, Op, Verdict as OpVerdict};
use romana_model::{Cidr, Family};
use romana_policy::model::Protocol;
use romana_policy::nftplan::{Observed, plan};
use romana_policy::ruleset::{Chain, Dir, Element, Hook, Line, Match, Ruleset, Set, SetType, Verdict};
use romana_test_support::Netns;
use serde_json::Value;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn netns() -> Option<Netns> {
    Netns::new(&format!("rno-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn set(ty: SetType, elements: &[&str]) -> Arc<Set> {
    let el = |s: &&str| match s.rsplit_once(" . ") {
        Some((a, p)) => Element::AddrPort(a.parse().unwrap(), p.parse().unwrap()),
        None => Element::Addr(s.parse().unwrap()),
    };
    Arc::new(Set { ty, elements: elements.iter().map(el).collect() })
}

fn line(matches: Vec<Match>, verdict: Verdict) -> Line {
    Line { matches, verdict }
}

fn in_set(dir: Dir, family: Family, set: &str) -> Match {
    Match::InSet { dir, family, set: set.into() }
}

fn net(dir: Dir, cidr: &str) -> Match {
    Match::InNet { dir, cidr: cidr.parse::<Cidr>().unwrap(), except: vec![] }
}

/// A table shaped like the agent's: a base chain (text either way), a bucket of jumps guarded by
/// target sets, policy chains with every rule form the lowering expresses.
fn table(second: bool) -> Ruleset {
    let (v4, v6) = (Family::V4, Family::V6);
    let mut sets: BTreeMap<String, Arc<Set>> = BTreeMap::new();
    sets.insert(
        "t-4".into(),
        set(SetType::Addr(v4), if second { &["10.1.0.2", "10.1.0.9"] } else { &["10.1.0.2"] }),
    );
    sets.insert("t-6".into(), set(SetType::Addr(v6), &["fd00:1::2"]));
    sets.insert("np-4".into(), set(SetType::AddrPort(v4), &["10.1.0.2 . 8080"]));
    sets.insert("np-6".into(), set(SetType::AddrPort(v6), &["fd00:1::2 . 8080"]));
    if second {
        // Sets of each type created by the batch itself (the others come with the first table).
        sets.insert("np2-4".into(), set(SetType::AddrPort(v4), &["10.1.0.9 . 443"]));
        sets.insert("np2-6".into(), set(SetType::AddrPort(v6), &["fd00:1::9 . 443"]));
    }
    let sel = if second { "sel-b" } else { "sel-a" };
    sets.insert(format!("{sel}-4"), set(SetType::Addr(v4), &["10.2.0.1", "10.2.0.3", "10.2.0.5"]));
    sets.insert(format!("{sel}-6"), set(SetType::Addr(v6), if second { &[] } else { &["fd00:2::1"] }));
    let mut chains: BTreeMap<String, Arc<Chain>> = BTreeMap::new();
    let jump = |s: &str| Verdict::Jump(s.into());
    chains.insert(
        "fwd-in".into(),
        Arc::new(Chain::new(
            Some((Hook::Forward, 0)),
            vec![line(vec![Match::Established], Verdict::Accept), line(vec![], jump("bucket"))],
        )),
    );
    let mut bucket = vec![
        line(vec![in_set(Dir::Dst, v4, "t-4")], jump("p1-in")),
        line(vec![in_set(Dir::Dst, v6, "t-6")], jump("p1-in")),
    ];
    if second {
        bucket.push(line(vec![in_set(Dir::Src, v4, "t-4")], jump("p2-eg")));
    }
    chains.insert("bucket".into(), Arc::new(Chain::new(None, bucket)));
    let policy = vec![
        line(
            vec![
                in_set(Dir::Src, v4, &format!("{sel}-4")),
                Match::Ports { protocol: Protocol::Tcp, first: 80, last: 80 },
            ],
            Verdict::Accept,
        ),
        line(
            vec![
                in_set(Dir::Src, v6, &format!("{sel}-6")),
                Match::Ports { protocol: Protocol::Udp, first: 53, last: 60 },
            ],
            Verdict::Accept,
        ),
        line(
            vec![
                in_set(Dir::Src, v4, &format!("{sel}-4")),
                Match::DstPortIn { protocol: Protocol::Tcp, family: v4, set: "np-4".into() },
            ],
            Verdict::Accept,
        ),
        line(
            vec![Match::DstPortIn { protocol: Protocol::Tcp, family: v6, set: "np-6".into() }],
            Verdict::Accept,
        ),
        line(vec![net(Dir::Src, "10.0.0.0/8"), Match::Proto(Protocol::Sctp)], Verdict::Accept),
        line(vec![net(Dir::Src, if second { "10.3.4.5/32" } else { "10.3.0.0/20" })], Verdict::Accept),
        line(
            vec![net(Dir::Dst, "0.0.0.0/0"), Match::Ports { protocol: Protocol::Sctp, first: 9, last: 9 }],
            Verdict::Accept,
        ),
        line(vec![net(Dir::Src, "fd00::/64")], Verdict::Accept),
        line(vec![net(Dir::Src, "::/0"), Match::Proto(Protocol::Icmpv6)], Verdict::Drop),
        line(vec![Match::Icmp { family: v4, icmp_type: 8, code: None }], Verdict::Accept),
        line(vec![Match::Icmp { family: v6, icmp_type: 128, code: Some(0) }], Verdict::Accept),
        line(
            vec![
                Match::Proto(Protocol::Udp),
                Match::Ports { protocol: Protocol::Udp, first: 5353, last: 5353 },
            ],
            Verdict::Accept,
        ),
    ];
    let policy = if second { policy.into_iter().rev().skip(2).collect() } else { policy };
    chains.insert("p1-in".into(), Arc::new(Chain::new(None, policy)));
    if second {
        let p2 = vec![
            line(vec![in_set(Dir::Dst, v4, "sel-b-4")], Verdict::Accept),
            line(
                vec![Match::DstPortIn { protocol: Protocol::Tcp, family: v4, set: "np2-4".into() }],
                Verdict::Accept,
            ),
            line(
                vec![Match::DstPortIn { protocol: Protocol::Udp, family: v6, set: "np2-6".into() }],
                Verdict::Accept,
            ),
        ];
        chains.insert("p2-eg".into(), Arc::new(Chain::new(None, p2)));
    } else {
        chains.insert("p0-gone".into(), Arc::new(Chain::new(None, vec![line(vec![], Verdict::Drop)])));
    }
    Ruleset { sets, chains }
}

/// `nft -j list table inet romana`, without handles, each set's elements sorted: what both paths
/// must leave equal.
fn listing(ns: &Netns) -> Value {
    let json =
        in_netns(&ns.0, || async { nft::list_table(false).unwrap() }).unwrap().expect("the table exists");
    fn normal(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                if let Some(Value::Array(e)) = m.get_mut("elem") {
                    e.sort_by_key(|x| x.to_string());
                }
                m.values_mut().for_each(normal);
            }
            Value::Array(a) => a.iter_mut().for_each(normal),
            _ => {}
        }
    }
    let mut v: Value = serde_json::from_str(&json).unwrap();
    normal(&mut v);
    v
}

fn load(ns: &Netns, rs: &Ruleset) {
    let script = plan(None, rs).script;
    in_netns(&ns.0, move || async move { nft::apply(&script) }).unwrap().unwrap();
}

#[test]
fn a_plan_over_netlink_leaves_the_table_nft_text_leaves() {
    let (Some(text), Some(batch)) = (netns(), netns()) else {
        eprintln!("skipped: needs root for network namespaces");
        return;
    };
    let (first, second) = (table(false), table(true));
    for (from, to) in [(&first, &second), (&second, &first)] {
        load(&text, from);
        load(&batch, from);
        assert_eq!(listing(&text), listing(&batch), "the same start");
        let p = plan(Some(&Observed::of(from)), to);
        assert!(p.elements.is_none(), "more than elements change");
        let ops = firewall_ops::ops(p.steps.as_deref().unwrap()).expect("every step expressed");
        let s = p.script.clone();
        in_netns(&text.0, move || async move { nft::apply(&s) }).unwrap().unwrap();
        let s = p.script.clone();
        let refused =
            in_netns(&batch.0, move || async move { Nft::default().apply_ops(&ops, &s) }).unwrap().unwrap();
        assert_eq!(refused, None, "the batch was taken");
        let (t, b) = (listing(&text), listing(&batch));
        assert_eq!(t, b, "text:\n{t:#}\nbatch:\n{b:#}");
        // And it is the table wanted, as the agent reads it.
        let read = in_netns(&batch.0, || async { Nft::default().read_table() }).unwrap().unwrap().unwrap();
        assert_eq!(read.sets.len(), to.sets.len());
    }
}

#[test]
fn a_refused_batch_changes_nothing_and_names_what_it_refused() {
    let Some(ns) = netns() else {
        eprintln!("skipped: needs root for network namespaces");
        return;
    };
    load(&ns, &table(false));
    let before = listing(&ns);
    let ops = vec![
        Op::NewChain { name: "fresh".into() },
        Op::AppendRule {
            chain: "fresh".into(),
            exprs: vec![Expr::Verdict(OpVerdict::Jump("no-such-chain".into()))],
            comment: "0123456789abcdef".into(),
        },
    ];
    let e: NftError =
        in_netns(&ns.0, move || async move { ElementSocket::open()?.apply_ops(&ops) }).unwrap().unwrap_err();
    assert!(e.to_string().contains("rule 0123456789abcdef of chain fresh"), "{e}");
    assert_eq!(listing(&ns), before, "nothing of the batch was applied");
}
