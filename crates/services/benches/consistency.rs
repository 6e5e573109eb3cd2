//! The consistency check's CPU per pass at the policy bench's sizes (10,000 and 50,000
//! endpoints on 100 hosts, every one allocated and registered, ten leaked allocations): what
//! `reclaim::pass` runs on its background thread after the gather (sightings, every
//! disagreement, what is due); and the gather's endpoint records through the parse cache
//! (`RecordCache`) with none or 1% of them changed since the last pass. Pure: the picture and
//! the records are built here, no store, no IPAM.
//!
//! `cargo bench -p romana-services --bench consistency`

use std::time::{Duration, Instant};

use romana_services::check_tracker::RecordCache;
use romana_services::consistency::{self, Alloc, Block, Endpoint, Graces, Picture, Sightings};
use romana_store::KeyValue;

const RUNS: usize = 9;

fn picture(n: usize) -> Picture {
    let host = |i: usize| format!("s{}", i % 100);
    let ip = |i: usize| format!("10.20.{}.{}", i / 256, i % 256);
    let mut p = Picture::default();
    for i in 0..n + 10 {
        p.allocations.push(Alloc { name: format!("bench:{i}"), ip: ip(i), host: host(i) });
    }
    for i in 0..n {
        p.endpoints.push(Endpoint {
            name: format!("bench:{i}"),
            ip: ip(i),
            host: host(i),
            kind: "pod".into(),
        });
    }
    for i in 0..100 {
        p.hosts.insert(host(i));
        p.monitored.insert(host(i));
        p.live.insert(host(i));
    }
    for b in 0..n / 16 {
        p.blocks.push(Block { network: "pods".into(), cidr: format!("{}/28", ip(b * 16)), host: host(b) });
    }
    p
}

fn main() {
    let graces = Graces { leak_ms: 10_000, dead_ms: 300_000 };
    println!("| endpoints | check pass, median of {RUNS} (ms) | disagreements |");
    println!("|---|---|---|");
    for n in [10_000, 50_000] {
        let p = picture(n);
        let mut seen = Sightings::new();
        let mut times = Vec::new();
        let mut found = 0;
        for k in 0..RUNS {
            let now = 1_000_000 + k as u64 * 5_000;
            let t = Instant::now();
            seen = consistency::observe(&seen, &p, now);
            let all = romana_services::consistency_kernel::check_all(&p, &seen, now, graces);
            let due = consistency::reclaim(&p, &seen, now, graces);
            times.push(t.elapsed());
            found = std::hint::black_box(all.len() + due.len());
        }
        times.sort();
        let median: Duration = times[RUNS / 2];
        println!("| {n} | {:.2} | {found} |", median.as_secs_f64() * 1e3);
    }
    println!();
    println!("| endpoint records | cache pass, none changed (ms) | cache pass, 1% changed (ms) |");
    println!("|---|---|---|");
    for n in [10_000, 50_000] {
        let mut kvs: Vec<KeyValue> = (0..n)
            .map(|i| KeyValue {
                key: format!("/romana/endpoints/bench:{i}"),
                value: format!(
                    r#"{{"name":"bench:{i}","ip":"10.20.{}.{}","host":"s{}"}}"#,
                    i / 256,
                    i % 256,
                    i % 100
                )
                .into_bytes(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                lease: 0,
            })
            .collect();
        let parse = |v: &[u8]| {
            let e: serde_json::Value = serde_json::from_slice(v).ok()?;
            let field = |k: &str| e[k].as_str().map(str::to_owned);
            Some(Endpoint {
                name: field("name")?,
                ip: field("ip")?,
                host: field("host")?,
                kind: "pod".into(),
            })
        };
        let mut cache = RecordCache::default();
        std::hint::black_box(cache.endpoints(&kvs, parse));
        let (mut same, mut changed) = (Vec::new(), Vec::new());
        for k in 0..RUNS {
            let t = Instant::now();
            std::hint::black_box(cache.endpoints(&kvs, parse));
            same.push(t.elapsed());
            for kv in kvs.iter_mut().skip(k).step_by(100) {
                kv.mod_revision += 1;
            }
            let t = Instant::now();
            std::hint::black_box(cache.endpoints(&kvs, parse));
            changed.push(t.elapsed());
        }
        same.sort();
        changed.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("| {n} | {:.2} | {:.2} |", ms(same[RUNS / 2]), ms(changed[RUNS / 2]));
    }
}
