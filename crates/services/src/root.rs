//! The Root service's handlers: the registry of live service instances (leased keys each
//! instance keeps alive, `registration.rs`) and per-service configuration. `GET /` answers in a
//! shape a Romana 1.x client reads.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use romana_api::rest::{Link, RootIndex, ServiceEntry, ServiceInstance};
use romana_store::{Op, Txn};

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;

use axum::Json;

pub use crate::registration::{REGISTRATION_TTL, spawn_registration};

async fn instances(s: &AppState) -> ApiResult<BTreeMap<String, Vec<ServiceInstance>>> {
    let (kvs, _) = s.store.range(&s.keys.services()).await?;
    let mut out: BTreeMap<String, Vec<ServiceInstance>> = BTreeMap::new();
    for kv in kvs {
        if let Ok(i) = serde_json::from_slice::<ServiceInstance>(&kv.value) {
            out.entry(i.name.clone()).or_default().push(i);
        }
    }
    Ok(out)
}

async fn index(State(s): State<AppState>) -> ApiResult<Json<RootIndex>> {
    let all = instances(&s).await?;
    let services = all
        .into_iter()
        .map(|(name, inst)| ServiceEntry {
            links: inst.iter().map(|i| Link { rel: "service".into(), href: i.url.clone() }).collect(),
            name,
            instances: inst,
        })
        .collect::<Vec<_>>();
    let mut links = vec![Link { rel: "self".into(), href: "/".into() }];
    links.extend(
        services
            .iter()
            .map(|e| Link { rel: format!("{}-config", e.name), href: format!("/config/{}", e.name) }),
    );
    Ok(Json(RootIndex { service_name: "root".into(), links, services }))
}

async fn get_config(
    State(s): State<AppState>,
    Path(service): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let key = s.keys.config(&service);
    match s.store.get(&key).await? {
        Some(kv) => Ok(Json(
            serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("stored config unreadable: {e}")))?,
        )),
        None => Ok(Json(serde_json::json!({}))),
    }
}

async fn put_config(
    State(s): State<AppState>,
    Path(service): Path<String>,
    Body(v): Body<serde_json::Value>,
) -> ApiResult<Json<serde_json::Value>> {
    if !v.is_object() {
        return Err(ApiError::invalid("invalid configuration", vec!["body: must be a JSON object".into()]));
    }
    if service.is_empty() || !service.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::invalid(
            "invalid configuration",
            vec![format!("service: {service:?} is not a service name")],
        ));
    }
    if service == crate::vips::CONFIG {
        crate::vips::check_config(&v)?;
    }
    s.store
        .txn(Txn::when(
            vec![],
            vec![Op::put(s.keys.config(&service), serde_json::to_vec(&v).expect("serializes"))],
        ))
        .await?;
    Ok(Json(v))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index)).route("/config/{service}", get(get_config).put(put_config))
}
