//! Pod records (Topology service): what the Kubernetes controller knows of each pod (uid, node,
//! labels, named ports, segment), one key each under `pods/<namespace>/<name>`. CNI ADD of a
//! kubelet-started pod waits for its record; a `PUT` reaches the pod's endpoints through
//! `pod_join`. Who sees what: admin and unbound service users everything, a tenant user its
//! namespaces (the route's `{tenant}`), an agent only the records of pods on its own hosts
//! (others are "not found"); only admin and unbound service users write.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use romana_api::rest::PodInfo;
use romana_auth::Principal;

use crate::endpoints::{label_problems, port_problems};
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;

fn decode(key: &str, v: &[u8]) -> ApiResult<PodInfo> {
    serde_json::from_slice(v).map_err(|e| ApiError::internal(format!("stored pod {key} is unreadable: {e}")))
}

/// Kubernetes' DNS-1123 label (namespaces): 1 to 63 of a-z 0-9 '-', alphanumeric at both ends.
pub fn dns_label(v: &str) -> bool {
    dns_name(v, 63, false)
}

/// Kubernetes' DNS-1123 subdomain (pod names): 1 to 253 of a-z 0-9 '-' '.', alphanumeric at
/// both ends.
pub fn dns_subdomain(v: &str) -> bool {
    dns_name(v, 253, true)
}

fn dns_name(v: &str, max: usize, dots: bool) -> bool {
    let end_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !v.is_empty()
        && v.len() <= max
        && end_ok(v.chars().next())
        && end_ok(v.chars().last())
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
}

/// Free text fields (uid, host, segment): bounded, no whitespace or control characters.
fn plain(field: &str, v: &str, max: usize, out: &mut Vec<String>) {
    if v.len() > max || v.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        out.push(format!("{field}: {v:?} is longer than {max} or has whitespace, control characters or '/'"));
    }
}

/// Every problem of `p`, by field.
pub fn problems(p: &PodInfo) -> Vec<String> {
    let mut out = Vec::new();
    if !dns_label(&p.namespace) {
        out.push(format!(
            "namespace: {:?} is not a Kubernetes namespace name (1-63 of a-z 0-9 -, alphanumeric ends)",
            p.namespace
        ));
    }
    if !dns_subdomain(&p.name) {
        out.push(format!(
            "name: {:?} is not a Kubernetes pod name (1-253 of a-z 0-9 - ., alphanumeric ends)",
            p.name
        ));
    }
    plain("uid", &p.uid, 128, &mut out);
    plain("host", &p.host, 253, &mut out);
    plain("segment", &p.segment, 253, &mut out);
    label_problems(&p.labels, &mut out);
    port_problems(&p.ports, &mut out);
    out
}

/// Whether `who` may see the record `p` (the tenant part for single records is the route's).
fn visible(who: &Principal, p: &PodInfo) -> bool {
    crate::scope::visible(who, &p.namespace) && crate::scope::may_host(who, &p.host)
}

async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Vec<PodInfo>>> {
    let (kvs, _) = s.store.range(&s.keys.pods()).await?;
    let all: Vec<PodInfo> = kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<ApiResult<_>>()?;
    Ok(Json(all.into_iter().filter(|p| visible(&who, p)).collect()))
}

fn unknown(ns: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("unknown pod {ns}/{name}"))
}

async fn show(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<PodInfo>> {
    // A name no record can have (an encoded '/' among them) is not looked up.
    if !dns_label(&ns) || !dns_subdomain(&name) {
        return Err(unknown(&ns, &name));
    }
    let key = s.keys.pod(&ns, &name);
    let kv = s.store.get(&key).await?.ok_or_else(|| unknown(&ns, &name))?;
    let p = decode(&key, &kv.value)?;
    // An agent reads only its own hosts' pods; another host's is as if absent.
    if !visible(&who, &p) {
        return Err(unknown(&ns, &name));
    }
    Ok(Json(p))
}

async fn replace(
    State(s): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    Body(mut p): Body<PodInfo>,
) -> ApiResult<(StatusCode, Json<PodInfo>)> {
    if p.namespace.is_empty() {
        p.namespace = ns.clone();
    }
    if p.name.is_empty() {
        p.name = name.clone();
    }
    let mut out = problems(&p);
    if (p.namespace.as_str(), p.name.as_str()) != (ns.as_str(), name.as_str()) {
        out.push(format!("namespace/name: {}/{} does not match the path {ns}/{name}", p.namespace, p.name));
    }
    if !out.is_empty() {
        return Err(ApiError::invalid("invalid pod", out));
    }
    let created = crate::pod_join::put_pod(&s, &p).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(p)))
}

/// Removes the record only (absent is success): the endpoint and its address go with CNI DEL.
async fn remove(
    State(s): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if !dns_label(&ns) || !dns_subdomain(&name) {
        return Err(ApiError::invalid(
            "invalid pod",
            vec![format!("{ns}/{name}: not a Kubernetes pod name")],
        ));
    }
    s.take(&s.keys.pod(&ns, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pods", get(list))
        .route("/pods/{tenant}/{name}", get(show).put(replace).delete(remove))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: serde_json::Value, expect: &[&str]) {
        let p: PodInfo = serde_json::from_value(p.clone()).expect("a pod");
        let got = problems(&p);
        assert_eq!(got.len(), expect.len(), "{p:?}: {got:?}");
        for (g, e) in got.iter().zip(expect) {
            assert!(g.starts_with(e), "{g:?} should start with {e:?}");
        }
    }

    #[test]
    fn pod_records_are_checked_field_by_field() {
        use serde_json::json;
        check(json!({"namespace": "red", "name": "web-0.a", "uid": "u-1", "host": "h1"}), &[]);
        check(json!({"namespace": "Red", "name": "a"}), &["namespace:"]);
        check(json!({"namespace": "-red", "name": "a"}), &["namespace:"]);
        check(json!({"namespace": "a.b", "name": "a"}), &["namespace:"]);
        check(json!({"namespace": "x".repeat(64), "name": "a"}), &["namespace:"]);
        check(json!({"namespace": "red", "name": ""}), &["name:"]);
        check(json!({"namespace": "red", "name": "a/b"}), &["name:"]);
        check(json!({"namespace": "red", "name": "a-"}), &["name:"]);
        check(json!({"namespace": "red", "name": "a", "uid": "u 1"}), &["uid:"]);
        check(json!({"namespace": "red", "name": "a", "host": "h/1"}), &["host:"]);
        check(
            json!({"namespace": "red", "name": "a", "labels": {"": "x", "k": "a b"}}),
            &["labels:", "labels[k]"],
        );
        check(
            json!({"namespace": "red", "name": "a", "ports": [{"name": "http", "protocol": "ICMP", "port": 80},
                {"name": "", "protocol": "TCP", "port": 0}]}),
            &["ports[0].protocol", "ports[1]"],
        );
        check(json!({"namespace": "", "name": "", "segment": "a b"}), &["namespace:", "name:", "segment:"]);
    }
}
