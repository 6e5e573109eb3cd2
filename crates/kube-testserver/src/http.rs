//! HTTP edge: authentication, discovery, URL parsing into (type, namespace, name), query
//! parameters, and the mapping of verbs onto store operations. Every failure answers a `Status`.

use crate::ids;
use crate::jsonpatch::{JsonPatchError, json_patch};
use crate::patch::strip_directives;
use crate::resources::{self, RESOURCES};
use crate::selector::{FieldSelector, LabelSelector};
use crate::shared::{ApiRequest, Shared};
use crate::status::ApiError;
use crate::store::{Key, Preconditions, Stamp};
use crate::watch::{self, WatchRequest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Bodies above this are refused (the real server's limit is 3 MiB per object).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn error(e: &ApiError) -> Response {
    json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.to_status())
}

/// The resource a URL names: type, namespace (None: cluster-scoped or all namespaces), name.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    /// The object's `status` subresource (`.../{name}/status`).
    status: bool,
}

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...` resource paths.
fn parse_target(path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let lookup = |r: &str| resources::find(group, version, r).ok_or_else(ApiError::no_route);
    let t = match rest {
        [r] => Target { res: lookup(r)?, ns: None, name: None, status: false },
        ["namespaces", ns, r] => {
            Target { res: lookup(r)?, ns: Some(ns.to_string()), name: None, status: false }
        }
        ["namespaces", ns, r, name] => {
            Target { res: lookup(r)?, ns: Some(ns.to_string()), name: Some(name.to_string()), status: false }
        }
        ["namespaces", ns, r, name, "status"] if RESOURCES[lookup(r)?].status_subresource => {
            Target { res: lookup(r)?, ns: Some(ns.to_string()), name: Some(name.to_string()), status: true }
        }
        [r, name] => Target { res: lookup(r)?, ns: None, name: Some(name.to_string()), status: false },
        _ => return Err(ApiError::no_route()),
    };
    let rt = &RESOURCES[t.res];
    // A namespaced type's single objects live under /namespaces/{ns}; a cluster-scoped type has
    // no namespace segment.
    if (rt.namespaced && t.name.is_some() && t.ns.is_none()) || (!rt.namespaced && t.ns.is_some()) {
        return Err(ApiError::no_route());
    }
    Ok(t)
}

fn discovery(path: &str, shared: &Shared) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Some(resources::version_doc()),
        ["api"] => Some(resources::core_versions(&shared.address)),
        ["apis"] => Some(resources::group_list()),
        ["api", v] => resources::resource_list("", v),
        ["apis", g] => resources::group(g),
        ["apis", g, v] => resources::resource_list(g, v),
        _ => None,
    }
}

fn verb(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), t.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if let Some(token) = &shared.token {
        let want = format!("Bearer {token}");
        let got = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            return error(&ApiError::unauthorized());
        }
    }
    let path = req.uri().path().to_string();
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return (StatusCode::OK, "ok").into_response();
    }
    if req.method() == Method::GET
        && let Some(doc) = discovery(&path, &shared)
    {
        return json_response(StatusCode::OK, &doc);
    }
    let target = match parse_target(&path) {
        Ok(t) => t,
        Err(e) => return error(&e),
    };
    let q: HashMap<String, String> = match axum::extract::Query::try_from_uri(req.uri()) {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => return error(&ApiError::bad_request(format!("the query string is malformed: {e}"))),
    };
    let method = req.method().clone();
    let verb = verb(&method, &target, &q);
    let rt = &RESOURCES[target.res];
    if target.status && !matches!(verb, "get" | "update" | "patch") {
        return error(&ApiError::method_not_allowed(method.as_str(), &path));
    }
    shared.record(ApiRequest {
        verb: verb.to_string(),
        group: rt.group.to_string(),
        // RBAC names a subresource `resource/subresource`.
        resource: if target.status { format!("{}/status", rt.resource) } else { rt.resource.to_string() },
        namespace: target.ns.clone(),
    });
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error(&ApiError::bad_request(format!("reading the request body: {e}"))),
    };
    let out = match verb {
        "watch" => return watch_request(target, &q).map_or_else(|e| error(&e), |w| watch::start(shared, w)),
        "list" => {
            return match list(&shared, &target, &q) {
                Ok(bytes) => {
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
                }
                Err(e) => error(&e),
            };
        }
        "get" => get(&shared, &target).map(|v| (StatusCode::OK, v)),
        "create" => create(&shared, &target, &body).map(|v| (StatusCode::CREATED, v)),
        "update" => update(&shared, &target, &body).map(|v| (StatusCode::OK, v)),
        "patch" => patch(&shared, &target, &content_type, &body).map(|v| (StatusCode::OK, v)),
        "delete" => delete(&shared, &target, &body).map(|v| (StatusCode::OK, v)),
        "deletecollection" => delete_collection(&shared, &target, &q).map(|v| (StatusCode::OK, v)),
        _ => Err(ApiError::method_not_allowed(method.as_str(), &path)),
    };
    match out {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error(&e),
    }
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))
}

fn key(t: &Target) -> Key {
    Key { res: t.res, ns: t.ns.clone().unwrap_or_default(), name: t.name.clone().unwrap_or_default() }
}

fn selectors(res: usize, q: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
    let rt = &RESOURCES[res];
    let fields =
        FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), |f| rt.accepts_field(f))
            .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
    Ok((labels, fields))
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

fn watch_request(t: Target, q: &HashMap<String, String>) -> Result<WatchRequest, ApiError> {
    let (labels, fields) = selectors(t.res, q)?;
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => Some(Duration::from_secs(
            s.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        )),
        None => None,
    };
    let req = WatchRequest {
        res: t.res,
        ns: t.ns,
        labels,
        fields,
        resource_version: q.get("resourceVersion").cloned(),
        bookmarks: flag(q, "allowWatchBookmarks"),
        timeout,
        send_initial_events: flag(q, "sendInitialEvents"),
    };
    Ok(req)
}

/// Continue tokens are opaque to clients: hex of `rv/namespace/name`.
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    format!("{rv}/{ns}/{name}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, '/');
    let rv = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
    let ns = parts.next().ok_or_else(bad)?.to_string();
    let name = parts.next().ok_or_else(bad)?.to_string();
    Ok((rv, ns, name))
}

/// A list answer, already serialised.
fn list(shared: &Shared, t: &Target, q: &HashMap<String, String>) -> Result<Vec<u8>, ApiError> {
    let (labels, fields) = selectors(t.res, q)?;
    let limit = match q.get("limit") {
        Some(l) => l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let (at, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let (rv, ns, name) = decode_continue(c)?;
            (Some(rv), Some((ns, name)))
        }
        None => {
            let exact = q.get("resourceVersionMatch").is_some_and(|m| m == "Exact");
            let rv = q.get("resourceVersion").filter(|r| !r.is_empty() && *r != "0");
            match (exact, rv) {
                (true, Some(r)) => (
                    Some(
                        r.parse()
                            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))?,
                    ),
                    None,
                ),
                (false, Some(r)) => {
                    // NotOlderThan: the current state answers, unless the version is in the future.
                    let asked: u64 = r
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))?;
                    let now = shared.store.lock().expect("store lock is never poisoned").rv();
                    if asked > now {
                        return Err(ApiError::too_large_rv(asked, now));
                    }
                    (None, None)
                }
                _ => (None, None),
            }
        }
    };
    let page = {
        let store = shared.store.lock().expect("store lock is never poisoned");
        let limit = (limit > 0).then_some(limit);
        store
            .list(t.res, t.ns.as_deref(), at, after, limit, |o| labels.matches(o) && fields.matches(o))
            .map_err(|e| {
                if e.code == 410 && q.contains_key("continue") {
                    ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".to_string())
                } else {
                    e
                }
            })?
    };
    let rt = &RESOURCES[t.res];
    let mut meta = json!({"resourceVersion": page.rv.to_string()});
    if let Some((ns, name)) = &page.next {
        meta["continue"] = json!(encode_continue(page.rv, ns, name));
    }
    // Written item by item: building one `Value` for the list would deep-copy every object.
    let head = json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": meta}).to_string();
    let mut out = Vec::with_capacity(head.len() + 1024 * page.items.len());
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"items\":[");
    for (i, obj) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &**obj).expect("JSON values serialise");
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

fn get(shared: &Shared, t: &Target) -> Result<Value, ApiError> {
    let store = shared.store.lock().expect("store lock is never poisoned");
    store.get(&key(t)).map(|o| (*o).clone())
}

fn create(shared: &Shared, t: &Target, body: &Bytes) -> Result<Value, ApiError> {
    if t.name.is_some() {
        return Err(ApiError::method_not_allowed("POST", "a named object"));
    }
    let rt = &RESOURCES[t.res];
    if rt.namespaced && t.ns.is_none() {
        return Err(ApiError::method_not_allowed("POST", &format!("all-namespaces {}", rt.resource)));
    }
    let obj = parse_json(body)?;
    let stamp = Stamp { now: ids::now_rfc3339(), uid: ids::uid(), suffix: ids::name_suffix() };
    let ns = t.ns.clone().unwrap_or_default();
    shared.mutate(|s| s.create(t.res, &ns, obj, &stamp)).map(|o| (*o).clone())
}

fn update(shared: &Shared, t: &Target, body: &Bytes) -> Result<Value, ApiError> {
    let obj = parse_json(body)?;
    if t.status {
        return shared.mutate(|s| s.replace_status(&key(t), obj)).map(|o| (*o).clone());
    }
    shared.mutate(|s| s.replace(&key(t), obj)).map(|o| (*o).clone())
}

fn patch(shared: &Shared, t: &Target, content_type: &str, body: &Bytes) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let p = match media {
        "application/merge-patch+json" => parse_json(body)?,
        "application/strategic-merge-patch+json" => strip_directives(&parse_json(body)?),
        "application/json-patch+json" => {
            let ops = parse_json(body)?;
            let k = key(t);
            return shared
                .mutate(|s| {
                    let current = s.get(&k)?;
                    let mut patched = json_patch(&current, &ops).map_err(|e| match e {
                        JsonPatchError::Malformed(m) => ApiError::bad_request(m),
                        JsonPatchError::Failed(m) => ApiError::invalid(RESOURCES[t.res].kind, &k.name, m),
                    })?;
                    // As with merge patches, only a resourceVersion the patch sets is a precondition.
                    if patched["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"] {
                        patched["metadata"]["resourceVersion"] = json!("");
                    }
                    if t.status { s.replace_status(&k, patched) } else { s.replace(&k, patched) }
                })
                .map(|o| (*o).clone());
        }
        other => return Err(ApiError::unsupported_media(other)),
    };
    shared.mutate(|s| s.patch(&key(t), &p, t.status)).map(|o| (*o).clone())
}

fn preconditions(body: &Bytes) -> Result<Preconditions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Preconditions::default());
    }
    let opts = parse_json(body)?;
    let pre = &opts["preconditions"];
    Ok(Preconditions {
        uid: pre["uid"].as_str().map(str::to_string),
        resource_version: pre["resourceVersion"].as_str().map(str::to_string),
    })
}

fn delete(shared: &Shared, t: &Target, body: &Bytes) -> Result<Value, ApiError> {
    let pre = preconditions(body)?;
    shared.mutate(|s| s.delete(&key(t), &pre)).map(|o| (*o).clone())
}

/// DELETE on a collection: deletes every selected object; answers the list of deleted ones.
fn delete_collection(shared: &Shared, t: &Target, q: &HashMap<String, String>) -> Result<Value, ApiError> {
    let (labels, fields) = selectors(t.res, q)?;
    let rt = &RESOURCES[t.res];
    let deleted = shared.mutate(|s| {
        let page =
            s.list(t.res, t.ns.as_deref(), None, None, None, |o| labels.matches(o) && fields.matches(o))?;
        let mut out = Vec::new();
        for o in page.items {
            let k = Key {
                res: t.res,
                ns: o["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
                name: o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            };
            // Deleting a namespace may already have taken later objects with it.
            if let Ok(d) = s.delete(&k, &Preconditions::default()) {
                out.push((*d).clone());
            }
        }
        Ok::<_, ApiError>((out, s.rv()))
    })?;
    Ok(json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": deleted.1.to_string()}, "items": deleted.0}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t =
            |p: &str| parse_target(p).map(|t| (RESOURCES[t.res].resource, t.ns, t.name)).map_err(|e| e.code);
        assert_eq!(t("/api/v1/pods"), Ok(("pods", None, None)));
        assert_eq!(t("/api/v1/namespaces/a/pods/p"), Ok(("pods", Some("a".into()), Some("p".into()))));
        assert_eq!(t("/api/v1/namespaces/a"), Ok(("namespaces", None, Some("a".into()))));
        assert_eq!(t("/api/v1/namespaces"), Ok(("namespaces", None, None)));
        assert_eq!(t("/api/v1/nodes/n1"), Ok(("nodes", None, Some("n1".into()))));
        assert_eq!(t("/apis/networking.k8s.io/v1/networkpolicies"), Ok(("networkpolicies", None, None)));
        assert_eq!(t("/api/v1/pods/p"), Err(404));
        assert_eq!(t("/api/v1/namespaces/a/nodes"), Err(404));
        assert_eq!(t("/api/v1/namespaces/a/pods/p/status"), Err(404));
        let st = parse_target("/api/v1/namespaces/a/services/s/status")
            .map(|t| (RESOURCES[t.res].resource, t.status));
        assert_eq!(st.map_err(|e| e.code), Ok(("services", true)));
        assert_eq!(t("/apis/apps/v1/deployments"), Err(404));
    }

    #[test]
    fn continue_tokens_round_trip() {
        let tok = encode_continue(42, "ns", "a/b");
        assert_eq!(decode_continue(&tok).ok(), Some((42, "ns".into(), "a/b".into())));
        assert_eq!(decode_continue("zz").map_err(|e| e.code), Err(400));
    }
}
