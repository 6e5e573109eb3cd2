//! Reading Kubernetes manifests for the deploy test: documents, pod templates, containers, the
//! `$(VAR)` expansion kubelet does on command lines, and RBAC grants. Knows nothing of our binaries.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// Every non-empty document of a (multi-document) YAML file, as JSON values.
pub fn load(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub fn kind(doc: &Value) -> &str {
    s(doc, "/kind")
}

pub fn name(doc: &Value) -> &str {
    s(doc, "/metadata/name")
}

/// The first document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind_: &str, name_: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == kind_ && name(d) == name_)
        .unwrap_or_else(|| panic!("no {kind_} named {name_:?} in the manifest"))
}

/// The pod spec a workload runs (its template's), or a Pod's own.
pub fn pod_spec(doc: &Value) -> Option<&Value> {
    match kind(doc) {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => doc.pointer("/spec/template/spec"),
        "Pod" => doc.pointer("/spec"),
        _ => None,
    }
}

pub fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Init containers, then containers.
pub fn containers(spec: &Value) -> Vec<&Value> {
    arr(spec, "/initContainers").iter().chain(arr(spec, "/containers")).collect()
}

/// What a downward-API field gives on a real node, for running command lines here.
fn sample_field(path: &str) -> &'static str {
    match path {
        "spec.nodeName" => "node-1",
        "metadata.name" => "romana-k8s-6d5f7c9b4-x2k8p",
        "metadata.namespace" => "romana-system",
        "status.podIP" | "status.hostIP" => "192.0.2.10",
        other => panic!("no sample value for the downward-API field {other:?}; add one"),
    }
}

/// The value kubelet gives the container's variable `var`.
fn env_value(container: &Value, var: &str) -> Option<String> {
    let e = arr(container, "/env").iter().find(|e| s(e, "/name") == var)?;
    if let Some(v) = e.get("value").and_then(Value::as_str) {
        return Some(v.to_owned());
    }
    let field = s(e, "/valueFrom/fieldRef/fieldPath");
    assert!(!field.is_empty(), "variable {var} has neither a value nor a fieldRef (add a sample)");
    Some(sample_field(field).to_owned())
}

/// Expands `$(VAR)` as kubelet does (`$$` is a literal `$`). A reference to a variable the
/// container does not define is left as is by Kubernetes, which is always a mistake here.
pub fn expand(container: &Value, arg: &str) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let var = &inner[..end];
            let v = env_value(container, var).unwrap_or_else(|| {
                panic!("container {:?}: $({var}) names no variable of the container", s(container, "/name"))
            });
            out.push_str(&v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The command line kubelet runs: `command` then `args`, expanded.
pub fn command_line(container: &Value) -> Vec<String> {
    arr(container, "/command")
        .iter()
        .chain(arr(container, "/args"))
        .map(|a| expand(container, a.as_str().expect("command lines are strings")))
        .collect()
}

/// Variables a container's command line refers to with `$(VAR)`.
pub fn referenced_vars(container: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in arr(container, "/command").iter().chain(arr(container, "/args")) {
        let mut rest = a.as_str().unwrap_or("");
        while let Some(i) = rest.find("$(") {
            let inner = &rest[i + 2..];
            let end = inner.find(')').unwrap_or(inner.len());
            out.insert(inner[..end].to_owned());
            rest = &inner[end..];
        }
    }
    out
}

/// One API permission: (API group, resource, verb, scope) with scope `cluster` or
/// `namespace:NS`.
pub type Grant = (String, String, String, String);

/// Everything the roles bound to service account `ns/sa` allow, one row per verb. Wildcards,
/// resource names and non-resource URLs are refused: least privilege is checked row by row.
pub fn grants_of(docs: &[Value], ns: &str, sa: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for b in docs.iter().filter(|d| matches!(kind(d), "ClusterRoleBinding" | "RoleBinding")) {
        let binds_sa = arr(b, "/subjects")
            .iter()
            .any(|x| s(x, "/kind") == "ServiceAccount" && s(x, "/name") == sa && s(x, "/namespace") == ns);
        if !binds_sa {
            continue;
        }
        let role_kind = s(b, "/roleRef/kind");
        let scope = if kind(b) == "ClusterRoleBinding" {
            "cluster".to_owned()
        } else {
            format!("namespace:{}", s(b, "/metadata/namespace"))
        };
        let role = find(docs, role_kind, s(b, "/roleRef/name"));
        if role_kind == "Role" {
            assert_eq!(
                s(role, "/metadata/namespace"),
                s(b, "/metadata/namespace"),
                "RoleBinding {} binds a Role of another namespace",
                name(b)
            );
        }
        for rule in arr(role, "/rules") {
            assert!(rule.get("nonResourceURLs").is_none(), "{}: nonResourceURLs granted", name(role));
            assert!(rule.get("resourceNames").is_none(), "{}: resourceNames not expected", name(role));
            for g in arr(rule, "/apiGroups") {
                for r in arr(rule, "/resources") {
                    for v in arr(rule, "/verbs") {
                        let (g, r, v) =
                            (g.as_str().unwrap_or(""), r.as_str().unwrap_or(""), v.as_str().unwrap_or(""));
                        assert!(
                            ![g, r, v].contains(&"*"),
                            "{}: wildcard in a rule ({g:?}, {r:?}, {v:?})",
                            name(role)
                        );
                        out.insert((g.to_owned(), r.to_owned(), v.to_owned(), scope.clone()));
                    }
                }
            }
        }
    }
    out
}
