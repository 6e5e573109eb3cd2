//! The Kubernetes API calls the controller makes, as `--print-permissions` prints them: the
//! deploy test checks the ClusterRole against this list, and the integration test checks every
//! request the test API server saw against it.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// `cluster`: across all namespaces (or a cluster-scoped resource); `namespace`: only in the
    /// Lease's namespace (`--lease-namespace`).
    pub scope: &'static str,
}

/// Watchers list then watch (relisting after a gap); refused policies and Services' VIPs get
/// Events; a Service annotated `romana.io/vip` gets its outcome patched on (the annotation
/// `romana.io/vip-status`, and `status.loadBalancer.ingress` through the status subresource);
/// leader election reads, creates and replaces its Lease.
pub const PERMISSIONS: &[Permission] = &[
    Permission { api_group: "", resource: "namespaces", verbs: &["list", "watch"], scope: "cluster" },
    Permission { api_group: "", resource: "pods", verbs: &["list", "watch"], scope: "cluster" },
    Permission { api_group: "", resource: "nodes", verbs: &["list", "watch"], scope: "cluster" },
    Permission {
        api_group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["list", "watch"],
        scope: "cluster",
    },
    Permission { api_group: "", resource: "services", verbs: &["list", "watch", "patch"], scope: "cluster" },
    Permission { api_group: "", resource: "services/status", verbs: &["patch"], scope: "cluster" },
    Permission { api_group: "", resource: "events", verbs: &["create"], scope: "cluster" },
    Permission {
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: "namespace",
    },
];

/// Whether a request (API group, resource, verb) is covered.
pub fn covers(group: &str, resource: &str, verb: &str) -> bool {
    PERMISSIONS.iter().any(|p| p.api_group == group && p.resource == resource && p.verbs.contains(&verb))
}

pub fn json() -> String {
    serde_json::to_string_pretty(PERMISSIONS).expect("permissions serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_exactly_the_listed_calls() {
        for (g, r, v, want) in [
            ("", "pods", "watch", true),
            ("", "pods", "list", true),
            ("", "pods", "get", false),
            ("", "pods", "delete", false),
            ("networking.k8s.io", "networkpolicies", "watch", true),
            ("", "networkpolicies", "watch", false),
            ("coordination.k8s.io", "leases", "update", true),
            ("coordination.k8s.io", "leases", "delete", false),
            ("", "events", "create", true),
            ("", "secrets", "get", false),
            ("", "services", "patch", true),
            ("", "services", "update", false),
            ("", "services/status", "patch", true),
            ("", "services/status", "update", false),
        ] {
            assert_eq!(covers(g, r, v), want, "{g}/{r} {v}");
        }
        let v: serde_json::Value = serde_json::from_str(&json()).expect("valid JSON");
        assert_eq!(v[0]["apiGroup"], "");
        assert_eq!(v[7]["scope"], "namespace");
    }
}
