//! Runs every `data/ipam/*.json` case: a topology, then steps (allocate, release, hosts, blackouts,
//! topology updates) each with its expected address, error or state.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use romana_ipam::spec::HostSpec;
use romana_ipam::{AllocRequest, Ipam};
use serde_json::Value;

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("step needs string {key:?}: {v}"))
}

fn tags(v: &Value) -> BTreeMap<String, String> {
    v.get("tags")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

fn topology(v: &Value) -> Result<romana_ipam::spec::TopologySpec, String> {
    romana_api::topology::parse(&v.to_string()).map_err(|e| e.to_string())
}

/// Compares an outcome with the step's `error` (substring) or success.
fn outcome<T: std::fmt::Debug>(at: &str, step: &Value, got: Result<T, String>) -> Option<T> {
    match (step.get("error").and_then(Value::as_str), got) {
        (None, Ok(v)) => Some(v),
        (Some(want), Err(e)) => {
            assert!(e.contains(want), "{at}: error {e:?} does not contain {want:?}");
            None
        }
        (None, Err(e)) => panic!("{at}: unexpected error {e}"),
        (Some(want), Ok(v)) => panic!("{at}: expected error {want:?}, got {v:?}"),
    }
}

fn request(step: &Value, name: &str) -> AllocRequest {
    AllocRequest {
        name: name.parse().expect("case address name"),
        host: s(step, "host").parse().expect("case host name"),
        tenant: step.get("tenant").and_then(Value::as_str).unwrap_or("").parse().expect("case tenant"),
        segment: step.get("segment").and_then(Value::as_str).unwrap_or("").parse().expect("case segment"),
    }
}

fn run_step(ipam: &mut Ipam, at: &str, step: &Value) {
    let op = s(step, "op");
    match op {
        "allocate" => {
            let got = match step.get("ip_specific").and_then(Value::as_str) {
                Some(ip) => {
                    ipam.allocate_specific(&request(step, s(step, "name")), ip.parse().expect("case ip"))
                }
                None => ipam.allocate(&request(step, s(step, "name"))),
            };
            if let Some(a) = outcome(at, step, got.map_err(|e| e.to_string())) {
                if let Some(ip) = step.get("ip").and_then(Value::as_str) {
                    assert_eq!(a.ip.to_string(), ip, "{at}");
                }
                if let Some(fresh) = step.get("fresh").and_then(Value::as_bool) {
                    assert_eq!(a.fresh, fresh, "{at}");
                }
            }
        }
        "allocate_many" => {
            // names prefix0.., round robin over hosts; optional list of expected addresses.
            let hosts: Vec<&str> =
                step["hosts"].as_array().expect("hosts").iter().filter_map(Value::as_str).collect();
            let want: Vec<&str> = step
                .get("ips")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let start = step.get("start").and_then(Value::as_u64).unwrap_or(0);
            for i in 0..step["count"].as_u64().expect("count") {
                let mut st = step.clone();
                st["host"] = Value::from(hosts[i as usize % hosts.len()]);
                let name = format!("{}{}", s(step, "prefix"), start + i);
                let a = ipam.allocate(&request(&st, &name)).unwrap_or_else(|e| panic!("{at} #{i}: {e}"));
                if let Some(ip) = want.get(i as usize) {
                    assert_eq!(a.ip.to_string(), *ip, "{at} #{i}");
                }
            }
        }
        "release" => {
            let got = ipam.release(s(step, "key")).map_err(|e| e.to_string());
            if let Some(r) = outcome(at, step, got)
                && let Some(ip) = step.get("ip").and_then(Value::as_str)
            {
                assert_eq!(r.ip.to_string(), ip, "{at}");
            }
        }
        "add_host" => {
            let mut h =
                HostSpec::new(s(step, "name").parse().expect("host"), s(step, "ip").parse().expect("ip"));
            h.tags = tags(step);
            let got = ipam.add_host(h).map_err(|e| e.to_string());
            if let Some(p) = outcome(at, step, got)
                && let Some(groups) = step.get("placed").and_then(Value::as_array)
            {
                let got: Vec<String> = p.networks.iter().map(|(n, g, c)| format!("{n} {g} {c}")).collect();
                let want: Vec<&str> = groups.iter().filter_map(Value::as_str).collect();
                assert_eq!(got, want, "{at}");
            }
        }
        "remove_host" => {
            let got = ipam.remove_host(&s(step, "name").parse().expect("host")).map_err(|e| e.to_string());
            if let Some(released) = outcome(at, step, got)
                && let Some(n) = step.get("released").and_then(Value::as_u64)
            {
                assert_eq!(released.len() as u64, n, "{at}");
            }
        }
        "update_tags" => {
            let got = ipam.update_host_tags(&s(step, "name").parse().expect("host"), tags(step));
            outcome(at, step, got.map_err(|e| e.to_string()));
        }
        "blackout" | "unblackout" => {
            let cidr = s(step, "cidr").parse().expect("case cidr");
            let got = if op == "blackout" { ipam.blackout(cidr) } else { ipam.unblackout(cidr) };
            outcome(at, step, got.map_err(|e| e.to_string()));
        }
        "update_topology" => {
            let got =
                topology(&step["topology"]).and_then(|t| ipam.update_topology(t).map_err(|e| e.to_string()));
            if let Some((next, change)) = outcome(at, step, got) {
                if let Some(n) = step.get("kept_addresses").and_then(Value::as_u64) {
                    assert_eq!(change.kept_addresses as u64, n, "{at}");
                }
                *ipam = next;
            }
        }
        "expect_blocks" => {
            let blocks = ipam.blocks();
            if let Some(n) = step.get("count").and_then(Value::as_u64) {
                assert_eq!(blocks.len() as u64, n, "{at}: {blocks:?}");
            }
            if let Some(list) = step.get("blocks").and_then(Value::as_array) {
                let got: Vec<String> = blocks
                    .iter()
                    .map(|b| match &b.owner {
                        Some((t, sg, h)) => format!("{} {} {t}:{sg}@{h} {}", b.network, b.cidr, b.allocated),
                        None => format!("{} {} - {}", b.network, b.cidr, b.allocated),
                    })
                    .collect();
                let want: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                assert_eq!(got, want, "{at}");
            }
        }
        "expect_groups" => {
            // "network path cidr hosts" for every non-padding group, depth first.
            let got: Vec<String> = ipam
                .groups()
                .iter()
                .filter(|g| !g.padding || step.get("padding").is_some())
                .map(|g| {
                    let pad = if g.padding { " padding" } else { "" };
                    format!("{} {} {} {}{pad}", g.network, g.path, g.cidr, g.hosts.len())
                })
                .collect();
            let want: Vec<&str> =
                step["groups"].as_array().expect("groups").iter().filter_map(Value::as_str).collect();
            assert_eq!(got, want, "{at}");
        }
        "expect_revision" => {
            let (alloc, _) = ipam.revisions();
            assert_eq!(alloc, step["allocation"].as_u64().expect("allocation"), "{at}");
        }
        "expect_lookup" => {
            let got = ipam.lookup(s(step, "name")).map(|a| a.ip.to_string());
            assert_eq!(got.as_deref(), step.get("ip").and_then(Value::as_str), "{at}");
        }
        "expect_routes" => {
            let r =
                ipam.host_routes(&s(step, "host").parse().expect("host")).expect("routes for a known host");
            let got: Vec<String> = r
                .routes
                .iter()
                .map(|r| match &r.target {
                    romana_ipam::RouteTarget::Host { name, .. } => format!("{} via {name}", r.dest),
                    romana_ipam::RouteTarget::Group { path } => format!("{} via group {path}", r.dest),
                    romana_ipam::RouteTarget::Throw => format!("throw {}", r.dest),
                })
                .collect();
            let want: Vec<&str> =
                step["routes"].as_array().expect("routes").iter().filter_map(Value::as_str).collect();
            assert_eq!(got, want, "{at}");
        }
        "expect_classic" => {
            let ip: std::net::IpAddr = s(step, "ip").parse().expect("ip");
            let (_, d) = ipam.classic_decode(ip).expect("a classic address");
            let want = &step["decoded"];
            assert_eq!(u64::from(d.host), want[0].as_u64().expect("host"), "{at}");
            assert_eq!(u64::from(d.tenant), want[1].as_u64().expect("tenant"), "{at}");
            assert_eq!(u64::from(d.segment), want[2].as_u64().expect("segment"), "{at}");
            assert_eq!(d.seq.map(u64::from), want[3].as_u64(), "{at}");
        }
        "classic_numbers" => {
            let seg_name =
                step.get("segment").and_then(Value::as_str).unwrap_or("").parse().expect("segment");
            let seg = step.get("segment_number").and_then(Value::as_u64).map(|n| (&seg_name, n as u32));
            let got = ipam.set_classic_numbers(
                &s(step, "network").parse().expect("network"),
                &s(step, "tenant").parse().expect("tenant"),
                step["tenant_number"].as_u64().expect("tenant_number") as u32,
                seg,
            );
            outcome(at, step, got.map_err(|e| e.to_string()));
        }
        "expect_gateway" => {
            let (gw, cidr) = ipam
                .classic_gateway(
                    &s(step, "network").parse().expect("network"),
                    &s(step, "host").parse().expect("host"),
                )
                .expect("a classic host");
            assert_eq!(format!("{gw} {cidr}"), s(step, "gateway"), "{at}");
        }
        other => panic!("{at}: unknown op {other:?}"),
    }
}

fn run_case(path: &Path) {
    let text = std::fs::read_to_string(path).expect("readable case file");
    let case: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.file_stem().expect("file name").to_string_lossy().into_owned();
    let built = topology(&case["topology"]).and_then(|t| Ipam::new(t).map_err(|e| e.to_string()));
    let mut ipam = match (case.get("topology_error").and_then(Value::as_str), built) {
        (None, Ok(ipam)) => ipam,
        (Some(want), Err(e)) => {
            assert!(e.contains(want), "{name}: topology error {e:?} lacks {want:?}");
            return;
        }
        (None, Err(e)) => panic!("{name}: topology rejected: {e}"),
        (Some(want), Ok(_)) => panic!("{name}: expected topology error {want:?}"),
    };
    for (i, step) in case["steps"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        run_step(&mut ipam, &format!("{name} step {i}"), step);
    }
}

#[test]
fn every_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ipam");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("case dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 38, "expected the full case set, found {}", files.len());
    for f in &files {
        run_case(f);
    }
    println!("ran {} IPAM cases", files.len());
}

/// What `GET /topology` renders, posted again, carves the same groups with the same hosts.
#[test]
fn rendered_topologies_round_trip() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ipam");
    let mut checked = 0;
    for f in std::fs::read_dir(&dir).expect("case dir") {
        let case: Value =
            serde_json::from_str(&std::fs::read_to_string(f.expect("entry").path()).expect("read"))
                .expect("json");
        let Ok(spec) = topology(&case["topology"]) else { continue };
        let Ok(ipam) = Ipam::new(spec) else { continue };
        let rendered = serde_json::to_string(&romana_api::topology::render(&ipam)).expect("serialize");
        let again = Ipam::new(romana_api::topology::parse(&rendered).expect("rendered topology parses"))
            .expect("rendered topology is valid");
        let view = |i: &Ipam| -> Vec<String> {
            i.groups()
                .iter()
                .map(|g| format!("{} {} {} {:?}", g.network, g.cidr, g.padding, g.hosts))
                .collect()
        };
        assert_eq!(view(&ipam), view(&again), "{rendered}");
        checked += 1;
    }
    assert!(checked > 30, "only {checked} topologies checked");
}
