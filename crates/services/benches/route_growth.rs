//! Growth of the route manager's computation with the number of hosts: every host's route set
//! computed from scratch (as `GET /routes/{host}` writes it), a pass with nothing changed, and
//! the cost of one change (a host added with an endpoint, so a new block; a new tenant's block
//! on an existing host) through the cache of stamps, at 100, 1,000 and 5,000 hosts; the new
//! block's pass also as it was while notices carried a digest of each set (every moved set's
//! routes from one shared leaf trie, its JSON and SHA-256: the baseline, same run), and what
//! the moved sets cost their readers (`GET /routes/{host}`, per set, and of that what it does
//! under the IPAM's lock). Pure: the IPAM core and the route sets, no store, no HTTP.
//!
//! `cargo bench -p romana-services --bench route_growth [-- --quick]`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use romana_ipam::spec::HostSpec;
use romana_ipam::{AllocRequest, Ipam};
use romana_model::HostName;
use romana_services::liveness::Liveness;
use romana_services::route_cache::{RouteSetCache, published_notice};
use romana_services::route_sets::{host_routes_json, set_inputs};

const TENANTS: usize = 4;
const PER_HOST: usize = 20;
/// Changes measured per size; the median is reported.
const CHANGES: usize = 9;

fn topology(racks: usize) -> romana_ipam::spec::TopologySpec {
    let groups: Vec<String> = (0..racks).map(|r| format!(r#"{{"name":"rack-{r}","groups":[]}}"#)).collect();
    let text = format!(
        r#"{{"networks":[{{"name":"pods","cidr":"10.0.0.0/8","block_mask":28}}],
            "topologies":[{{"networks":["pods"],"map":[{}]}}]}}"#,
        groups.join(",")
    );
    romana_api::topology::parse(&text).expect("topology")
}

fn host(i: usize) -> HostName {
    format!("node-{i:05}").parse().expect("host")
}

fn add_host(ipam: &mut Ipam, i: usize) {
    let ip = IpAddr::V4(Ipv4Addr::from(0xac10_0000u32 + i as u32));
    ipam.add_host(HostSpec::new(host(i), ip)).expect("host fits");
}

fn allocate(ipam: &mut Ipam, name: String, h: usize, tenant: String) {
    let req = AllocRequest {
        name: name.parse().expect("name"),
        host: host(h),
        tenant: tenant.parse().expect("tenant"),
        segment: "".parse().expect("segment"),
    };
    ipam.allocate(&req).expect("space");
}

/// Endpoints per host and the tenants they are spread over (each tenant has blocks of its own).
#[derive(Clone, Copy)]
struct Pods {
    per_host: usize,
    tenants: usize,
    /// Endpoints allocated round the hosts (one each in turn, as pods land when a deployment
    /// scales out; the policy bench's order), so that hosts' blocks interleave and hardly
    /// aggregate; else host after host.
    interleaved: bool,
}

const PODS: Pods = Pods { per_host: PER_HOST, tenants: TENANTS, interleaved: false };

fn build(hosts: usize, racks: usize, pods: Pods) -> Ipam {
    let mut ipam = Ipam::new(topology(racks)).expect("valid topology");
    for i in 0..hosts {
        add_host(&mut ipam, i);
    }
    for k in 0..hosts * pods.per_host {
        let (i, e) =
            if pods.interleaved { (k % hosts, k / hosts) } else { (k / pods.per_host, k % pods.per_host) };
        allocate(&mut ipam, format!("pod-{i}-{e}"), i, format!("tenant-{}", e % pods.tenants));
    }
    ipam
}

/// The route manager's pass through the cache: (notices moved, time).
fn pass(cache: &mut RouteSetCache, ipam: &Ipam, live: &Liveness) -> (usize, Duration) {
    let t = Instant::now();
    let moved = cache.refresh(ipam, live);
    let changes = cache.changes();
    let took = t.elapsed();
    assert_eq!(changes.put.len(), moved);
    cache.published();
    (moved, took)
}

/// `pass` with, for the hosts it moved, the pass as it was while a notice carried a digest of
/// the set (their stamps, their routes from one shared leaf trie, the JSON and its SHA-256),
/// and what their readers cost (`GET /routes/{host}` for each, one after another).
struct Compared {
    now: (usize, Duration),
    before: Duration,
    reads: Duration,
    /// Of `reads`, what `GET /routes/{host}` does under the IPAM's lock (`set_inputs`; before,
    /// it held the lock for the whole read).
    held: Duration,
}

fn pass_against_before(cache: &mut RouteSetCache, ipam: &Ipam, live: &Liveness) -> Compared {
    let t = Instant::now();
    let moved = cache.refresh(ipam, live);
    let changes = cache.changes();
    let now = (moved, t.elapsed());
    cache.published();
    let hosts: Vec<HostName> = changes.put.iter().map(|(h, _)| h.parse().expect("a host name")).collect();
    let dead = |h: &HostName| live.is_dead(h.as_str());
    let t = Instant::now();
    std::hint::black_box(ipam.route_stamps(&dead));
    for set in ipam.route_plan(&hosts, &dead).into_routes() {
        let json = romana_api::route_wire::host_routes_json(&set.expect("a known host"), 0, None).json;
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, &json));
    }
    let before = t.elapsed();
    let t = Instant::now();
    let mut held = Duration::ZERO;
    for h in &hosts {
        let locked = Instant::now();
        let inputs = set_inputs(ipam, live, h, 0);
        held += locked.elapsed();
        std::hint::black_box(inputs.write().expect("a known host"));
    }
    Compared { now, before, reads: t.elapsed(), held }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

struct Row {
    hosts: usize,
    routes_per_host: usize,
    full: Duration,
    idle: Duration,
    add_host: (usize, Duration),
    new_block: (usize, Duration),
    /// The new block's pass as it was with digests.
    new_block_before: Duration,
    /// The new block's moved sets as their readers get them, per set.
    read_per_set: Duration,
    /// Of that, the IPAM's lock held.
    held_per_set: Duration,
}

fn measure(hosts: usize, racks: usize, pods: Pods) -> Row {
    let mut ipam = build(hosts, racks, pods);
    let live = Liveness::new(2);
    // From scratch: every host's set as it is served.
    let t = Instant::now();
    let sets: Vec<Vec<u8>> =
        (0..hosts).filter_map(|i| host_routes_json(&ipam, &live, &host(i), 0).ok().map(|s| s.json)).collect();
    let full = t.elapsed();
    let routes_per_host = romana_ipam::Ipam::host_routes(&ipam, &host(0)).map_or(0, |r| r.routes.len());
    assert_eq!(sets.len(), hosts);
    let mut cache = RouteSetCache::default();
    pass(&mut cache, &ipam, &live);
    let idle = median((0..CHANGES).map(|_| pass(&mut cache, &ipam, &live).1).collect());
    let mut adds = Vec::new();
    let mut blocks = Vec::new();
    let mut blocks_before = Vec::new();
    let (mut reads, mut held) = (Vec::new(), Vec::new());
    let (mut add_sets, mut block_sets) = (0, 0);
    for k in 0..CHANGES {
        let h = hosts + k;
        add_host(&mut ipam, h);
        allocate(&mut ipam, format!("new-{k}"), h, "tenant-0".into());
        let (n, d) = pass(&mut cache, &ipam, &live);
        add_sets = add_sets.max(n);
        adds.push(d);
        allocate(&mut ipam, format!("blk-{k}"), (k * 37) % hosts, format!("fresh-{k}"));
        let c = pass_against_before(&mut cache, &ipam, &live);
        block_sets = block_sets.max(c.now.0);
        blocks.push(c.now.1);
        blocks_before.push(c.before);
        reads.push(c.reads / c.now.0.max(1) as u32);
        held.push(c.held / c.now.0.max(1) as u32);
    }
    // The cache's answer is the fresh one.
    for i in [0, hosts / 2, hosts - 1] {
        let kept = cache.notices().find(|(h, _)| **h == host(i).to_string()).map(|(_, s)| s);
        assert_eq!(kept, published_notice(&ipam, &live, &host(i)), "host {i}");
    }
    Row {
        hosts,
        routes_per_host,
        full,
        idle,
        add_host: (add_sets, median(adds)),
        new_block: (block_sets, median(blocks)),
        new_block_before: median(blocks_before),
        read_per_set: median(reads),
        held_per_set: median(held),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn table(title: &str, rows: &[Row]) {
    println!("\n{title}\n");
    println!(
        "| hosts | routes per host | every set from scratch (ms) | pass, nothing changed (ms) | host added: notices / ms | new block: notices / ms | new block, pass with digests (ms) | before / now | a moved set's read (ms) | of which under the IPAM's lock (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {:.2} | {} / {:.2} | {} / {:.2} | {:.2} | {:.1}x | {:.2} | {:.3} |",
            r.hosts,
            r.routes_per_host,
            ms(r.full),
            ms(r.idle),
            r.add_host.0,
            ms(r.add_host.1),
            r.new_block.0,
            ms(r.new_block.1),
            ms(r.new_block_before),
            r.new_block_before.as_secs_f64() / r.new_block.1.as_secs_f64().max(1e-9),
            ms(r.read_per_set),
            ms(r.held_per_set)
        );
    }
    if rows.windows(2).any(|w| w[0].hosts == w[1].hosts) {
        return;
    }
    println!("\ngrowth (time ratio between consecutive sizes; host ratio in brackets)\n");
    println!("| sizes | from scratch | nothing changed | host added | new block |");
    println!("|---|---|---|---|---|");
    for w in rows.windows(2) {
        let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
        println!(
            "| {} -> {} ({}x) | {:.1} | {:.1} | {:.1} | {:.1} |",
            w[0].hosts,
            w[1].hosts,
            w[1].hosts / w[0].hosts,
            ratio(w[0].full, w[1].full),
            ratio(w[0].idle, w[1].idle),
            ratio(w[0].add_host.1, w[1].add_host.1),
            ratio(w[0].new_block.1, w[1].new_block.1)
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick { &[20, 100] } else { &[100, 1_000, 5_000] };
    println!("{PER_HOST} endpoints per host in {TENANTS} tenants, /28 blocks; median of {CHANGES} changes");
    let rows: Vec<Row> = sizes.iter().map(|&n| measure(n, n.div_ceil(50), PODS)).collect();
    table("Racks of 50 hosts (the rack count grows with the hosts)", &rows);
    // Here every host's set grows with the hosts, so recomputing all of them is quadratic by
    // nature (the output is); 5,000 hosts would take minutes, so it stops at 1,000.
    let rows: Vec<Row> = sizes.iter().take(2).map(|&n| measure(n, 8, PODS)).collect();
    table("8 racks (the racks grow with the hosts, and so does each host's route set)", &rows);
    // The policy bench's cluster (issue 22): one leaf of 100 hosts, 100 endpoints each in 10
    // tenants, so 1,000 blocks in the leaf; a new block costs every host of it.
    let rows = vec![
        measure(100, 1, Pods { per_host: 100, tenants: 10, interleaved: true }),
        measure(100, 1, Pods { per_host: 500, tenants: 10, interleaved: true }),
    ];
    table(
        "One leaf of 100 hosts x 100 (then 500) endpoints in 10 tenants (the policy bench's cluster at 1x and 5x: allocated round the hosts)",
        &rows,
    );
}
