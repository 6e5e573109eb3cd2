//! The old networking-romana drivers' calls, answered for tokenless requests from the source
//! addresses an admin allowed in the `legacy-openstack` configuration
//! (`PUT /config/legacy-openstack {"sources":[CIDR..]}`): the 2016 driver's (Romana 1.x service
//! discovery, `findExactlyOne` lookups, hosts by numeric id, the 1.x IPAM's `POST /endpoints` and
//! `DELETE /endpoints/<ip>`) and the 2017 driver's (Romana 2.0's `POST /address`,
//! `DELETE /address?addressName=<ip>` and `GET /hosts`).
//!
//! Why a middleware and not routes: the old driver joins `/endpoints` and `/hosts/<id>` onto its
//! service URLs as absolute paths, so its calls land on the paths of our endpoint registry and host
//! records, with other meanings. The two are told apart by who asks: the old driver never sends a
//! token, our clients always do. A tokenless request from an allowed source whose method and path
//! are one of `ROUTES` gets the 1.x meaning, with the rights of a `service` principal limited to
//! these calls; anything else (a token, another source, another call) goes on to the normal router
//! and its authentication, untouched. Knows nothing of the normal routes' handlers.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use romana_api::records::{SegmentRecord, TenantRecord};
use romana_ipam::AllocRequest;
use romana_model::{AddressName, Cidr, SegmentName, TenantName};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The configuration's service name: `GET/PUT /config/legacy-openstack` (admin).
pub const CONFIG: &str = "legacy-openstack";

/// The calls the allowance answers (method, path pattern; `*` is one path segment).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/config/agent"),
    ("GET", "/findExactlyOne/tenants"),
    ("GET", "/findExactlyOne/segments"),
    ("GET", "/findExactlyOne/hosts"),
    ("GET", "/hosts/*"),
    ("POST", "/endpoints"),
    ("DELETE", "/endpoints/*"),
    // The 2017 driver (Romana 2.0's API).
    ("POST", "/address"),
    ("DELETE", "/address"),
    ("GET", "/hosts"),
];

/// The stored allowance.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    /// Source addresses the old drivers call from (the Neutron servers).
    #[serde(default)]
    pub sources: Vec<String>,
    /// The agents' `/vm` port the driver is told (`GET /config/agent`); 9604 when unset.
    #[serde(default)]
    pub agent_port: Option<u16>,
}

/// The prefix of every address name the 1.x IPAM calls allocate.
pub const LEGACY_NAME_PREFIX: &str = "os1:";
/// The mark the Kubernetes controller puts on the tenants it owns.
const MANAGED_BY_LABEL: &str = "romana.io/managed-by";

/// Whether `(method, path)` is one of `ROUTES`.
pub fn is_legacy_call(method: &str, path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').collect();
    ROUTES.iter().any(|(m, p)| {
        let pat: Vec<&str> = p.split('/').collect();
        *m == method
            && pat.len() == segs.len()
            && pat.iter().zip(&segs).all(|(a, b)| *a == *b || (*a == "*" && !b.is_empty()))
    })
}

/// Whether `source` is in one of the allowed CIDRs (unparsable entries allow nothing).
pub fn allowed(cfg: &LegacyConfig, source: IpAddr) -> bool {
    // A dual-stack listener sees an IPv4 peer as `::ffff:a.b.c.d`: compare the IPv4 address.
    let source = source.to_canonical();
    cfg.sources.iter().filter_map(|c| c.parse::<Cidr>().ok()).any(|c| c.contains_addr(source))
}

/// The stable numeric id a 1.x client reads for a host (1.x ids were integers): FNV-1a of the
/// name, 31 bits, never 0. Stable across restarts and replicas, as no store record is needed.
pub fn host_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff).max(1)
}

async fn config(s: &AppState) -> ApiResult<LegacyConfig> {
    match s.store.get(&s.keys.config(CONFIG)).await? {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("configuration {CONFIG} is unreadable: {e}"))),
        None => Ok(LegacyConfig::default()),
    }
}

/// The middleware (outermost on the router): see the file's comment.
pub async fn allowance(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    let candidate = !req.headers().contains_key(header::AUTHORIZATION)
        && source.is_some()
        && is_legacy_call(req.method().as_str(), req.uri().path());
    if !candidate {
        return next.run(req).await;
    }
    let cfg = match config(&s).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if !source.is_some_and(|ip| allowed(&cfg, ip)) {
        return next.run(req).await;
    }
    match answer(&s, &cfg, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn query(req: &Request) -> BTreeMap<String, String> {
    url_pairs(req.uri().query().unwrap_or(""))
}

/// `a=1&b=x%20y` as pairs (percent-decoding, `+` as space).
fn url_pairs(q: &str) -> BTreeMap<String, String> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'%', Some(v)) => {
                    out.push(v);
                    i += 3;
                }
                (b'+', _) => {
                    out.push(b' ');
                    i += 1;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

fn need<'a>(q: &'a BTreeMap<String, String>, k: &str) -> ApiResult<&'a str> {
    q.get(k).map(String::as_str).ok_or_else(|| ApiError::bad_request(format!("missing query parameter {k}")))
}

async fn tenants(s: &AppState) -> ApiResult<Vec<TenantRecord>> {
    let (kvs, _) = s.store.range(&s.keys.tenants()).await?;
    kvs.iter()
        .map(|kv| {
            serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("stored tenant {} is unreadable: {e}", kv.key)))
        })
        .collect()
}

async fn segments(s: &AppState, tenant: &str) -> ApiResult<Vec<SegmentRecord>> {
    let (kvs, _) = s.store.range(&s.keys.segments(tenant)).await?;
    kvs.iter()
        .map(|kv| {
            serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("stored segment {} is unreadable: {e}", kv.key)))
        })
        .collect()
}

/// Exactly one match, as 1.x's `findExactlyOne`: none is 404, several 409.
fn exactly_one<T>(mut found: Vec<T>, what: &str) -> ApiResult<T> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ApiError::not_found(format!("no {what}"))),
        n => Err(ApiError::conflict(format!("{n} matches for {what}, expected exactly one"))),
    }
}

fn number(v: &Value, field: &str) -> ApiResult<u32> {
    match v.get(field) {
        Some(Value::String(t)) => t.parse().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request(format!("{field}: expected a decimal id (a string, as 1.x sends)")))
}

async fn tenant_by_number(s: &AppState, n: u32) -> ApiResult<TenantRecord> {
    exactly_one(
        tenants(s).await?.into_iter().filter(|t| t.number == n).collect(),
        &format!("tenant with id {n}"),
    )
}

fn host_record(h: &romana_ipam::HostView) -> Value {
    json!({"id": host_id(h.name.as_str()), "name": h.name.as_str(), "ip": h.ip.to_string(),
           "romana_ip": "", "agent_port": h.agent_port})
}

fn host_where(s: &AppState, f: impl Fn(&romana_ipam::HostView) -> bool) -> Vec<Value> {
    s.ipam.read(|v| v.ipam.hosts().iter().filter(|h| f(h)).map(host_record).collect())
}

async fn answer(s: &AppState, cfg: &LegacyConfig, req: Request) -> ApiResult<Response> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let q = query(&req);
    let base = s.url.trim_end_matches('/').to_owned();
    let ok = |v: Value| Ok(Json(v).into_response());
    match (method, path.as_str()) {
        (Method::GET, "/") => {
            // Every 1.x service the driver looks up is this romanad.
            let services: Vec<Value> = ["root", "tenant", "topology", "ipam"]
                .iter()
                .map(|n| json!({"name": n, "links": [{"rel": "service", "href": format!("{base}/")}]}))
                .collect();
            ok(json!({"service_name": "root", "services": services,
                "links": [{"rel": "self", "href": "/"}, {"rel": "agent-config", "href": "/config/agent"}]}))
        }
        (Method::GET, "/config/agent") => {
            ok(json!({"common": {"api": {"port": cfg.agent_port.unwrap_or(9604)}}, "config": {}}))
        }
        (Method::GET, "/findExactlyOne/tenants") => {
            let all = tenants(s).await?;
            let found: Vec<_> = match (q.get("external_id"), q.get("name")) {
                (Some(x), _) => all.into_iter().filter(|t| &t.external_id == x).collect(),
                (None, Some(n)) => all.into_iter().filter(|t| &t.name == n).collect(),
                _ => return Err(ApiError::bad_request("findExactlyOne/tenants needs external_id or name")),
            };
            let t = exactly_one(found, &format!("tenant matching {q:?}"))?;
            ok(json!({"id": t.number, "external_id": t.external_id, "name": t.name}))
        }
        (Method::GET, "/findExactlyOne/segments") => {
            let name = need(&q, "name")?;
            let tid: u32 = need(&q, "tenant_id")?
                .parse()
                .map_err(|_| ApiError::bad_request("tenant_id: expected a decimal tenant id"))?;
            let t = tenant_by_number(s, tid).await?;
            let found = segments(s, &t.name).await?.into_iter().filter(|g| g.name == name).collect();
            let g = exactly_one(found, &format!("segment {name:?} of tenant {}", t.name))?;
            ok(json!({"id": g.number, "name": g.name, "tenant_id": t.number, "external_id": g.external_id}))
        }
        (Method::GET, "/findExactlyOne/hosts") => {
            let name = need(&q, "name")?.to_owned();
            ok(exactly_one(host_where(s, |h| h.name.as_str() == name), &format!("host named {name:?}"))?)
        }
        (Method::GET, p) if p.starts_with("/hosts/") => {
            let raw = &p["/hosts/".len()..];
            let id: u32 = raw.parse().map_err(|_| ApiError::not_found(format!("no host with id {raw:?}")))?;
            ok(exactly_one(host_where(s, |h| host_id(h.name.as_str()) == id), &format!("host with id {id}"))?)
        }
        (Method::POST, "/endpoints") => {
            allocate(s, &json_body(req).await?).await.map(|v| Json(v).into_response())
        }
        (Method::DELETE, p) if p.starts_with("/endpoints/") => {
            let raw = &p["/endpoints/".len()..];
            let ip: IpAddr = raw.parse().map_err(|_| {
                ApiError::bad_request(format!("{raw:?} is not an IP address (1.x releases by address)"))
            })?;
            let (name, host) = release_ours(s, ip).await?;
            ok(
                json!({"ip": ip.to_string(), "name": name, "host_id": host_id(&host).to_string(), "in_use": false}),
            )
        }
        (Method::GET, "/hosts") => ok(json!({"hosts": host_where(s, |_| true)})),
        (Method::POST, "/address") => {
            allocate_v2(s, &json_body(req).await?).await.map(|ip| Json(ip).into_response())
        }
        (Method::DELETE, "/address") => {
            let key = need(&q, "addressName")?;
            // The 2017 driver releases by address; a name is the one it allocated under.
            let ip = match key.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => s
                    .ipam
                    .read(|v| v.ipam.lookup(&format!("{LEGACY_NAME_PREFIX}{key}")).map(|a| a.ip))
                    .ok_or_else(|| ApiError::not_found(format!("no address allocated as {key:?}")))?,
            };
            let (name, host) = release_ours(s, ip).await?;
            ok(json!({"ip": ip.to_string(), "name": name, "host": host}))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no legacy call {path}"))),
    }
}

/// The request's body as JSON (the old drivers' bodies are small objects of strings).
async fn json_body(req: Request) -> ApiResult<Value> {
    let bytes = axum::body::to_bytes(req.into_body(), crate::BODY_LIMIT)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))
}

/// Releases `ip` if the allowance allocated it: (its name, its host). The allowance is by source
/// address only, so it never releases a pod's or another client's address.
async fn release_ours(s: &AppState, ip: IpAddr) -> ApiResult<(String, String)> {
    let held = s.ipam.read(|v| v.ipam.lookup_ip(ip).map(|a| (a.name.to_string(), a.host.to_string())));
    let Some((name, host)) = held else {
        return Err(ApiError::not_found(format!("{ip} is not allocated")));
    };
    if !name.starts_with(LEGACY_NAME_PREFIX) {
        return Err(ApiError::not_found(format!(
            "{ip} was not allocated through the old drivers' calls; release it with an authenticated client"
        )));
    }
    s.ipam.release(ip.to_string()).await?;
    // No stale record (labels, tenant) is left for the next holder of the address.
    crate::pod_join::delete_endpoint(s, &name, |_| Ok(())).await?;
    Ok((name, host))
}

/// A tenant the old drivers may allocate in: any but a Kubernetes namespace's.
fn not_kubernetes(t: &TenantRecord) -> ApiResult<()> {
    if t.labels.get(MANAGED_BY_LABEL).is_some_and(|v| v == "romana-k8s") {
        return Err(ApiError::forbidden(format!(
            "tenant {} is a Kubernetes namespace; the old drivers' calls allocate only for OpenStack tenants",
            t.name
        )));
    }
    Ok(())
}

fn text<'a>(body: &'a Value, field: &str) -> ApiResult<&'a str> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("{field}: required (a non-empty string)")))
}

/// 2.0 `POST /address {name, host, tenant, segment}` as the 2017 driver sends it (tenant = the
/// project id, segment `default`): the address as a JSON string, named `os1:<name>`.
async fn allocate_v2(s: &AppState, body: &Value) -> ApiResult<String> {
    let (name, host, tenant) = (text(body, "name")?, text(body, "host")?, text(body, "tenant")?);
    let segment = body.get("segment").and_then(Value::as_str).unwrap_or("");
    if let Some(t) = tenants(s).await?.into_iter().find(|t| t.name == tenant) {
        not_kubernetes(&t)?;
    }
    let host = s
        .ipam
        .read(|v| v.ipam.hosts().iter().find(|h| h.name.as_str() == host).map(|h| h.name.clone()))
        .ok_or_else(|| {
            ApiError::not_found(format!("no host named {host:?} (the driver sends binding:host_id)"))
        })?;
    let bad = |f: &str, e: String| ApiError::bad_request(format!("{f}: {e}"));
    let r = AllocRequest {
        name: AddressName::new(format!("{LEGACY_NAME_PREFIX}{name}"))
            .map_err(|e| bad("name", e.to_string()))?,
        host,
        tenant: TenantName::new(tenant).map_err(|e| bad("tenant", e.to_string()))?,
        segment: SegmentName::new(segment).map_err(|e| bad("segment", e.to_string()))?,
    };
    Ok(s.ipam.allocate(r, None, None).await?.ip.to_string())
}

/// 1.x `POST /endpoints {tenant_id, segment_id, host_id[, name]}`: ids resolved to names, one
/// address from our IPAM under the given name or a fresh one.
async fn allocate(s: &AppState, body: &Value) -> ApiResult<Value> {
    let t = tenant_by_number(s, number(body, "tenant_id")?).await?;
    not_kubernetes(&t)?;
    let seg_n = number(body, "segment_id")?;
    let g = exactly_one(
        segments(s, &t.name).await?.into_iter().filter(|g| g.number == seg_n).collect(),
        &format!("segment with id {seg_n} in tenant {}", t.name),
    )?;
    let hid = number(body, "host_id")?;
    let host = s
        .ipam
        .read(|v| v.ipam.hosts().iter().find(|h| host_id(h.name.as_str()) == hid).map(|h| h.name.clone()))
        .ok_or_else(|| ApiError::not_found(format!("no host with id {hid}")))?;
    // Every name carries the prefix, so a release through the allowance can only ever find
    // addresses the allowance allocated.
    let name = match body.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        Some(n) => format!("{LEGACY_NAME_PREFIX}{n}"),
        None => format!("{LEGACY_NAME_PREFIX}{}", fresh_name()),
    };
    let bad = |f: &str, e: String| ApiError::bad_request(format!("{f}: {e}"));
    let r = AllocRequest {
        name: AddressName::new(name.clone()).map_err(|e| bad("name", e.to_string()))?,
        host,
        tenant: TenantName::new(t.name.clone()).map_err(|e| bad("tenant", e.to_string()))?,
        segment: SegmentName::new(g.name.clone()).map_err(|e| bad("segment", e.to_string()))?,
    };
    let a = s.ipam.allocate(r, None, None).await?;
    Ok(json!({"ip": a.ip.to_string(), "name": name, "tenant_id": t.number.to_string(),
              "segment_id": g.number.to_string(), "host_id": hid.to_string(), "in_use": true}))
}

/// A name for an allocation the 1.x client did not name: unique per process and time.
fn fresh_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("openstack-1x-{t:x}-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, expect: bool) {
        assert_eq!(is_legacy_call(method, path), expect, "{method} {path}");
    }

    #[test]
    fn only_the_listed_calls_are_legacy() {
        check("GET", "/", true);
        check("GET", "/config/agent", true);
        check("GET", "/config/ipam", false);
        check("GET", "/findExactlyOne/tenants", true);
        check("GET", "/findExactlyOne/policies", false);
        check("GET", "/hosts/12", true);
        check("GET", "/hosts", true);
        check("POST", "/hosts", false);
        check("POST", "/address", true);
        check("DELETE", "/address", true);
        check("GET", "/address", false);
        check("POST", "/addresses", false);
        check("GET", "/hosts/", false);
        check("PUT", "/hosts/12", false);
        check("GET", "/hosts/12/routes", false);
        check("POST", "/endpoints", true);
        check("DELETE", "/endpoints/10.0.0.1", true);
        check("PUT", "/endpoints/x", false);
        check("GET", "/tenants", false);
    }

    #[test]
    fn sources_and_query_strings() {
        let cfg = LegacyConfig { sources: vec!["192.0.2.0/24".into(), "bogus".into()], agent_port: None };
        assert!(allowed(&cfg, "192.0.2.7".parse().expect("ip")));
        assert!(!allowed(&cfg, "127.0.0.1".parse().expect("ip")));
        assert!(!allowed(&LegacyConfig::default(), "127.0.0.1".parse().expect("ip")));
        let q = url_pairs("external_id=ab%2Dc&name=a+b&x");
        assert_eq!(q.get("external_id").map(String::as_str), Some("ab-c"));
        assert_eq!(q.get("name").map(String::as_str), Some("a b"));
        assert_eq!(q.get("x").map(String::as_str), Some(""));
        assert_eq!(url_pairs("a=%zz").get("a").map(String::as_str), Some("%zz"));
        assert_ne!(host_id("h1"), host_id("h2"));
        assert!(host_id("") >= 1);
    }
}
