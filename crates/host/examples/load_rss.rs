//! What loading the fast path costs in memory and time: VmRSS and VmHWM before and after
//! `FastPath::load` (needs root or `CAP_BPF`; nothing is attached).
//! `cargo run --release -p romana-host --example load_rss`

fn kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("the kernel reports the field in KiB")
}

fn main() {
    println!("before: VmRSS {} KiB, VmHWM {} KiB", kib("VmRSS:"), kib("VmHWM:"));
    let t = std::time::Instant::now();
    let fp = romana_host::FastPath::load().expect("this kernel loads the fast path");
    let took = t.elapsed();
    println!("after:  VmRSS {} KiB, VmHWM {} KiB; load took {took:?}", kib("VmRSS:"), kib("VmHWM:"));
    drop(fp);
}
