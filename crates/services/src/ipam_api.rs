//! REST handlers of the Topology and IPAM services (Romana 2.0 paths kept): networks, topology,
//! hosts, addresses, blocks, blackouts, and the route manager's per-host routes.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use romana_api::query::{CidrQuery, ReleaseQuery, TokenQuery};
use romana_api::rest::{
    Address, AddressRequest, BlackoutRequest, BlockInfo, BlockList, FabricGroup, Host, HostList, HostRequest,
    NetworkInfo, Placement, TagsRequest, TopologyChangeSummary,
};
use romana_api::topology::TopologyRequest;
use romana_ipam::spec::{DEFAULT_AGENT_PORT, HostSpec, LayoutSpec};
use romana_ipam::{AllocRequest, Allocation, HostOrigin};
use romana_model::{AddressName, Cidr, Family, HostName, SegmentName, TenantName};

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::scope;
use crate::state::AppState;

use axum::{Extension, Json};
use romana_auth::Principal;

fn invalid(what: &str, problems: Vec<String>) -> ApiError {
    ApiError::invalid(format!("invalid {what}"), problems)
}

fn address_view(a: &Allocation) -> Address {
    Address {
        name: a.name.to_string(),
        ip: a.ip.to_string(),
        prefix_len: a.prefix_len,
        network: a.network.to_string(),
        block: a.block.to_string(),
        host: a.host.to_string(),
        tenant: a.tenant.to_string(),
        segment: a.segment.to_string(),
    }
}

fn host_view(h: &romana_ipam::HostView) -> Host {
    Host {
        name: h.name.to_string(),
        ip: h.ip.to_string(),
        ipv6: h.ipv6.map(|a| a.to_string()),
        agent_port: h.agent_port,
        tags: h.tags.clone(),
        origin: match h.origin {
            HostOrigin::Topology => "topology".into(),
            HostOrigin::Dynamic => "dynamic".into(),
        },
        placements: h
            .placement
            .networks
            .iter()
            .map(|(n, g, c)| Placement { network: n.to_string(), group: g.clone(), cidr: c.to_string() })
            .collect(),
    }
}

/// Networks. A tenant user sees the networks its tenants may use, and of their tenant
/// restrictions only its own tenants (another tenant's name is not its business).
async fn networks(State(s): State<AppState>, Extension(p): Extension<Principal>) -> Json<Vec<NetworkInfo>> {
    Json(s.ipam.read(|v| {
        v.ipam
            .networks()
            .into_iter()
            .filter(|n| n.tenants.is_empty() || n.tenants.iter().any(|t| scope::visible(&p, t.as_str())))
            .map(|n| NetworkInfo {
                id: n.name.to_string(),
                name: n.name.to_string(),
                cidr: n.cidr.to_string(),
                block_mask: n.block_mask,
                tenants: n
                    .tenants
                    .iter()
                    .filter(|t| scope::visible(&p, t.as_str()))
                    .map(ToString::to_string)
                    .collect(),
                layout: match n.layout {
                    LayoutSpec::Blocks => "blocks".into(),
                    LayoutSpec::Classic(_) => "classic".into(),
                },
                blacked_out: n.blackouts.iter().map(ToString::to_string).collect(),
                allocated: n.allocated,
                revision: v.revision,
            })
            .collect()
    }))
}

fn block_list(s: &AppState, network: Option<&str>) -> BlockList {
    s.ipam.read(|v| BlockList {
        revision: v.revision,
        blocks: v
            .ipam
            .blocks()
            .into_iter()
            .filter(|b| network.is_none_or(|n| b.network.as_str() == n))
            .map(|b| {
                let (tenant, segment, host) = match &b.owner {
                    Some((t, sg, h)) => (t.to_string(), sg.to_string(), h.to_string()),
                    None => Default::default(),
                };
                BlockInfo {
                    network: b.network.to_string(),
                    cidr: b.cidr.to_string(),
                    tenant,
                    segment,
                    host,
                    allocated_ip_count: b.allocated,
                    capacity: b.capacity,
                    revision: b.revision,
                }
            })
            .collect(),
    })
}

async fn blocks(State(s): State<AppState>) -> Json<BlockList> {
    Json(block_list(&s, None))
}

async fn network_blocks(
    State(s): State<AppState>,
    Path(network): Path<String>,
) -> ApiResult<Json<BlockList>> {
    if !s.ipam.read(|v| v.ipam.networks().iter().any(|n| n.name.as_str() == network)) {
        return Err(ApiError::not_found(format!("unknown network {network}")));
    }
    Ok(Json(block_list(&s, Some(&network))))
}

async fn get_topology(State(s): State<AppState>) -> Json<TopologyRequest> {
    Json(s.ipam.read(|v| romana_api::topology::render(&v.ipam)))
}

async fn post_topology(
    State(s): State<AppState>,
    Body(req): Body<TopologyRequest>,
) -> ApiResult<Json<TopologyChangeSummary>> {
    let c = s.ipam.update_topology(req).await?;
    Ok(Json(TopologyChangeSummary {
        kept_addresses: c.kept_addresses,
        kept_hosts: c.kept_hosts.iter().map(ToString::to_string).collect(),
        dropped_hosts: c.dropped_hosts.iter().map(ToString::to_string).collect(),
        added_networks: c.added_networks.iter().map(ToString::to_string).collect(),
        removed_networks: c.removed_networks.iter().map(ToString::to_string).collect(),
        dropped_blackouts: c.dropped_blackouts.iter().map(ToString::to_string).collect(),
    }))
}

async fn hosts(State(s): State<AppState>) -> Json<HostList> {
    Json(
        s.ipam.read(|v| HostList {
            hosts: v.ipam.hosts().iter().map(host_view).collect(),
            revision: v.revision,
        }),
    )
}

fn host_name(name: &str) -> ApiResult<HostName> {
    HostName::new(name).map_err(|e| invalid("host", vec![format!("name: {e}")]))
}

fn find_host(s: &AppState, name: &str) -> ApiResult<Host> {
    s.ipam
        .read(|v| v.ipam.hosts().iter().find(|h| h.name.as_str() == name).map(host_view))
        .ok_or_else(|| ApiError::not_found(format!("unknown host {name}")))
}

async fn add_host(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Body(req): Body<HostRequest>,
) -> ApiResult<(StatusCode, Json<Host>)> {
    scope::require_host(&p, &req.name)?;
    let mut problems = Vec::new();
    let name = HostName::new(req.name.clone()).map_err(|e| problems.push(format!("name: {e}"))).ok();
    let ip = req
        .ip
        .parse::<IpAddr>()
        .map_err(|_| problems.push(format!("ip: {:?} is not an IP address", req.ip)))
        .ok();
    let ipv6 = match req.ipv6.as_deref().map(romana_api::underlay::parse_ipv6) {
        None => None,
        Some(Ok(v6)) => Some(v6),
        Some(Err(e)) => {
            problems.push(format!("ipv6: {e}"));
            None
        }
    };
    if let (Some(IpAddr::V6(ip)), Some(v6)) = (ip, ipv6) {
        problems.push(format!("ipv6: {v6} goes beside an IPv4 ip, but ip {ip} is IPv6 already"));
    }
    if req.agent_port == Some(0) {
        problems.push("agent_port: must be 1-65535".into());
    }
    let (Some(name), Some(ip), true) = (name, ip, problems.is_empty()) else {
        return Err(invalid("host", problems));
    };
    let existed = s.ipam.read(|v| v.ipam.host_placement(&name).is_some());
    let mut spec = HostSpec::new(name.clone(), ip);
    spec.ipv6 = ipv6;
    spec.agent_port = req.agent_port.unwrap_or(DEFAULT_AGENT_PORT);
    spec.tags = req.tags;
    s.ipam.add_host(spec).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(find_host(&s, name.as_str())?)))
}

async fn show_host(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Host>> {
    Ok(Json(find_host(&s, &name)?))
}

async fn remove_host(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Vec<Address>>> {
    let released = s.ipam.remove_host(host_name(&name)?).await?;
    // The host is gone; its liveness keys would only leak. Best effort: the removal has landed.
    let cleanup = romana_store::Txn::when(
        vec![],
        vec![
            romana_store::Op::delete(s.keys.liveness(&name)),
            romana_store::Op::delete(s.keys.liveness_seen(&name)),
            romana_store::Op::delete(s.keys.host_report(&name)),
        ],
    );
    if let Err(e) = s.store.txn(cleanup).await {
        tracing::warn!(host = %name, error = %e, "could not remove the liveness keys of a removed host");
    }
    Ok(Json(
        released
            .into_iter()
            .map(|r| Address { name: r.name, ip: r.ip.to_string(), host: name.clone(), ..empty_address() })
            .collect(),
    ))
}

fn empty_address() -> Address {
    Address {
        name: String::new(),
        ip: String::new(),
        prefix_len: 0,
        network: String::new(),
        block: String::new(),
        host: String::new(),
        tenant: String::new(),
        segment: String::new(),
    }
}

async fn set_tags(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    Body(req): Body<TagsRequest>,
) -> ApiResult<Json<Host>> {
    crate::managed_hosts::check_tags(&s, &p, &name, &req.tags)?;
    s.ipam.set_tags(host_name(&name)?, req.tags).await?;
    Ok(Json(find_host(&s, &name)?))
}

fn alloc_request(req: &AddressRequest) -> ApiResult<(AllocRequest, Option<IpAddr>)> {
    let mut problems = Vec::new();
    let name = AddressName::new(req.name.clone()).map_err(|e| problems.push(format!("name: {e}"))).ok();
    let host = HostName::new(req.host.clone()).map_err(|e| problems.push(format!("host: {e}"))).ok();
    let tenant = TenantName::new(req.tenant.clone()).map_err(|e| problems.push(format!("tenant: {e}"))).ok();
    let segment =
        SegmentName::new(req.segment.clone()).map_err(|e| problems.push(format!("segment: {e}"))).ok();
    let ip = match &req.ip {
        Some(ip) => ip
            .parse::<IpAddr>()
            .map(Some)
            .map_err(|_| problems.push(format!("ip: {ip:?} is not an IP address")))
            .ok()
            .flatten(),
        None => None,
    };
    match (name, host, tenant, segment, problems.is_empty()) {
        (Some(name), Some(host), Some(tenant), Some(segment), true) => {
            Ok((AllocRequest { name, host, tenant, segment }, ip))
        }
        _ => Err(invalid("address request", problems)),
    }
}

fn check_token(t: &Option<String>) -> ApiResult<()> {
    match t {
        Some(t)
            if t.is_empty() || t.len() > 128 || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            Err(invalid("request", vec!["RequestToken: 1 to 128 characters from A-Z a-z 0-9 -".into()]))
        }
        _ => Ok(()),
    }
}

/// An allocation's failure as `p` may read it. The IPAM's conflicts name the holder of a name or
/// address and the owner of a block; a tenant user learns them only when they are its own
/// tenants' (the check runs after the failure, so only a positive finding keeps the detail).
/// `name` is the name the allocation used: a request token seen before replaces the request's.
fn scoped_failure(s: &AppState, p: &Principal, req: &AddressRequest, name: &str, e: ApiError) -> ApiError {
    if p.is_privileged() || e.status != StatusCode::CONFLICT {
        return e;
    }
    let ip = req.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok());
    let (name_holder, ip_holder) = s.ipam.read(|v| {
        (
            v.ipam.lookup(name).map(|a| a.tenant.as_str().to_owned()),
            ip.and_then(|ip| v.ipam.lookup_ip(ip)).map(|a| a.tenant.as_str().to_owned()),
        )
    });
    match (name_holder, ip_holder, ip) {
        (Some(t), _, _) if scope::visible(p, &t) => e,
        (Some(_), _, _) => ApiError::conflict(format!("address name {name} is already in use")),
        (None, Some(t), _) if scope::visible(p, &t) => e,
        (None, _, Some(ip)) => ApiError::conflict(format!(
            "{ip} is not available to tenant {:?}: it is allocated, or in a block of another owner",
            req.tenant
        )),
        (None, _, None) => ApiError::conflict(format!(
            "no address available for tenant {:?} segment {:?} on host {}",
            req.tenant, req.segment, req.host
        )),
    }
}

/// The name an allocation of `req` with `token` used (for `scoped_failure`).
async fn used_name(s: &AppState, req: &AddressRequest, token: &Option<String>) -> String {
    let Some(t) = token else { return req.name.clone() };
    let holder = |name: &str| s.ipam.read(|v| v.ipam.lookup(name).map(|a| a.tenant.to_string()));
    crate::ipam_writes::token_name(&*s.store, &s.keys, &req.tenant, t, holder)
        .await
        .unwrap_or_else(|| req.name.clone())
}

/// Romana 2.0's `POST /address`: answers the address as a JSON string.
async fn allocate_v2(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<TokenQuery>,
    Body(req): Body<AddressRequest>,
) -> ApiResult<Json<String>> {
    check_token(&q.request_token)?;
    scope::require(&p, &req.tenant)?;
    scope::require_host(&p, &req.host)?;
    let (r, ip) = alloc_request(&req)?;
    let a = match s.ipam.allocate(r, ip, q.request_token.clone()).await {
        Ok(a) => a,
        Err(e) => {
            return Err(scoped_failure(&s, &p, &req, &used_name(&s, &req, &q.request_token).await, e.into()));
        }
    };
    Ok(Json(a.ip.to_string()))
}

/// `POST /addresses?family=ipv4|ipv6` (with Romana 2.0's `RequestToken`): `family` draws the
/// address from that family's networks only, named as a dual-stack endpoint's (`<name>#v6` for
/// IPv6 when the host also draws IPv4 for the tenant), as OpenStack allocates a port's subnets
/// one at a time.
#[derive(Debug, Default, serde::Deserialize)]
struct AllocQuery {
    #[serde(rename = "RequestToken", alias = "request_token")]
    request_token: Option<String>,
    family: Option<String>,
}

fn family(q: &AllocQuery) -> ApiResult<Option<Family>> {
    match q.family.as_deref() {
        None => Ok(None),
        Some("ipv4") => Ok(Some(Family::V4)),
        Some("ipv6") => Ok(Some(Family::V6)),
        // The message names the problem itself: the OpenStack driver shows romanad's message only.
        Some(other) => Err(ApiError::invalid(format!("family: {other:?} is not ipv4 or ipv6"), vec![])),
    }
}

async fn allocate(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<AllocQuery>,
    Body(req): Body<AddressRequest>,
) -> ApiResult<(StatusCode, Json<Address>)> {
    check_token(&q.request_token)?;
    scope::require(&p, &req.tenant)?;
    scope::require_host(&p, &req.host)?;
    let (r, ip) = alloc_request(&req)?;
    let got = match family(&q)? {
        Some(f) => s.ipam.allocate_family(r, f, ip, q.request_token.clone()).await,
        None => s.ipam.allocate(r, ip, q.request_token.clone()).await,
    };
    let a = match got {
        Ok(a) => a,
        Err(e) => {
            return Err(scoped_failure(&s, &p, &req, &used_name(&s, &req, &q.request_token).await, e.into()));
        }
    };
    Ok((if a.fresh { StatusCode::CREATED } else { StatusCode::OK }, Json(address_view(&a))))
}

/// `POST /address-stacks`: every address of the endpoint, the one named as asked first.
async fn allocate_stack(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Body(req): Body<AddressRequest>,
) -> ApiResult<(StatusCode, Json<Vec<Address>>)> {
    scope::require(&p, &req.tenant)?;
    scope::require_host(&p, &req.host)?;
    if req.ip.is_some() {
        return Err(ApiError::invalid("a dual-stack allocation takes no pinned ip", vec!["ip".into()]));
    }
    let (r, _) = alloc_request(&req)?;
    let got = match s.ipam.allocate_stack(r).await {
        Ok(got) => got,
        Err(e) => return Err(scoped_failure(&s, &p, &req, &req.name, e.into())),
    };
    let status = if got.iter().any(|a| a.fresh) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(got.iter().map(address_view).collect())))
}

async fn release_v2(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ReleaseQuery>,
) -> ApiResult<Json<Address>> {
    let key = q.address_name.ok_or_else(|| ApiError::bad_request("missing query parameter addressName"))?;
    release_key(&s, &p, key).await
}

async fn release(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(key): Path<String>,
) -> ApiResult<Json<Address>> {
    release_key(&s, &p, key).await
}

fn lookup(s: &AppState, key: &str) -> Option<Allocation> {
    s.ipam.read(|v| v.ipam.lookup(key).or_else(|| key.parse().ok().and_then(|ip| v.ipam.lookup_ip(ip))))
}

fn not_found(key: &str) -> ApiError {
    ApiError::not_found(format!("no allocated address named or numbered {key}"))
}

async fn release_key(s: &AppState, p: &Principal, key: String) -> ApiResult<Json<Address>> {
    let v6 = format!("{key}{}", romana_ipam::V6_SUFFIX);
    // The name's allocation, or its IPv6 one's when only that is left (below).
    let held = lookup(s, &key).or_else(|| lookup(s, &v6));
    // Another tenant's address is "not found", as if it did not exist.
    if !p.is_privileged() && !held.as_ref().is_some_and(|a| scope::visible(p, a.tenant.as_str())) {
        return Err(not_found(&key));
    }
    // An agent releases only addresses held on its own hosts.
    if let Some(a) = held.filter(|_| p.is_agent()) {
        scope::require_host(p, a.host.as_str())?;
    }
    // A dual-stack endpoint's IPv6 address goes with its name (docs/topology.md, "Dual stack"),
    // also when the name's went already: a release cut off between the two (its caller killed
    // mid-request, as `romana chaos` does to agents) is finished by the caller's retry.
    // Any other failure of the name's release is the answer (the retry releases both): an
    // IPv6 release must not turn it into a success.
    let own = match s.ipam.release(key.clone()).await {
        Ok(r) => Some(r),
        Err(crate::service_error::ServiceError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let second = match lookup(s, &v6) {
        Some(_) => Some(s.ipam.release(v6).await?),
        None => None,
    };
    let r = own.or(second).ok_or_else(|| not_found(&key))?;
    Ok(Json(Address {
        name: r.name,
        ip: r.ip.to_string(),
        network: r.network.to_string(),
        block: r.block.to_string(),
        host: r.host.map(|h| h.to_string()).unwrap_or_default(),
        ..empty_address()
    }))
}

/// Allocations, of the principal's tenants only.
async fn addresses(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Vec<Address>> {
    Json(s.ipam.read(|v| {
        v.ipam
            .allocations()
            .iter()
            .filter(|a| scope::visible(&p, a.tenant.as_str()))
            .filter(|a| q.get("host").is_none_or(|h| a.host.as_str() == h))
            .filter(|a| q.get("tenant").is_none_or(|t| a.tenant.as_str() == t))
            .filter(|a| q.get("network").is_none_or(|n| a.network.as_str() == n))
            .map(address_view)
            .collect()
    }))
}

/// One allocation by name or address; another tenant's is not found.
async fn show_address(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(key): Path<String>,
) -> ApiResult<Json<Address>> {
    lookup(&s, &key)
        .filter(|a| scope::visible(&p, a.tenant.as_str()))
        .map(|a| Json(address_view(&a)))
        .ok_or_else(|| not_found(&key))
}

fn parse_cidr(c: &str) -> ApiResult<Cidr> {
    c.parse::<Cidr>().map_err(|e| invalid("blackout", vec![format!("cidr: {e}")]))
}

async fn blackouts(State(s): State<AppState>) -> Json<Vec<BlackoutRequest>> {
    Json(
        s.ipam.read(|v| {
            v.ipam.blackouts().iter().map(|(_, c)| BlackoutRequest { cidr: c.to_string() }).collect()
        }),
    )
}

async fn add_blackout(State(s): State<AppState>, Body(req): Body<BlackoutRequest>) -> ApiResult<StatusCode> {
    s.ipam.blackout(parse_cidr(&req.cidr)?, true).await?;
    Ok(StatusCode::CREATED)
}

async fn remove_blackout(State(s): State<AppState>, Query(q): Query<CidrQuery>) -> ApiResult<StatusCode> {
    let c = q.cidr.ok_or_else(|| ApiError::bad_request("missing query parameter cidr"))?;
    s.ipam.blackout(parse_cidr(&c)?, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The set as `HostRoutesInfo`'s JSON (`route_sets::set_inputs`, then `SetInputs::write`), with
/// the `ETag` of its routes (sent back in `If-None-Match`: 304 without a body while the routes
/// are the same, issue 22) and the stamp of its inputs (`ROUTE_STAMP_HEADER`, a 304's too).
async fn host_routes(
    State(s): State<AppState>,
    Path(host): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::http::header;
    use axum::response::{AppendHeaders, IntoResponse};
    let name = host_name(&host)?;
    // Under the IPAM's lock only the inputs; the set (1.7 ms at 4,000 routes) on a background
    // thread: every agent of a leaf reads after each new block there.
    let inputs = s.ipam.read(|v| {
        let live = s.liveness.read().unwrap_or_else(|p| p.into_inner());
        crate::route_sets::set_inputs(&v.ipam, &live, &name, v.revision)
    });
    let served = crate::background::run(move || inputs.write()).await?;
    let held = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let stamp = AppendHeaders(served.stamp.map(|s| (romana_api::rest::ROUTE_STAMP_HEADER, s)));
    if held.is_some_and(|v| crate::route_sets::not_modified(v, &served.etag)) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, served.etag)], stamp).into_response());
    }
    let json = (header::CONTENT_TYPE, "application/json".to_owned());
    Ok(([json, (header::ETAG, served.etag)], stamp, served.json).into_response())
}

async fn fabric(State(s): State<AppState>) -> ApiResult<Json<Vec<FabricGroup>>> {
    let vips = crate::vips::all(&s).await?;
    Ok(Json(s.ipam.read(|v| {
        let mut groups = crate::route_sets::fabric_groups(&v.ipam);
        if !vips.is_empty() {
            let hosts = v.ipam.hosts().into_iter().map(|h| (h.name.to_string(), h.ip.to_string())).collect();
            crate::route_sets::add_vip_routes(&mut groups, &vips, &hosts);
        }
        groups
    })))
}

pub fn topology_routes() -> Router<AppState> {
    Router::new()
        .route("/networks", get(networks))
        .route("/networks/{network}/blocks", get(network_blocks))
        .route("/topology", get(get_topology).post(post_topology))
        .route("/hosts", get(hosts).post(add_host))
        .route("/hosts/{host}", get(show_host).delete(remove_host))
        .route("/hosts/{host}/tags", put(set_tags))
        .route("/routes/{host}", get(host_routes))
        .route("/fabric", get(fabric))
}

pub fn ipam_routes() -> Router<AppState> {
    Router::new()
        .route("/address", post(allocate_v2).delete(release_v2))
        .route("/addresses", get(addresses).post(allocate))
        .route("/address-stacks", post(allocate_stack))
        .route("/addresses/{name}", get(show_address).delete(release))
        .route("/blocks", get(blocks))
        .route("/blackouts", get(blackouts).post(add_blackout).delete(remove_blackout))
}
