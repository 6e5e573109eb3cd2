//! A large range beside small writes on the embedded store: 50,000 records of 300 bytes (the
//! policy bench's endpoints at 5x, which romanad's consistency check reads every 5-12 s), ranged
//! ten times while another thread puts one key at a time; the writes' latency during the
//! ranges (median, p99, maximum) and the ranges' own time. The writes wait for the engine's
//! lock, which a range held while it copied every value (issue 22).
//!
//! `cargo bench -p romana-store --bench range_beside_writes`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use romana_store::{EmbeddedStore, Op, Store, Txn};

const RECORDS: usize = 50_000;
const RANGES: usize = 10;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("romana-range-bench-{}", std::process::id()));
    let store = Arc::new(EmbeddedStore::open(&dir).await.expect("a store"));
    for chunk in 0..RECORDS / 100 {
        let ops: Vec<Op> = (0..100)
            .map(|i| Op::put(format!("endpoints/bench:{}", chunk * 100 + i), vec![b'x'; 300]))
            .collect();
        store.txn(Txn::when(vec![], ops)).await.expect("loads");
    }
    let ranging = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // The writer on a thread and runtime of its own (its own timer): it keeps writing while a
    // range occupies the bench's runtime.
    let writer = {
        let (store, ranging, stop) = (store.clone(), ranging.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let (mut during, mut n) = (Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let (t, was) = (Instant::now(), ranging.load(Ordering::Relaxed));
                    let put = Txn::when(vec![], vec![Op::put("other/key", n.to_string())]);
                    store.txn(put).await.expect("a write");
                    if was || ranging.load(Ordering::Relaxed) {
                        during.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                during
            })
        })
    };
    let mut ranges = Vec::new();
    for _ in 0..RANGES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        ranging.store(true, Ordering::Relaxed);
        let t = Instant::now();
        let (kvs, _) = store.range("endpoints/").await.expect("a range");
        ranges.push(t.elapsed().as_secs_f64() * 1e3);
        ranging.store(false, Ordering::Relaxed);
        assert_eq!(kvs.len(), RECORDS);
    }
    stop.store(true, Ordering::Relaxed);
    let mut during = writer.join().expect("the writer");
    println!("| records | range p50 / max (ms) | writes during the ranges | write p50 / p99 / max (ms) |");
    println!("|---|---|---|---|");
    println!(
        "| {RECORDS} | {:.1} / {:.1} | {} | {:.2} / {:.2} / {:.2} |",
        pct(&mut ranges, 0.5),
        pct(&mut ranges, 1.0),
        during.len(),
        pct(&mut during, 0.5),
        pct(&mut during, 0.99),
        pct(&mut during, 1.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
