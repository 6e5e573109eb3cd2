//! Server-side defaulting and name validation the real API server applies to the types served
//! here, limited to fields controllers read (documented in the crate's README section). Pure.

use crate::resources::ResourceType;
use crate::status::ApiError;
use serde_json::{Value, json};

/// Applies defaults on create and update, as the real server's defaulting functions do:
/// - Namespace: label `kubernetes.io/metadata.name` = name, `spec.finalizers: [kubernetes]`,
///   `status.phase: Active`;
/// - Pod: container port `protocol: TCP`, `status.phase: Pending` when there is no status;
/// - Service: `crate::services::defaults`;
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
        "Service" => crate::services::defaults(obj),
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

/// Checks `metadata.labels` (string values, valid keys and values) and `metadata.annotations`
/// (string values), as the real server's object-meta validation does (HTTP 422).
pub fn validate_metadata(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let bad = |field: &str, what: String| {
        Err(ApiError::invalid(rt.kind, name, format!("metadata.{field}: {what}")))
    };
    for field in ["labels", "annotations"] {
        let map = &obj["metadata"][field];
        if map.is_null() {
            continue;
        }
        let Some(m) = map.as_object() else {
            return bad(field, format!("Invalid value: {map}: must be a map of strings"));
        };
        for (k, v) in m {
            let Some(v) = v.as_str() else {
                return bad(field, format!("Invalid value: {v}: the value of {k:?} must be a string"));
            };
            if !crate::selector::valid_key(k) {
                return bad(
                    field,
                    format!(
                        "Invalid value: {k:?}: a key must be a name of at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric, with an optional DNS subdomain prefix and '/'"
                    ),
                );
            }
            if field == "labels" && !crate::selector::valid_value(v) {
                return bad(
                    field,
                    format!(
                        "Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)"
                    ),
                );
            }
        }
    }
    Ok(())
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
    fn metadata() {
        let v = |m: Value| validate_metadata(rt("pods"), &json!({"metadata": m})).map_err(|e| e.code);
        assert_eq!(v(json!({"labels": {"app": "web", "example.com/x": "", "a_b.c-d": "A.b_c"}})), Ok(()));
        assert_eq!(v(json!({"annotations": {"note": "any text at all: spaces, (parens)"}})), Ok(()));
        assert_eq!(v(json!({"labels": {"app": "has space"}})), Err(422));
        assert_eq!(v(json!({"labels": {"app": 1}})), Err(422));
        assert_eq!(v(json!({"labels": {"bad key": "x"}})), Err(422));
        assert_eq!(v(json!({"labels": ["x"]})), Err(422));
        assert_eq!(v(json!({"annotations": {"a": true}})), Err(422));
        assert_eq!(v(json!({"labels": {"x": "-starts-with-dash"}})), Err(422));
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
