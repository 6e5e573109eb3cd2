//! The resource types this server serves and the discovery documents built from them; knows
//! nothing of storage or HTTP.

use serde_json::{Value, json};

/// One served resource type, as discovery describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; "" for the core (legacy) group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, lower-case: the path segment (`pods`).
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether the real server maintains `metadata.generation` for this type (in Kubernetes
    /// 1.32: NetworkPolicy yes; Pod, Namespace, Node, Lease and Event no).
    pub generation: bool,
    /// Field selector labels the real server accepts beyond `metadata.name` and
    /// `metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Whether `status` is a subresource (`.../{name}/status`): writes to the object keep the
    /// stored status, writes to `/status` change only the status.
    pub status_subresource: bool,
}

/// Verbs every served resource supports (a `status` subresource has get, update and patch).
pub const VERBS: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Every resource type served (`services/status` is served as the Services' subresource). Core `events` and `events.k8s.io` `events` are separate stores
/// here (the real server stores both in one).
pub const RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        resource: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        generation: false,
        field_labels: &["status.phase"],
        status_subresource: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        resource: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        generation: false,
        field_labels: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        status_subresource: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        resource: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        generation: false,
        field_labels: &["spec.unschedulable"],
        status_subresource: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        resource: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        generation: false,
        field_labels: &[],
        status_subresource: true,
    },
    ResourceType {
        group: "",
        version: "v1",
        resource: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        generation: false,
        field_labels: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        status_subresource: false,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        resource: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        generation: true,
        field_labels: &[],
        status_subresource: false,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        resource: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        generation: false,
        field_labels: &[],
        status_subresource: false,
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        resource: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        generation: false,
        field_labels: &["regarding.kind", "regarding.namespace", "regarding.name", "reason", "type"],
        status_subresource: false,
    },
];

/// Index of the `namespaces` type in `RESOURCES`.
pub const NAMESPACES: usize = 0;

impl ResourceType {
    /// `v1` or `group/version`: the objects' `apiVersion`.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// The list kind (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether `label` may be used in a field selector for this type.
    pub fn accepts_field(&self, label: &str) -> bool {
        label == "metadata.name"
            || (self.namespaced && label == "metadata.namespace")
            || self.field_labels.contains(&label)
    }
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// Finds a served type by group, version and plural name.
pub fn find(group: &str, version: &str, resource: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.group == group && r.version == version && r.resource == resource)
}

/// Finds a served type by `apiVersion` (`v1`, `networking.k8s.io/v1`) and plural name.
pub fn find_by_api(api_version: &str, resource: &str) -> Option<usize> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    find(group, version, resource)
}

/// The API groups (other than core), each with its one version.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// `GET /version`.
pub fn version_doc() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-romana-testserver",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "none", "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

/// `GET /api`: APIVersions.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": group_version(group, version), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `GET /apis`: APIGroupList.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(|(g, v)| group_doc(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`: APIGroup, or None when the group is not served.
pub fn group(group: &str) -> Option<Value> {
    let (g, v) = groups().into_iter().find(|(g, _)| *g == group)?;
    let mut doc = group_doc(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `GET /api/v1` or `/apis/{group}/{version}`: APIResourceList, or None when not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            let mut doc = json!({
                "name": r.resource, "singularName": r.singular, "namespaced": r.namespaced,
                "kind": r.kind, "verbs": VERBS,
            });
            if !r.short_names.is_empty() {
                doc["shortNames"] = json!(r.short_names);
            }
            if r.resource == "pods" || r.resource == "services" {
                doc["categories"] = json!(["all"]);
            }
            doc
        })
        .collect();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version && r.status_subresource) {
        resources.push(json!({
            "name": format!("{}/status", r.resource), "singularName": "", "namespaced": r.namespaced,
            "kind": r.kind, "verbs": ["get", "patch", "update"],
        }));
    }
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version(group, version), "resources": resources
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(find("", "v1", "namespaces"), Some(NAMESPACES));
        assert_eq!(
            find_by_api("networking.k8s.io/v1", "networkpolicies").map(|i| RESOURCES[i].kind),
            Some("NetworkPolicy")
        );
        assert_eq!(find_by_api("v1", "networkpolicies"), None);
        assert!(RESOURCES[find("", "v1", "pods").expect("pods")].accepts_field("spec.nodeName"));
        assert!(!RESOURCES[NAMESPACES].accepts_field("metadata.namespace"));
        assert!(resource_list("apps", "v1").is_none());
        assert_eq!(group_list()["groups"].as_array().map(Vec::len), Some(3));
    }
}
