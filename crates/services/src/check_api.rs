//! `GET /check`: the consistency check over HTTP (admins and unbound service users; tenants and
//! agents are refused, since it names every tenant's addresses and hosts). `?leak_grace=SECS`
//! reports allocations without endpoint sooner than the reclaim grace, without changing it.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use romana_auth::Principal;

use crate::consistency;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

async fn check(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<serde_json::Value>> {
    if p.is_agent() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} is an agent: the consistency check is for admins and controllers", p.name),
        ));
    }
    let mut g = s.check.graces;
    if let Some(v) = q.get("leak_grace") {
        let secs: u64 = v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("leak_grace: {v:?} is not a number of seconds")))?;
        g.leak_ms = secs.saturating_mul(1000);
    }
    let now = crate::reclaim::now_ms();
    let picture = crate::reclaim::gather(&s).await?;
    // Every allocation against every record (tens of ms at 50,000 endpoints): off the runtime.
    let st = s.clone();
    let (picture, found) = crate::background::run(move || {
        let seen = st.check.observe(&picture, now);
        let found = crate::consistency_kernel::check_all(&picture, &seen, now, g);
        (picture, found)
    })
    .await;
    Ok(Json(serde_json::json!({
        "consistent": found.is_empty(),
        "counts": consistency::counts(&found),
        "checked": {
            "allocations": picture.allocations.len(),
            "endpoints": picture.endpoints.len(),
            "hosts": picture.hosts.len(),
            "dead_hosts": picture.monitored.iter().filter(|h| picture.is_dead(h)).count(),
        },
        "graces": {"leak_seconds": g.leak_ms / 1000, "dead_host_seconds": g.dead_ms / 1000},
        "disagreements": found,
    })))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/check", get(check))
}
