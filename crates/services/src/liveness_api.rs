//! The Route Manager's HTTP handlers: agents' heartbeats (`PUT /hosts/{host}/alive`, a leased
//! key per host) and `GET /liveness`.

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use romana_api::diagnose::HostReport;
use romana_store::{Op, Txn};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `PUT /hosts/{host}/alive`: an agent's heartbeat, with its self-diagnosis's report as the
/// body (optional). The host counts as alive while it renews within the liveness TTL.
async fn alive(
    State(s): State<AppState>,
    Path(host): Path<String>,
    report: Option<Json<HostReport>>,
) -> ApiResult<Json<serde_json::Value>> {
    if !s.ipam.read(|v| v.ipam.hosts().iter().any(|h| h.name.as_str() == host)) {
        return Err(ApiError::not_found(format!("unknown host {host}")));
    }
    if let Some(Json(r)) = report
        && let Err(e) = crate::consistency_reports::keep(&s, &host, r, crate::reclaim::now_ms()).await
    {
        tracing::warn!(%host, error = %e, "could not keep the host's report");
    }
    let ttl = s.liveness.read().unwrap_or_else(|p| p.into_inner()).ttl;
    let existing = {
        let l = s.liveness.read().unwrap_or_else(|p| p.into_inner());
        let leases = l.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.get(&host).copied()
    };
    if let Some(lease) = existing
        && s.store.lease_keepalive(lease).await.is_ok()
        && s.store.get(&s.keys.liveness(&host)).await?.is_some()
    {
        return Ok(Json(serde_json::json!({"host": host, "ttl": ttl})));
    }
    let lease = s.store.lease_grant(ttl).await?;
    s.store
        .txn(Txn::when(
            vec![],
            vec![
                Op::Put { key: s.keys.liveness(&host), value: b"alive".to_vec(), lease },
                Op::put(s.keys.liveness_seen(&host), b"seen".to_vec()),
            ],
        ))
        .await?;
    {
        let l = s.liveness.read().unwrap_or_else(|p| p.into_inner());
        l.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(host.clone(), lease);
    }
    Ok(Json(serde_json::json!({"host": host, "ttl": ttl})))
}

/// `GET /liveness`: hosts being monitored, and which of them are alive.
async fn list(State(s): State<AppState>) -> Json<serde_json::Value> {
    let l = s.liveness.read().unwrap_or_else(|p| p.into_inner());
    Json(serde_json::json!({"monitored": l.monitored, "alive": l.live, "ttl": l.ttl}))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/hosts/{host}/alive", put(alive)).route("/liveness", get(list))
}
