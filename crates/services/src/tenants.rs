//! The Tenant service: tenants and segments with external ids, labels and the numbers the classic
//! address layout needs. Numbers come from a counter that only grows, so they are never reused;
//! they are bounded by the classic layout's bits.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use romana_api::records::{SegmentRecord, TenantRecord};
use romana_api::rest::{Segment, SegmentRequest, Tenant, TenantRequest};
use romana_model::{SegmentName, TenantName};
use romana_store::{Compare, Op, Store, Txn};

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;

/// How many tenant and segment numbers the classic layout can encode (2^24 each without a classic network).
pub fn limits(ipam: &romana_ipam::Ipam) -> (u64, u64) {
    let classic = ipam.classic_networks();
    let t = classic.iter().map(|(_, b)| b.tenant_bits).min().unwrap_or(24);
    let s = classic.iter().map(|(_, b)| b.segment_bits).min().unwrap_or(24);
    (1u64 << t, 1u64 << s)
}

/// Tenant and segment records in the store, with bounded numbers.
pub struct TenantStore<'a> {
    pub store: &'a dyn Store,
    pub keys: &'a crate::keys::Keys,
    pub limits: (u64, u64),
}

impl std::fmt::Debug for TenantStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore").field("limits", &self.limits).finish()
    }
}

fn tenant_store(state: &AppState) -> TenantStore<'_> {
    TenantStore { store: &*state.store, keys: &state.keys, limits: state.ipam.read(|s| limits(&s.ipam)) }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(v)
        .map_err(|e| ApiError::internal(format!("stored record {key} is unreadable: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

impl TenantStore<'_> {
    async fn get_tenant(&self, name: &str) -> ApiResult<Option<(TenantRecord, i64)>> {
        let state = self;
        let key = state.keys.tenant(name);
        match state.store.get(&key).await? {
            Some(kv) => Ok(Some((decode(&key, &kv.value)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Creates a tenant with the next number. `Ok(None)` if it already exists.
    async fn create_tenant(&self, req: &TenantRequest) -> ApiResult<Option<TenantRecord>> {
        let state = self;
        let (limit, _) = self.limits;
        for _ in 0..50 {
            let counter = state.store.get(&state.keys.tenant_counter()).await?;
            let (next, rev): (u64, i64) = match &counter {
                Some(kv) => (String::from_utf8_lossy(&kv.value).parse().unwrap_or(0), kv.mod_revision),
                None => (0, 0),
            };
            if next >= limit {
                return Err(ApiError::conflict(format!(
                    "no tenant number left: the classic layout allows {limit}"
                )));
            }
            let rec = TenantRecord {
                name: req.name.clone(),
                external_id: req.external_id.clone(),
                labels: req.labels.clone(),
                number: next as u32,
                next_segment: 0,
                isolation: req.isolation.clone(),
            };
            let key = state.keys.tenant(&req.name);
            let txn = Txn {
                compare: vec![Compare::absent(&key), Compare::unchanged(state.keys.tenant_counter(), rev)],
                success: vec![
                    Op::put(&key, encode(&rec)),
                    Op::put(state.keys.tenant_counter(), (next + 1).to_string()),
                ],
                failure: vec![Op::Get { key: key.clone() }],
            };
            let r = state.store.txn(txn).await?;
            if r.succeeded {
                return Ok(Some(rec));
            }
            if !r.reads.first().is_none_or(Vec::is_empty) {
                return Ok(None);
            }
        }
        Err(ApiError::unavailable("too much contention creating tenants; try again"))
    }

    /// Creates a segment with its tenant's next number. `Ok(None)` if it exists.
    async fn create_segment(&self, tenant: &str, req: &SegmentRequest) -> ApiResult<Option<SegmentRecord>> {
        let state = self;
        let (_, limit) = self.limits;
        for _ in 0..50 {
            let (t, trev) = self
                .get_tenant(tenant)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("unknown tenant {tenant}")))?;
            if u64::from(t.next_segment) >= limit {
                return Err(ApiError::conflict(format!(
                    "tenant {tenant}: no segment number left: the classic layout allows {limit}"
                )));
            }
            let rec = SegmentRecord {
                name: req.name.clone(),
                tenant: tenant.to_owned(),
                external_id: req.external_id.clone(),
                labels: req.labels.clone(),
                number: t.next_segment,
            };
            let key = state.keys.segment(tenant, &req.name);
            let next = TenantRecord { next_segment: t.next_segment + 1, ..t };
            let txn = Txn {
                compare: vec![Compare::absent(&key), Compare::unchanged(state.keys.tenant(tenant), trev)],
                success: vec![Op::put(&key, encode(&rec)), Op::put(state.keys.tenant(tenant), encode(&next))],
                failure: vec![Op::Get { key: key.clone() }],
            };
            let r = state.store.txn(txn).await?;
            if r.succeeded {
                return Ok(Some(rec));
            }
            if !r.reads.first().is_none_or(Vec::is_empty) {
                return Ok(None);
            }
        }
        Err(ApiError::unavailable("too much contention creating segments; try again"))
    }

    /// The numbers of a tenant and segment, creating them (as the classic layout needs) if missing.
    pub async fn ensure(&self, tenant: &str, segment: &str) -> ApiResult<(u32, u32)> {
        let state = self;
        let t = match self.get_tenant(tenant).await? {
            Some((t, _)) => t,
            None => {
                let req = TenantRequest {
                    name: tenant.to_owned(),
                    external_id: String::new(),
                    labels: BTreeMap::new(),
                    isolation: Default::default(),
                };
                match self.create_tenant(&req).await? {
                    Some(t) => t,
                    None => self
                        .get_tenant(tenant)
                        .await?
                        .map(|x| x.0)
                        .ok_or_else(|| ApiError::unavailable("tenant vanished"))?,
                }
            }
        };
        let key = state.keys.segment(tenant, segment);
        let s: SegmentRecord = match state.store.get(&key).await? {
            Some(kv) => decode(&key, &kv.value)?,
            None => {
                let req = SegmentRequest {
                    name: segment.to_owned(),
                    external_id: String::new(),
                    labels: BTreeMap::new(),
                };
                match self.create_segment(tenant, &req).await? {
                    Some(s) => s,
                    None => decode(
                        &key,
                        &state
                            .store
                            .get(&key)
                            .await?
                            .ok_or_else(|| ApiError::unavailable("segment vanished"))?
                            .value,
                    )?,
                }
            }
        };
        Ok((t.number, s.number))
    }
}

async fn tenant_view(state: &AppState, t: TenantRecord) -> ApiResult<Tenant> {
    let (segs, _) = state.store.range(&state.keys.segments(&t.name)).await?;
    let segments = segs
        .iter()
        .map(|kv| decode::<SegmentRecord>(&kv.key, &kv.value).map(segment_view))
        .collect::<ApiResult<Vec<_>>>()?;
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
