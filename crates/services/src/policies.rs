//! The Policy service: Romana policies stored one key each, validated on write (422 listing every
//! problem; a bad policy is never stored, so it can never disable the others).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use romana_api::policy::Policy;
use romana_store::{Compare, Op, Txn};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;

use axum::{Extension, Json};
use romana_auth::Principal;

fn validated(mut p: Policy) -> ApiResult<Policy> {
    let mut problems = p.normalize();
    if p.id.starts_with(romana_policy::isolation::IMPLICIT_PREFIX) {
        problems.push(format!(
            "id: {:?} uses the prefix {} kept for tenant isolation",
            p.id,
            romana_policy::isolation::IMPLICIT_PREFIX
        ));
    }
    if problems.is_empty() { Ok(p) } else { Err(ApiError::invalid("invalid policy", problems)) }
}

fn owns(p: &Principal, policy: &Policy) -> bool {
    crate::scope::owns_policy(p, policy)
}

fn forbid(p: &Principal, id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        format!(
            "{} may only write policies applied to its own tenants (not to a cidr, dest or another tenant) ({id})",
            p.name
        ),
    )
}

fn decode(key: &str, v: &[u8]) -> ApiResult<Policy> {
    serde_json::from_slice(v)
        .map_err(|e| ApiError::internal(format!("stored policy {key} is unreadable: {e}")))
}

async fn list(State(s): State<AppState>, Extension(p): Extension<Principal>) -> ApiResult<Json<Vec<Policy>>> {
    let (kvs, _) = s.store.range(&s.keys.policies()).await?;
    let all: Vec<Policy> = kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<ApiResult<_>>()?;
    Ok(Json(all.into_iter().filter(|x| owns(&p, x)).collect()))
}

/// Creates a policy. Posting the same policy again is a no-op; a different one under the same id is a conflict.
async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Body(p): Body<Policy>,
) -> ApiResult<(StatusCode, Json<Policy>)> {
    let p = validated(p)?;
    if !owns(&who, &p) {
        return Err(forbid(&who, &p.id));
    }
    let key = s.keys.policy(&p.id);
    let body = serde_json::to_vec(&p).expect("policies serialize");
    let r = s
        .store
        .txn(Txn {
            compare: vec![Compare::absent(&key)],
            success: vec![Op::put(&key, body)],
            failure: vec![Op::Get { key: key.clone() }],
        })
        .await?;
    if r.succeeded {
        return Ok((StatusCode::CREATED, Json(p)));
    }
    let existing =
        r.reads.first().and_then(|v| v.first()).map(|kv| decode(&kv.key, &kv.value)).transpose()?;
    if existing.as_ref() == Some(&p) {
        return Ok((StatusCode::OK, Json(p)));
    }
    if existing.as_ref().is_some_and(|e| !owns(&who, e)) {
        // Another tenant's (or a CIDR's): say nothing of it but that the id is taken.
        return Err(ApiError::conflict(format!("policy id {} is taken; choose another id", p.id)));
    }
    Err(ApiError::conflict(format!(
        "policy {} already exists with other content; PUT /policies/{} replaces it",
        p.id, p.id
    )))
}

/// Creates or replaces a policy. A tenant user may replace only a policy it owns, with one it
/// owns; another tenant's policy under the same id is refused without saying whose it is.
async fn replace(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Body(mut p): Body<Policy>,
) -> ApiResult<Json<Policy>> {
    if p.id.is_empty() {
        p.id = id.clone();
    }
    if p.id != id {
        return Err(ApiError::invalid(
            "invalid policy",
            vec![format!("id: {:?} does not match the path {id:?}", p.id)],
        ));
    }
    let p = validated(p)?;
    if !owns(&who, &p) {
        return Err(forbid(&who, &id));
    }
    let key = s.keys.policy(&id);
    let body = serde_json::to_vec(&p).expect("policies serialize");
    // The ownership check and the write are one transaction: the policy checked is the one replaced.
    for _ in 0..5 {
        let compare = match s.store.get(&key).await? {
            Some(kv) => {
                if !owns(&who, &decode(&key, &kv.value)?) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!("{} may not replace policy {id}: choose another id", who.name),
                    ));
                }
                Compare::unchanged(&key, kv.mod_revision)
            }
            None => Compare::absent(&key),
        };
        let r = s.store.txn(Txn::when(vec![compare], vec![Op::put(&key, body.clone())])).await?;
        if r.succeeded {
            return Ok(Json(p));
        }
    }
    Err(ApiError::conflict(format!("policy {id} keeps changing meanwhile; try again")))
}

async fn show(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    let key = s.keys.policy(&id);
    let kv = s.store.get(&key).await?.ok_or_else(|| ApiError::not_found(format!("unknown policy {id}")))?;
    let p = decode(&key, &kv.value)?;
    if !owns(&who, &p) {
        return Err(ApiError::not_found(format!("unknown policy {id}")));
    }
    Ok(Json(p))
}

async fn delete_id(s: &AppState, who: &Principal, id: &str) -> ApiResult<Json<Policy>> {
    let key = s.keys.policy(id);
    let unknown = || ApiError::not_found(format!("unknown policy {id}"));
    // Delete exactly the revision whose owner was checked, so a policy that changed hands
    // meanwhile is never deleted by the wrong tenant.
    for _ in 0..5 {
        let Some(kv) = s.store.get(&key).await? else { return Err(unknown()) };
        let p = decode(&key, &kv.value)?;
        if !owns(who, &p) {
            return Err(unknown());
        }
        let r = s
            .store
            .txn(Txn::when(vec![Compare::unchanged(&key, kv.mod_revision)], vec![Op::delete(&key)]))
            .await?;
        if r.succeeded {
            return Ok(Json(p));
        }
    }
    Err(ApiError::conflict(format!("policy {id} keeps changing meanwhile; try again")))
}

async fn remove(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    delete_id(&s, &who, &id).await
}

#[derive(Debug, Deserialize)]
struct IdBody {
    id: String,
}

/// Romana 2.0's `DELETE /policies` with a body `{"id": ...}`.
async fn remove_by_body(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Body(b): Body<IdBody>,
) -> ApiResult<Json<Policy>> {
    if b.id.is_empty() {
        return Err(ApiError::invalid("invalid request", vec!["id: must not be empty".into()]));
    }
    delete_id(&s, &who, &b.id).await
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/policies", get(list).post(create).delete(remove_by_body))
        .route("/policies/{id}", get(show).put(replace).delete(remove))
}
