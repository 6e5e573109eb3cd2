//! Where a firewall transaction spends its time, and what reading the table costs, on a table
//! shaped like the agent's at 1,000 policies x 10,000 endpoints (2,000 sets, 16,000 elements, a
//! base chain jumping through a dispatch chain of 1,000 set-guarded jumps to 1,000 chains of 4
//! rules) and at 5x, in a namespace this benchmark creates (`rme-<pid>-*`): one element added
//! (then deleted, untimed) four ways: `nft -f` (a process), a kept libnftables context
//! (`Nft::apply`, the agent's text path), a netlink batch (`Nft::apply_elements`, the agent's
//! element path), and on an empty table for the baseline; a policy change (a new set with an
//! element, a chain's two rules rewritten to use it; then back, the set deleted) through the
//! kept libnftables context against one netlink batch (`Nft::apply_ops`, the agent's path for
//! whole plans); and the table read by `nft -j list` against the netlink read
//! (`Nft::read_table`). Medians. `cargo bench -p romana-host --bench elements` (needs root;
//! `-- --quick`: 1x only, fewer rounds).

use std::time::Instant;

use romana_host::in_netns;
use romana_host::nft::{self, Nft};
use romana_host::nftnl::ops::{Base, CmpOp, Expr, MetaKey, Op, SetKey, Verdict};
use romana_host::nftnl::{ElementKey, ElementOp, SetElements};
use romana_test_support::Netns;

fn table(k: usize) -> String {
    let (sets, per, chains) = (2000 * k, 8, 1000 * k);
    let mut out = vec!["add table inet romana".to_owned()];
    for s in 0..sets {
        out.push(format!("add set inet romana s{s} {{ type ipv4_addr; }}"));
        let els: Vec<String> = (0..per)
            .map(|i| {
                let n = s * per + i;
                format!("10.{}.{}.{}", n / 65536 % 256, n / 256 % 256, n % 256)
            })
            .collect();
        out.push(format!("add element inet romana s{s} {{ {} }}", els.join(", ")));
    }
    out.push("add chain inet romana dispatch".to_owned());
    out.push(
        "add chain inet romana fwd-in { type filter hook forward priority 0; policy accept; }".to_owned(),
    );
    out.push("add rule inet romana fwd-in jump dispatch".to_owned());
    for c in 0..chains {
        out.push(format!("add chain inet romana c{c}"));
        out.push(format!("add rule inet romana dispatch ip daddr @s{} jump c{c}", c % sets));
        for r in 0..4 {
            out.push(format!(
                "add rule inet romana c{c} ip saddr @s{} tcp dport {} accept comment \"{c:08x}{r:08x}\"",
                (c + r) % sets,
                80 + r
            ));
        }
    }
    out.join("\n") + "\n"
}

/// A policy change of chain `c5` to set `set`: its two rules, as nft text and as operations.
fn rewrite(set: &str) -> (String, Vec<Op>) {
    let mut text = "flush chain inet romana c5\n".to_owned();
    let mut ops = vec![Op::FlushChain { name: "c5".into() }];
    for (i, port) in [80u16, 5201].into_iter().enumerate() {
        text.push_str(&format!(
            "add rule inet romana c5 ip saddr @{set} tcp dport {port} accept comment \"k{i}\"\n"
        ));
        let cmp = |data: Vec<u8>| Expr::Cmp { op: CmpOp::Eq, sreg: 1, data };
        ops.push(Op::AppendRule {
            chain: "c5".into(),
            exprs: vec![
                Expr::Meta { key: MetaKey::NfProto, dreg: 1 },
                cmp(vec![2]),
                Expr::Payload { base: Base::Network, offset: 12, len: 4, dreg: 1 },
                Expr::Lookup { sreg: 1, set: set.into() },
                Expr::Meta { key: MetaKey::L4Proto, dreg: 1 },
                cmp(vec![6]),
                Expr::Payload { base: Base::Transport, offset: 2, len: 2, dreg: 1 },
                cmp(port.to_be_bytes().to_vec()),
                Expr::Verdict(Verdict::Accept),
            ],
            comment: format!("k{i}"),
        });
    }
    (text, ops)
}

/// The policy change there (a new set `snew` with an element, `c5` rewritten to it) and back
/// (`c5` to `s1`, `snew` deleted), as text and as operations.
fn policy_change() -> [(String, Vec<Op>); 2] {
    let (mut there, mut there_ops) = rewrite("snew");
    there = format!(
        "add set inet romana snew {{ type ipv4_addr; }}\nadd element inet romana snew {{ 10.250.0.1 }}\n{there}"
    );
    let key = ElementKey::Addr("10.250.0.1".parse().expect("ip"));
    there_ops.insert(0, Op::NewSet { name: "snew".into(), key: SetKey::Ipv4, elements: vec![key] });
    let (mut back, mut back_ops) = rewrite("s1");
    back.push_str("delete set inet romana snew\n");
    back_ops.push(Op::DeleteSet { name: "snew".into() });
    [(there, there_ops), (back, back_ops)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Medians (ms) of: nft -f, libnftables, netlink batch, nft -j list, netlink read, policy
/// change through libnftables, policy change as one netlink batch.
fn measure(ns: &Netns, rounds: usize) -> [f64; 7] {
    in_netns(&ns.0, move || async move {
        let mut nft = Nft::default();
        let add = "add element inet romana s7 { 10.200.0.1 }\n";
        let del = "delete element inet romana s7 { 10.200.0.1 }\n";
        let change = |op| SetElements {
            op,
            set: "s7".into(),
            keys: vec![ElementKey::Addr("10.200.0.1".parse().expect("ip"))],
        };
        let mut r: [Vec<f64>; 7] = Default::default();
        let [(there, there_ops), (back, back_ops)] = policy_change();
        for _ in 0..rounds {
            let t = Instant::now();
            nft::apply(add).expect("nft -f");
            r[0].push(ms(t));
            nft::apply(del).expect("nft -f");
            let t = Instant::now();
            nft.apply(add).expect("libnftables");
            r[1].push(ms(t));
            nft.apply(del).expect("libnftables");
            let t = Instant::now();
            nft.apply_elements(&[change(ElementOp::Add)]).expect("netlink");
            r[2].push(ms(t));
            nft.apply_elements(&[change(ElementOp::Delete)]).expect("netlink");
        }
        assert_eq!(nft.uses_batches(), Some(true), "the netlink path was taken");
        for _ in 0..rounds {
            for text in [&there, &back] {
                let t = Instant::now();
                nft.apply(text).expect("libnftables");
                r[5].push(ms(t));
            }
            for (text, ops) in [(&there, &there_ops), (&back, &back_ops)] {
                let t = Instant::now();
                let refused = nft.apply_ops(ops, text).expect("netlink");
                r[6].push(ms(t));
                assert_eq!(refused, None, "the batch was taken");
            }
        }
        for _ in 0..rounds.div_ceil(4) {
            let t = Instant::now();
            nft::list_table(false).expect("list").expect("table");
            r[3].push(ms(t));
            let t = Instant::now();
            nft.read_table().expect("read").expect("table");
            r[4].push(ms(t));
        }
        r.map(median)
    })
    .expect("namespace")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 10 } else { 40 };
    let pid = std::process::id();
    println!("one element added to a set, medians over {rounds} rounds (ms); the table read (ms)");
    println!(
        "| table | nft -f | libnftables (kept) | netlink batch | nft -j list | netlink read | policy change: libnftables | policy change: netlink batch |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let scales: &[usize] = if quick { &[0, 1] } else { &[0, 1, 5] };
    for &k in scales {
        let Some(ns) = Netns::new(&format!("rme-{pid}-{k}")) else {
            println!("SKIP: cannot create network namespaces (needs root and iproute2)");
            return;
        };
        let script = if k == 0 {
            "add table inet romana\nadd set inet romana s7 { type ipv4_addr; }\nadd set inet romana s1 { type ipv4_addr; }\nadd chain inet romana c5\n".to_owned()
        } else {
            table(k)
        };
        in_netns(&ns.0, move || async move { nft::apply(&script) }).expect("namespace").expect("load");
        let name = if k == 0 {
            "one empty set".to_owned()
        } else {
            format!("{k}x ({} sets, {} rules)", 2000 * k, 5000 * k)
        };
        let m = measure(&ns, rounds);
        println!(
            "| {name} | {:.2} | {:.2} | {:.3} | {:.1} | {:.2} | {:.2} | {:.3} |",
            m[0], m[1], m[2], m[3], m[4], m[5], m[6]
        );
    }
}
