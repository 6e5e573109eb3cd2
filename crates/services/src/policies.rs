//! The Policy service's handlers: Romana policies (stored one key each by `policy_store.rs`),
//! validated on write (422 listing every problem; a bad policy is never stored, so it can never
//! disable the others) and scoped to what the caller owns.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use romana_api::policy::Policy;
use romana_api::query::PolicyIdRequest;

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::policy_store::{Created, Guarded, PolicyStore};
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

fn policies(s: &AppState) -> PolicyStore<'_> {
    PolicyStore { store: &*s.store, keys: &s.keys }
}

async fn list(State(s): State<AppState>, Extension(p): Extension<Principal>) -> ApiResult<Json<Vec<Policy>>> {
    let all = policies(&s).list().await?;
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
    let existing = match policies(&s).create(&p).await? {
        Created::New => return Ok((StatusCode::CREATED, Json(p))),
        Created::Taken(existing) => existing,
    };
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
    match policies(&s).replace(&p, |old| owns(&who, old)).await? {
        Guarded::Refused => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} may not replace policy {id}: choose another id", who.name),
        )),
        Guarded::Done(_) | Guarded::Missing => Ok(Json(p)),
    }
}

async fn show(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    match policies(&s).get(&id).await? {
        Some(p) if owns(&who, &p) => Ok(Json(p)),
        _ => Err(ApiError::not_found(format!("unknown policy {id}"))),
    }
}

async fn delete_id(s: &AppState, who: &Principal, id: &str) -> ApiResult<Json<Policy>> {
    match policies(s).delete(id, |p| owns(who, p)).await? {
        Guarded::Done(Some(p)) => Ok(Json(p)),
        // Another tenant's policy is as unknown as a missing one.
        _ => Err(ApiError::not_found(format!("unknown policy {id}"))),
    }
}

async fn remove(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    delete_id(&s, &who, &id).await
}

/// Romana 2.0's `DELETE /policies` with a body `{"id": ...}`.
async fn remove_by_body(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Body(b): Body<PolicyIdRequest>,
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
