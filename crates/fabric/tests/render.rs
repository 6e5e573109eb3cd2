//! The BIRD renderer against real IPAM states: golden files for a host and each router of a
//! two-rack, two-spine fabric, with and without route reflectors (`tests/data/*.conf`;
//! `UPDATE_GOLDEN=1` rewrites them), errors as data, and a property test: every host announces exactly its blocks, aggregated, and every
//! router accepts from each member exactly what the fabric view routes to it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use proptest::prelude::*;
use romana_api::rest::FabricGroup;
use romana_fabric::{Fabric, FabricError, Options, render_host, render_router};
use romana_ipam::spec::HostSpec;
use romana_ipam::{AllocRequest, Ipam, RouteTarget};
use romana_model::Cidr;

/// A topology like the sandbox's on BGP: spines (AS 65000, two routers) over `racks` racks.
fn topology(racks: usize, block_mask: u8) -> String {
    let groups: Vec<String> = (1..=racks)
        .map(|r| {
            format!(
                r#"{{"name":"rack-{r}","assignment":{{"rack":"{r}"}},"routing":"bgp",
                "bgp":{{"asn":{},"routers":["192.168.{r}.1"],"uplinks":["192.168.254.{}","192.168.253.{}"],"host_asn":{}}},"groups":[]}}"#,
                65000 + r,
                10 + r,
                10 + r,
                65100 + r
            )
        })
        .collect();
    format!(
        r#"{{"networks":[{{"name":"pods","cidr":"10.112.0.0/16","block_mask":{block_mask}}}],
        "topologies":[{{"networks":["pods"],"map":[{{"name":"spines","routing":"bgp",
            "bgp":{{"asn":65000,"routers":["192.168.254.1","192.168.253.1"]}},"groups":[{}]}}]}}]}}"#,
        groups.join(",")
    )
}

/// The IPAM with `hosts[r]` hosts in rack r+1, host i of a rack holding `pods[i]` addresses.
fn ipam(racks: usize, hosts: usize, pods: &[usize], block_mask: u8) -> Ipam {
    ipam_of(&topology(racks, block_mask), racks, hosts, pods)
}

/// `ipam` over a topology of one's own (`topology`'s shape, edited).
fn ipam_of(topology: &str, racks: usize, hosts: usize, pods: &[usize]) -> Ipam {
    let mut ipam = Ipam::new(romana_api::topology::parse(topology).expect("topology")).expect("carves");
    for r in 1..=racks {
        for h in 1..=hosts {
            let ip: IpAddr = format!("192.168.{r}.{}", 10 + h).parse().expect("ip");
            let spec = HostSpec::new(format!("r{r}h{h}").parse().expect("name"), ip)
                .with_tag("rack", &r.to_string());
            ipam.add_host(spec).expect("host fits");
            for p in 0..pods.get(h - 1).copied().unwrap_or(0) {
                let req = AllocRequest {
                    name: format!("r{r}h{h}p{p}").parse().expect("name"),
                    host: format!("r{r}h{h}").parse().expect("name"),
                    tenant: "t".parse().expect("tenant"),
                    segment: "".parse().expect("segment"),
                };
                ipam.allocate(&req).expect("address");
            }
        }
    }
    ipam
}

/// What romanad's `GET /fabric` answers for this IPAM, and `GET /topology`.
fn fabric(ipam: &Ipam) -> Fabric {
    let view: Vec<FabricGroup> = ipam.fabric_routes().iter().map(FabricGroup::from).collect();
    // Through JSON, as the agent reads it.
    let json = serde_json::to_value(&view).expect("serializes");
    let view: Vec<FabricGroup> = serde_json::from_value(json).expect("parses");
    Fabric::new(&romana_api::topology::render(ipam), &view).expect("joins")
}

fn golden(name: &str, text: &str) {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).expect("writes golden");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(text, want, "{path} differs (UPDATE_GOLDEN=1 rewrites it after review)");
}

#[test]
fn golden_host_and_router_configurations() {
    // Rack 1: r1h1 with 20 pods (two /28 blocks and a half: aggregated), r1h2 with 3.
    let f = fabric(&ipam(2, 2, &[20, 3], 28));
    golden("host-r1h1.conf", &render_host(&f, "r1h1", Options::default()).expect("renders"));
    golden(
        "host-r2h1-bfd-kernel.conf",
        &render_host(&f, "r2h1", Options { bfd: true, kernel: true }).expect("renders"),
    );
    golden("router-rack-1.conf", &render_router(&f, "/rack-1", None, Options::default()).expect("renders"));
    golden(
        "router-spine-2.conf",
        &render_router(&f, "/", Some("192.168.253.1".parse().expect("ip")), Options::default())
            .expect("renders"),
    );
}

/// VIPs: a host announces the one it serves as a /32 and the one it stands by for with a longer
/// path; a rack router and a spine accept /32s of the VIP ranges from members and pass them up.
#[test]
fn golden_vip_configurations() {
    let mut f = fabric(&ipam(2, 2, &[2, 1], 28));
    f.vip_ranges = vec!["198.51.100.0/28".parse().expect("cidr"), "203.0.113.7/32".parse().expect("cidr")];
    let vips = [
        romana_fabric::HostVip { address: "198.51.100.1".parse().expect("ip"), standby: false },
        romana_fabric::HostVip { address: "198.51.100.2".parse().expect("ip"), standby: true },
    ];
    let host = romana_fabric::render_host_with(&f, "r1h1", Options { bfd: true, kernel: false }, &vips);
    golden("host-r1h1-vips.conf", &host.expect("renders"));
    golden(
        "router-rack-1-vips.conf",
        &render_router(&f, "/rack-1", None, Options::default()).expect("renders"),
    );
    golden(
        "router-spine-vips.conf",
        &render_router(&f, "/", Some("192.168.254.1".parse().expect("ip")), Options::default())
            .expect("renders"),
    );
    // Without VIPs nothing about them is rendered.
    let plain = render_host(&f, "r1h1", Options::default()).expect("renders");
    assert!(!plain.contains("romana_vips") && !plain.contains("{32,32}"), "{plain}");
}

#[test]
fn errors_name_what_is_wrong() {
    let f = fabric(&ipam(2, 1, &[1], 28));
    let check = |got: Result<String, FabricError>, want: &str| {
        let e = got.expect_err("must fail").to_string();
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    };
    check(render_host(&f, "nobody", Options::default()), "host \"nobody\" is in no leaf group");
    check(render_router(&f, "/rack-9", None, Options::default()), "no prefix group \"/rack-9\"");
    check(
        render_router(&f, "/", None, Options::default()),
        "has routers [192.168.254.1, 192.168.253.1]; say which",
    );
    check(
        render_router(&f, "/", Some("10.0.0.1".parse().expect("ip")), Options::default()),
        "10.0.0.1 is not a router of group /",
    );
    // A static topology: the group exists but does not route with BGP; hosts announce nothing.
    let mut plain = Ipam::new(
        romana_api::topology::parse(
            r#"{"networks":[{"name":"n","cidr":"10.1.0.0/16"}],"topologies":[{"networks":["n"],"map":[
                {"name":"a","routing":"static","groups":[]},{"name":"b","groups":[]}]}]}"#,
        )
        .expect("topology"),
    )
    .expect("carves");
    plain
        .add_host(HostSpec::new("h".parse().expect("name"), "192.168.9.9".parse().expect("ip")))
        .expect("fits");
    let f = fabric(&plain);
    check(render_router(&f, "a", None, Options::default()), "group \"a\" does not route with bgp");
    let text = render_host(&f, "h", Options::default()).expect("renders");
    assert!(text.contains("sits in no group that routes with bgp") && !text.contains("protocol"), "{text}");
}

/// The `route ... blackhole;` prefixes of a rendered file, and every `net ~ [ ... ]` exact set
/// of the filter named `filter`.
fn blackholes(text: &str) -> BTreeSet<Cidr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("route ")?.strip_suffix(" blackhole;")?.parse().ok())
        .collect()
}

fn accepted_in(text: &str, filter: &str) -> BTreeSet<Cidr> {
    let Some(start) = text.find(&format!("filter {filter} {{")) else { return BTreeSet::new() };
    let body = &text[start..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    body.lines()
        .filter(|l| l.contains("then accept;") && l.contains("net ~ ["))
        .flat_map(|l| {
            let inner = &l[l.find('[').unwrap_or(0) + 1..l.find(']').unwrap_or(0)];
            inner.split(',').filter_map(|c| c.trim().parse::<Cidr>().ok()).collect::<Vec<_>>()
        })
        .collect()
}

fn addresses(set: &BTreeSet<Cidr>) -> BTreeSet<u128> {
    set.iter().flat_map(|c| c.first()..=c.last()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn hosts_announce_exactly_their_blocks_aggregated(
        racks in 1usize..4,
        pods in proptest::collection::vec(0usize..40, 1..4),
        mask in 27u8..30,
    ) {
        let ipam = ipam(racks, pods.len(), &pods, mask);
        let f = fabric(&ipam);
        let blocks = ipam.blocks();
        for r in 1..=racks {
            let rack = render_router(&f, &format!("/rack-{r}"), None, Options::default()).expect("renders");
            let mut all: Vec<(Cidr, String)> = Vec::new();
            for (i, _) in pods.iter().enumerate() {
                let host = format!("r{r}h{}", i + 1);
                let text = render_host(&f, &host, Options::default()).expect("renders");
                let mine: BTreeSet<Cidr> = blocks
                    .iter()
                    .filter(|b| b.owner.as_ref().is_some_and(|o| o.2.as_str() == host))
                    .map(|b| b.cidr)
                    .collect();
                let view: BTreeSet<Cidr> = ipam
                    .fabric_routes()
                    .iter()
                    .flat_map(|g| g.routes.iter())
                    .filter(|r| matches!(&r.target, RouteTarget::Host { name, .. } if name.as_str() == host))
                    .map(|r| r.dest)
                    .collect();
                let announced = blackholes(&text);
                // Exactly the route manager's aggregates for the host: all its blocks, nobody
                // else's, in no more prefixes than it has blocks; never per-endpoint routes.
                prop_assert_eq!(&announced, &view, "{}", text);
                prop_assert!(addresses(&announced).is_superset(&addresses(&mine)));
                all.extend(announced.iter().map(|c| (*c, host.clone())));
                prop_assert!(announced.len() <= mine.len());
                prop_assert!(announced.iter().all(|c| c.prefix_len() <= mask));
                prop_assert_eq!(&accepted_in(&text, "romana_out_peer1"), &announced);
                // Its rack router accepts exactly those from it.
                let member = rack
                    .split("filter romana_in_")
                    .find(|f| f.contains(&format!("from host {host} ")))
                    .map(|f| format!("filter romana_in_{f}"))
                    .unwrap_or_default();
                let name = member.split_whitespace().nth(1).unwrap_or("").to_owned();
                prop_assert_eq!(accepted_in(&member, &name), announced);
            }
            // Longest-prefix match over every host's announcements finds each block's owner
            // (aggregates may nest: a host's short prefix around another's more specific one).
            for b in blocks.iter().filter(|b| b.owner.is_some()) {
                let owner = b.owner.as_ref().map(|o| o.2.to_string()).unwrap_or_default();
                if !owner.starts_with(&format!("r{r}h")) {
                    continue;
                }
                let best = all.iter().filter(|(c, _)| c.contains(&b.cidr)).max_by_key(|(c, _)| c.prefix_len());
                prop_assert_eq!(best.map(|(_, h)| h.clone()), Some(owner));
            }
            // The rack announces its aggregate upward, and only while it holds a host's block.
            let up = blackholes(&rack);
            let populated = !pods.is_empty();
            prop_assert_eq!(up.len(), usize::from(populated));
        }
    }
}

/// Real BIRD (Debian's bird2) parses every golden file (`bird -p`: parse only, no daemon, no
/// root). The host files are includes, so each goes inside a minimal bird.conf.
#[test]
fn bird_parses_every_golden_file() {
    if std::process::Command::new("bird").arg("--version").output().is_err() {
        eprintln!("skipped: bird (Debian's bird2) is not installed; scripts/setup.sh installs it");
        return;
    }
    let dir = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
    let tmp = std::env::temp_dir().join(format!("romana-fabric-parse-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let path = entry.expect("entry").path();
        let wrapper = tmp.join("bird.conf");
        let router_id = if path.to_string_lossy().contains("/host-") { "router id 192.0.2.1;\n" } else { "" };
        std::fs::write(&wrapper, format!("{router_id}include \"{}\";\n", path.display())).expect("wrapper");
        let out =
            std::process::Command::new("bird").arg("-p").arg("-c").arg(&wrapper).output().expect("runs bird");
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        seen += 1;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(seen >= 4, "golden files missing in {dir}");
}

/// Rack 1 of `topology(2, 28)` speaking iBGP (no `host_asn`) with these reflectors, 3 hosts per
/// rack holding 20, 3 and 5 addresses.
fn reflected(reflectors: &str) -> Fabric {
    let text = topology(2, 28).replacen(r#","host_asn":65101"#, &format!(r#","reflectors":{reflectors}"#), 1);
    assert!(text.contains("reflectors"), "rack 1 edited");
    fabric(&ipam_of(&text, 2, 3, &[20, 3, 5]))
}

/// Route reflectors: a reflecting host (sessions with the router and with each client, `rr
/// client`, its clients' routes passed up), a client (one session, with the reflector), the rack
/// router (one session per reflector, accepting every host's aggregates), and the rack router as
/// the reflector itself (its host sessions `rr client`).
#[test]
fn golden_route_reflector_configurations() {
    let mut f = reflected(r#"["192.168.1.11"]"#);
    f.vip_ranges = vec!["198.51.100.0/28".parse().expect("cidr")];
    let o = Options { bfd: true, kernel: true };
    let reflector = render_host(&f, "r1h1", o).expect("renders");
    golden("host-r1h1-reflector.conf", &reflector);
    let client = render_host(&f, "r1h2", o).expect("renders");
    golden("host-r1h2-rr-client.conf", &client);
    let router = render_router(&f, "/rack-1", None, o).expect("renders");
    golden("router-rack-1-rr-hosts.conf", &router);
    let by_router = reflected(r#"["192.168.1.1"]"#);
    golden(
        "router-rack-1-rr-router.conf",
        &render_router(&by_router, "/rack-1", None, Options::default()).expect("renders"),
    );

    // What each side accepts, against the fabric view: the client announces exactly its
    // aggregates, to the reflector alone; the reflector accepts exactly those from it; the router
    // accepts from the reflector every host's aggregates, and holds no session with a client.
    let g = f.groups_at("/rack-1")[0];
    let all: BTreeSet<Cidr> = ["r1h1", "r1h2", "r1h3"].iter().flat_map(|h| f.from_member(g, h)).collect();
    assert_eq!(all.len(), 3, "one aggregate per host: {all:?}");
    assert_eq!(client.matches("protocol bgp ").count(), 1, "{client}");
    assert!(client.contains("neighbor 192.168.1.11 as 65001;"), "{client}");
    assert_eq!(accepted_in(&client, "romana_out_peer1"), f.from_member(g, "r1h2"));
    assert_eq!(accepted_in(&client, "romana_in_peer1"), f.from_upstream(g));
    assert_eq!(accepted_in(&reflector, "romana_in_c1"), f.from_member(g, "r1h2"));
    assert_eq!(accepted_in(&reflector, "romana_in_c2"), f.from_member(g, "r1h3"));
    assert_eq!(reflector.matches("rr client;").count(), 2, "{reflector}");
    assert_eq!(router.matches("protocol bgp ").count(), 3, "two uplinks, one reflector: {router}");
    assert!(!router.contains("192.168.1.12") && !router.contains("rr client"), "{router}");
    assert_eq!(accepted_in(&router, "romana_in_m1"), all);
    // The routers hold aggregates only: the rack's upward announcement is unchanged.
    assert_eq!(
        blackholes(&router),
        blackholes(&render_router(&reflected("[]"), "/rack-1", None, o).expect("renders"))
    );
}

#[test]
fn reflector_errors_name_the_problem() {
    let check = |f: &Fabric, want: &str| {
        for e in [
            render_router(f, "/rack-1", None, Options::default()).expect_err("router"),
            render_host(f, "r1h2", Options::default()).expect_err("host"),
        ] {
            assert!(e.to_string().contains(want), "{e} lacks {want:?}");
        }
    };
    check(
        &reflected(r#"["192.168.1.99"]"#),
        "reflector 192.168.1.99 of group /rack-1 is neither one of its routers [192.168.1.1] nor one of its hosts [\"r1h1 192.168.1.11\"",
    );
    check(&reflected(r#"["192.168.2.11"]"#), "reflector 192.168.2.11 of group /rack-1 is neither");
    check(
        &reflected(r#"["192.168.1.1","192.168.1.11"]"#),
        "group /rack-1 names routers and hosts as reflectors",
    );
    // The API refuses a host AS other than the group's with reflectors; a view joined from an
    // older topology is refused here too.
    let mut f = reflected(r#"["192.168.1.11"]"#);
    let g = f.groups_at("/rack-1")[0];
    f.groups[g].bgp.as_mut().expect("bgp").host_asn = 65101;
    check(&f, "its hosts speak AS 65101 and its routers AS 65001: route reflection is iBGP");
    // Another rack is untouched by rack 1's mistake.
    let f = reflected(r#"["192.168.1.99"]"#);
    render_router(&f, "/rack-2", None, Options::default()).expect("rack 2 renders");
}

/// `topology(2, 28)` with an IPv6 pod network over the same groups; host i of rack r holds
/// `pods[i]` dual-stack endpoints and has the IPv6 underlay address `fd00:192:168:r::(10+i)`,
/// except r1h2, which keeps an IPv4 underlay only.
fn dual(pods: &[usize]) -> (Ipam, Fabric) {
    let text = topology(2, 28)
        .replacen(
            r#""block_mask":28}]"#,
            r#""block_mask":28},{"name":"pods6","cidr":"fd00:112::/112","block_mask":124}]"#,
            1,
        )
        .replacen(r#""networks":["pods"]"#, r#""networks":["pods","pods6"]"#, 1);
    assert!(text.contains("pods6") && text.contains(r#"["pods","pods6"]"#), "topology edited");
    let mut ipam = Ipam::new(romana_api::topology::parse(&text).expect("topology")).expect("carves");
    for r in 1..=2 {
        for (i, n) in pods.iter().enumerate() {
            let h = i + 1;
            let ip: IpAddr = format!("192.168.{r}.{}", 10 + h).parse().expect("ip");
            let mut spec = HostSpec::new(format!("r{r}h{h}").parse().expect("name"), ip)
                .with_tag("rack", &r.to_string());
            if (r, h) != (1, 2) {
                spec = spec.with_ipv6(format!("fd00:192:168:{r}::{}", 10 + h).parse().expect("ipv6"));
            }
            ipam.add_host(spec).expect("host fits");
            for p in 0..*n {
                let req = AllocRequest {
                    name: format!("r{r}h{h}p{p}").parse().expect("name"),
                    host: format!("r{r}h{h}").parse().expect("name"),
                    tenant: "t".parse().expect("tenant"),
                    segment: "".parse().expect("segment"),
                };
                ipam.allocate_stack(&req).expect("addresses");
            }
        }
    }
    let f = fabric(&ipam);
    (ipam, f)
}

/// Dual stack over MP-BGP: a host with an IPv6 underlay announces its IPv6 aggregates in an
/// `ipv6` channel of its IPv4 session, with its IPv6 address as the next hop; a host without
/// one has no `ipv6` channel and says why; routers accept exactly each member's IPv6 aggregates
/// and pass the rack's IPv6 aggregate up. Golden files, parsed by BIRD below.
#[test]
fn golden_dual_stack_configurations() {
    let (ipam, f) = dual(&[20, 3]);
    let o = Options { bfd: true, kernel: true };
    let h1 = render_host(&f, "r1h1", o).expect("renders");
    golden("host-r1h1-dual.conf", &h1);
    let h2 = render_host(&f, "r1h2", o).expect("renders");
    golden("host-r1h2-dual-no-ipv6.conf", &h2);
    let rack = render_router(&f, "/rack-1", None, o).expect("renders");
    golden("router-rack-1-dual.conf", &rack);
    let spine = render_router(&f, "/", Some("192.168.254.1".parse().expect("ip")), o).expect("renders");
    golden("router-spine-dual.conf", &spine);

    let v6 = |set: BTreeSet<Cidr>| -> BTreeSet<Cidr> {
        set.into_iter().filter(|c| c.family() == romana_model::Family::V6).collect()
    };
    let leaf = ipam.fabric_routes();
    let of_host = |host: &str| -> BTreeSet<Cidr> {
        leaf.iter()
            .flat_map(|g| g.routes.iter())
            .filter(|r| matches!(&r.target, RouteTarget::Host { name, .. } if name.as_str() == host))
            .filter(|r| r.dest.family() == romana_model::Family::V6)
            .map(|r| r.dest)
            .collect()
    };
    // r1h1 announces exactly its IPv6 aggregates, next hop its IPv6 underlay address.
    assert!(!of_host("r1h1").is_empty());
    assert_eq!(accepted_in(&h1, "romana_out6_peer1"), of_host("r1h1"));
    assert_eq!(v6(blackholes(&h1)), of_host("r1h1"));
    assert!(h1.contains("next hop address fd00:192:168:1::11;"), "{h1}");
    assert!(h1.contains("protocol kernel romana_kernel6"), "{h1}");
    // r1h2 has no IPv6 underlay: IPv4 only, and the file says why.
    assert!(!h2.contains("ipv6 {") && !h2.contains("romana_aggregates6"), "{h2}");
    assert!(h2.contains("this host has no IPv6 underlay address"), "{h2}");
    // The rack router accepts exactly r1h1's IPv6 aggregates from it, and announces the rack's
    // IPv6 aggregate upward; the spine accepts exactly that from the rack.
    let g = f.groups_at("/rack-1");
    let from_r1h1 = rack
        .split("\nfilter romana_in6_")
        .skip(1)
        .map(|x| &x[..x.find("\n}").unwrap_or(x.len())])
        .find(|x| x.contains("from host r1h1 "))
        .map(|x| format!("filter romana_in6_{x}\n}}"))
        .unwrap_or_default();
    let name = from_r1h1.split_whitespace().nth(1).unwrap_or("").to_owned();
    assert_eq!(accepted_in(&from_r1h1, &name), of_host("r1h1"), "{name}: {from_r1h1}");
    let rack6: BTreeSet<Cidr> = g
        .iter()
        .filter_map(|g| f.groups[*g].announce)
        .filter(|c| c.family() == romana_model::Family::V6)
        .collect();
    assert_eq!(rack6.len(), 1, "{rack6:?}");
    assert_eq!(v6(blackholes(&rack)), rack6);
    assert_eq!(accepted_in(&rack, "romana_out6_up1"), rack6);
    let spine_in: BTreeSet<Cidr> = spine
        .split("\nfilter romana_in6_")
        .skip(1)
        .map(|x| &x[..x.find("\n}").unwrap_or(x.len())])
        .filter(|x| x.contains("group /rack-1 "))
        .flat_map(|x| {
            let text = format!("filter romana_in6_{x}\n}}");
            let name = text.split_whitespace().nth(1).unwrap_or("").to_owned();
            accepted_in(&text, &name)
        })
        .collect();
    assert_eq!(spine_in, rack6);
    // Without an IPv6 pod network nothing IPv6 is rendered, even for a host with an IPv6 underlay.
    let mut v4_only = f.clone();
    v4_only.networks.retain(|n| n.family() == romana_model::Family::V4);
    let plain = render_host(&v4_only, "r1h1", o).expect("renders");
    assert!(!plain.contains("ipv6") && !plain.contains("romana_aggregates6"), "{plain}");
}
