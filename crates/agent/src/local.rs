//! The agent's local API on its Unix socket: romana-cni's ADD, CHECK, DEL, GC and STATUS, plus
//! health and metrics. ADD allocates from romanad and plumbs the endpoint before it answers, so a
//! pod is routed when the runtime sees success; every failure answers with a CNI error code.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use romana_agent::machine::{Action, Event};
use romana_api::agent::{
    AgentError, AttachRequest, Attached, DetachRequest, GcReport, GcRequest, PodRef, address_name,
    address_prefix, code,
};
use romana_api::rest::{AddressRequest, EndpointInfo, PodInfo};
use romana_client::{Client, ClientError};
use romana_host::{EndpointError, EndpointSpec, host_link_name};

use crate::metrics::Metrics;
use crate::shared::Shared;

/// An error answer: the CNI code travels in the body, the HTTP status follows it.
#[derive(Debug)]
pub struct Fail(AgentError);

impl Fail {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Fail {
        Fail(AgentError { code, msg: msg.into(), details: details.into() })
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let status = match self.0.code {
            code::TRY_AGAIN_LATER | code::NOT_AVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            code::UNKNOWN_CONTAINER => StatusCode::NOT_FOUND,
            code::INVALID_CONFIG | code::INVALID_ENV | code::DECODE_FAILURE => StatusCode::BAD_REQUEST,
            code::OTHER => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(self.0)).into_response()
    }
}

/// romanad's answer as a CNI error: unreachable or busy is "try again later", a refusal of the
/// request (unknown tenant, no such host...) is a configuration error.
fn from_client(what: &str, e: &ClientError) -> Fail {
    match e {
        ClientError::Unreachable { .. } => {
            Fail::new(code::TRY_AGAIN_LATER, format!("{what}: romanad is unreachable"), e.to_string())
        }
        ClientError::Api { status: 503 | 429 | 502 | 504, .. } => {
            Fail::new(code::TRY_AGAIN_LATER, format!("{what}: romanad is busy"), e.to_string())
        }
        ClientError::Api { status: 400..=499, .. } => {
            Fail::new(code::INVALID_CONFIG, format!("{what}: romanad refused"), e.to_string())
        }
        _ => Fail::new(code::OTHER, format!("{what}: romanad failed"), e.to_string()),
    }
}

fn from_endpoint(what: &str, e: &EndpointError) -> Fail {
    let c = match e {
        EndpointError::NoPodNamespace { .. } => code::UNKNOWN_CONTAINER,
        EndpointError::IfName(_) | EndpointError::Family { .. } => code::INVALID_CONFIG,
        EndpointError::Mismatch(_) => code::OTHER,
        _ => code::IO_FAILURE,
    };
    Fail::new(c, what.to_owned(), e.to_string())
}

/// CNI names: container ids and network names are `[A-Za-z0-9][A-Za-z0-9_.-]*` (CNI spec).
fn cni_name(field: &str, v: &str) -> Result<(), Fail> {
    let ok = v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Fail::new(
            code::INVALID_ENV,
            format!("invalid {field} {v:?}"),
            "expected [A-Za-z0-9][A-Za-z0-9_.-]*",
        ))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Fail> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Fail::new(code::IO_FAILURE, "endpoint worker failed", e.to_string()))
}

/// `blocking(f)` for plumbing that makes or removes `link` (and may give `ip` to it): the fast
/// path holds both out of its map meanwhile, so no packet is handed to a link index that is gone
/// or reused (the kernel's path carries them until its next sync sees the result).
async fn plumbing<T: Send + 'static>(
    s: &Shared,
    link: &romana_dataplane::LinkName,
    ip: Option<IpAddr>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Fail> {
    if let Some(d) = &s.deliver {
        d.hold(link, ip);
    }
    let r = blocking(f).await;
    if let Some(d) = &s.deliver {
        d.release(link, ip);
    }
    r
}

fn gateway_for(s: &Shared, ip: IpAddr) -> Result<IpAddr, Fail> {
    s.gateways.iter().copied().find(|g| g.is_ipv4() == ip.is_ipv4()).ok_or_else(|| {
        Fail::new(
            code::INVALID_CONFIG,
            format!("host {} has no gateway address for {ip}", s.host),
            "start romana-agent with --gateway-ip of that family",
        )
    })
}

/// The endpoint to plumb or check for `req` with the address IPAM gave it.
fn endpoint_spec(s: &Shared, req: &AttachRequest, ip: &str) -> Result<EndpointSpec, Fail> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| Fail::new(code::OTHER, "romanad answered an unparsable address", ip.to_owned()))?;
    Ok(EndpointSpec {
        host_link: host_link_name(&req.container_id, &req.ifname),
        ifname: req.ifname.clone(),
        netns: PathBuf::from(&req.netns),
        ip,
        gateway: gateway_for(s, ip)?,
    })
}

async fn add(State(s): State<Arc<Shared>>, Json(req): Json<AttachRequest>) -> Result<Json<Attached>, Fail> {
    let started = Instant::now();
    let r = add_inner(&s, req).await;
    Metrics::inc(&s.metrics.cni_add);
    s.metrics.cni_add_seconds.observe(started.elapsed());
    if r.is_err() {
        Metrics::inc(&s.metrics.cni_add_errors);
    }
    r.map(Json)
}

async fn add_inner(s: &Arc<Shared>, req: AttachRequest) -> Result<Attached, Fail> {
    cni_name("network name", &req.network)?;
    cni_name("container id", &req.container_id)?;
    if !Path::new(&req.netns).exists() {
        return Err(Fail::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} does not exist", req.netns),
            "",
        ));
    }
    let name = address_name(&req.network, &req.container_id, &req.ifname);
    let client = s.client();
    // A pod kubelet started, without labels from the runtime: its record (labels, ports,
    // segment) comes from romana-k8s, and ADD waits for it, so the pod is under the policies its
    // labels select before ADD answers.
    let mut req = req;
    if let (Some(pod), false) = (&req.pod, req.runtime_labels) {
        let record = wait_for_pod(s, &client, pod).await?;
        if !record.segment.is_empty() {
            req.segment = record.segment;
        }
    }
    let areq = AddressRequest {
        name: name.clone(),
        host: s.host.clone(),
        tenant: req.tenant.clone(),
        segment: req.segment.clone(),
        ip: None,
    };
    let t0 = Instant::now();
    let addr = client.allocate(&areq, None).await.map_err(|e| from_client("allocating an address", &e))?;
    let alloc = t0.elapsed();
    let spec = match endpoint_spec(s, &req, &addr.ip) {
        Ok(spec) => spec,
        Err(f) => {
            let _ = client.release(&name).await;
            return Err(f);
        }
    };
    let ip = spec.ip;
    let t_fw = Instant::now();
    if let Err(f) = enforce(s, &client, &req, &name, ip).await {
        let _ = client.release(&name).await;
        return Err(f);
    }
    let fw_ms = t_fw.elapsed().as_secs_f64() * 1e3;
    // A repair may make the link again with a new index, and the address may have been another
    // link's.
    let host_ns = s.host_ns.clone();
    let sp = spec.clone();
    let t1 = Instant::now();
    let attached =
        plumbing(s, &spec.host_link, Some(ip), move || romana_host::attach(host_ns.as_deref(), &sp)).await?;
    tracing::info!(
        address = %name, %ip, alloc_ms = alloc.as_secs_f64() * 1e3, policy_ms = fw_ms,
        plumb_ms = t1.elapsed().as_secs_f64() * 1e3,
        ok = attached.is_ok(), "CNI ADD"
    );
    match attached {
        Ok(a) => Ok(Attached {
            host_link: a.host_link,
            host_mac: a.host_mac,
            ifname: a.ifname,
            pod_mac: a.pod_mac,
            netns: req.netns,
            ip: ip.to_string(),
            prefix_len: addr.prefix_len,
            gateway: spec.gateway.to_string(),
            address_name: name,
        }),
        Err(e) => {
            // Nothing half-made stays: the endpoint and its address go (attach removed its links).
            forget(s, &client, &name).await;
            if let Err(r) = client.release(&name).await {
                tracing::warn!(address = %name, error = %r, "could not release the address of a failed ADD");
            }
            Err(from_endpoint("plumbing the endpoint", &e))
        }
    }
}

/// Looks up the record of `pod` until it is there, is this pod's (same uid) and readable, or
/// `--pod-wait-ms` has passed (`machine::pod_wait` decides).
async fn wait_for_pod(s: &Shared, client: &Client, pod: &PodRef) -> Result<PodInfo, Fail> {
    use romana_agent::machine::pod_wait::{Lookup, Next, next};
    let started = Instant::now();
    for attempt in 0.. {
        let lookup = match client.pod(&pod.namespace, &pod.name).await {
            Ok(p) => Lookup::Found(p),
            Err(e) if e.status() == Some(404) => Lookup::Missing,
            // 401 is an expired token, which the route loop renews: worth another look.
            Err(e @ ClientError::Api { status: 400 | 403, .. }) => Lookup::Refused(e.to_string()),
            Err(e) => Lookup::Unavailable(e.to_string()),
        };
        match next(pod, lookup, attempt, started.elapsed(), s.pod_wait) {
            Next::Ready(p) => {
                tracing::info!(pod = %pod.key(), waited_ms = started.elapsed().as_millis() as u64, "pod record");
                return Ok(p);
            }
            Next::Retry { after, .. } => tokio::time::sleep(after).await,
            Next::GiveUp { code, msg } => return Err(Fail::new(code, msg, "")),
        }
    }
    unreachable!("the wait ends with the record or by giving up")
}

/// Registers the endpoint with romanad and puts it under its policies before its link exists:
/// when ADD answers, the pod is already isolated as its policies say (fail-closed: if the table
/// cannot be written, ADD fails and nothing is plumbed).
async fn enforce(
    s: &Arc<Shared>,
    client: &Client,
    req: &AttachRequest,
    name: &str,
    ip: IpAddr,
) -> Result<(), Fail> {
    let Some(fw) = &s.firewall else { return Ok(()) };
    let info = EndpointInfo {
        name: name.to_owned(),
        ip: ip.to_string(),
        tenant: req.tenant.clone(),
        segment: req.segment.clone(),
        host: s.host.clone(),
        labels: req.labels.clone(),
        ports: vec![],
        // With the pod set, romanad takes labels and ports from its record (the truth for them).
        pod: match (&req.pod, req.runtime_labels) {
            (Some(p), false) => p.key(),
            _ => String::new(),
        },
    };
    // A repeated ADD (a runtime retrying) keeps what a controller set since the first one: the
    // runtime's labels and no named ports are only the registration's starting point.
    let info = match client.endpoint(name).await {
        Ok(known) if known.ip == info.ip && known.host == info.host && known.tenant == info.tenant => {
            EndpointInfo { labels: known.labels, ports: known.ports, ..info }
        }
        Ok(_) => info,
        Err(e) if e.status() == Some(404) => info,
        Err(e) => return Err(from_client("reading the endpoint's record", &e)),
    };
    let info = client.put_endpoint(&info).await.map_err(|e| from_client("registering the endpoint", &e))?;
    // The core orders what follows: policies read when they never were, the endpoint's pass,
    // and only then the plumbing (the caller's, once this returns).
    for action in s.step(Event::CniAdd(info)) {
        match action {
            Action::ReadLists { endpoints } => {
                fw.refresh(client, endpoints).await.map_err(|e| {
                    Fail::new(code::TRY_AGAIN_LATER, "policies are not loaded yet", e.to_string())
                })?;
            }
            Action::FirewallPass { read_kernel } => {
                if let Err(e) = fw.sync(&s.metrics, read_kernel).await {
                    forget(s, client, name).await;
                    return Err(Fail::new(
                        code::TRY_AGAIN_LATER,
                        "the endpoint's policies could not be enforced",
                        e.to_string(),
                    ));
                }
            }
            Action::Plumb => return Ok(()),
            other => tracing::debug!(action = ?other, "not CNI ADD's"),
        }
    }
    Ok(())
}

/// Removes an endpoint's record and its place in the table (best effort: DEL and failed ADDs).
async fn forget(s: &Arc<Shared>, client: &Client, name: &str) {
    let Some(fw) = &s.firewall else { return };
    if let Err(e) = client.delete_endpoint(name).await {
        tracing::warn!(endpoint = %name, error = %e, "could not delete the endpoint record");
    }
    for action in s.step(Event::CniForget(name.to_owned())) {
        if let Action::FirewallPass { read_kernel } = action
            && let Err(e) = fw.sync(&s.metrics, read_kernel).await
        {
            tracing::warn!(endpoint = %name, error = %e, "firewall pass after removing an endpoint failed");
        }
    }
}

async fn check(State(s): State<Arc<Shared>>, Json(req): Json<AttachRequest>) -> Result<StatusCode, Fail> {
    let r = check_inner(&s, req).await;
    if r.is_err() {
        Metrics::inc(&s.metrics.cni_check_failures);
    }
    r.map(|()| StatusCode::NO_CONTENT)
}

async fn check_inner(s: &Arc<Shared>, req: AttachRequest) -> Result<(), Fail> {
    cni_name("container id", &req.container_id)?;
    let name = address_name(&req.network, &req.container_id, &req.ifname);
    let addr = match s.client().address(&name).await {
        Ok(a) => a,
        Err(e) if e.status() == Some(404) => {
            return Err(Fail::new(code::UNKNOWN_CONTAINER, format!("no address is allocated to {name}"), ""));
        }
        Err(e) => return Err(from_client("looking up the address", &e)),
    };
    if let Some(prev) = &req.ip
        && prev != &addr.ip
    {
        return Err(Fail::new(
            code::OTHER,
            "address differs from IPAM",
            format!("prevResult has {prev}, IPAM has {} for {name}", addr.ip),
        ));
    }
    let spec = endpoint_spec(s, &req, &addr.ip)?;
    let host_ns = s.host_ns.clone();
    blocking(move || romana_host::check(host_ns.as_deref(), &spec))
        .await?
        .map_err(|e| from_endpoint("CHECK", &e))
}

async fn del(State(s): State<Arc<Shared>>, Json(req): Json<DetachRequest>) -> Result<StatusCode, Fail> {
    Metrics::inc(&s.metrics.cni_del);
    let _timer = s.metrics.cni_del_seconds.timer();
    cni_name("container id", &req.container_id)?;
    let link = host_link_name(&req.container_id, &req.ifname);
    let host_ns = s.host_ns.clone();
    let l = link.clone();
    plumbing(&s, &link, None, move || romana_host::detach(host_ns.as_deref(), &l))
        .await?
        .map_err(|e| from_endpoint("removing the endpoint", &e))?;
    let name = address_name(&req.network, &req.container_id, &req.ifname);
    forget(&s, &s.client(), &name).await;
    match s.client().release(&name).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        // DEL of something already gone is success (runtimes send DEL twice).
        Err(e) if e.status() == Some(404) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(from_client("releasing the address", &e)),
    }
}

async fn gc(State(s): State<Arc<Shared>>, Json(req): Json<GcRequest>) -> Result<Json<GcReport>, Fail> {
    cni_name("network name", &req.network)?;
    let client = s.client();
    let query = format!("?host={}", s.host);
    let all = client.addresses(&query).await.map_err(|e| from_client("listing this host's addresses", &e))?;
    let valid: std::collections::BTreeSet<String> =
        req.valid.iter().map(|v| address_name(&req.network, &v.container_id, &v.ifname)).collect();
    let prefix = address_prefix(&req.network);
    let mut report = GcReport::default();
    // Links to keep: every CNI address on the host that stays (any network), by its link name.
    let mut keep = std::collections::BTreeSet::new();
    for a in &all {
        let Some(rest) = a.name.strip_prefix("cni:") else { continue };
        let mut parts = rest.splitn(3, ':');
        let (Some(_network), Some(cid), Some(ifname)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if a.name.starts_with(&prefix) && !valid.contains(&a.name) {
            forget(&s, &client, &a.name).await;
            match client.release(&a.name).await {
                Ok(_) => report.released.push(a.name.clone()),
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(from_client("releasing a leftover address", &e)),
            }
        } else {
            keep.insert(host_link_name(cid, ifname));
        }
    }
    for v in &req.valid {
        keep.insert(host_link_name(&v.container_id, &v.ifname));
    }
    let host_ns = s.host_ns.clone();
    let links = blocking(move || romana_host::endpoint_links(host_ns.as_deref()))
        .await?
        .map_err(|e| from_endpoint("listing endpoint links", &e))?;
    for l in links.into_iter().filter(|l| !keep.contains(l)) {
        let host_ns = s.host_ns.clone();
        let link = l.clone();
        if plumbing(&s, &l, None, move || romana_host::detach(host_ns.as_deref(), &link))
            .await?
            .map_err(|e| from_endpoint("removing a leftover link", &e))?
        {
            report.links_removed.push(l.to_string());
        }
    }
    s.metrics
        .gc_removed
        .fetch_add((report.released.len() + report.links_removed.len()) as u64, Ordering::Relaxed);
    Ok(Json(report))
}

/// CNI STATUS: ready when the gateway is in place and romanad answered recently.
async fn status(State(s): State<Arc<Shared>>) -> Result<Json<serde_json::Value>, Fail> {
    if !s.gateway_ready.load(Ordering::Relaxed) {
        return Err(Fail::new(code::NOT_AVAILABLE, "the host's gateway is not configured yet", ""));
    }
    let last = *s.last_contact.lock().unwrap_or_else(|e| e.into_inner());
    match last {
        Some(t) if t.elapsed() <= s.contact_budget => {
            let fast_path = s.deliver.as_ref().map(|d| {
                serde_json::json!({
                    "uplinks": d.uplinks.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(name, h)| {
                        serde_json::json!({"name": name, "handoff": h.is_ok(), "handoff_off_because": h.as_ref().err()})
                    }).collect::<Vec<_>>(),
                    "entries": d.entries(),
                    "off_because": d.blockers(),
                })
            });
            Ok(Json(serde_json::json!({"ready": true, "host": s.host, "fast_path": fast_path})))
        }
        _ => Err(Fail::new(
            code::NOT_AVAILABLE,
            "romanad has not answered recently; ADD cannot allocate",
            format!("budget {:?}", s.contact_budget),
        )),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> String {
    if let Some(d) = &s.deliver {
        s.metrics.fast_path_entries.store(d.entries() as u64, Ordering::Relaxed);
    }
    s.metrics.render()
}

pub fn router(s: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/cni/add", post(add))
        .route("/v1/cni/check", post(check))
        .route("/v1/cni/del", post(del))
        .route("/v1/cni/gc", post(gc))
        .route("/v1/status", get(status))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(s)
}

/// Binds the socket: its directory is made, a stale socket file replaced, and the file is
/// readable and writable by root only (the socket allocates addresses with the agent's identity).
pub fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context;
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    // A directory we create is private (0700); an existing one keeps its mode.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale socket {}", path.display())),
    }
    // Bind in a private (0700) staging directory, restrict the socket, then move it into place:
    // bound directly, it would have the umask's mode until the chmod.
    let stage = dir.join(format!(".romana-agent-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&stage)
        .with_context(|| format!("creating {}", stage.display()))?;
    let staged = stage.join("sock");
    let bound = (|| {
        let l = tokio::net::UnixListener::bind(&staged)
            .with_context(|| format!("binding {}", staged.display()))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", staged.display()))?;
        std::fs::rename(&staged, path).with_context(|| format!("moving the socket to {}", path.display()))?;
        anyhow::Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&stage);
    bound
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod bind_tests {
    /// F8: the socket is 0600 and a directory `bind` creates is 0700 (it was 0755), and no
    /// staging directory is left behind.
    #[tokio::test]
    async fn the_socket_and_the_directory_it_creates_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("romana-agent-bind-{}", std::process::id()));
        let path = base.join("run").join("agent.sock");
        let _l = super::bind(&path).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let got = (mode(&path), mode(path.parent().unwrap()));
        let left: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(got, (0o600, 0o700));
        assert_eq!(left, vec![std::ffi::OsString::from("agent.sock")]);
    }
}
