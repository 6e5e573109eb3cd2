//! What a host says about itself: the agent's self-diagnosis (`GET /v1/diagnose` on its socket),
//! each finding with what is wrong and what to do, and the compact report its heartbeat carries
//! to romanad (`PUT /hosts/{host}/alive`), which `GET /check` turns into disagreements.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One thing wrong on a host. `kind` is one of the agent's kinds (`route-missing`,
/// `table-differs`, ...; docs/operations.md lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingInfo {
    pub kind: String,
    /// What is wrong, with the data (the route, the sysctl, the chain).
    pub what: String,
    /// What to do about it.
    pub fix: String,
}

/// `GET /v1/diagnose`: the agent's view of its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub host: String,
    /// Every finding; empty when the host is as the agent wants it.
    pub findings: Vec<FindingInfo>,
    /// Findings per kind.
    pub counts: BTreeMap<String, u64>,
    /// The revision of the route set the agent last read (0: none yet).
    pub routes_revision: i64,
    /// The agent's clock when it diagnosed, in milliseconds since the epoch.
    pub at_ms: u64,
}

/// What a heartbeat carries: findings per kind and the first few findings' text, so that romanad
/// can say what drifted without asking the host. An empty body (older agents) is no report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    pub counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub details: Vec<String>,
    /// The agent's clock, in milliseconds since the epoch (romanad compares it with its own).
    #[serde(default)]
    pub agent_ms: u64,
}

/// A report as romanad keeps it (`host-reports/<host>`): the agent's, stamped with romanad's
/// clock when it was last written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    #[serde(flatten)]
    pub report: HostReport,
    pub at_ms: u64,
}

/// How many details a heartbeat carries at most (the counts say how many there are).
pub const REPORT_DETAILS: usize = 5;
