//! The VIP handlers (Topology service): `GET/POST /vips`, `GET/DELETE /vips/{address}`, one key
//! per VIP (`vips/<address>`). Admins and controllers create and delete VIPs (an external address
//! is announced to the fabric: it is not a tenant's to claim); a tenant user reads only its own
//! tenants' VIPs (others are not found); agents read them all. The assignment (which host serves
//! each) is the leader's (`vips_leader.rs`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use romana_api::vip::{VipConfig, VipInfo, VipRequest};
use romana_auth::Principal;
use romana_model::Cidr;
use romana_store::{Compare, Op, Txn};

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::scope;
use crate::state::AppState;
use crate::vips_checks::{Refusal, check_address, draw, ranges, request_problems};

/// The configuration key's service name: `PUT /config/vips {"ranges": [...]}`.
pub const CONFIG: &str = "vips";

pub(crate) fn decode(key: &str, v: &[u8]) -> ApiResult<VipInfo> {
    serde_json::from_slice(v).map_err(|e| ApiError::internal(format!("stored VIP {key} is unreadable: {e}")))
}

/// `PUT /config/vips` is checked before it is stored: a bad range is a 422 naming it.
pub fn check_config(v: &serde_json::Value) -> ApiResult<()> {
    let cfg: VipConfig = serde_json::from_value(v.clone())
        .map_err(|e| ApiError::invalid("invalid VIP configuration", vec![format!("body: {e}")]))?;
    ranges(&cfg).map(|_| ()).map_err(|p| ApiError::invalid("invalid VIP configuration", p))
}

async fn config(s: &AppState) -> ApiResult<Vec<Cidr>> {
    let Some(kv) = s.store.get(&s.keys.config(CONFIG)).await? else { return Ok(Vec::new()) };
    let cfg: VipConfig = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored VIP configuration is unreadable: {e}")))?;
    ranges(&cfg).map_err(|p| ApiError::internal(format!("stored VIP configuration: {}", p.join("; "))))
}

pub(crate) async fn all(s: &AppState) -> ApiResult<Vec<VipInfo>> {
    let (kvs, _) = s.store.range(&s.keys.vips()).await?;
    kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect()
}

async fn list(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<VipInfo>>> {
    Ok(Json(all(&s).await?.into_iter().filter(|v| scope::visible(&p, &v.tenant)).collect()))
}

fn unknown(address: &str) -> ApiError {
    ApiError::not_found(format!("no VIP {address}"))
}

async fn show(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(address): Path<String>,
) -> ApiResult<Json<VipInfo>> {
    // Only an address can be a key: anything else is not looked up.
    if address.parse::<IpAddr>().is_err() {
        return Err(unknown(&address));
    }
    let key = s.keys.vip(&address);
    let kv = s.store.get(&key).await?.ok_or_else(|| unknown(&address))?;
    let v = decode(&key, &kv.value)?;
    if !scope::visible(&p, &v.tenant) {
        return Err(unknown(&address));
    }
    Ok(Json(v))
}

fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::Invalid(m) => ApiError::invalid("invalid VIP", vec![m]),
        Refusal::Conflict(m) => ApiError::conflict(m),
    }
}

async fn create(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Body(req): Body<VipRequest>,
) -> ApiResult<(StatusCode, Json<VipInfo>)> {
    let mut problems = request_problems(&req);
    let (networks, hosts) = s.ipam.read(|v| {
        let nets: Vec<(String, Cidr)> =
            v.ipam.networks().into_iter().map(|n| (n.name.as_str().to_owned(), n.cidr)).collect();
        let hosts: Vec<(String, IpAddr)> =
            v.ipam.hosts().into_iter().map(|h| (h.name.as_str().to_owned(), h.ip)).collect();
        (nets, hosts)
    });
    if !req.host.is_empty() && !hosts.iter().any(|(h, _)| *h == req.host) {
        problems.push(format!("host: no host {:?} in the topology", req.host));
    }
    if !req.tenant.is_empty() && s.store.get(&s.keys.tenant(&req.tenant)).await?.is_none() {
        problems.push(format!("tenant: no tenant {:?}", req.tenant));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid VIP", problems));
    }
    // Admins and controllers only (the route's access), never an agent (scope::agent_route);
    // the tenant check keeps a future tenant-writable route honest.
    scope::require(&p, &req.tenant)?;
    let existing = all(&s).await?;
    let address = if req.address.is_empty() {
        let ranges = config(&s).await?;
        if ranges.is_empty() {
            return Err(ApiError::invalid(
                "invalid VIP",
                vec![
                    "address: none given and no external range is configured (PUT /config/vips \
                     {\"ranges\": [\"198.51.100.0/28\"]})"
                        .to_owned(),
                ],
            ));
        }
        let used: BTreeSet<Ipv4Addr> = existing.iter().filter_map(|v| v.address.parse().ok()).collect();
        draw(&ranges, &used, &networks, &hosts).ok_or_else(|| {
            let list: Vec<String> = ranges.iter().map(ToString::to_string).collect();
            ApiError::conflict(format!("every address of the external ranges {} is in use", list.join(", ")))
        })?
    } else {
        check_address(&req.address, &networks, &hosts).map_err(refused)?
    };
    let address = address.to_string();
    if let Some(v) = existing.iter().find(|v| v.address == address) {
        return Err(ApiError::conflict(if scope::visible(&p, &v.tenant) {
            format!("VIP {address} exists (service {} of tenant {})", v.service, v.tenant)
        } else {
            format!("VIP {address} exists")
        }));
    }
    let selector = if req.selector.is_empty() {
        [("app".to_owned(), req.service.clone())].into()
    } else {
        req.selector.clone()
    };
    let mut ports = req.ports.clone();
    for port in &mut ports {
        port.protocol = port.protocol.to_ascii_uppercase();
    }
    let origin = if !req.origin.is_empty() {
        req.origin.clone()
    } else if p.is_admin() {
        "api".to_owned()
    } else {
        format!("api:{}", p.name)
    };
    let v = VipInfo {
        address: address.clone(),
        service: req.service,
        tenant: req.tenant,
        selector,
        ports,
        host: req.host,
        origin,
        ..VipInfo::default()
    };
    let key = s.keys.vip(&address);
    let r = s
        .store
        .txn(Txn::when(
            vec![Compare::absent(&key)],
            vec![Op::put(&key, serde_json::to_vec(&v).expect("serializes"))],
        ))
        .await?;
    if !r.succeeded {
        return Err(ApiError::conflict(format!("VIP {address} was created meanwhile")));
    }
    Ok((StatusCode::CREATED, Json(v)))
}

async fn remove(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(address): Path<String>,
) -> ApiResult<Json<VipInfo>> {
    if address.parse::<IpAddr>().is_err() {
        return Err(unknown(&address));
    }
    let key = s.keys.vip(&address);
    let kv = s.store.get(&key).await?.ok_or_else(|| unknown(&address))?;
    let v = decode(&key, &kv.value)?;
    if !scope::visible(&p, &v.tenant) {
        return Err(unknown(&address));
    }
    let r = s
        .store
        .txn(Txn::when(vec![Compare::unchanged(&key, kv.mod_revision)], vec![Op::delete(&key)]))
        .await?;
    if !r.succeeded {
        // The leader moved it meanwhile: the caller's intent still holds, so delete what is there.
        s.take(&key).await?;
    }
    Ok(Json(v))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/vips", get(list).post(create)).route("/vips/{address}", get(show).delete(remove))
}
