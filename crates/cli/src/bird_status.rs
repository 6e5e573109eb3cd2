//! birdc's answers, read: `show protocols` (sessions and their states) and `show route` (which
//! protocol each network came from). Pure; `sandbox_bgp.rs` runs birdc and prints.

use std::collections::BTreeMap;

/// One line of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub proto: String,
    pub state: String,
    pub info: String,
}

/// `birdc show protocols`: the table after its header line.
pub fn protocols(text: &str) -> Vec<Protocol> {
    text.lines()
        .filter(|l| !l.starts_with("BIRD ") && !l.starts_with("Name "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 {
                return None;
            }
            // Name Proto Table State Since [Info...]; Since may be a date and a time.
            let info_at = if f.len() > 5 && f[5].contains(':') { 6 } else { 5 };
            Some(Protocol {
                name: f[0].to_owned(),
                proto: f[1].to_owned(),
                state: f[3].to_owned(),
                info: f.get(info_at..).map(|x| x.join(" ")).unwrap_or_default(),
            })
        })
        .collect()
}

/// BGP sessions established, and BGP sessions configured.
pub fn bgp_sessions(list: &[Protocol]) -> (usize, usize) {
    let bgp: Vec<&Protocol> = list.iter().filter(|p| p.proto == "BGP").collect();
    (bgp.iter().filter(|p| p.state == "up" && p.info.starts_with("Established")).count(), bgp.len())
}

/// `birdc show route`: each network with the protocols of its routes, the best first.
pub fn routes(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("BIRD ") || line.starts_with("Table ") || line.trim().is_empty() {
            continue;
        }
        let proto = line.find('[').and_then(|i| line[i + 1..].split_whitespace().next()).map(str::to_owned);
        if !line.starts_with(char::is_whitespace) {
            current = line.split_whitespace().next().map(str::to_owned);
        } else if line.trim_start().starts_with("via") || line.trim_start().starts_with("dev") {
            continue;
        }
        if let (Some(net), Some(p)) = (&current, proto) {
            out.entry(net.clone()).or_default().push(p.trim_end_matches(']').to_owned());
        }
    }
    out
}

/// Networks whose best route came from a protocol whose name starts with `prefix`.
pub fn count_from(routes: &BTreeMap<String, Vec<String>>, prefix: &str) -> usize {
    routes.values().filter(|p| p.first().is_some_and(|p| p.starts_with(prefix))).count()
}

/// Networks of prefix length 32 (IPv4) or 128 (IPv6): per-endpoint routes.
pub fn per_endpoint(routes: &BTreeMap<String, Vec<String>>) -> usize {
    routes.keys().filter(|n| n.ends_with("/32") || n.ends_with("/128")).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTOCOLS: &str = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
romana_device Device  ---        up     00:41:07.503
romana_aggregates Static master4 up     00:41:07.503
romana_kernel Kernel  master4    up     00:41:07.503
romana_up1 BGP        ---        up     00:41:08.015  Established
romana_up2 BGP        ---        start  00:41:08.015  Active        Socket: Connection refused
romana_m1  BGP        ---        up     2026-12-05 00:41:09  Established
";

    const ROUTES: &str = "BIRD 2.0.12 ready.
Table master4:
10.112.0.0/28        unicast [romana_m1 00:41:09.100] * (100) [AS65101i]
\tvia 192.168.1.11 on rack0
10.112.128.0/17      unicast [romana_up1 00:41:09.200] * (100) [AS65002i]
\tvia 192.168.254.1 on up0
                     unicast [romana_up2 00:41:09.300] (100) [AS65002i]
\tvia 192.168.253.1 on up1
10.112.0.0/17        blackhole [romana_aggregates 00:41:07.503] * (200)
10.112.0.5/32        unicast [romana_m1 00:41:09.100] * (100) [AS65101i]
\tvia 192.168.1.11 on rack0
";

    #[test]
    fn sessions_and_routes_are_read() {
        let p = protocols(PROTOCOLS);
        assert_eq!(p.len(), 6);
        assert_eq!(
            p[3],
            Protocol {
                name: "romana_up1".into(),
                proto: "BGP".into(),
                state: "up".into(),
                info: "Established".into()
            }
        );
        assert_eq!(p[5].info, "Established");
        assert_eq!(bgp_sessions(&p), (2, 3));
        let r = routes(ROUTES);
        assert_eq!(r.len(), 4);
        assert_eq!(r["10.112.128.0/17"], ["romana_up1", "romana_up2"]);
        assert_eq!(count_from(&r, "romana_m"), 2);
        assert_eq!(count_from(&r, "romana_up"), 1);
        assert_eq!(per_endpoint(&r), 1);
    }
}
