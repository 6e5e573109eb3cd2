//! The endpoint registry (Topology service): one key per endpoint with its address, tenant,
//! segment, host, labels and named ports, the facts the policy dataplane selects on. Agents
//! write records on CNI ADD and delete them on DEL; controllers replace labels.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use romana_api::rest::{EndpointInfo, LabelsRequest};
use romana_auth::Principal;
use romana_store::{Compare, Op, Txn};

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::scope;
use crate::state::AppState;

fn decode(key: &str, v: &[u8]) -> ApiResult<EndpointInfo> {
    serde_json::from_slice(v)
        .map_err(|e| ApiError::internal(format!("stored endpoint {key} is unreadable: {e}")))
}

/// A label key or value as Kubernetes allows them, loosely: non-empty keys of at most 253
/// characters, values of at most 63, no whitespace or control characters.
pub(crate) fn label_problems(labels: &std::collections::BTreeMap<String, String>, out: &mut Vec<String>) {
    for (k, v) in labels {
        if k.is_empty() || k.len() > 253 || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.push(format!("labels: key {k:?} is not a label key"));
        }
        if v.len() > 63 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.push(format!("labels[{k}]: value {v:?} is not a label value"));
        }
    }
}

/// Named ports: TCP, UDP or SCTP, a name and a port above 0.
pub(crate) fn port_problems(ports: &[romana_api::rest::EndpointPort], out: &mut Vec<String>) {
    for (i, p) in ports.iter().enumerate() {
        if romana_policy::Protocol::parse(&p.protocol).is_none() {
            out.push(format!("ports[{i}].protocol: {:?} is not TCP, UDP or SCTP", p.protocol));
        }
        if p.name.is_empty() || p.port == 0 {
            out.push(format!("ports[{i}]: needs a name and a port above 0"));
        }
    }
}

fn validate(e: &EndpointInfo) -> ApiResult<()> {
    let mut out = Vec::new();
    if e.name.is_empty() {
        out.push("name: must not be empty".to_owned());
    }
    if e.ip.parse::<std::net::IpAddr>().is_err() {
        out.push(format!("ip: {:?} is not an IP address", e.ip));
    }
    if e.tenant.is_empty() {
        out.push("tenant: must not be empty".to_owned());
    }
    if e.host.is_empty() {
        out.push("host: must not be empty".to_owned());
    }
    label_problems(&e.labels, &mut out);
    port_problems(&e.ports, &mut out);
    if !e.pod.is_empty() && crate::pod_join::split_pod(&e.pod).is_none() {
        out.push(format!("pod: {:?} is not namespace/name", e.pod));
    }
    if out.is_empty() { Ok(()) } else { Err(ApiError::invalid("invalid endpoint", out)) }
}

async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<EndpointInfo>>> {
    let (kvs, _) = s.store.range(&s.keys.endpoints()).await?;
    Ok(Json(kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<ApiResult<_>>()?))
}

async fn show(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<EndpointInfo>> {
    let key = s.keys.endpoint(&name);
    let kv =
        s.store.get(&key).await?.ok_or_else(|| ApiError::not_found(format!("unknown endpoint {name}")))?;
    Ok(Json(decode(&key, &kv.value)?))
}

/// Creates or replaces an endpoint. The address, tenant, segment and host must be the ones IPAM
/// holds for that name, so a record can never claim someone else's address or segment; an agent
/// writes only records of its own hosts.
async fn replace(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    Body(mut e): Body<EndpointInfo>,
) -> ApiResult<Json<EndpointInfo>> {
    if e.name.is_empty() {
        e.name = name.clone();
    }
    if e.name != name {
        return Err(ApiError::invalid(
            "invalid endpoint",
            vec![format!("name: {:?} does not match the path {name:?}", e.name)],
        ));
    }
    admit(&s, &p, &mut e)?;
    // With `pod` set, the labels and ports are the pod record's (pod_join).
    Ok(Json(crate::pod_join::put_endpoint(&s, e).await?))
}

/// Whether `p` may write record `e` (named already): valid, of the principal's hosts, its
/// labels the agent's to give, and its address, tenant, segment and host IPAM's for its name.
/// Puts the address in its one spelling (IPv6 has many).
fn admit(s: &AppState, p: &Principal, e: &mut EndpointInfo) -> ApiResult<()> {
    validate(e)?;
    scope::require_host(p, &e.host)?;
    crate::managed_hosts::check_endpoint(s, p, e)?;
    e.ip = e.ip.parse::<std::net::IpAddr>().map(|ip| ip.to_string()).unwrap_or_default();
    let name = &e.name;
    let owned = s.ipam.read(|st| {
        st.ipam.lookup(name).map(|a| {
            (
                a.ip.to_string(),
                a.tenant.as_str().to_owned(),
                a.segment.as_str().to_owned(),
                a.host.as_str().to_owned(),
            )
        })
    });
    match owned {
        Some(got) if got == (e.ip.clone(), e.tenant.clone(), e.segment.clone(), e.host.clone()) => Ok(()),
        Some((ip, tenant, segment, host)) => Err(ApiError::conflict(format!(
            "endpoint {name} is {ip} of tenant {tenant} segment {segment:?} on host {host} in IPAM, \
             not {} of {} segment {:?} on {}",
            e.ip, e.tenant, e.segment, e.host
        ))),
        None => Err(ApiError::not_found(format!("IPAM has no address named {name}; allocate it first"))),
    }
}

/// `PUT /endpoint-stacks/{name}`: every record of one endpoint at once, `{name}` and, for a
/// dual-stack one, `{name}#v6` (as `POST /address-stacks` named its addresses), in one store
/// transaction: both are written or neither. Each record is admitted exactly as by
/// `PUT /endpoints/{name}`; the first refused answers for all. A CNI ADD of a dual-stack pod
/// registers with one round trip instead of two.
async fn replace_stack(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    Body(mut records): Body<Vec<EndpointInfo>>,
) -> ApiResult<Json<Vec<EndpointInfo>>> {
    stack_names(&name, &records)?;
    for e in &mut records {
        admit(&s, &p, e)?;
    }
    Ok(Json(crate::pod_join::put_endpoints(&s, records).await?))
}

/// A stack's records: one or two, each named `{name}` or `{name}#v6`, no name twice.
fn stack_names(name: &str, records: &[EndpointInfo]) -> ApiResult<()> {
    let v6 = format!("{name}{}", romana_ipam::V6_SUFFIX);
    let mut problems = Vec::new();
    if records.is_empty() || records.len() > 2 {
        problems.push(format!("an endpoint stack holds one or two records, not {}", records.len()));
    }
    for (i, e) in records.iter().enumerate() {
        if e.name != name && e.name != v6 {
            problems.push(format!("[{i}].name: {:?} is neither {name:?} nor {v6:?}", e.name));
        } else if records[..i].iter().any(|o| o.name == e.name) {
            problems.push(format!("[{i}].name: {:?} is given twice", e.name));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ApiError::invalid("invalid endpoint stack", problems)) }
}

async fn labels(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    Body(req): Body<LabelsRequest>,
) -> ApiResult<Json<EndpointInfo>> {
    let mut problems = Vec::new();
    label_problems(&req.labels, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid labels", problems));
    }
    let key = s.keys.endpoint(&name);
    let kv =
        s.store.get(&key).await?.ok_or_else(|| ApiError::not_found(format!("unknown endpoint {name}")))?;
    let mut e = decode(&key, &kv.value)?;
    scope::require_host(&p, &e.host)?;
    crate::managed_hosts::check_relabel(&s, &p, &name, &e.host)?;
    if !e.pod.is_empty() {
        return Err(ApiError::conflict(format!(
            "the labels of endpoint {name} are pod {}'s: change its record (PUT /pods/{})",
            e.pod, e.pod
        )));
    }
    e.labels = req.labels;
    let r = s
        .store
        .txn(Txn::when(
            vec![Compare::unchanged(&key, kv.mod_revision)],
            vec![Op::put(&key, serde_json::to_vec(&e).expect("serializes"))],
        ))
        .await?;
    if !r.succeeded {
        return Err(ApiError::conflict(format!("endpoint {name} changed meanwhile; try again")));
    }
    Ok(Json(e))
}

async fn remove(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    // An agent deletes only records of its own hosts, and only the record it checked: the
    // delete is conditional on the record being unchanged since.
    // An unknown name is 404, never a silent success: a Romana 1.x IPAM client's release
    // (`DELETE /endpoints/<ip>`) must not look done while its address stays allocated (those
    // are answered by `legacy_openstack.rs`, docs/api.md "OpenStack"). Callers that retry
    // (the agent's CNI DEL) take 404 as done.
    if !crate::pod_join::delete_endpoint(&s, &name, |e| scope::require_host(&p, &e.host)).await? {
        return Err(ApiError::not_found(format!("no endpoint named {name:?} in the endpoint registry")));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/endpoints", get(list))
        .route("/endpoints/{name}", get(show).put(replace).delete(remove))
        .route("/endpoints/{name}/labels", put(labels))
        .route("/endpoint-stacks/{name}", put(replace_stack))
}
