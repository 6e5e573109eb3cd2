//! Where a pod start's firewall transaction spends its time, and what reading the table costs:
//! one element added (then deleted, untimed) to a set of a table shaped like the agent's at
//! 1,000 policies x 10,000 endpoints (300 sets, 15,000 elements, 4,000 rules) and at 5x, in a
//! namespace this benchmark creates (`rme-<pid>-*`), four ways: `nft -f` (a process), a kept
//! libnftables context (`Nft::apply`, the agent's text path), a netlink batch
//! (`Nft::apply_elements`, the agent's element path), and on an empty table for the baseline;
//! and the table read by `nft -j list` against the netlink read (`Nft::read_table`). Medians.
//! `cargo bench -p romana-host --bench elements` (needs root; `-- --quick`: 1x only, fewer rounds).

use std::time::Instant;

use romana_host::in_netns;
use romana_host::nft::{self, Nft};
use romana_host::nftnl::{ElementKey, ElementOp, SetElements};
use romana_test_support::Netns;

fn table(k: usize) -> String {
    let (sets, per, chains) = (300 * k, 50, 1000 * k);
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
    for c in 0..chains {
        out.push(format!("add chain inet romana c{c}"));
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Medians (ms) of: nft -f, libnftables, netlink batch, nft -j list, netlink read.
fn measure(ns: &Netns, rounds: usize) -> [f64; 5] {
    in_netns(&ns.0, move || async move {
        let mut nft = Nft::default();
        let add = "add element inet romana s7 { 10.200.0.1 }\n";
        let del = "delete element inet romana s7 { 10.200.0.1 }\n";
        let change = |op| SetElements {
            op,
            set: "s7".into(),
            keys: vec![ElementKey::Addr("10.200.0.1".parse().expect("ip"))],
        };
        let mut r: [Vec<f64>; 5] = Default::default();
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
    println!("| table | nft -f | libnftables (kept) | netlink batch | nft -j list | netlink read |");
    println!("|---|---|---|---|---|---|");
    let scales: &[usize] = if quick { &[0, 1] } else { &[0, 1, 5] };
    for &k in scales {
        let Some(ns) = Netns::new(&format!("rme-{pid}-{k}")) else {
            println!("SKIP: cannot create network namespaces (needs root and iproute2)");
            return;
        };
        let script = if k == 0 {
            "add table inet romana\nadd set inet romana s7 { type ipv4_addr; }\n".to_owned()
        } else {
            table(k)
        };
        in_netns(&ns.0, move || async move { nft::apply(&script) }).expect("namespace").expect("load");
        let name = if k == 0 {
            "one empty set".to_owned()
        } else {
            format!("{k}x ({} sets, {} rules)", 300 * k, 4000 * k)
        };
        let m = measure(&ns, rounds);
        println!("| {name} | {:.2} | {:.2} | {:.3} | {:.1} | {:.2} |", m[0], m[1], m[2], m[3], m[4]);
    }
}
