//! The Tenant service: tenants and segments with external ids, labels and the numbers the classic
//! address layout needs. Numbers come from a counter that only grows, so they are never reused;
//! they are bounded by the classic layout's bits.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use romana_api::records::{SegmentRecord, TenantRecord};
use romana_api::rest::{Segment, SegmentRequest, Tenant, TenantRequest};
use romana_model::{SegmentName, TenantName};
use romana_store::{Compare, Op, Txn};

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;
use crate::tenant_store::{TenantStore, decode, encode, limits};

fn tenant_store(state: &AppState) -> TenantStore<'_> {
    TenantStore { store: &*state.store, keys: &state.keys, limits: state.ipam.read(|s| limits(&s.ipam)) }
}

pub(crate) async fn tenant_view(state: &AppState, t: TenantRecord) -> ApiResult<Tenant> {
    let (segs, _) = state.store.range(&state.keys.segments(&t.name)).await?;
    let segments = segs
        .iter()
        .map(|kv| decode::<SegmentRecord>(&kv.key, &kv.value).map(segment_view))
        .collect::<Result<Vec<_>, _>>()?;
    let isolation = if t.isolation.is_empty() { "none".to_owned() } else { t.isolation };
    Ok(Tenant {
        name: t.name,
        external_id: t.external_id,
        labels: t.labels,
        number: t.number,
        segments,
        isolation,
    })
}

fn segment_view(s: SegmentRecord) -> Segment {
    Segment { name: s.name, tenant: s.tenant, external_id: s.external_id, labels: s.labels, number: s.number }
}

fn check_isolation(v: &str) -> ApiResult<()> {
    match romana_policy::Isolation::parse(v) {
        Some(_) => Ok(()),
        None => Err(ApiError::invalid(
            "invalid tenant",
            vec![format!("isolation: {v:?} is not one of none, tenant, segment")],
        )),
    }
}

fn check_tenant_name(name: &str) -> ApiResult<()> {
    if name.is_empty() {
        return Err(ApiError::invalid("invalid tenant", vec!["name: must not be empty".into()]));
    }
    TenantName::new(name)
        .map(|_| ())
        .map_err(|e| ApiError::invalid("invalid tenant", vec![format!("name: {e}")]))
}

async fn list(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<romana_auth::Principal>,
) -> ApiResult<axum::Json<Vec<Tenant>>> {
    let (kvs, _) = state.store.range(&state.keys.tenants()).await?;
    let mut out = Vec::new();
    for kv in kvs {
        let t: TenantRecord = decode(&kv.key, &kv.value)?;
        if crate::scope::visible(&p, &t.name) {
            out.push(tenant_view(&state, t).await?);
        }
    }
    Ok(axum::Json(out))
}

async fn create(
    State(state): State<AppState>,
    Body(req): Body<TenantRequest>,
) -> ApiResult<(StatusCode, axum::Json<Tenant>)> {
    check_tenant_name(&req.name)?;
    check_isolation(&req.isolation)?;
    match tenant_store(&state).create_tenant(&req).await? {
        Some(t) => Ok((StatusCode::CREATED, axum::Json(tenant_view(&state, t).await?))),
        None => Err(ApiError::conflict(format!("tenant {} already exists", req.name))),
    }
}

/// A tenant by name, or by external id (OpenStack project id, namespace UID), as `who` may see
/// it: the middleware checked the name in the path, but an external id can resolve to another
/// tenant, which is then "unknown" (as if it did not exist).
async fn find(state: &AppState, who: &romana_auth::Principal, name: &str) -> ApiResult<TenantRecord> {
    let unknown = || ApiError::not_found(format!("unknown tenant {name}"));
    if let Some((t, _)) = tenant_store(state).get_tenant(name).await? {
        return if crate::scope::visible(who, &t.name) { Ok(t) } else { Err(unknown()) };
    }
    let (kvs, _) = state.store.range(&state.keys.tenants()).await?;
    for kv in kvs {
        let t: TenantRecord = decode(&kv.key, &kv.value)?;
        if !t.external_id.is_empty() && t.external_id == name && crate::scope::visible(who, &t.name) {
            return Ok(t);
        }
    }
    Err(unknown())
}

async fn show(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<romana_auth::Principal>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Tenant>> {
    let t = find(&state, &who, &name).await?;
    Ok(axum::Json(tenant_view(&state, t).await?))
}

async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Body(req): Body<TenantRequest>,
) -> ApiResult<axum::Json<Tenant>> {
    if req.name != name {
        return Err(ApiError::invalid(
            "invalid tenant",
            vec![format!("name: {:?} does not match the path {name:?}", req.name)],
        ));
    }
    let (t, rev) = tenant_store(&state)
        .get_tenant(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown tenant {name}")))?;
    check_isolation(&req.isolation)?;
    let next =
        TenantRecord { external_id: req.external_id, labels: req.labels, isolation: req.isolation, ..t };
    let key = state.keys.tenant(&name);
    let r = state
        .store
        .txn(Txn::when(vec![Compare::unchanged(&key, rev)], vec![Op::put(&key, encode(&next))]))
        .await?;
    if !r.succeeded {
        return Err(ApiError::conflict(format!("tenant {name} changed meanwhile; try again")));
    }
    Ok(axum::Json(tenant_view(&state, next).await?))
}

async fn remove(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let used = state.ipam.read(|s| {
        s.ipam.blocks().iter().any(|b| b.owner.as_ref().is_some_and(|(t, _, _)| t.as_str() == name))
    });
    if used {
        return Err(ApiError::conflict(format!("tenant {name} still has addresses; release them first")));
    }
    let key = state.keys.tenant(&name);
    let r = state
        .store
        .txn(Txn {
            compare: vec![Compare::CreateRevision(key.clone(), romana_store::Cmp::Greater, 0)],
            success: vec![Op::delete(&key), Op::DeletePrefix { prefix: state.keys.segments(&name) }],
            failure: vec![],
        })
        .await?;
    if r.succeeded {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("unknown tenant {name}")))
    }
}

async fn segments(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<romana_auth::Principal>,
    Path(tenant): Path<String>,
) -> ApiResult<axum::Json<Vec<Segment>>> {
    let t = find(&state, &who, &tenant).await?;
    Ok(axum::Json(tenant_view(&state, t).await?.segments))
}

async fn add_segment(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<romana_auth::Principal>,
    Path(tenant): Path<String>,
    Body(req): Body<SegmentRequest>,
) -> ApiResult<(StatusCode, axum::Json<Segment>)> {
    // The empty name is the tenant's default segment: the first address that names no segment
    // makes it, so it is never created by name.
    if req.name.is_empty() {
        return Err(ApiError::invalid(
            "invalid segment",
            vec!["name: must not be empty (\"\" is the default segment, made by the first address that names no segment)".into()],
        ));
    }
    SegmentName::new(req.name.clone())
        .map_err(|e| ApiError::invalid("invalid segment", vec![format!("name: {e}")]))?;
    let t = find(&state, &who, &tenant).await?;
    match tenant_store(&state).create_segment(&t.name, &req).await? {
        Some(s) => Ok((StatusCode::CREATED, axum::Json(segment_view(s)))),
        None => Err(ApiError::conflict(format!("segment {} of tenant {} already exists", req.name, t.name))),
    }
}

async fn show_segment(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<romana_auth::Principal>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<Segment>> {
    let t = find(&state, &who, &tenant).await?;
    let key = state.keys.segment(&t.name, &name);
    let kv = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown segment {name} of tenant {tenant}")))?;
    Ok(axum::Json(segment_view(decode(&key, &kv.value)?)))
}

async fn remove_segment(
    State(state): State<AppState>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let used = state.ipam.read(|s| {
        s.ipam
            .blocks()
            .iter()
            .any(|b| b.owner.as_ref().is_some_and(|(t, sg, _)| t.as_str() == tenant && sg.as_str() == name))
    });
    if used {
        return Err(ApiError::conflict(format!("segment {name} of tenant {tenant} still has addresses")));
    }
    let key = state.keys.segment(&tenant, &name);
    let r = state
        .store
        .txn(Txn::when(
            vec![Compare::CreateRevision(key.clone(), romana_store::Cmp::Greater, 0)],
            vec![Op::delete(&key)],
        ))
        .await?;
    if r.succeeded {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("unknown segment {name} of tenant {tenant}")))
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants", get(list).post(create))
        .route("/tenants/{tenant}", get(show).put(update).delete(remove))
        .route("/tenants/{tenant}/segments", get(segments).post(add_segment))
        .route("/tenants/{tenant}/segments/{segment}", get(show_segment).delete(remove_segment))
}
