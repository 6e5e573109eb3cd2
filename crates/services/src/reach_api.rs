//! `GET /endpoints/{name}/reach`: an endpoint's effective ingress and egress, read-only and
//! scoped like `/endpoints` (admin and service). Reads the records and hands them to the pure
//! core (`reach.rs`).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use romana_api::netpol::NetworkPolicy;
use romana_api::reach::ReachInfo;
use romana_api::records::TenantRecord;
use romana_api::rest::EndpointInfo;

use crate::error::{ApiError, ApiResult};
use crate::policy_store::PolicyStore;
use crate::reach::{Inputs, reach};
use crate::state::AppState;
use crate::tenant_store::decode;

/// Each prefix is read on its own, so the answer may mix revisions a change apart; it is a view,
/// and the next read is current again.
async fn show(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<ReachInfo>> {
    let (kvs, _) = s.store.range(&s.keys.endpoints()).await?;
    let endpoints: Vec<EndpointInfo> =
        kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<Result<_, _>>()?;
    if !endpoints.iter().any(|e| e.name == name) {
        return Err(ApiError::not_found(format!("unknown endpoint {name}")));
    }
    let (kvs, _) = s.store.range(&s.keys.tenants()).await?;
    let mut tenants = Vec::new();
    for kv in kvs {
        let t: TenantRecord = decode(&kv.key, &kv.value)?;
        tenants.push(crate::tenants::tenant_view(&s, t).await?);
    }
    let policies = PolicyStore { store: &*s.store, keys: &s.keys }.list().await?;
    let (kvs, _) = s.store.range(&s.keys.netpols()).await?;
    let netpols: Vec<NetworkPolicy> =
        kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<Result<_, _>>()?;
    // Every peer times every port interval: CPU work, off the async workers.
    let answer = tokio::task::spawn_blocking(move || {
        reach(
            &name,
            Inputs { tenants: &tenants, policies: &policies, netpols: &netpols, endpoints: &endpoints },
        )
        .ok_or_else(|| ApiError::not_found(format!("endpoint {name} has an unreadable address")))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the reach computation failed: {e}")))??;
    Ok(Json(answer))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/endpoints/{name}/reach", get(show))
}
