//! The replica's projection as data: stored records (made from a reference IPAM) applied in any
//! order, replayed, overtaken and deleted, against the addresses the replica must then hold.

use std::collections::BTreeMap;
use std::net::IpAddr;

use romana_api::records::{BlockRecord, HostRecord};
use romana_api::topology::TopologyRequest;
use romana_ipam::spec::HostSpec;
use romana_ipam::{AllocRequest, Ipam};
use romana_store::{EventKind, KeyValue};

use super::Synced;
use crate::keys::Keys;

const TOPOLOGY: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],
  "topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

fn kv(key: String, value: Vec<u8>, rev: i64) -> KeyValue {
    KeyValue { key, value, create_revision: rev, mod_revision: rev, version: 1, lease: 0 }
}

/// The records a replica would find in the store for `endpoints` (name, host) allocated on a
/// reference IPAM, each at its own revision, and the addresses the reference gave.
fn stored(keys: &Keys, endpoints: &[(&str, &str)]) -> (Vec<KeyValue>, BTreeMap<String, IpAddr>) {
    let request: TopologyRequest = serde_json::from_str(TOPOLOGY).expect("topology JSON");
    let mut reference =
        Synced { ipam: Ipam::new(request.to_spec().expect("spec")).expect("valid"), ..Synced::empty() };
    let mut kvs = vec![kv(keys.topology(), serde_json::to_vec(&request).expect("json"), 1)];
    let mut hosts: Vec<&str> = endpoints.iter().map(|(_, h)| *h).collect();
    hosts.sort();
    hosts.dedup();
    for (i, h) in hosts.iter().enumerate() {
        let ip: IpAddr = format!("192.168.0.{}", i + 1).parse().expect("ip");
        reference.ipam.add_host(HostSpec::new(h.parse().expect("host"), ip)).expect("host joins");
        let rec: HostRecord = reference.host_record(&h.parse().expect("host")).expect("known");
        kvs.push(kv(keys.host(h), serde_json::to_vec(&rec).expect("json"), 2 + i as i64));
    }
    let mut want = BTreeMap::new();
    for (name, host) in endpoints {
        let req = AllocRequest {
            name: name.parse().expect("name"),
            host: host.parse().expect("host"),
            tenant: "t".parse().expect("tenant"),
            segment: "".parse().expect("segment"),
        };
        want.insert(name.to_string(), reference.ipam.allocate(&req).expect("allocates").ip);
    }
    for (i, b) in reference.ipam.blocks().iter().enumerate() {
        let (tenant, segment, host) = b.owner.clone().expect("owned");
        let rec = BlockRecord {
            network: b.network.to_string(),
            cidr: b.cidr.to_string(),
            tenant: tenant.to_string(),
            segment: segment.to_string(),
            host: host.to_string(),
            addresses: reference
                .ipam
                .block_allocations(b.cidr)
                .iter()
                .map(|a| (a.ip.to_string(), a.name.to_string()))
                .collect(),
        };
        kvs.push(kv(
            keys.block(b.network.as_str(), &b.cidr),
            serde_json::to_vec(&rec).expect("json"),
            100 + i as i64,
        ));
    }
    (kvs, want)
}

fn held(s: &Synced, names: &BTreeMap<String, IpAddr>) -> BTreeMap<String, IpAddr> {
    names.keys().filter_map(|n| s.ipam.lookup(n).map(|a| (n.clone(), a.ip))).collect()
}

/// Loading the records in `order` (indices into them) gives the reference's addresses.
fn check(endpoints: &[(&str, &str)], reverse: bool) {
    let keys = Keys::new("/romana/");
    let (mut kvs, want) = stored(&keys, endpoints);
    if reverse {
        kvs.reverse();
    }
    let s = Synced::loaded(&keys, &kvs, 500);
    assert_eq!(s.revision, 500);
    assert_eq!(held(&s, &want), want, "{endpoints:?}, reversed: {reverse}");
    assert_eq!(s.ipam.address_count(), want.len());
}

#[test]
fn loads_in_dependency_order_whatever_the_stored_order() {
    for endpoints in [&[][..], &[("a", "h1")], &[("a", "h1"), ("b", "h1"), ("c", "h2")]] {
        for reverse in [false, true] {
            check(endpoints, reverse);
        }
    }
}

#[test]
fn a_late_event_never_undoes_a_newer_one() {
    let keys = Keys::new("/romana/");
    let (kvs, want) = stored(&keys, &[("a", "h1"), ("b", "h1")]);
    let mut s = Synced::loaded(&keys, &kvs, 200);
    let block =
        kvs.iter().find(|kv| keys.relative(&kv.key).starts_with("ipam/blocks/")).expect("a block").clone();
    // The block is deleted at 300: its addresses are gone.
    s.apply(&keys, EventKind::Delete, &KeyValue { value: vec![], mod_revision: 300, ..block.clone() });
    assert_eq!(held(&s, &want), BTreeMap::new());
    // The put it overtook (revision 100) arrives late, and the same delete again: nothing changes.
    s.apply(&keys, EventKind::Put, &block);
    s.apply(&keys, EventKind::Delete, &KeyValue { value: vec![], mod_revision: 300, ..block.clone() });
    assert_eq!(held(&s, &want), BTreeMap::new());
    assert_eq!(s.revision, 300);
    // A newer put brings them back.
    s.apply(&keys, EventKind::Put, &KeyValue { mod_revision: 301, ..block });
    assert_eq!(held(&s, &want), want);
}

#[test]
fn unreadable_and_foreign_records_change_nothing() {
    let keys = Keys::new("/romana/");
    let (kvs, want) = stored(&keys, &[("a", "h1")]);
    let mut s = Synced::loaded(&keys, &kvs, 200);
    for (key, value) in [
        (keys.block("pods", &"10.20.0.0/28".parse().expect("cidr")), b"not json".to_vec()),
        (keys.host("h1"), b"{}".to_vec()),
        (keys.policy("p1"), b"{}".to_vec()),
        ("/other/ipam/topology".to_owned(), b"{}".to_vec()),
    ] {
        s.apply(&keys, EventKind::Put, &kv(key.clone(), value, 400));
        assert_eq!(held(&s, &want), want, "after {key}");
    }
}

/// The route manager's pass runs when `routes_mark` moves: a block record that only adds or
/// removes an address in a block already held leaves it; a block taken or given back (by a
/// stored record, or by the actor's own allocation, whose record then comes back as applied), a
/// host, or a reload moves it.
#[test]
fn the_routes_mark_moves_only_with_what_route_sets_read() {
    let keys = Keys::new("/romana/");
    let (kvs, _) = stored(&keys, &[("a", "h1")]);
    let mut s = Synced::loaded(&keys, &kvs, 200);
    let block_key = keys.block("pods", &"10.20.0.0/28".parse().expect("cidr"));
    let block = |addresses: &[(&str, &str)], cidr: &str| BlockRecord {
        network: "pods".into(),
        cidr: cidr.into(),
        tenant: "t".into(),
        segment: String::new(),
        host: "h1".into(),
        addresses: addresses.iter().map(|(ip, n)| ((*ip).to_owned(), (*n).to_owned())).collect(),
    };
    let put = |s: &mut Synced, key: &str, rec: &BlockRecord, rev: i64| {
        s.apply(&keys, EventKind::Put, &kv(key.to_owned(), serde_json::to_vec(rec).expect("json"), rev));
    };
    let mut mark = s.routes_mark();
    let mut moved = |s: &Synced| {
        let now = s.routes_mark();
        std::mem::replace(&mut mark, now) != now
    };
    // Another address in the held block, then one fewer: unmoved (and applied).
    put(&mut s, &block_key, &block(&[("10.20.0.0", "a"), ("10.20.0.1", "b")], "10.20.0.0/28"), 300);
    assert!(s.ipam.lookup("b").is_some());
    assert!(!moved(&s));
    put(&mut s, &block_key, &block(&[("10.20.0.0", "a")], "10.20.0.0/28"), 310);
    assert!(!moved(&s));
    // A new block: moved.
    let new_key = keys.block("pods", &"10.20.0.16/28".parse().expect("cidr"));
    put(&mut s, &new_key, &block(&[("10.20.0.16", "c")], "10.20.0.16/28"), 400);
    assert!(moved(&s));
    // Its last address released (the block given back): moved; the record deleted: not.
    put(&mut s, &new_key, &block(&[], "10.20.0.16/28"), 500);
    assert!(moved(&s));
    s.apply(&keys, EventKind::Delete, &kv(new_key.clone(), vec![], 510));
    assert!(!moved(&s));
    // The actor allocates in its own view (a block is taken), then its record comes back: moved
    // once, by the allocation.
    let req = AllocRequest {
        name: "d".parse().expect("name"),
        host: "h1".parse().expect("host"),
        tenant: "u".parse().expect("tenant"),
        segment: "".parse().expect("segment"),
    };
    let d = s.ipam.allocate(&req).expect("allocates");
    assert!(moved(&s));
    let rec = BlockRecord { tenant: "u".into(), ..block(&[(&d.ip.to_string(), "d")], &d.block.to_string()) };
    let key = keys.block("pods", &d.block);
    s.applied.insert(key.clone(), 600);
    put(&mut s, &key, &rec, 600);
    assert!(!moved(&s));
    // A host record: moved.
    let host = s.host_record(&"h1".parse().expect("host")).expect("known");
    let host = HostRecord { tags: BTreeMap::from([("rack".into(), "r1".into())]), ..host };
    s.apply(&keys, EventKind::Put, &kv(keys.host("h1"), serde_json::to_vec(&host).expect("json"), 700));
    assert!(moved(&s));
    // A reload: a new `Ipam` at a new revision.
    let reloaded = Synced::loaded(&keys, &kvs, 800);
    assert!(moved(&reloaded));
}
