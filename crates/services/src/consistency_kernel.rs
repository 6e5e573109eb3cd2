//! The consistency check's kernel view, pure: what each host's agent last reported about its
//! kernel (routes against the route manager's set, our nftables table against its last
//! transaction, forwarding, the gateway, the fast path; `romana_agent::diagnose`) as
//! disagreements, one per host and kind of drift, and hosts whose report is too old. The time is
//! an argument; `consistency_reports.rs` reads the reports.

use crate::consistency::{self, Disagreement, Graces, Kind, Picture, Sightings};

/// A report older than this (the agent refreshes it at least every
/// `consistency_reports::REFRESH_MS` while it heartbeats) means the agent stopped reporting.
pub const STALE_MS: u64 = 60_000;

/// What to do about one kind of drift the agent reports.
fn action(kind: &str, host: &str) -> String {
    let doctor = format!("romana doctor {host} (on that host) shows each problem");
    match kind {
        "forwarding-off" => {
            format!("turn IP forwarding on on {host} (sysctl -w net.ipv4.ip_forward=1); {doctor}")
        }
        "route-missing" | "route-wrong" | "route-extra" | "gateway" => {
            format!(
                "the agent on {host} repairs routes on its next pass; if this stays, see its log; {doctor}"
            )
        }
        "table-missing" | "table-differs" => {
            format!("something else writes nftables on {host} (nft monitor); the agent repairs it; {doctor}")
        }
        "romanad-silent" | "credentials" => {
            format!("check that {host} reaches romanad with valid credentials; {doctor}")
        }
        _ => doctor,
    }
}

/// Every disagreement: `consistency::check`'s and the hosts' reports', sorted by kind and
/// subject (what `GET /check` and the gauges show).
pub fn check_all(p: &Picture, seen: &Sightings, now: u64, g: Graces) -> Vec<Disagreement> {
    let mut out = consistency::check(p, seen, now, g);
    out.extend(check(p, now));
    out.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
    out
}

/// Disagreements from the hosts' reports at `now`: drift for each kind a fresh report counts,
/// and a stale report for a host IPAM knows that has not reported for `STALE_MS`.
pub fn check(p: &Picture, now: u64) -> Vec<Disagreement> {
    let mut out = Vec::new();
    for (host, r) in p.reports.iter().filter(|(h, _)| p.hosts.contains(*h)) {
        let age = now.saturating_sub(r.at_ms);
        if age >= STALE_MS {
            out.push(Disagreement {
                kind: Kind::StaleReport,
                subject: host.clone(),
                ip: String::new(),
                host: host.clone(),
                detail: format!("the agent on {host} last reported {} s ago", age / 1000),
                action: format!(
                    "check that romana-agent runs on {host} and reaches romanad (romana doctor {host})"
                ),
            });
            continue;
        }
        for (kind, n) in r.report.counts.iter().filter(|(_, n)| **n > 0) {
            let examples: Vec<&str> = r
                .report
                .details
                .iter()
                .filter_map(|d| d.strip_prefix(kind.as_str()).and_then(|d| d.strip_prefix(": ")))
                .collect();
            let detail = if examples.is_empty() {
                format!("{host}: {n} {kind}")
            } else {
                format!("{host}: {n} {kind} ({})", examples.join("; "))
            };
            out.push(Disagreement {
                kind: Kind::KernelDrift,
                subject: format!("{host}/{kind}"),
                ip: String::new(),
                host: host.clone(),
                detail,
                action: action(kind, host),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use romana_api::diagnose::{HostReport, StoredReport};

    use super::*;

    /// A host's report: (host, stamped at, counts per kind, details).
    type Case<'a> = (&'a str, u64, &'a [(&'a str, u64)], &'a [&'a str]);

    fn picture(reports: &[Case]) -> Picture {
        let mut p =
            Picture { hosts: ["h1", "h2"].iter().map(|h| h.to_string()).collect(), ..Picture::default() };
        for (host, at_ms, counts, details) in reports {
            let report = HostReport {
                counts: counts.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
                details: details.iter().map(|d| d.to_string()).collect(),
                agent_ms: 0,
            };
            p.reports.insert(host.to_string(), StoredReport { report, at_ms: *at_ms });
        }
        p
    }

    fn check_case(p: &Picture, now: u64, want: &[(Kind, &str, &str)]) {
        let got: Vec<(Kind, String, String)> =
            check(p, now).into_iter().map(|d| (d.kind, d.subject, d.detail)).collect();
        let want: Vec<(Kind, String, String)> =
            want.iter().map(|(k, s, d)| (*k, s.to_string(), d.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn reports_become_drift_staleness_or_nothing() {
        check_case(&picture(&[("h1", 1_000, &[], &[])]), 2_000, &[]);
        check_case(
            &picture(&[(
                "h1",
                1_000,
                &[("route-missing", 2), ("table-differs", 1)],
                &["route-missing: route 10.1.0.0/24 via 192.168.1.12 is missing"],
            )]),
            2_000,
            &[
                (
                    Kind::KernelDrift,
                    "h1/route-missing",
                    "h1: 2 route-missing (route 10.1.0.0/24 via 192.168.1.12 is missing)",
                ),
                (Kind::KernelDrift, "h1/table-differs", "h1: 1 table-differs"),
            ],
        );
        check_case(
            &picture(&[("h2", 1_000, &[("route-missing", 2)], &[])]),
            1_000 + STALE_MS,
            &[(Kind::StaleReport, "h2", "the agent on h2 last reported 60 s ago")],
        );
        // A host IPAM no longer knows is not judged.
        check_case(&picture(&[("gone", 1_000, &[("gateway", 1)], &[])]), 2_000, &[]);
    }
}
