//! The BGP fabric at 1,000 hosts (20 racks of 50, 30 pods each in two tenants, /28 blocks):
//! routes each router accepts and each host announces (from the fabric view), render times; then
//! BIRD reload time with 1,000 announced prefixes (a static protocol and an export filter of
//! 1,000 prefixes, one of them changed per reload) against a reload of an unchanged file, in the
//! same run, in a namespace of its own (`rmb-<pid>`, deleted at the end; skipped without root
//! or bird2). `cargo bench -p romana-fabric --bench scale`.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::process::Command;
use std::time::Instant;

use romana_api::rest::FabricGroup;
use romana_fabric::{Fabric, Options, render_host, render_router};
use romana_ipam::spec::HostSpec;
use romana_ipam::{AllocRequest, Ipam};

const RACKS: usize = 20;
const HOSTS: usize = 50;
const PODS: usize = 30;

fn topology() -> String {
    let groups: Vec<String> = (1..=RACKS)
        .map(|r| {
            format!(
                r#"{{"name":"rack-{r}","assignment":{{"rack":"{r}"}},"routing":"bgp","bgp":{{"asn":{},"routers":["172.16.{r}.1"],"uplinks":["172.31.1.{r}","172.31.2.{r}"],"host_asn":{}}},"groups":[]}}"#,
                65000 + r,
                65100 + r
            )
        })
        .collect();
    format!(
        r#"{{"networks":[{{"name":"pods","cidr":"10.0.0.0/12","block_mask":28}}],"topologies":[{{"networks":["pods"],"map":[{{"name":"spines","routing":"bgp","bgp":{{"asn":65000,"routers":["172.31.1.254","172.31.2.254"]}},"groups":[{}]}}]}}]}}"#,
        groups.join(",")
    )
}

fn fabric(ipam: &Ipam) -> Fabric {
    let view: Vec<FabricGroup> = ipam.fabric_routes().iter().map(FabricGroup::from).collect();
    Fabric::new(&romana_api::topology::render(ipam), &view).unwrap()
}

fn accepted(text: &str, from: &str) -> usize {
    text.split("filter romana_in_")
        .filter(|f| f.starts_with(from))
        .map(|f| f.lines().nth(1).filter(|l| l.contains("then accept")).map_or(0, |l| l.matches('/').count()))
        .sum()
}

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn bird_reload() {
    if Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP reload: bird2 is not installed");
        return;
    }
    let ns = Ns(format!("rmb-{}", std::process::id()));
    if !Command::new("ip").args(["netns", "add", &ns.0]).status().is_ok_and(|s| s.success()) {
        eprintln!("SKIP reload: cannot create a network namespace (needs root)");
        return;
    }
    let dir = std::env::temp_dir().join(&ns.0);
    std::fs::create_dir_all(&dir).unwrap();
    let include = dir.join("romana.conf");
    let text = |changed: usize| {
        let prefixes: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.0/24", 16 + (i + changed) / 256, (i + changed) % 256))
            .collect();
        let mut t = String::from("protocol static romana_aggregates {\n\tipv4;\n");
        for p in &prefixes {
            t.push_str(&format!("\troute {p} blackhole;\n"));
        }
        t.push_str(&format!(
            "}}\nfilter romana_out_peer1 {{\n\tif net ~ [ {} ] then accept;\n\treject;\n}}\n",
            prefixes.join(", ")
        ));
        t
    };
    std::fs::write(&include, text(0)).unwrap();
    std::fs::write(
        dir.join("bird.conf"),
        format!("router id 192.0.2.1;\ninclude \"{}\";\n", include.display()),
    )
    .unwrap();
    let ctl = dir.join("ctl");
    let started = Command::new("ip")
        .args(["netns", "exec", &ns.0, "bird", "-c"])
        .arg(dir.join("bird.conf"))
        .arg("-s")
        .arg(&ctl)
        .arg("-P")
        .arg(dir.join("pid"))
        .status()
        .unwrap()
        .success();
    assert!(started, "bird starts");
    let configure = || {
        let t = Instant::now();
        let out = Command::new("birdc").arg("-s").arg(&ctl).arg("configure").output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("Reconfigured"), "{out:?}");
        t.elapsed().as_secs_f64() * 1e3
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (mut same, mut changed) = (Vec::new(), Vec::new());
    for round in 1..=10 {
        same.push(configure());
        std::fs::write(&include, text(round)).unwrap();
        changed.push(configure());
    }
    if let Ok(pid) = std::fs::read_to_string(dir.join("pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let _ = std::fs::remove_dir_all(&dir);
    same.sort_by(f64::total_cmp);
    changed.sort_by(f64::total_cmp);
    println!(
        "birdc configure, 1,000 announced prefixes: one changed {:.1} ms median, unchanged {:.1} ms (ratio {:.2}; 10 rounds)",
        changed[5],
        same[5],
        changed[5] / same[5]
    );
}

fn main() {
    let mut ipam = Ipam::new(romana_api::topology::parse(&topology()).unwrap()).unwrap();
    for r in 1..=RACKS {
        for h in 1..=HOSTS {
            let ip: IpAddr = format!("172.16.{r}.{}", 10 + h).parse().unwrap();
            ipam.add_host(
                HostSpec::new(format!("r{r}h{h}").parse().unwrap(), ip).with_tag("rack", &r.to_string()),
            )
            .unwrap();
            for p in 0..PODS {
                let req = AllocRequest {
                    name: format!("r{r}h{h}p{p}").parse().unwrap(),
                    host: format!("r{r}h{h}").parse().unwrap(),
                    tenant: if p % 2 == 0 { "red" } else { "blue" }.parse().unwrap(),
                    segment: "".parse().unwrap(),
                };
                ipam.allocate(&req).unwrap();
            }
        }
    }
    let t = Instant::now();
    let f = fabric(&ipam);
    let join = t.elapsed();
    let t = Instant::now();
    let rack = render_router(&f, "/rack-1", None, Options { bfd: true, kernel: true }).unwrap();
    let rack_time = t.elapsed();
    let spine = render_router(&f, "/", Some("172.31.1.254".parse().unwrap()), Options::default()).unwrap();
    let t = Instant::now();
    let mut announced = Vec::new();
    for h in 1..=HOSTS {
        let text = render_host(&f, &format!("r1h{h}"), Options::default()).unwrap();
        announced.push(text.matches(" blackhole;").count());
    }
    let host_time = t.elapsed() / HOSTS as u32;
    let blocks = ipam
        .blocks()
        .iter()
        .filter(|b| b.owner.as_ref().is_some_and(|o| o.2.as_str().starts_with("r1h")))
        .count();
    println!(
        "{} hosts, {RACKS} racks, {} endpoints, {} blocks in rack 1",
        RACKS * HOSTS,
        RACKS * HOSTS * PODS,
        blocks
    );
    println!(
        "rack router accepts {} prefixes from its {HOSTS} hosts and {} from above; spine accepts {} from {RACKS} racks",
        accepted(&rack, "m"),
        accepted(&rack, "up1"),
        accepted(&spine, "m")
    );
    println!(
        "a host announces {}..{} prefixes (blocks per host {}); per-endpoint: 0 (a per-endpoint fabric would hold {} routes)",
        announced.iter().min().unwrap(),
        announced.iter().max().unwrap(),
        blocks / HOSTS,
        RACKS * HOSTS * PODS
    );
    println!(
        "join topology + fabric view {:.1} ms; render rack router {:.1} ms; render a host {:.2} ms",
        join.as_secs_f64() * 1e3,
        rack_time.as_secs_f64() * 1e3,
        host_time.as_secs_f64() * 1e3
    );
    bird_reload();
}
