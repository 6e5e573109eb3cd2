//! The firewall pass with egress NAT's chain against the same pass without it, in the same run:
//! two network namespaces this benchmark creates (`rmb-<pid>-nat`, `-plain`), the host `h0` of a
//! cluster of 1,000 hosts with 10 endpoints each. A pass is what the agent does: compile the
//! host's table, add the NAT chain (`romana_policy::nat::add_to`, only in the NAT namespace),
//! plan from the table as last applied and apply the transaction through a kept libnftables
//! context. Two changes, alternated between the namespaces: a local endpoint added (and removed
//! the next round), and a host joining the cluster (with NAT the chain's exemption of every host
//! is rewritten; without NAT nothing changes). Prints medians.
//! `cargo bench -p romana-host --bench nat` (needs root; `-- --quick` for fewer rounds).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use romana_host::in_netns;
use romana_host::nft::Nft;
use romana_policy::eval::{Endpoint, World};
use romana_policy::firewall::{FirewallInput, compile};
use romana_policy::nat::{NatConfig, add_to};
use romana_policy::nftplan::{Observed, plan};
use romana_test_support::Netns;

const HOSTS: u32 = 1_000;
const PER_HOST: u32 = 10;

fn host_ip(h: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + h + 1))
}

fn endpoint(i: u32) -> Endpoint {
    Endpoint {
        id: format!("e{i}"),
        tenant: "t".into(),
        ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a70_0000 + i + 1))),
        host: format!("h{}", i % HOSTS),
        ..Endpoint::default()
    }
}

struct Side {
    ns: Netns,
    nft: Nft,
    known: Option<Observed>,
    nat: Option<NatConfig>,
    /// Milliseconds of each pass before its transaction (compile, NAT, plan).
    planned: Vec<f64>,
}

impl Side {
    /// One pass: compile, NAT, plan from the last applied table, apply. Returns milliseconds.
    fn pass(&mut self, eps: &[Endpoint], hosts: u32) -> f64 {
        let t = Instant::now();
        let world = World { tenants: BTreeMap::from([("t".to_owned(), BTreeMap::new())]) };
        let mut rs = compile(FirewallInput { host: "h0", policies: &[], world: &world, endpoints: eps });
        if let Some(nat) = &mut self.nat {
            nat.hosts = (0..hosts).map(host_ip).collect();
            add_to(&mut rs, nat);
        }
        let p = plan(self.known.as_ref(), &rs);
        let script = p.script;
        self.planned.push(t.elapsed().as_secs_f64() * 1e3);
        let mut nft = std::mem::take(&mut self.nft);
        // The kept context goes to the namespace's thread and comes back with the result.
        let (nft, r) = in_netns(&self.ns.0, move || async move {
            let r = if script.is_empty() { Ok(()) } else { nft.apply(&script) };
            (nft, r)
        })
        .expect("namespace");
        r.expect("transaction");
        self.nft = nft;
        self.known = Some(Observed::of(&rs));
        t.elapsed().as_secs_f64() * 1e3
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 21 };
    let pid = std::process::id();
    let (Some(a), Some(b)) = (Netns::new(&format!("rmb-{pid}-nat")), Netns::new(&format!("rmb-{pid}-plain")))
    else {
        println!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let nat = NatConfig {
        networks: vec!["10.112.0.0/12".parse().expect("literal")],
        masquerade: vec!["10.112.0.0/12".parse().expect("literal")],
        no_nat: vec!["172.16.0.0/12".parse().expect("literal")],
        hosts: Default::default(),
        vips: Vec::new(),
    };
    let mut with = Side { ns: a, nft: Nft::default(), known: None, nat: Some(nat), planned: vec![] };
    let mut without = Side { ns: b, nft: Nft::default(), known: None, nat: None, planned: vec![] };
    let mut eps: Vec<Endpoint> = (0..HOSTS * PER_HOST).map(endpoint).collect();
    let first = (with.pass(&eps, HOSTS), without.pass(&eps, HOSTS));
    println!("first pass (table created): with NAT {:.1} ms, without {:.1} ms", first.0, first.1);
    let extra = Endpoint { id: "new".into(), ..endpoint(HOSTS * PER_HOST) };
    let extra = Endpoint { host: "h0".into(), ..extra };
    let (mut ep_with, mut ep_without, mut host_with, mut host_without) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        if round % 2 == 0 {
            eps.push(extra.clone());
        } else {
            eps.pop();
        }
        ep_with.push(with.pass(&eps, HOSTS));
        ep_without.push(without.pass(&eps, HOSTS));
        // A host joins (and leaves the next round): with NAT, the chain is rewritten.
        let hosts = if round % 2 == 0 { HOSTS + 1 } else { HOSTS };
        host_without.push(without.pass(&eps, hosts));
        host_with.push(with.pass(&eps, hosts));
    }
    let (ew, eo, hw, ho) = (median(ep_with), median(ep_without), median(host_with), median(host_without));
    let (pw, po) = (median(with.planned.clone()), median(without.planned.clone()));
    println!(
        "{HOSTS} hosts x {PER_HOST} endpoints, median of {rounds} passes (compile + plan + apply):\n  \
         local endpoint added/removed: with NAT {ew:.2} ms, without {eo:.2} ms (ratio {:.3})\n  \
         a host joins/leaves:          with NAT {hw:.2} ms (nat-out rewritten), without {ho:.2} ms (ratio {:.3})\n  \
         of which before the transaction (compile, NAT, plan), every pass: with NAT {pw:.2} ms, without {po:.2} ms",
        ew / eo,
        hw / ho
    );
}
