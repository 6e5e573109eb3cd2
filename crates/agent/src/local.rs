//! The agent's local API on its Unix socket: romana-cni's ADD, CHECK, DEL, GC and STATUS, plus
//! health and metrics. ADD and DEL are the core's flows (`machine::cni`) run by `drive_cni`
//! through the real ports, which live here: the kernel (`romana_host`, with the fast path holding
//! the link out) and the firewall. ADD plumbs the endpoint before it answers, so a pod is routed
//! when the runtime sees success; every failure answers with a CNI error code.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use romana_agent::drive_cni::{self, CniPorts, Timings};
use romana_agent::machine::cni::{self, Answer, CniAction, CniEvent, EnforceFailure, PlumbFailure, Refused};
use romana_agent::machine::{Action, Event};
use romana_agent::ports::{Enforcer, Plumbing};
use romana_api::agent::{
    AgentError, AttachRequest, Attached, DetachRequest, GcReport, GcRequest, address_name, address_prefix,
    code, stack_base, v6_address_name,
};
use romana_api::rest::EndpointInfo;
use romana_client::{Client, ClientError};
use romana_dataplane::LinkName;
use romana_host::{Attachment, EndpointError, EndpointSpec, host_link_name};
use romana_store::BoxFut;

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

/// romanad's answer as a CNI error (the flow's mapping, for CHECK and GC).
fn from_client(what: &str, e: &ClientError) -> Fail {
    Fail(Refused::from(e).answer(what))
}

fn from_endpoint(what: &str, e: &EndpointError) -> Fail {
    let f = PlumbFailure::from(e);
    Fail::new(f.code, what.to_owned(), f.text)
}

fn cni_name(field: &str, v: &str) -> Result<(), Fail> {
    cni::cni_name(field, v).map_err(Fail)
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

/// The kernel side of ADD and DEL: `romana_host` in the host's namespace, the fast path
/// holding the link out meanwhile. `work_us`: how long the plumbing itself ran on its thread (the
/// rest of the step's time is waiting: for a thread, and for the agent's runtime to take the
/// result), for ADD's log line.
struct Kernel<'a> {
    s: &'a Shared,
    work_us: AtomicU64,
    /// The last attach's breakdown (veth, pod side, host side, IPv6's share).
    times: std::sync::Mutex<romana_host::PlumbTimes>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(us: &AtomicU64) -> f64 {
    us.load(Ordering::Relaxed) as f64 / 1e3
}

fn worker_failed(f: Fail) -> EndpointError {
    EndpointError::Socket(std::io::Error::other(format!("{}: {}", f.0.msg, f.0.details)))
}

impl Plumbing for Kernel<'_> {
    fn attach<'a>(&'a self, spec: &'a EndpointSpec) -> BoxFut<'a, Result<Attachment, EndpointError>> {
        Box::pin(async move {
            let (host_ns, sp) = (self.s.host_ns.clone(), spec.clone());
            let (r, work) = plumbing(self.s, &spec.host_link, spec.ip(), move || {
                let t = Instant::now();
                (romana_host::attach(host_ns.as_deref(), &sp), t.elapsed())
            })
            .await
            .unwrap_or_else(|f| (Err(worker_failed(f)), Duration::ZERO));
            self.work_us.fetch_add(micros(work), Ordering::Relaxed);
            if let (Ok(a), Ok(mut t)) = (&r, self.times.lock()) {
                *t = a.times;
            }
            r
        })
    }
    fn detach<'a>(&'a self, link: &'a LinkName) -> BoxFut<'a, Result<bool, EndpointError>> {
        Box::pin(async move {
            let (host_ns, l) = (self.s.host_ns.clone(), link.clone());
            plumbing(self.s, link, None, move || romana_host::detach(host_ns.as_deref(), &l))
                .await
                .unwrap_or_else(|f| Err(worker_failed(f)))
        })
    }
}

/// The firewall as ADD and DEL see it: the core orders what comes before the answer (policies
/// read if they never were, the endpoint's rules), the firewall adapter performs it.
/// `lock_us`: how long ADD's endpoint pass waited for the pass lock (behind a compile).
struct Policy<'a> {
    s: &'a Shared,
    fw: &'a Arc<crate::firewall::Firewall>,
    client: Arc<Client>,
    lock_us: AtomicU64,
}

impl Enforcer for Policy<'_> {
    fn enforce<'a>(&'a self, infos: &'a [EndpointInfo]) -> BoxFut<'a, Result<(), EnforceFailure>> {
        Box::pin(async move {
            // Every record (a dual-stack pod's two) enters the inputs first; the reads and passes
            // they call for then run once for all, so the second family costs no second pass.
            let mut actions: Vec<Action> = Vec::new();
            for info in infos {
                for a in self.s.step(Event::CniAdd { info: info.clone(), now: Instant::now() }) {
                    if !actions.contains(&a) {
                        actions.push(a);
                    }
                }
            }
            for action in actions {
                match action {
                    Action::ReadLists { endpoints } => {
                        self.fw
                            .refresh(&*self.client, endpoints)
                            .await
                            .map_err(|e| EnforceFailure::NotLoaded(e.to_string()))?;
                    }
                    Action::FirewallPass { read_kernel } => {
                        self.fw
                            .sync(&self.s.metrics, read_kernel)
                            .await
                            .map_err(|e| EnforceFailure::NotEnforced(e.to_string()))?;
                    }
                    Action::EndpointPass => {
                        let (r, waited) = self.fw.endpoint_pass_waited(&self.s.metrics).await;
                        self.lock_us.fetch_add(micros(waited), Ordering::Relaxed);
                        r.map_err(|e| EnforceFailure::NotEnforced(e.to_string()))?;
                    }
                    Action::Plumb => {}
                    other => tracing::debug!(action = ?other, "not CNI ADD's"),
                }
            }
            Ok(())
        })
    }
    fn forget<'a>(&'a self, name: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            for action in self.s.step(Event::CniForget(name.to_owned())) {
                let r = match action {
                    Action::FirewallPass { read_kernel } => self.fw.sync(&self.s.metrics, read_kernel).await,
                    Action::EndpointPass => self.fw.endpoint_pass(&self.s.metrics).await,
                    _ => continue,
                };
                if let Err(e) = r {
                    tracing::warn!(endpoint = %name, error = %e, "firewall pass after removing an endpoint failed");
                }
            }
        })
    }
}

/// Where a flow's plumbing and policy steps spent their time, beyond `Timings` (ms).
#[derive(Debug, Default)]
struct Inside {
    plumb_work_ms: f64,
    policy_lock_ms: f64,
    plumb: romana_host::PlumbTimes,
}

/// Runs a CNI flow through the real ports.
async fn run_flow(
    s: &Shared,
    netns_exists: bool,
    step: impl FnMut(CniEvent) -> Vec<CniAction>,
) -> (Result<Answer, AgentError>, Timings, Inside) {
    let client = s.client();
    let policy =
        s.firewall.as_ref().map(|fw| Policy { s, fw, client: client.clone(), lock_us: AtomicU64::new(0) });
    let kernel = Kernel { s, work_us: AtomicU64::new(0), times: std::sync::Mutex::default() };
    let ports = CniPorts { romanad: &*client, plumbing: &kernel, enforcer: policy.as_ref() };
    let (r, t) = drive_cni::run(&ports, netns_exists, step).await;
    let inside = Inside {
        plumb_work_ms: ms(&kernel.work_us),
        policy_lock_ms: policy.as_ref().map_or(0.0, |p| ms(&p.lock_us)),
        plumb: kernel.times.lock().map(|t| *t).unwrap_or_default(),
    };
    (r, t, inside)
}

async fn add(State(s): State<Arc<Shared>>, Json(req): Json<AttachRequest>) -> Result<Json<Attached>, Fail> {
    let started = Instant::now();
    let host = cni::Host {
        name: s.host.clone(),
        gateways: s.gateways.clone(),
        policy: s.firewall.is_some(),
        pod_wait: s.pod_wait,
    };
    let netns_exists = Path::new(&req.netns).exists();
    let mut flow = cni::Add::new(host, req);
    let (r, t, inside) = run_flow(&s, netns_exists, |ev| flow.step(ev)).await;
    // `plumb_work_ms` is the plumbing's own time on its thread, `policy_lock_ms` the endpoint
    // pass's wait for the pass lock: the rest of `plumb_ms` and `policy_ms` is waiting. The
    // plumbing's parts: the veth pair, the pod side and the host side, with IPv6's share of each.
    let p = inside.plumb;
    let ms_of = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::info!(
        address = %flow.name(), total_ms = started.elapsed().as_secs_f64() * 1e3, alloc_ms = t.ms("alloc"),
        pod_ms = t.ms("pod"), register_ms = t.ms("register"), policy_ms = t.ms("policy"),
        policy_lock_ms = inside.policy_lock_ms, plumb_ms = t.ms("plumb"), plumb_work_ms = inside.plumb_work_ms,
        veth_ms = ms_of(p.veth), pod_side_ms = ms_of(p.pod), pod_v6_ms = ms_of(p.pod_v6),
        host_side_ms = ms_of(p.host), host_v6_ms = ms_of(p.host_v6), ok = r.is_ok(), "CNI ADD"
    );
    Metrics::inc(&s.metrics.cni_add);
    s.metrics.cni_add_seconds.observe(started.elapsed());
    match r {
        Ok(Answer::Added(a)) => Ok(Json(*a)),
        Ok(Answer::Deleted) => Err(Fail::new(code::OTHER, "ADD answered as DEL", "")),
        Err(e) => {
            Metrics::inc(&s.metrics.cni_add_errors);
            Err(Fail(e))
        }
    }
}

/// Removes an endpoint's record and its place in the table (best effort: GC).
async fn forget(s: &Shared, client: &Arc<Client>, name: &str) {
    let Some(fw) = &s.firewall else { return };
    if let Err(e) = client.delete_endpoint(name).await {
        tracing::warn!(endpoint = %name, error = %e, "could not delete the endpoint record");
    }
    Policy { s, fw, client: client.clone(), lock_us: AtomicU64::new(0) }.forget(name).await;
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
    let client = s.client();
    let v6_name = v6_address_name(&name);
    let (first, v6) = tokio::join!(client.address(&name), client.address(&v6_name));
    let mut held = match first {
        Ok(a) => vec![a.ip],
        Err(e) if e.status() == Some(404) => {
            return Err(Fail::new(code::UNKNOWN_CONTAINER, format!("no address is allocated to {name}"), ""));
        }
        Err(e) => return Err(from_client("looking up the address", &e)),
    };
    match v6 {
        Ok(a) => held.push(a.ip),
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(from_client("looking up the IPv6 address", &e)),
    }
    if let Some(problem) = cni::prev_differs(&req, &held) {
        return Err(Fail::new(code::OTHER, "addresses differ from IPAM", format!("{problem} for {name}")));
    }
    let ips: Vec<&str> = held.iter().map(String::as_str).collect();
    let spec = cni::endpoint_spec(&s.host, &s.gateways, &req, &ips).map_err(Fail)?;
    let host_ns = s.host_ns.clone();
    blocking(move || romana_host::check(host_ns.as_deref(), &spec))
        .await?
        .map_err(|e| from_endpoint("CHECK", &e))
}

async fn del(State(s): State<Arc<Shared>>, Json(req): Json<DetachRequest>) -> Result<StatusCode, Fail> {
    Metrics::inc(&s.metrics.cni_del);
    let _timer = s.metrics.cni_del_seconds.timer();
    let mut flow = cni::Del::new(req, s.firewall.is_some());
    match run_flow(&s, true, |ev| flow.step(ev)).await.0 {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(Fail(e)),
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
    let names: std::collections::BTreeSet<&str> = all.iter().map(|a| a.name.as_str()).collect();
    // Links to keep: every CNI address on the host that stays (any network), by its link name.
    let mut keep = std::collections::BTreeSet::new();
    for a in &all {
        // A dual-stack endpoint's IPv6 address (`<name>#v6`) is valid with its name and goes
        // with it (releasing a name releases its `#v6`); alone, it goes by itself.
        let base = stack_base(&a.name);
        let paired = base != a.name && names.contains(base);
        let Some(rest) = base.strip_prefix("cni:") else { continue };
        let mut parts = rest.splitn(3, ':');
        let (Some(_network), Some(cid), Some(ifname)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !a.name.starts_with(&prefix) || valid.contains(base) {
            keep.insert(host_link_name(cid, ifname));
            continue;
        }
        if paired {
            continue;
        }
        let mut records = vec![a.name.clone()];
        if base == a.name {
            records.push(v6_address_name(&a.name));
        }
        for r in &records {
            forget(&s, &client, r).await;
        }
        match client.release(&a.name).await {
            Ok(_) => report.released.extend(records.into_iter().filter(|r| names.contains(r.as_str()))),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(from_client("releasing a leftover address", &e)),
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
        .route("/v1/diagnose", get(crate::diagnose_host::handler))
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
