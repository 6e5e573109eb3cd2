//! Server-side defaulting and name validation the real API server applies to the types served
//! here, limited to fields controllers read (documented in the crate's README section). Pure.

use crate::resources::ResourceType;
use crate::status::ApiError;
use serde_json::{Value, json};

/// Applies defaults on create and update, as the real server's defaulting functions do:
/// - Namespace: label `kubernetes.io/metadata.name` = name, `spec.finalizers: [kubernetes]`,
///   `status.phase: Active`;
/// - Pod: container port `protocol: TCP`, `status.phase: Pending` when there is no status;
/// - NetworkPolicy: `policyTypes` = `[Ingress]` plus `Egress` when `spec.egress` is non-empty,
///   port `protocol: TCP`.
pub fn apply(rt: &ResourceType, obj: &mut Value) {
    match rt.kind {
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if obj["spec"]["finalizers"].is_null() {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            if obj["status"]["phase"].is_null() {
                obj["status"]["phase"] = json!("Active");
            }
        }
        "Pod" => {
            for list in ["containers", "initContainers"] {
                // `get_mut`, not indexing: IndexMut would insert a null for an absent field.
                if let Some(cs) =
                    obj.get_mut("spec").and_then(|s| s.get_mut(list)).and_then(Value::as_array_mut)
                {
                    for c in cs {
                        default_protocols(c.get_mut("ports"));
                    }
                }
            }
            if obj["status"].is_null() {
                obj["status"] = json!({"phase": "Pending"});
            }
        }
        "NetworkPolicy" => {
            let spec = &mut obj["spec"];
            if spec["policyTypes"].as_array().is_none_or(Vec::is_empty) {
                let egress = spec["egress"].as_array().is_some_and(|e| !e.is_empty());
                spec["policyTypes"] = if egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) };
            }
            for dir in ["ingress", "egress"] {
                if let Some(rules) = spec.get_mut(dir).and_then(Value::as_array_mut) {
                    for r in rules {
                        default_protocols(r.get_mut("ports"));
                    }
                }
            }
        }
        _ => {}
    }
}

fn default_protocols(ports: Option<&mut Value>) {
    if let Some(ps) = ports.and_then(Value::as_array_mut) {
        for p in ps {
            if p.is_object() && p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
        }
    }
}

/// Checks `metadata.name`: an RFC 1123 label for namespaces, an RFC 1123 subdomain otherwise.
pub fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let label = rt.kind == "Namespace";
    let max = if label { 63 } else { 253 };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.');
    let edges = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !name.is_empty()
        && name.len() <= max
        && name.chars().all(allowed)
        && name.starts_with(edges)
        && name.ends_with(edges);
    if ok {
        return Ok(());
    }
    let what = if label { "RFC 1123 label" } else { "RFC 1123 subdomain" };
    Err(ApiError::invalid(
        rt.kind,
        name,
        format!(
            "metadata.name: Invalid value: {name:?}: a lowercase {what} must consist of lower case alphanumeric characters, '-'{} and must start and end with an alphanumeric character (at most {max} characters)",
            if label { "" } else { " or '.'" }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{RESOURCES, find};

    fn rt(resource: &str) -> &'static ResourceType {
        let group = if resource == "networkpolicies" { "networking.k8s.io" } else { "" };
        &RESOURCES[find(group, "v1", resource).expect("served")]
    }

    fn check(resource: &str, mut obj: Value, expect: Value) {
        apply(rt(resource), &mut obj);
        assert_eq!(obj, expect);
    }

    #[test]
    fn defaults() {
        check(
            "networkpolicies",
            json!({"spec": {"egress": [{"ports": [{"port": 80}]}]}}),
            json!({"spec": {"egress": [{"ports": [{"port": 80, "protocol": "TCP"}]}], "policyTypes": ["Ingress", "Egress"]}}),
        );
        check(
            "networkpolicies",
            json!({"spec": {"ingress": [{}], "egress": [], "policyTypes": ["Egress"]}}),
            json!({"spec": {"ingress": [{}], "egress": [], "policyTypes": ["Egress"]}}),
        );
        check("networkpolicies", json!({"spec": {}}), json!({"spec": {"policyTypes": ["Ingress"]}}));
        check(
            "networkpolicies",
            json!({"spec": {"ingress": [{"from": []}]}}),
            json!({"spec": {"ingress": [{"from": []}], "policyTypes": ["Ingress"]}}),
        );
        check(
            "namespaces",
            json!({"metadata": {"name": "a"}}),
            json!({"metadata": {"name": "a", "labels": {"kubernetes.io/metadata.name": "a"}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
        check(
            "pods",
            json!({"spec": {"containers": [{"ports": [{"containerPort": 80, "name": "http"}]}]}}),
            json!({"spec": {"containers": [{"ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]}]}, "status": {"phase": "Pending"}}),
        );
    }

    #[test]
    fn names() {
        assert!(validate_name(rt("pods"), "a.b-c").is_ok());
        assert!(validate_name(rt("namespaces"), "a.b").is_err());
        assert!(validate_name(rt("pods"), "A").is_err());
        assert!(validate_name(rt("pods"), "-a").is_err());
        assert!(validate_name(rt("pods"), "").is_err());
        assert_eq!(validate_name(rt("pods"), "x_y").map_err(|e| e.code), Err(422));
    }
}
