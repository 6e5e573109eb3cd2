//! Kubernetes NetworkPolicy objects (Policy service), JSON or YAML, stored one key each under
//! `netpols/<namespace>/<name>`. Validated on write through the policy core's Kubernetes front
//! end: 422 lists every problem, and a bad policy is never stored, so it cannot disable others.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use axum::{Extension, Json, Router};
use romana_api::netpol::NetworkPolicy;
use romana_auth::Principal;
use romana_store::{Compare, Op, Txn};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn decode(key: &str, v: &[u8]) -> ApiResult<NetworkPolicy> {
    serde_json::from_slice(v)
        .map_err(|e| ApiError::internal(format!("stored network policy {key} is unreadable: {e}")))
}

/// The body as YAML (`Content-Type: application/yaml` or `text/yaml`) or JSON (anything else).
fn parse(headers: &HeaderMap, body: &[u8]) -> ApiResult<NetworkPolicy> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    if ct.contains("yaml") {
        serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("malformed YAML: {e}")))
    } else {
        serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
    }
}

fn validated(np: NetworkPolicy) -> ApiResult<NetworkPolicy> {
    let mut problems = Vec::new();
    if np.metadata.name.is_empty() {
        problems.push("metadata.name: required".to_owned());
    }
    if np.metadata.namespace.is_empty() {
        problems.push("metadata.namespace: required (it names the tenant)".to_owned());
    }
    if let Err(e) = romana_policy::from_k8s(&np) {
        problems.extend(e.0);
    }
    if problems.is_empty() { Ok(np) } else { Err(ApiError::invalid("invalid NetworkPolicy", problems)) }
}

async fn list(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<NetworkPolicy>>> {
    let (kvs, _) = s.store.range(&s.keys.netpols()).await?;
    let all: Vec<NetworkPolicy> =
        kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<ApiResult<_>>()?;
    Ok(Json(all.into_iter().filter(|np| crate::scope::visible(&p, &np.metadata.namespace)).collect()))
}

/// Creates or replaces (`kubectl apply` semantics): 201 when new, 200 when it replaced one.
async fn apply(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<NetworkPolicy>)> {
    let started = std::time::Instant::now();
    let np = validated(parse(&headers, &body)?)?;
    if !crate::scope::visible(&who, &np.metadata.namespace) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} may not write policies of namespace {}", who.name, np.metadata.namespace),
        ));
    }
    let key = s.keys.netpol(&np.metadata.namespace, &np.metadata.name);
    let value = serde_json::to_vec(&np).expect("serializes");
    let r = s
        .store
        .txn(Txn {
            compare: vec![Compare::absent(&key)],
            success: vec![Op::put(&key, value.clone())],
            failure: vec![Op::put(&key, value)],
        })
        .await?;
    tracing::debug!(total_ms = started.elapsed().as_secs_f64() * 1e3, "policy write");
    Ok((if r.succeeded { StatusCode::CREATED } else { StatusCode::OK }, Json(np)))
}

async fn show(
    State(s): State<AppState>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<Json<NetworkPolicy>> {
    let key = s.keys.netpol(&tenant, &name);
    let kv = s
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown network policy {tenant}/{name}")))?;
    Ok(Json(decode(&key, &kv.value)?))
}

async fn remove(
    State(s): State<AppState>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<Json<NetworkPolicy>> {
    match s.take(&s.keys.netpol(&tenant, &name)).await? {
        Some(kv) => Ok(Json(decode(&kv.key, &kv.value)?)),
        None => Err(ApiError::not_found(format!("unknown network policy {tenant}/{name}"))),
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/networkpolicies", get(list).post(apply))
        .route("/networkpolicies/{tenant}/{name}", get(show).delete(remove))
}
