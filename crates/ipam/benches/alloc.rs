//! IPAM benchmark: 10,000 hosts and 1,000,000 allocated addresses, one core, against a naive
//! allocator (a `HashMap<String, IpAddr>` of names and a `Vec<bool>` per host scanned for the
//! lowest free address) in the same run. Run with `cargo bench -p romana-ipam --bench alloc`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use romana_ipam::spec::{
    GroupOrHostSpec, GroupSpec, HostSpec, LayoutSpec, MapSpec, NetworkSpec, TopologySpec,
};
use romana_ipam::{AllocRequest, Ipam};
use romana_model::{AddressName, HostName, SegmentName, TenantName};

/// Counts live heap bytes so that state per address can be measured.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from `alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const HOSTS: usize = 10_000;
const ADDRESSES: usize = 1_000_000;
const RACKS: usize = 16;
const OWNERS_PER_HOST: usize = 4;
const CHURN: usize = 200_000;

fn name(i: usize) -> String {
    // 16 bytes, the size of a short container id: "p0000123.ns03abc".
    format!("p{i:07}.ns{:02}abc", i % 97)
}

fn host_name(h: usize) -> HostName {
    format!("node-{h:05}").parse().expect("valid host name")
}

fn owner(i: usize) -> (TenantName, SegmentName) {
    let o = i / HOSTS % OWNERS_PER_HOST;
    (format!("tenant-{o}").parse().expect("tenant"), "default".parse().expect("segment"))
}

fn topology() -> TopologySpec {
    let racks = (0..RACKS)
        .map(|r| {
            GroupOrHostSpec::Group(GroupSpec {
                name: format!("rack-{r}").parse().expect("name"),
                ..GroupSpec::default()
            })
        })
        .collect();
    TopologySpec {
        networks: vec![NetworkSpec {
            name: "pods".parse().expect("name"),
            cidr: "10.0.0.0/8".parse().expect("cidr"),
            block_mask: Some(29),
            tenants: vec![],
            layout: LayoutSpec::Blocks,
            nat_outgoing: true,
        }],
        topologies: vec![MapSpec { networks: vec!["pods".parse().expect("name")], map: racks }],
        no_nat: vec![],
    }
}

/// The baseline: what a first, straightforward allocator looks like.
struct Naive {
    names: HashMap<String, IpAddr>,
    used: Vec<Vec<bool>>,
}

impl Naive {
    fn allocate(&mut self, name: &str, host: usize) -> Option<IpAddr> {
        if let Some(ip) = self.names.get(name) {
            return Some(*ip);
        }
        let slot = self.used[host].iter().position(|u| !u)?;
        self.used[host][slot] = true;
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + (host as u32) * 256 + slot as u32));
        self.names.insert(name.to_owned(), ip);
        Some(ip)
    }

    fn release(&mut self, name: &str) -> Option<IpAddr> {
        let ip = self.names.remove(name)?;
        let IpAddr::V4(v4) = ip else { return None };
        let off = u32::from(v4) - 0x0a00_0000;
        self.used[(off / 256) as usize][(off % 256) as usize] = false;
        Some(ip)
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

/// Median, lowest and highest of a few measurements.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

struct World {
    names: Vec<String>,
    requests: Vec<AllocRequest>,
    host_names: Vec<HostName>,
    hosts: usize,
    addresses: usize,
}

fn fresh_ipam(w: &World) -> Ipam {
    let mut ipam = Ipam::new(topology()).expect("valid topology");
    for (h, n) in w.host_names.iter().enumerate() {
        let ip = IpAddr::V4(Ipv4Addr::from(0xc0a8_0000u32 + h as u32));
        ipam.add_host(HostSpec::new(n.clone(), ip)).expect("host fits");
    }
    ipam
}

/// Fills a fresh IPAM; returns it, the allocation rate and the heap bytes the addresses took.
fn fill_ours(w: &World) -> (Ipam, f64, usize) {
    let mut ipam = fresh_ipam(w);
    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    for r in &w.requests[..w.addresses] {
        black_box(ipam.allocate(r).expect("space for every address"));
    }
    let secs = t.elapsed().as_secs_f64();
    (ipam, rate(w.addresses, secs), LIVE.load(Ordering::Relaxed) - before)
}

fn fill_naive(w: &World) -> (Naive, f64, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut naive = Naive { names: HashMap::new(), used: vec![vec![false; 256]; w.hosts] };
    let t = Instant::now();
    for (i, n) in w.names[..w.addresses].iter().enumerate() {
        black_box(naive.allocate(n, i % w.hosts).expect("space"));
    }
    let secs = t.elapsed().as_secs_f64();
    (naive, rate(w.addresses, secs), LIVE.load(Ordering::Relaxed) - before)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (hosts, addresses, churn, rounds) =
        if quick { (1_000, 100_000, 20_000, 1) } else { (HOSTS, ADDRESSES, CHURN, 5) };
    let names: Vec<String> = (0..addresses + churn).map(name).collect();
    let host_names: Vec<HostName> = (0..hosts).map(host_name).collect();
    let requests: Vec<AllocRequest> = (0..addresses + churn)
        .map(|i| {
            let (tenant, segment) = owner(i);
            AllocRequest {
                name: AddressName::new(names[i].clone()).expect("valid name"),
                host: host_names[i % hosts].clone(),
                tenant,
                segment,
            }
        })
        .collect();
    let w = World { names, requests, host_names, hosts, addresses };

    let t = Instant::now();
    drop(fresh_ipam(&w));
    let add_hosts = t.elapsed().as_secs_f64();

    // Rounds alternate between the two allocators so that machine noise hits both alike.
    let (mut ours_rates, mut naive_rates) = (Vec::new(), Vec::new());
    let (mut ours_bytes, mut naive_bytes) = (0, 0);
    for _ in 0..rounds {
        let (ipam, r, b) = fill_ours(&w);
        drop(ipam);
        ours_rates.push(r);
        ours_bytes = b;
        let (naive, r, b) = fill_naive(&w);
        drop(naive);
        naive_rates.push(r);
        naive_bytes = b;
    }
    let name_bytes: usize = w.names[..addresses].iter().map(String::len).sum();

    let (mut ipam, _, _) = fill_ours(&w);
    let t = Instant::now();
    for i in 0..churn {
        let victim = (i * 7_919) % addresses;
        black_box(ipam.release(&w.names[victim]).ok());
        black_box(ipam.allocate(&w.requests[addresses + i]).expect("space after release"));
        black_box(ipam.allocate(&w.requests[victim]).expect("space after release"));
        black_box(ipam.release(&w.names[addresses + i]).expect("just allocated"));
    }
    let churn_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for n in &w.names[..addresses] {
        black_box(ipam.release(n).expect("allocated"));
    }
    let release_secs = t.elapsed().as_secs_f64();
    drop(ipam);

    let (mut naive, _, _) = fill_naive(&w);
    let t = Instant::now();
    for i in 0..churn {
        let victim = (i * 7_919) % addresses;
        black_box(naive.release(&w.names[victim]));
        black_box(naive.allocate(&w.names[addresses + i], (addresses + i) % hosts));
        black_box(naive.allocate(&w.names[victim], victim % hosts));
        black_box(naive.release(&w.names[addresses + i]));
    }
    let naive_churn = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for n in &w.names[..addresses] {
        black_box(naive.release(n).expect("allocated"));
    }
    let naive_release = t.elapsed().as_secs_f64();

    let per = |b: usize| b as f64 / addresses as f64;
    let (om, olo, ohi) = spread(ours_rates);
    let (nm, nlo, nhi) = spread(naive_rates);
    println!(
        "IPAM benchmark: {hosts} hosts, {addresses} addresses, {RACKS} racks, /29 blocks, 16-byte names, {rounds} rounds"
    );
    println!("| measure | romana-ipam | naive baseline | ratio |");
    println!("|---|---|---|---|");
    println!("| add {hosts} hosts (s) | {add_hosts:.3} | - | - |");
    println!(
        "| allocations/s, median (min-max) | {om:.0} ({olo:.0}-{ohi:.0}) | {nm:.0} ({nlo:.0}-{nhi:.0}) | {:.2} |",
        om / nm
    );
    let (a, b) = (rate(churn * 4, churn_secs), rate(churn * 4, naive_churn));
    println!("| churn operations/s (release+allocate at {addresses}) | {a:.0} | {b:.0} | {:.2} |", a / b);
    let (a, b) = (rate(addresses, release_secs), rate(addresses, naive_release));
    println!("| releases/s | {a:.0} | {b:.0} | {:.2} |", a / b);
    let (a, b) = (per(ours_bytes), per(naive_bytes));
    println!("| state bytes per address (incl. name) | {a:.1} | {b:.1} | {:.2} |", a / b);
    let n = per(name_bytes);
    println!(
        "| state bytes per address (excl. {n:.0} name bytes) | {:.1} | {:.1} | {:.2} |",
        a - n,
        b - n,
        (a - n) / (b - n)
    );
}
