//! What the real API server does to v1 Services beyond generic objects, limited to what
//! controllers read: defaulting (`type`, `sessionAffinity`, port `protocol` and `targetPort`,
//! `internalTrafficPolicy`, IP families), the cluster IP allocated on create and carried over
//! (immutable) on update, and validation of type and ports (422). Pure: the allocated addresses
//! in use come in as an argument.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::status::ApiError;

/// The cluster IP range (kubeadm's default 10.96.0.0/12; .1 is the `kubernetes` Service's).
const FIRST: u32 = u32::from_be_bytes([10, 96, 0, 10]);
const LAST: u32 = u32::from_be_bytes([10, 111, 255, 254]);

/// Defaults, as the real server's `SetDefaults_Service` and the Service REST strategy apply them.
pub fn defaults(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if spec["type"].as_str().is_none_or(str::is_empty) {
        spec["type"] = json!("ClusterIP");
    }
    let external = spec["type"] == "ExternalName";
    if spec["sessionAffinity"].is_null() && !external {
        spec["sessionAffinity"] = json!("None");
    }
    if spec["internalTrafficPolicy"].is_null() && !external {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() && !external {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if obj["status"].is_null() {
        obj["status"] = json!({ "loadBalancer": {} });
    }
}

/// On create: a cluster IP (the lowest free one) unless the Service is headless (`None`) or an
/// ExternalName, or names one itself (then it must be free).
pub fn allocate(obj: &mut Value, used: &BTreeSet<Ipv4Addr>) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let spec = &mut obj["spec"];
    if spec["type"] == "ExternalName" {
        return Ok(());
    }
    let given = spec["clusterIP"].as_str().unwrap_or("").to_owned();
    let ip = match given.as_str() {
        "None" => return Ok(()),
        "" => (FIRST..=LAST).map(Ipv4Addr::from).find(|a| !used.contains(a)).ok_or_else(|| {
            ApiError::invalid("Service", &name, "spec.clusterIPs: the range is full".into())
        })?,
        s => {
            let a: Ipv4Addr = s.parse().map_err(|_| {
                ApiError::invalid(
                    "Service",
                    &name,
                    format!("spec.clusterIPs[0]: Invalid value: {s:?}: must be a valid IP address"),
                )
            })?;
            if used.contains(&a) {
                return Err(ApiError::invalid(
                    "Service",
                    &name,
                    format!(
                        "spec.clusterIPs: Invalid value: [\"{a}\"]: failed to allocate IP {a}: provided IP is already allocated"
                    ),
                ));
            }
            a
        }
    };
    spec["clusterIP"] = json!(ip.to_string());
    spec["clusterIPs"] = json!([ip.to_string()]);
    spec["ipFamilies"] = json!(["IPv4"]);
    spec["ipFamilyPolicy"] = json!("SingleStack");
    Ok(())
}

/// The cluster IP of a stored Service, if it holds one.
pub fn cluster_ip(obj: &Value) -> Option<Ipv4Addr> {
    obj["spec"]["clusterIP"].as_str()?.parse().ok()
}

/// On update: allocated values the new object leaves out are carried over from the old one; a
/// changed cluster IP is refused (immutable).
pub fn carry(old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let name = new["metadata"]["name"].as_str().unwrap_or("").to_owned();
    for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        if new["spec"][f].is_null() && !old["spec"][f].is_null() {
            new["spec"][f] = old["spec"][f].clone();
        }
    }
    if new["spec"]["clusterIP"] != old["spec"]["clusterIP"] && old["spec"]["type"] != "ExternalName" {
        return Err(ApiError::invalid(
            "Service",
            &name,
            format!(
                "spec.clusterIPs[0]: Invalid value: {}: may not change once set",
                new["spec"]["clusterIP"]
            ),
        ));
    }
    Ok(())
}

/// Validation of the fields controllers read (after defaulting).
pub fn validate(obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let bad = |m: String| Err(ApiError::invalid("Service", name, m));
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("");
    if !matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        return bad(format!(
            "spec.type: Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        ));
    }
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && spec["clusterIP"] != "None" {
        return bad("spec.ports: Required value".into());
    }
    if ty == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
        return bad("spec.externalName: Required value".into());
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            return bad(format!(
                "spec.ports[{i}].port: Invalid value: {}: must be between 1 and 65535, inclusive",
                p["port"]
            ));
        }
        let proto = p["protocol"].as_str().unwrap_or("");
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            return bad(format!(
                "spec.ports[{i}].protocol: Unsupported value: {proto:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""
            ));
        }
        match &p["targetPort"] {
            Value::Number(n) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => {
                return bad(format!(
                    "spec.ports[{i}].targetPort: Invalid value: {n}: must be between 1 and 65535, inclusive"
                ));
            }
            Value::String(s) if !port_name(s) => {
                return bad(format!(
                    "spec.ports[{i}].targetPort: Invalid value: {s:?}: must be a port name (IANA_SVC_NAME)"
                ));
            }
            _ => {}
        }
        let pname = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && pname.is_empty() {
            return bad(format!("spec.ports[{i}].name: Required value"));
        }
        if !pname.is_empty() && !names.insert(pname) {
            return bad(format!("spec.ports[{i}].name: Duplicate value: {pname:?}"));
        }
    }
    Ok(())
}

/// IANA_SVC_NAME: 1-15 of a-z, 0-9 and `-`, at least one letter, no `--`, no `-` at the ends.
fn port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.contains("--")
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({ "metadata": { "name": "web" }, "spec": spec })
    }

    #[test]
    fn defaults_allocation_and_validation() {
        let mut s = svc(json!({ "selector": { "app": "web" }, "ports": [{ "port": 80 }] }));
        defaults(&mut s);
        let used: BTreeSet<Ipv4Addr> = ["10.96.0.10".parse().expect("ip")].into();
        allocate(&mut s, &used).expect("allocates");
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.11");
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["ports"][0], json!({ "port": 80, "protocol": "TCP", "targetPort": 80 }));
        assert_eq!(s["status"], json!({ "loadBalancer": {} }));
        validate(&s).expect("valid");
        // An update without the cluster IP keeps it; one changing it is refused.
        let mut n = svc(json!({ "selector": { "app": "x" }, "ports": [{ "port": 81 }] }));
        carry(&s, &mut n).expect("carried");
        assert_eq!(n["spec"]["clusterIP"], "10.96.0.11");
        n["spec"]["clusterIP"] = json!("10.96.0.12");
        assert_eq!(carry(&s, &mut n).map_err(|e| e.code), Err(422));
        // A taken address, a bad type, a port out of range, a bad target name, unnamed ports.
        let mut t = svc(json!({ "clusterIP": "10.96.0.10", "ports": [{ "port": 80 }] }));
        assert_eq!(allocate(&mut t, &used).map_err(|e| e.code), Err(422));
        for (spec, want) in [
            (json!({ "type": "Balancer", "ports": [{ "port": 80 }] }), "spec.type: Unsupported value"),
            (json!({ "ports": [{ "port": 70000 }] }), "spec.ports[0].port: Invalid value: 70000"),
            (json!({ "ports": [{ "port": 80, "targetPort": "Http_1" }] }), "spec.ports[0].targetPort"),
            (json!({ "ports": [{ "port": 80 }, { "port": 81 }] }), "spec.ports[0].name: Required"),
            (json!({}), "spec.ports: Required value"),
        ] {
            let mut s = svc(spec);
            defaults(&mut s);
            let e = validate(&s).expect_err("refused");
            assert!(e.code == 422 && e.message.contains(want), "{}: {want}", e.message);
        }
    }
}
