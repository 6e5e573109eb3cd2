//! The agent's self-diagnosis, pure: what the agent holds as desired (the route manager's set
//! compiled, the gateway, the table as its last transaction left it, the fast path it wants,
//! when romanad last answered) against what the kernel shows (forwarding sysctls, marked links,
//! addresses and routes of our protocol, our nftables table), as findings that each say what is
//! wrong and what to do. No I/O and no clock: the adapter (`diagnose_host.rs` in the binary)
//! reads the kernel and passes ages in milliseconds.

use std::collections::BTreeMap;

use romana_api::diagnose::{FindingInfo, HostReport, REPORT_DETAILS};
use romana_dataplane::{HostState, Step, diff};
use romana_policy::nftplan::Observed;

use crate::machine::routes::{gateway_link, without_endpoints};

/// What kind of problem; the wire's `kind` and romanad's per-kind counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A forwarding sysctl is off (or cannot be read): pods cannot reach other hosts.
    Forwarding,
    /// A route of the route manager's set is not in the kernel.
    RouteMissing,
    /// A route is in the kernel with another next hop than the set's.
    RouteWrong,
    /// A route of our protocol that the set does not hold.
    RouteExtra,
    /// The gateway link or one of its addresses is missing.
    Gateway,
    /// Our nftables table is not in the kernel.
    TableMissing,
    /// Our table differs from what the agent's last transaction left.
    TableDiffers,
    /// The firewall has not read its inputs yet, so no table is enforced.
    FirewallNotLoaded,
    /// The fast path is off or an uplink could not take it.
    FastPath,
    /// romanad has not answered within the contact budget.
    RomanadSilent,
    /// A route change seen on the watch is still not in the kernel.
    WatchLag,
    /// romanad refuses the agent's credentials.
    Credentials,
    /// The kernel could not be read.
    Unreadable,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Forwarding => "forwarding-off",
            Kind::RouteMissing => "route-missing",
            Kind::RouteWrong => "route-wrong",
            Kind::RouteExtra => "route-extra",
            Kind::Gateway => "gateway",
            Kind::TableMissing => "table-missing",
            Kind::TableDiffers => "table-differs",
            Kind::FirewallNotLoaded => "firewall-not-loaded",
            Kind::FastPath => "fast-path",
            Kind::RomanadSilent => "romanad-silent",
            Kind::WatchLag => "watch-lag",
            Kind::Credentials => "credentials",
            Kind::Unreadable => "unreadable",
        }
    }
}

/// One problem: what is wrong, with the data, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub what: String,
    pub fix: String,
}

impl Finding {
    fn new(kind: Kind, what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { kind, what: what.into(), fix: fix.into() }
    }

    pub fn info(&self) -> FindingInfo {
        FindingInfo { kind: self.kind.as_str().to_owned(), what: self.what.clone(), fix: self.fix.clone() }
    }
}

/// The fast path as the agent runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastPath {
    /// Why its map is empty (other tables' hooks it would bypass); empty: it delivers.
    pub blockers: Vec<String>,
}

/// What the agent wants and knows about itself.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub host: String,
    /// The kernel state compiled from the route manager's set (`None`: not read yet, or it
    /// does not compile).
    pub desired: Option<HostState>,
    /// Whether policies are enforced here (`--no-policy`: no table expected).
    pub policy: bool,
    /// The firewall has read its inputs (only then is a table enforced).
    pub firewall_loaded: bool,
    /// Our table as the last transaction left it (`None`: unknown, the next pass reads it).
    pub known_table: Option<Observed>,
    /// The fast path (`None`: off by flag or not loadable here).
    pub fast_path: Option<FastPath>,
    /// How long ago romanad last answered (`None`: never), and how long it may be silent.
    pub contact_age_ms: Option<u64>,
    pub contact_budget_ms: u64,
    /// How long a route change seen on the watch has waited for a converge (`None`: none waits).
    pub pending_change_ms: Option<u64>,
    /// Heartbeats refused with 401 in a row (a renewal between them failed too).
    pub auth_refusals: u64,
}

/// What the kernel showed.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Each forwarding sysctl with its value (`Err`: it could not be read).
    pub forwarding: Vec<(String, Result<String, String>)>,
    /// Marked links, addresses and our routes (`Err`: netlink failed).
    pub kernel: Result<HostState, String>,
    /// Our table (`Ok(None)`: absent); `None` when not read (no policy).
    pub table: Option<Result<Option<Observed>, String>>,
}

/// How long a seen route change may wait before it counts as lag (a converge takes one pass).
pub const LAG_MS: u64 = 5_000;

/// Every finding, in a stable order (by kind, then text). A healthy host gives none.
pub fn diagnose(e: &Expect, s: &Seen) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, v) in &s.forwarding {
        match v {
            Ok(v) if v.trim() == "1" => {}
            Ok(v) => out.push(Finding::new(
                Kind::Forwarding,
                format!("{key} is {} on {}", v.trim(), e.host),
                format!(
                    "turn it on: sysctl -w {}=1 (the agent sets it only when it starts)",
                    sysctl_name(key)
                ),
            )),
            Err(err) => out.push(Finding::new(
                Kind::Forwarding,
                format!("cannot read {key}: {err}"),
                "check that the agent runs as root in the host's network namespace",
            )),
        }
    }
    match (&s.kernel, &e.desired) {
        (Err(err), _) => out.push(Finding::new(
            Kind::Unreadable,
            format!("cannot read links and routes: {err}"),
            "check the agent's privileges (CAP_NET_ADMIN) and its --netns",
        )),
        (Ok(_), None) => {}
        (Ok(observed), Some(desired)) => routes(&without_endpoints(observed.clone()), desired, &mut out),
    }
    table(e, s, &mut out);
    if let Some(fp) = &e.fast_path {
        for b in &fp.blockers {
            out.push(Finding::new(
                Kind::FastPath,
                format!("the fast path delivers nothing: {b}"),
                "remove that table's hooks, or run the agent with --no-fast-path (docs/fastpath.md)",
            ));
        }
        // An uplink without hand-off (a physical NIC, a shaped link) is normal, not a problem:
        // packets then leave through the kernel's transmit path.
    }
    match e.contact_age_ms {
        Some(age) if age <= e.contact_budget_ms => {}
        Some(age) => out.push(Finding::new(
            Kind::RomanadSilent,
            format!("romanad last answered {} s ago (budget {} s)", age / 1000, e.contact_budget_ms / 1000),
            "check that romanad runs and is reachable from this host (the agent's log says which endpoint failed)",
        )),
        None => out.push(Finding::new(
            Kind::RomanadSilent,
            "romanad has not answered the agent yet",
            "check the endpoint in the agent's credentials and that romanad runs",
        )),
    }
    if let Some(ms) = e.pending_change_ms.filter(|ms| *ms > LAG_MS) {
        out.push(Finding::new(
            Kind::WatchLag,
            format!("a route change seen on the watch {} s ago is not in the kernel yet", ms / 1000),
            "see the agent's log for reconcile errors (romana_agent_reconcile_errors_total)",
        ));
    }
    if e.auth_refusals >= 3 {
        out.push(Finding::new(
            Kind::Credentials,
            format!("romanad refused the agent's credentials {} times in a row", e.auth_refusals),
            "issue new credentials (romana user create HOST --role service --credentials-out FILE) and restart the agent",
        ));
    }
    out.sort_by(|a, b| (a.kind, &a.what).cmp(&(b.kind, &b.what)));
    out
}

/// `/proc/sys/net/ipv4/ip_forward` as sysctl names it.
fn sysctl_name(path: &str) -> String {
    path.trim_start_matches("/proc/sys/").replace('/', ".")
}

fn routes(observed: &HostState, desired: &HostState, out: &mut Vec<Finding>) {
    let gw = gateway_link();
    let fix = "the agent re-applies the route set on its next pass; if this stays, see its log";
    for step in diff(observed, desired).steps {
        let f = match step {
            Step::AddLink { name, .. } => Finding::new(
                Kind::Gateway,
                format!("link {name} is missing"),
                format!("restart the agent ({fix})"),
            ),
            Step::AddAddress { link, addr } => {
                Finding::new(Kind::Gateway, format!("address {addr} is missing on {link}"), fix)
            }
            Step::DelAddress { link, addr } if link == gw => Finding::new(
                Kind::Gateway,
                format!("{link} holds {addr}, which is not a gateway address"),
                fix,
            ),
            Step::AddRoute { dest, next } => {
                Finding::new(Kind::RouteMissing, format!("route {dest} {next} is missing"), fix)
            }
            Step::ReplaceRoute { dest, from, to } => {
                Finding::new(Kind::RouteWrong, format!("route {dest} is {from}, the set says {to}"), fix)
            }
            Step::DelRoute { dest } => Finding::new(
                Kind::RouteExtra,
                format!("route {dest} (protocol 77) is not in the route manager's set"),
                fix,
            ),
            // Endpoint links are the CNI path's (`without_endpoints` took them out).
            Step::MissingEndpoint { .. } | Step::DelLink { .. } | Step::DelAddress { .. } => continue,
        };
        out.push(f);
    }
}

fn table(e: &Expect, s: &Seen, out: &mut Vec<Finding>) {
    if !e.policy {
        return;
    }
    if !e.firewall_loaded {
        out.push(Finding::new(
            Kind::FirewallNotLoaded,
            "the firewall has not read tenants and policies from romanad yet: nothing is enforced",
            "check that romanad is reachable; the agent retries by itself",
        ));
        return;
    }
    let fix = "the agent's repair check restores it within --policy-repair-ms; if it comes back, find what \
               else writes nftables here (nft monitor)";
    match &s.table {
        None => {}
        Some(Err(err)) => out.push(Finding::new(
            Kind::Unreadable,
            format!("cannot list table inet romana: {err}"),
            "check that nft is installed and the agent runs as root",
        )),
        Some(Ok(None)) => out.push(Finding::new(Kind::TableMissing, "table inet romana is missing", fix)),
        Some(Ok(Some(kernel))) => {
            if let Some(known) = &e.known_table {
                for d in table_differences(known, kernel) {
                    out.push(Finding::new(Kind::TableDiffers, d, fix));
                }
            }
        }
    }
}

/// How the kernel's table differs from the known one, one line per chain or set.
pub fn table_differences(known: &Observed, kernel: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    for (name, c) in &known.chains {
        match kernel.chains.get(name) {
            None => out.push(format!("chain {name} is missing")),
            Some(k) if k.base != c.base => out.push(format!("chain {name} is hooked differently")),
            Some(k) if k.rules != c.rules => {
                let missing = c.rules.iter().filter(|r| !k.rules.contains(r)).count();
                let extra = k.rules.iter().filter(|r| !c.rules.contains(r)).count();
                out.push(format!(
                    "chain {name} has {} rules, the last transaction left {} ({missing} missing, {extra} not ours)",
                    k.rules.len(),
                    c.rules.len()
                ));
            }
            Some(_) => {}
        }
    }
    for name in kernel.chains.keys().filter(|n| !known.chains.contains_key(*n)) {
        out.push(format!("chain {name} is not the agent's"));
    }
    for (name, set) in &known.sets {
        match kernel.sets.get(name) {
            None => out.push(format!("set {name} is missing")),
            Some(k) if k.elements != set.elements => out.push(format!(
                "set {name} has {} elements, the last transaction left {}",
                k.elements.len(),
                set.elements.len()
            )),
            Some(_) => {}
        }
    }
    for name in kernel.sets.keys().filter(|n| !known.sets.contains_key(*n)) {
        out.push(format!("set {name} is not the agent's"));
    }
    out
}

/// Findings per kind.
pub fn counts(found: &[Finding]) -> BTreeMap<String, u64> {
    let mut c = BTreeMap::new();
    for f in found {
        *c.entry(f.kind.as_str().to_owned()).or_default() += 1;
    }
    c
}

/// The heartbeat's report: counts and the first few findings.
pub fn report(found: &[Finding], agent_ms: u64) -> HostReport {
    HostReport {
        counts: counts(found),
        details: found
            .iter()
            .take(REPORT_DETAILS)
            .map(|f| format!("{}: {}", f.kind.as_str(), f.what))
            .collect(),
        agent_ms,
    }
}

#[cfg(test)]
#[path = "diagnose_tests.rs"]
mod tests;
