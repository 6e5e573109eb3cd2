//! `romana doctor`'s judgement, pure: the facts the runner (`doctor.rs`) gathered about one host
//! (its forwarding sysctl, the routes of our protocol and the gateway link in its namespace, the
//! route manager's set for it, the agent's self-diagnosis, BIRD's sessions, romanad's liveness,
//! clock, the agent's credentials and the certificates' expiry) in; each problem with what to do
//! out (a warning when the host works but will not for long). No I/O.

use std::collections::BTreeMap;

use romana_api::diagnose::Diagnosis;
use romana_api::rest::{RouteInfo, RouteKind};
use serde::Serialize;

use crate::bird_status::Protocol;
use crate::doctor_certs::{self, CertSource};

/// One route of our protocol in the kernel: its destination (always with a length) and next hop
/// (`None`: a throw route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub dest: String,
    pub via: Option<String>,
}

/// The gateway link as `ip link` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
}

/// Everything the doctor looked at; `Err` carries why a fact could not be had.
#[derive(Debug, Clone)]
pub struct Facts {
    pub host: String,
    pub forwarding: Result<String, String>,
    /// The route manager's set for the host (`GET /routes/{host}`).
    pub route_set: Result<Vec<RouteInfo>, String>,
    /// Routes of protocol 77 with a next hop or of type throw (endpoint routes left out).
    pub kernel_routes: Result<Vec<KernelRoute>, String>,
    /// `romana-gw` (`Ok(None)`: missing).
    pub gateway: Result<Option<Link>, String>,
    /// Whether `table inet romana` exists (`None`: policy off, not expected).
    pub table: Option<Result<bool, String>>,
    /// The agent's `GET /v1/diagnose`.
    pub agent: Result<Diagnosis, String>,
    /// BIRD's protocols, where the host announces over BGP (`None`: static routing).
    pub bird: Option<Result<Vec<Protocol>, String>>,
    /// romanad's liveness for the host: `Some(false)` when monitored and lapsed.
    pub alive: Option<bool>,
    /// romanad's clock minus this host's, in milliseconds (`None`: no Date header).
    pub skew_ms: Option<i64>,
    /// Logging in with the agent's credentials (`Ok`: the access token's lifetime in seconds).
    pub credentials: Option<Result<u64, String>>,
    /// The certificates the host holds (files given, the CA in the agent's credentials).
    pub certificates: Vec<CertSource>,
    /// This host's clock, seconds since the epoch (certificates are judged against it).
    pub now_unix: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something is broken now: the doctor fails.
    Error,
    /// Works, but will not for long (a certificate near its end): shown, the doctor passes.
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: String,
    pub what: String,
    pub fix: String,
    pub severity: Severity,
}

fn p(kind: &str, what: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem { kind: kind.to_owned(), what: what.into(), fix: fix.into(), severity: Severity::Error }
}

/// More than this between romanad's clock and the host's is reported (the Date header has a
/// resolution of one second; tokens and leases tolerate a few).
pub const SKEW_MS: i64 = 2_500;

/// Agent findings the doctor checks itself against romanad's current set (its own lines win).
const OWN_KINDS: [&str; 4] = ["forwarding-off", "route-missing", "route-wrong", "route-extra"];

/// Every problem, in a stable order (by kind, then text); a healthy host gives none.
pub fn check(f: &Facts) -> Vec<Problem> {
    let h = &f.host;
    let mut out = Vec::new();
    match &f.forwarding {
        Ok(v) if v.trim() == "1" => {}
        Ok(v) => out.push(p(
            "forwarding-off",
            format!("net.ipv4.ip_forward is {} on {h}: pods cannot reach other hosts", v.trim()),
            "sysctl -w net.ipv4.ip_forward=1 (and set it in /etc/sysctl.d so that it survives a reboot)",
        )),
        Err(e) => {
            out.push(p("forwarding-off", format!("cannot read net.ipv4.ip_forward: {e}"), "run as root"))
        }
    }
    routes(f, &mut out);
    match &f.gateway {
        Ok(Some(l)) if l.up => {}
        Ok(Some(_)) => out.push(p(
            "gateway",
            "link romana-gw is down: pods lose their gateway",
            "ip link set romana-gw up",
        )),
        Ok(None) => out.push(p(
            "gateway",
            "link romana-gw is missing",
            "restart the agent (the agent re-applies the route set on its next pass; if this stays, see its log)",
        )),
        Err(e) => out.push(p("gateway", format!("cannot read link romana-gw: {e}"), "run as root")),
    }
    let agent_ok = f.agent.is_ok();
    match &f.table {
        Some(Ok(false)) if !agent_ok => out.push(p(
            "table-missing",
            "table inet romana is missing: nothing enforces tenant isolation or policies",
            "start the agent; it writes the table when it has read its inputs",
        )),
        Some(Err(e)) => {
            out.push(p("table-missing", format!("cannot list table inet romana: {e}"), "run as root"))
        }
        _ => {}
    }
    match &f.agent {
        Ok(d) => {
            for x in d.findings.iter().filter(|x| !OWN_KINDS.contains(&x.kind.as_str())) {
                out.push(p(&x.kind, &x.what, &x.fix));
            }
        }
        Err(e) => out.push(p(
            "agent-down",
            format!("the agent does not answer: {e}"),
            format!("start or restart romana-agent on {h} (systemctl status romana-agent, or its log)"),
        )),
    }
    if f.alive == Some(false) {
        out.push(p(
            "host-dead",
            format!("romanad has no heartbeat from {h}: other hosts no longer route to its pods"),
            "start the agent, and check that it reaches romanad",
        ));
    }
    if let Some(bird) = &f.bird {
        bird_problems(bird, &mut out);
    }
    if let Some(s) = f.skew_ms.filter(|s| s.abs() > SKEW_MS) {
        let side = if s > 0 { "ahead of" } else { "behind" };
        out.push(p(
            "clock-skew",
            format!("romanad's clock is {:.1} s {side} {h}'s", s.abs() as f64 / 1000.0),
            "synchronise both clocks (chrony or systemd-timesyncd); tokens and leases depend on them",
        ));
    }
    if let Some(Err(e)) = &f.credentials {
        out.push(p(
            "credentials",
            format!("the agent's credentials do not log in: {e}"),
            format!(
                "issue new ones: romana user create NAME --role service --host {h} --credentials-out FILE"
            ),
        ));
    }
    for src in &f.certificates {
        for (kind, what, fix, warning) in doctor_certs::judge(src, f.now_unix) {
            let severity = if warning { Severity::Warning } else { Severity::Error };
            out.push(Problem { severity, ..p(kind, what, fix) });
        }
    }
    out.sort_by(|a, b| (&a.kind, &a.what).cmp(&(&b.kind, &b.what)));
    out.dedup();
    out
}

/// Kernel routes against the route manager's set: missing, through another next hop, extra.
fn routes(f: &Facts, out: &mut Vec<Problem>) {
    let set = match &f.route_set {
        Ok(s) => s,
        Err(e) => {
            out.push(p("route-set", format!("cannot read the route manager's set: {e}"), "check romanad"));
            return;
        }
    };
    let kernel = match &f.kernel_routes {
        Ok(k) => k,
        Err(e) => {
            out.push(p("route-missing", format!("cannot read the kernel's routes: {e}"), "run as root"));
            return;
        }
    };
    let want: BTreeMap<&str, Option<&str>> = set
        .iter()
        .filter_map(|r| match &r.kind {
            RouteKind::Host { via_ip, .. } => Some((r.dest.as_str(), Some(via_ip.as_str()))),
            RouteKind::Throw => Some((r.dest.as_str(), None)),
            RouteKind::Group { .. } => None,
        })
        .collect();
    let have: BTreeMap<&str, Option<&str>> =
        kernel.iter().map(|r| (r.dest.as_str(), r.via.as_deref())).collect();
    let hop = |v: Option<&str>| v.map_or("throw".to_owned(), |v| format!("via {v}"));
    let fix =
        "the agent restores it on its next pass; if it stays, check the agent (its log, romana doctor again)";
    for (dest, via) in &want {
        match have.get(dest) {
            None => out.push(p("route-missing", format!("route {dest} {} is missing", hop(*via)), fix)),
            Some(k) if k != via => out.push(p(
                "route-wrong",
                format!("route {dest} is {}, the route manager says {}", hop(*k), hop(*via)),
                fix,
            )),
            Some(_) => {}
        }
    }
    for (dest, via) in have.iter().filter(|(d, _)| !want.contains_key(*d)) {
        out.push(p(
            "route-extra",
            format!("route {dest} {} (protocol 77) is not in the route manager's set", hop(*via)),
            fix,
        ));
    }
}

fn bird_problems(bird: &Result<Vec<Protocol>, String>, out: &mut Vec<Problem>) {
    match bird {
        Err(e) => out.push(p(
            "bird",
            format!("BIRD does not answer: {e}"),
            "start BIRD (systemctl start bird); the agent renders its include and reloads it",
        )),
        Ok(list) => {
            let bgp: Vec<&Protocol> = list.iter().filter(|x| x.proto == "BGP").collect();
            if bgp.is_empty() {
                out.push(p(
                    "bird",
                    "BIRD has no BGP session: the host announces nothing",
                    "check that bird.conf includes the agent's --bird-config file",
                ));
            }
            for s in bgp.iter().filter(|x| !(x.state == "up" && x.info.starts_with("Established"))) {
                out.push(p(
                    "bird",
                    format!("BGP session {} is {} ({})", s.name, s.state, s.info),
                    format!(
                        "if it was disabled: birdc enable {n}; else check the router's address and \
                         BIRD's log (birdc show protocols all {n})",
                        n = s.name
                    ),
                ));
            }
        }
    }
}

/// `ip -j route show proto 77`'s routes that the comparison covers: those with a gateway and
/// throw routes (endpoint routes out of a veth have neither). A destination without a length is
/// a host route.
pub fn kernel_routes(json: &serde_json::Value) -> Vec<KernelRoute> {
    let Some(list) = json.as_array() else { return Vec::new() };
    list.iter()
        .filter_map(|r| {
            let dst = r["dst"].as_str()?;
            let dest = match (dst.contains('/'), dst.contains(':')) {
                (true, _) => dst.to_owned(),
                (false, false) => format!("{dst}/32"),
                (false, true) => format!("{dst}/128"),
            };
            match (r["type"].as_str(), r["gateway"].as_str()) {
                (Some("throw"), _) => Some(KernelRoute { dest, via: None }),
                (_, Some(gw)) => Some(KernelRoute { dest, via: Some(gw.to_owned()) }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "doctor_tests.rs"]
mod tests;
