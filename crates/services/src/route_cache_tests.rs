//! The cache against fresh computation: after every step of seeded random histories (hosts
//! added and removed, addresses allocated and released, hosts dying and coming back), every
//! kept notice equals the notice of the set computed from scratch (serde's JSON), and a store
//! that receives each pass's `changes()` (some publications failing) holds exactly the kept
//! notices once one succeeds; and one change recomputes only its rack.

use super::*;
use romana_ipam::AllocRequest;
use romana_ipam::spec::HostSpec;

const TOPOLOGY: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],
  "topologies":[{"networks":["pods"],"map":[
    {"name":"rack-1","groups":[]},{"name":"rack-2","groups":[]},{"name":"rack-3","groups":[]}]}]}"#;

const CLASSIC: &str = r#"{"networks":[{"name":"dc","cidr":"10.0.0.0/8",
  "classic":{"host_bits":8,"tenant_bits":4,"segment_bits":4,"endpoint_bits":8}}],"topologies":[]}"#;

/// xorshift64: the histories are data, the same every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn host(i: usize) -> HostName {
    format!("h{i}").parse().expect("host")
}

/// Brings the cache up to date as the route manager does (the stale sets together, each leaf's
/// trie shared); returns how many sets it computed. `check_equal` holds them to sets computed one
/// host at a time.
fn pass(cache: &mut RouteSetCache, ipam: &Ipam, live: &Liveness) -> usize {
    let stale = cache.stale(ipam, live);
    cache.refresh_all(ipam, live, &stale);
    stale.len()
}

fn check_equal(cache: &RouteSetCache, ipam: &Ipam, live: &Liveness, step: &str) {
    let fresh: BTreeMap<String, Vec<u8>> = ipam
        .hosts()
        .iter()
        .filter_map(|h| published_notice(ipam, live, &h.name).map(|s| (h.name.to_string(), s)))
        .collect();
    let kept: BTreeMap<String, Vec<u8>> = cache.sets().map(|(h, s)| (h.clone(), s.clone())).collect();
    assert_eq!(kept, fresh, "after {step}");
}

/// Publishes the cache's changes to `store` as the route manager does; one time in four the
/// publication fails (nothing marked published; the store may hold part of it, as when a later
/// transaction of several is refused). Returns whether it succeeded.
fn publish(cache: &mut RouteSetCache, store: &mut BTreeMap<String, Vec<u8>>, rng: &mut Rng) -> bool {
    let changes = cache.changes();
    let fails = rng.below(4) == 0;
    let puts = if fails { changes.put.len() / 2 } else { changes.put.len() };
    store.extend(changes.put.into_iter().take(puts));
    if fails {
        return false;
    }
    for h in &changes.delete {
        store.remove(h);
    }
    cache.published();
    true
}

fn history(topology: &str, seed: u64, steps: usize) {
    let mut ipam = Ipam::new(romana_api::topology::parse(topology).expect("parses")).expect("valid");
    let mut live = Liveness::new(2);
    let mut cache = RouteSetCache::default();
    let mut store: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng(seed);
    let mut hosts: Vec<usize> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut next = 0;
    for step in 0..steps {
        let what = match rng.below(10) {
            0..=1 => {
                let ip = format!("192.168.{}.{}", next / 200, next % 200 + 1).parse().expect("ip");
                if ipam.add_host(HostSpec::new(host(next), ip)).is_ok() {
                    hosts.push(next);
                }
                next += 1;
                "add host"
            }
            2..=5 if !hosts.is_empty() => {
                let h = hosts[rng.below(hosts.len())];
                let name = format!("e{step}");
                let req = AllocRequest {
                    name: name.parse().expect("name"),
                    host: host(h),
                    tenant: format!("t{}", rng.below(3)).parse().expect("tenant"),
                    segment: "".parse().expect("segment"),
                };
                if ipam.allocate(&req).is_ok() {
                    names.push(name);
                }
                "allocate"
            }
            6 if !names.is_empty() => {
                let name = names.swap_remove(rng.below(names.len()));
                ipam.release(&name).expect("releases");
                "release"
            }
            7 if !hosts.is_empty() => {
                let h = host(hosts[rng.below(hosts.len())]).to_string();
                live.monitored.insert(h.clone());
                if !live.live.remove(&h) {
                    live.live.insert(h);
                }
                "death or return"
            }
            8 if hosts.len() > 2 => {
                let h = hosts.swap_remove(rng.below(hosts.len()));
                ipam.remove_host(&host(h)).expect("removes");
                names.retain(|n| ipam.lookup(n).is_some());
                "remove host"
            }
            _ => "nothing",
        };
        pass(&mut cache, &ipam, &live);
        check_equal(&cache, &ipam, &live, &format!("step {step} ({what}), seed {seed}"));
        if rng.below(20) == 0 {
            // Leadership lost and won back: every set is owed again.
            cache.unpublish_all();
        }
        if publish(&mut cache, &mut store, &mut rng) {
            let kept: BTreeMap<String, Vec<u8>> = cache.sets().map(|(h, s)| (h.clone(), s.clone())).collect();
            assert_eq!(store, kept, "the store after step {step} ({what}), seed {seed}");
            assert_eq!(cache.changes(), Changes::default(), "owed after publishing, step {step}");
        }
        // Nothing changed: nothing recomputed.
        assert_eq!(pass(&mut cache, &ipam, &live), 0, "a pass without a change, step {step}");
    }
}

#[test]
fn cached_sets_equal_fresh_ones() {
    for seed in [1, 0x9e37_79b9_7f4a_7c15, 42] {
        history(TOPOLOGY, seed, 150);
    }
    history(CLASSIC, 7, 100);
}

#[test]
fn one_block_recomputes_only_its_rack() {
    let mut ipam = Ipam::new(romana_api::topology::parse(TOPOLOGY).expect("parses")).expect("valid");
    let live = Liveness::new(2);
    for i in 0..30 {
        ipam.add_host(HostSpec::new(host(i), format!("192.168.0.{}", i + 1).parse().expect("ip")))
            .expect("fits");
    }
    let mut cache = RouteSetCache::default();
    assert_eq!(pass(&mut cache, &ipam, &live), 30, "the first pass computes every set");
    let req = AllocRequest {
        name: "a".parse().expect("name"),
        host: host(0),
        tenant: "t".parse().expect("tenant"),
        segment: "".parse().expect("segment"),
    };
    ipam.allocate(&req).expect("allocates");
    let rack = |h: &HostName| {
        ipam.hosts().iter().find(|v| &v.name == h).map(|v| v.placement.networks.clone()).expect("known")
    };
    let stale = cache.stale(&ipam, &live);
    assert!(!stale.is_empty() && stale.len() <= 10, "{} sets recomputed: {stale:?}", stale.len());
    assert!(stale.iter().all(|h| rack(h) == rack(&host(0))), "only host h0's rack: {stale:?}");
    for h in &stale {
        cache.refresh(&ipam, &live, h);
    }
    // A second address in the same block is no new route anywhere: nothing is recomputed (a
    // pod's start-up on a loaded cluster must not cost every host of its rack, issue 22).
    let req = AllocRequest { name: "b".parse().expect("name"), ..req };
    ipam.allocate(&req).expect("allocates");
    assert_eq!(pass(&mut cache, &ipam, &live), 0, "an address in an existing block");
    ipam.release(req.name.as_str()).expect("releases");
    assert_eq!(pass(&mut cache, &ipam, &live), 0, "an address released, its block kept");
}
