//! What a VIP request must be, pure: the request's fields, the external ranges' configuration,
//! an address that is neither inside a Romana network nor a host's, and the lowest free address
//! of the ranges. Knows nothing of the store or of HTTP; the handlers map `Refusal`s to 409/422.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use romana_api::vip::{VipConfig, VipRequest};
use romana_model::Cidr;

/// Why an address cannot be a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The address itself is wrong (422).
    Invalid(String),
    /// It clashes with something that exists (409).
    Conflict(String),
}

/// A name like a Kubernetes Service's: 1 to 63 of `a-z0-9-`, not starting or ending with `-`.
fn service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Every problem of the request's own fields (the address is checked apart).
pub fn request_problems(r: &VipRequest) -> Vec<String> {
    let mut out = Vec::new();
    if !service_name(&r.service) {
        out.push(format!("service: {:?} is not a service name (1-63 of a-z, 0-9 and -)", r.service));
    }
    if r.tenant.is_empty() {
        out.push("tenant: must not be empty".to_owned());
    }
    crate::endpoints::label_problems(&r.selector, &mut out);
    for (i, p) in r.ports.iter().enumerate() {
        if romana_policy::Protocol::parse(&p.protocol).is_none() {
            out.push(format!("ports[{i}].protocol: {:?} is not TCP, UDP or SCTP", p.protocol));
        }
        if p.port == 0 {
            out.push(format!("ports[{i}].port: must be above 0"));
        }
    }
    if !r.origin.is_empty() && r.origin != format!("k8s:{}/{}", r.tenant, r.service) {
        out.push(format!(
            "origin: {:?} is not k8s:{}/{} (the only origin a request may name)",
            r.origin, r.tenant, r.service
        ));
    }
    let mut seen = BTreeSet::new();
    for p in &r.ports {
        if !seen.insert((p.protocol.to_ascii_uppercase(), p.port)) {
            out.push(format!("ports: {} {} is forwarded twice", p.protocol, p.port));
        }
    }
    out
}

/// The configured ranges (IPv4 prefixes), or every problem with them.
pub fn ranges(cfg: &VipConfig) -> Result<Vec<Cidr>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, r) in cfg.ranges.iter().enumerate() {
        match r.parse::<Cidr>() {
            Ok(c) if matches!(c.network(), IpAddr::V4(_)) => out.push(c),
            Ok(_) => problems.push(format!("ranges[{i}]: {r} is IPv6; VIPs are IPv4 for now")),
            Err(e) => problems.push(format!("ranges[{i}]: {r:?} is not a prefix: {e}")),
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// Whether `addr` may be a VIP: a unicast IPv4 address outside every Romana network (`networks`:
/// name and prefix) and not a host's address (`hosts`: name and address).
pub fn check_address(
    addr: &str,
    networks: &[(String, Cidr)],
    hosts: &[(String, IpAddr)],
) -> Result<Ipv4Addr, Refusal> {
    let ip: IpAddr =
        addr.parse().map_err(|_| Refusal::Invalid(format!("address: {addr:?} is not an IP address")))?;
    let IpAddr::V4(v4) = ip else {
        return Err(Refusal::Invalid(format!("address: {addr} is IPv6; VIPs are IPv4 for now")));
    };
    if v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast() || v4.is_link_local()
    {
        return Err(Refusal::Invalid(format!(
            "address: {v4} is not a unicast address a host can announce (unspecified, loopback, \
             multicast, broadcast or link-local)"
        )));
    }
    if let Some((name, cidr)) = networks.iter().find(|(_, c)| c.contains_addr(ip)) {
        return Err(Refusal::Invalid(format!(
            "address: {v4} is inside Romana network {name} ({cidr}); a VIP must be outside every pod network"
        )));
    }
    if let Some((name, _)) = hosts.iter().find(|(_, a)| *a == ip) {
        return Err(Refusal::Conflict(format!("address {v4} is the address of host {name}")));
    }
    Ok(v4)
}

/// The lowest address of `ranges` that may be a VIP and is not in `used` (a range's network and
/// broadcast addresses are skipped when it has more than two).
pub fn draw(
    ranges: &[Cidr],
    used: &BTreeSet<Ipv4Addr>,
    networks: &[(String, Cidr)],
    hosts: &[(String, IpAddr)],
) -> Option<Ipv4Addr> {
    for r in ranges {
        let (first, last) = (r.first(), r.last());
        let (first, last) = if r.size() > 2 { (first + 1, last - 1) } else { (first, last) };
        let mut v = first;
        while v <= last {
            let a = Ipv4Addr::from(v as u32);
            if !used.contains(&a) && check_address(&a.to_string(), networks, hosts).is_ok() {
                return Some(a);
            }
            v += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<(String, Cidr)> {
        vec![("pods".into(), "10.112.0.0/16".parse().expect("cidr"))]
    }
    fn hosts() -> Vec<(String, IpAddr)> {
        vec![("r1h1".into(), "192.168.1.11".parse().expect("ip"))]
    }

    fn check(addr: &str, expect: Result<&str, &str>) {
        let got = check_address(addr, &nets(), &hosts());
        match (got, expect) {
            (Ok(a), Ok(want)) => assert_eq!(a.to_string(), want),
            (Err(Refusal::Invalid(m)), Err(want)) | (Err(Refusal::Conflict(m)), Err(want)) => {
                assert!(m.contains(want), "{addr}: {m:?} lacks {want:?}")
            }
            (got, _) => panic!("{addr}: {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn addresses() {
        check("198.51.100.7", Ok("198.51.100.7"));
        check("10.112.3.4", Err("inside Romana network pods (10.112.0.0/16)"));
        check("192.168.1.11", Err("the address of host r1h1"));
        check("fd00::1", Err("IPv6"));
        check("nope", Err("\"nope\" is not an IP address"));
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.5", "255.255.255.255", "169.254.1.1"] {
            check(bad, Err("not a unicast address"));
        }
        assert!(matches!(check_address("192.168.1.11", &nets(), &hosts()), Err(Refusal::Conflict(_))));
    }

    #[test]
    fn drawing_takes_the_lowest_free_address() {
        let r = |s: &str| s.parse::<Cidr>().expect("cidr");
        let used: BTreeSet<Ipv4Addr> = ["198.51.100.1".parse().expect("ip")].into();
        let got = draw(&[r("198.51.100.0/30")], &used, &nets(), &hosts());
        assert_eq!(got, Some("198.51.100.2".parse().expect("ip")));
        let full: BTreeSet<Ipv4Addr> =
            ["198.51.100.1", "198.51.100.2"].map(|a| a.parse().expect("ip")).into();
        assert_eq!(draw(&[r("198.51.100.0/30")], &full, &nets(), &hosts()), None);
        // A /32 range is its one address; a range overlapping a pod network skips it.
        assert_eq!(
            draw(&[r("203.0.113.9/32")], &full, &nets(), &hosts()),
            Some("203.0.113.9".parse().expect("ip"))
        );
        assert_eq!(draw(&[r("10.112.0.0/30")], &full, &nets(), &hosts()), None);
    }

    #[test]
    fn requests_and_ranges() {
        let mut req = VipRequest { service: "web".into(), tenant: "red".into(), ..VipRequest::default() };
        assert!(request_problems(&req).is_empty());
        // The controller's mark names exactly the request's tenant and service.
        req.origin = "k8s:red/web".into();
        assert!(request_problems(&req).is_empty());
        req.origin = "k8s:blue/web".into();
        assert!(request_problems(&req).iter().any(|p| p.starts_with("origin: \"k8s:blue/web\"")));
        req.origin.clear();
        req.service = "Web_1".into();
        req.tenant.clear();
        req.ports = vec![
            romana_api::vip::VipPort { protocol: "ICMP".into(), port: 0, target_port: 0 },
            romana_api::vip::VipPort { protocol: "tcp".into(), port: 80, target_port: 0 },
            romana_api::vip::VipPort { protocol: "TCP".into(), port: 80, target_port: 8080 },
        ];
        let p = request_problems(&req);
        for want in [
            "service: \"Web_1\"",
            "tenant: must not",
            "ports[0].protocol",
            "ports[0].port",
            "forwarded twice",
        ] {
            assert!(p.iter().any(|x| x.contains(want)), "{p:?} lacks {want}");
        }
        let cfg = VipConfig { ranges: vec!["198.51.100.0/28".into(), "fd00::/64".into(), "x".into()] };
        let e = ranges(&cfg).expect_err("bad ranges");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("ranges[1]") && e[1].starts_with("ranges[2]"), "{e:?}");
    }
}
