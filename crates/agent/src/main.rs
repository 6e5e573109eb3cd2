//! romana-agent: keeps its host alive with romanad (heartbeats), follows the route manager's set
//! for the host, and converges the kernel to it through `romana-dataplane` and `romana-host`.
//! Endpoint links and their routes belong to the CNI path (`local.rs`, on the agent's socket) and
//! are left alone by the reconcile loop.

mod bird;
mod ctx;
mod diagnose_host;
mod fastpath;
mod firewall;
mod firewall_read;
mod kernel_routes;
mod local;
mod metrics;
mod metrics_http;
mod nat;
mod shared;
mod vip;
mod vm;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use romana_agent::machine::{Action, Event, State, Stream};
use romana_agent::rest_watch::SharedWatch;
use romana_api::rest::{Credentials, HostRequest};
use romana_client::Client;
use romana_store::follow::{Backoff, Followed};

#[derive(Debug, Parser)]
#[command(name = "romana-agent", version, about = "Romana's per-host agent: liveness and routes")]
struct Args {
    /// This host's name in the topology.
    #[arg(long, env = "ROMANA_HOST")]
    host: String,
    /// This host's address; when given, the agent registers the host if romanad does not know it.
    #[arg(long)]
    host_ip: Option<IpAddr>,
    /// This host's IPv6 underlay address beside an IPv4 `--host-ip` (dual-stack underlay), given
    /// in that registration: other hosts route IPv6 to this host's blocks through it.
    #[arg(long, requires = "host_ip")]
    host_ipv6: Option<std::net::Ipv6Addr>,
    /// Tags for that registration (`--tag rack=r1`), which place the host in a prefix group.
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Credentials file (endpoint, user, password) of a `service` user, written by
    /// `romana user create NAME --role service --credentials-out FILE`.
    #[arg(long, env = "ROMANA_CREDENTIALS", default_value = "/var/lib/romana/agent.credentials")]
    credentials: PathBuf,
    /// romanad replicas to use instead of the credentials' endpoint (repeated, or a comma list:
    /// `ROMANA_ENDPOINT=http://a:9600,http://b:9600`); calls fail over between them.
    #[arg(long = "endpoint", env = "ROMANA_ENDPOINT", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Program this network namespace (`/run/netns/NAME`) instead of the agent's own; romanad is
    /// still reached from the agent's namespace. For sandboxes and tests.
    #[arg(long)]
    netns: Option<String>,
    /// Addresses of the gateway link `romana-gw`: endpoints' next hop. The same link-local
    /// address on every host (as Calico does) keeps pods independent of which host they are on.
    #[arg(long = "gateway-ip", default_value = "169.254.1.1")]
    gateway_ips: Vec<IpAddr>,
    /// The local API for romana-cni (and health, metrics): a Unix socket, root only.
    #[arg(long, env = "ROMANA_AGENT_SOCKET", default_value = "/run/romana/agent.sock")]
    socket: PathBuf,
    /// Serve `/metrics` (Prometheus text) and `/healthz` on this TCP address (docs/metrics.md);
    /// `off` for none. When the default's port is taken the agent runs without it (and says so);
    /// an address given here must bind.
    #[arg(long, env = "ROMANA_AGENT_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// How often to heartbeat and reconcile, in milliseconds.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// How long CNI ADD of a pod started by kubelet (K8S_POD_NAME, no ROMANA_LABELS) waits for
    /// the pod's record from romana-k8s before failing with CNI code 11, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pod_wait_ms: u64,
    /// Serve OpenStack's `POST/DELETE /vm` (networking-romana) on this TCP address, e.g. the
    /// management network's `10.0.0.11:9604`. Off by default.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Where the agent keeps what it must remember across restarts (the VM endpoints).
    #[arg(long, default_value = "/var/lib/romana/agent")]
    state_dir: PathBuf,
    /// Where the firewall saves the table it applied, so that the next agent started on this
    /// host need not read the kernel's back (seconds at 50,000 endpoints; docs/policy.md);
    /// default: next to `--socket`, named after it (`/run/romana/agent.firewall-table`), so that
    /// agents of one machine's namespaces keep theirs apart; `off`: not saved.
    #[arg(long, env = "ROMANA_FIREWALL_STATE")]
    firewall_state: Option<PathBuf>,
    /// How often recorded VMs whose tap does not exist yet are looked at, in milliseconds
    /// (`POST /vm` answers at once; the tap is routed when nova creates it).
    #[arg(long, default_value_t = 250)]
    vm_wait_ms: u64,
    /// Reconcile once and exit (prints the plan applied).
    #[arg(long)]
    once: bool,
    /// Only poll every interval; do not follow romanad's watch for this host's routes (a route
    /// change then waits for the next poll).
    #[arg(long)]
    no_watch: bool,
    /// Do not enforce tenant isolation and policies (no `inet romana` nftables table); for hosts
    /// where something else owns the firewall.
    #[arg(long)]
    no_policy: bool,
    /// How often the firewall re-reads the kernel's table and repairs foreign changes, in ms.
    #[arg(long, default_value_t = 2_000)]
    policy_repair_ms: u64,
    /// Do not hand pod traffic past the host's forwarding path (the BPF fast path on the uplinks
    /// and endpoint links, docs/fastpath.md); the kernel's forwarding path carries everything.
    /// Removes our programs if an earlier run attached them.
    #[arg(long)]
    no_fast_path: bool,
    /// Leave endpoints' outgoing traffic to the kernel's forwarding path (no `romana_send` on
    /// endpoint veths; packets to them still take the fast path). Removes `romana_send`
    /// programs an earlier run attached.
    #[arg(long)]
    no_fast_path_send: bool,
    /// Always transmit out of a veth uplink, never hand packets to its far end (so that a packet
    /// capture on the uplink sees them, docs/fastpath.md).
    #[arg(long)]
    no_fast_path_handoff: bool,
    /// Announce this host's aggregates over BGP: render BIRD configuration into this include
    /// file (the operator's bird.conf includes it) and reload BIRD when it changes (docs/fabric.md).
    #[arg(long)]
    bird_config: Option<PathBuf>,
    /// birdc, to reload BIRD.
    #[arg(long, default_value = "birdc")]
    birdc: PathBuf,
    /// BIRD's control socket [default: birdc's].
    #[arg(long)]
    bird_socket: Option<PathBuf>,
    /// BFD on the host's BGP sessions (sub-second failover).
    #[arg(long)]
    bird_bfd: bool,
    /// Let BIRD install what the fabric sends into the kernel (hosts without a default route).
    #[arg(long)]
    bird_kernel: bool,
    /// How often to re-read the fabric view for BIRD, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    bird_interval_ms: u64,
    /// How often to re-read the topology for egress NAT (networks' `nat_outgoing`, `no_nat`,
    /// hosts), in milliseconds (docs/fabric.md, "Egress NAT").
    #[arg(long, default_value_t = 1_000)]
    nat_interval_ms: u64,
}

/// How often the agent diagnoses itself for the report its heartbeats carry.
const DIAGNOSE_EVERY: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.credentials)
        .with_context(|| format!("reading credentials {}", args.credentials.display()))?;
    let mut creds: Credentials = serde_json::from_str(&text)
        .with_context(|| format!("parsing credentials {}", args.credentials.display()))?;
    if !args.endpoints.is_empty() {
        creds.endpoint = args.endpoints.join(",");
    }
    let (client, host_ip) = connect(&creds, &args).await?;
    let host_ns = args.netns.as_deref().map(romana_host::named);
    let host_ns_for_fw = host_ns.clone();
    let ns = host_ns.clone();
    match tokio::task::spawn_blocking(move || romana_host::enable_forwarding(ns.as_deref())).await? {
        Ok(changed) if !changed.is_empty() => tracing::info!(?changed, "enabled forwarding"),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot enable forwarding; endpoints will not reach other hosts")
        }
    }
    let interval = Duration::from_millis(args.interval_ms.max(50));
    let policy = !args.no_policy && !args.once;
    // The uplinks are the links holding the host's addresses, of either family.
    let host_ips: Vec<IpAddr> = std::iter::once(host_ip).chain(args.host_ipv6.map(IpAddr::V6)).collect();
    let deliver = if args.no_fast_path || args.once {
        if args.no_fast_path {
            fastpath::remove(host_ns.clone(), host_ips).await;
        }
        None
    } else {
        fastpath::Deliver::load(
            host_ns.clone(),
            host_ips,
            policy,
            !args.no_fast_path_send,
            !args.no_fast_path_handoff,
        )
    };
    let ctx = Arc::new(ctx::Ctx {
        host: args.host.clone(),
        client: RwLock::new(Arc::new(client)),
        metrics: metrics::Metrics::default(),
        core: Mutex::new(State::new(args.host.clone(), args.gateway_ips.clone(), policy)),
        vips: Mutex::default(),
    });
    let shared = Arc::new(shared::Shared {
        ctx: ctx.clone(),
        host_ns,
        gateways: args.gateway_ips.clone(),
        last_contact: Mutex::new(None),
        gateway_ready: Default::default(),
        contact_budget: (interval * 6).max(Duration::from_secs(3)),
        pod_wait: Duration::from_millis(args.pod_wait_ms),
        firewall: policy.then(|| {
            let saved = match &args.firewall_state {
                Some(p) if p.as_os_str() == "off" => None,
                Some(p) => Some(p.clone()),
                None => Some(args.socket.with_extension("firewall-table")),
            };
            Arc::new(firewall::Firewall::new(ctx.clone(), host_ns_for_fw, deliver.clone(), saved))
        }),
        deliver,
        routes_revision: Default::default(),
        routes_etag: Default::default(),
        auth_refusals: Default::default(),
        report: Mutex::default(),
    });
    // One watch stream for the routes, the firewall and the VIPs (`rest_watch::SharedWatch`).
    let mut watch = SharedWatch::new();
    if let Some(fw) = &shared.firewall {
        let repair = Duration::from_millis(args.policy_repair_ms.max(100));
        firewall::watch(fw, &mut watch);
        tokio::spawn(firewall::run(fw.clone(), repair));
        let every = Duration::from_millis(args.nat_interval_ms.max(100));
        tokio::spawn(nat::run(fw.clone(), ctx.clone(), shared.host_ns.clone(), every));
    } else if !args.once {
        tracing::info!("no egress NAT without the firewall (--no-policy): the nat chain lives in its table");
    }
    if !args.once {
        let listener = local::bind(&args.socket)?;
        tracing::info!(socket = %args.socket.display(), "local API listening");
        tokio::spawn(axum::serve(listener, local::router(shared.clone())).into_future());
        metrics_http::serve(args.metrics_listen.as_deref(), shared.clone()).await?;
        if let Some(addr) = args.listen {
            let vms = Arc::new(
                vm::Vms::load(
                    shared.host_ns.clone(),
                    args.state_dir.join("vms.json"),
                    Duration::from_millis(args.vm_wait_ms),
                )
                .with_registry(ctx.clone()),
            );
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            tracing::info!(%addr, "OpenStack /vm API listening");
            tokio::spawn(vm::plumb(vms.clone()));
            tokio::spawn(axum::serve(l, vm::router(vms)).into_future());
        }
    }
    if let (Some(path), false) = (&args.bird_config, args.once) {
        let cfg = bird::BirdConfig {
            path: path.clone(),
            birdc: args.birdc.clone(),
            socket: args.bird_socket.clone(),
            options: romana_fabric::Options { bfd: args.bird_bfd, kernel: args.bird_kernel },
            interval: Duration::from_millis(args.bird_interval_ms.max(100)),
        };
        tokio::spawn(bird::run(ctx.clone(), cfg));
    }
    let mut tick = tokio::time::interval(interval);
    let wake = Arc::new(tokio::sync::Notify::new());
    if !args.no_watch && !args.once {
        follow_routes(ctx.clone(), wake.clone(), &mut watch);
    }
    if !args.once {
        let changed = vip::watch(&mut watch);
        tokio::spawn(vip::run(shared.clone(), Duration::from_secs(2), wake.clone(), changed));
        tokio::spawn(diagnose_host::keep_reporting(shared.clone(), DIAGNOSE_EVERY));
    }
    {
        let c = ctx.clone();
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        tokio::spawn(watch.run(move || c.client(), backoff));
    }
    loop {
        // A change of this host's route set on the watch wakes the loop at once; the interval
        // still runs for heartbeats and as the fallback when the watch is down.
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        let mut todo: VecDeque<Action> = shared.step(Event::Tick { now: Instant::now() }).into();
        while let Some(action) = todo.pop_front() {
            todo.extend(perform(&shared, &args, &creds, action).await);
        }
        if args.once {
            return Ok(());
        }
    }
}

/// Performs one of the route loop's actions; returns what the core asks next.
async fn perform(shared: &shared::Shared, args: &Args, creds: &Credentials, action: Action) -> Vec<Action> {
    let m = &shared.metrics;
    let client = shared.client();
    match action {
        Action::Heartbeat => {
            let report = shared.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let sent = match &report {
                Some(r) => client.heartbeat_with(&args.host, r).await,
                None => client.heartbeat(&args.host).await,
            };
            if sent.is_ok() {
                shared.auth_refusals.store(0, Ordering::Relaxed);
                // The heartbeat is the regular contact: the route set is read only when it
                // changed (`machine/route_loop.rs`).
                *shared.last_contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            if let Err(e) = sent {
                metrics::Metrics::inc(&m.heartbeat_errors);
                if e.status() == Some(401) {
                    shared.auth_refusals.fetch_add(1, Ordering::Relaxed);
                    // The access token expired: refresh it (log in again only if the refresh
                    // token is refused) and try next tick.
                    if let Err(e) = client.renew(&creds.username, &creds.password).await {
                        tracing::warn!(error = %e, "cannot renew the access token");
                    }
                }
                tracing::warn!(host = %args.host, error = %e, "heartbeat failed");
            }
        }
        Action::ReadRoutes => {
            let t = Instant::now();
            let held = shared.routes_etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let answer = match client.routes_json_if_changed(&args.host, held.as_deref()).await {
                Ok(answer) => {
                    *shared.last_contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    answer
                }
                Err(e) => {
                    tracing::warn!(host = %args.host, error = %e, "cannot read this host's routes; keeping the last set");
                    return shared.step(Event::RoutesRead(None, None));
                }
            };
            // The routes are the ones held (a notice moved by a block of this host's own that
            // changed none of them): nothing to parse; the core converges only where reads are
            // its only converges (the watch not followed).
            let stamp = answer.stamp;
            let Some((json, etag)) = answer.changed else {
                let read_ms = t.elapsed().as_secs_f64() * 1e3;
                tracing::debug!(target: "romana_agent::drive", read_ms, ?stamp, "route set read: unchanged");
                return shared.step(Event::RoutesUnchanged(stamp));
            };
            // Parsed on a blocking thread: the agent's runtime serves CNI ADDs meanwhile.
            let parsed = tokio::task::spawn_blocking(move || {
                serde_json::from_slice::<romana_api::rest::HostRoutesInfo>(&json)
                    .map(|r| (r.revision, romana_agent::machine::routes::peer_routes(&r), r.stamp))
            })
            .await;
            let (revision, routes, body_stamp) = match parsed {
                Ok(Ok(parsed)) => parsed,
                Ok(Err(e)) => {
                    tracing::warn!(host = %args.host, error = %e, "romanad's route set does not parse; keeping the last set");
                    return shared.step(Event::RoutesRead(None, None));
                }
                Err(e) => {
                    tracing::warn!(host = %args.host, error = %e, "the route set's parse failed; keeping the last set");
                    return shared.step(Event::RoutesRead(None, None));
                }
            };
            let read_ms = t.elapsed().as_secs_f64() * 1e3;
            shared.routes_revision.store(revision, Ordering::Relaxed);
            *shared.routes_etag.lock().unwrap_or_else(|e| e.into_inner()) = etag;
            let t = Instant::now();
            // The header, or the body's stamp where a proxy dropped the header.
            let stamp = stamp.or(body_stamp);
            let next = shared.step(Event::RoutesRead(Some(routes), stamp.clone()));
            // The read (request, then the parse off the runtime) and its step (under the
            // core's lock): `RUST_LOG=romana_agent::drive=debug`.
            tracing::debug!(
                target: "romana_agent::drive",
                read_ms,
                step_ms = t.elapsed().as_secs_f64() * 1e3,
                ?stamp,
                "route set read"
            );
            m.routes.store(shared.core().routes.len() as u64, Ordering::Relaxed);
            return next;
        }
        Action::ObserveKernel | Action::ApplyRoutes(_) => {
            return kernel_routes::perform(shared, &args.host, args.netns.clone(), action).await;
        }
        Action::SyncFastPath => {
            if let Some(d) = &shared.deliver
                && let Err(e) = d.sync().await
            {
                metrics::Metrics::inc(&m.reconcile_errors);
                tracing::error!(host = %args.host, error = %e, "fast path sync failed")
            }
        }
        Action::RoutesLagged => {
            // The replica that answered has not applied the change the notice named: the
            // re-read at the next tick asks another one.
            client.next_endpoint();
            tracing::debug!(host = %args.host, "route set answered by a lagging replica; reading again");
        }
        Action::RoutesDoNotCompile(e) => {
            tracing::error!(error = %e, "the host's desired state does not compile; nothing applied")
        }
        other => tracing::debug!(action = ?other, "not the route loop's"),
    }
    vec![]
}

/// Follows `routes/<host>` on the agent's shared watch and wakes the reconcile loop on each
/// change; the stream resumes after a break and backs off while romanad is away.
fn follow_routes(ctx: Arc<ctx::Ctx>, wake: Arc<tokio::sync::Notify>, watch: &mut SharedWatch) {
    let key = ctx.core().routes_key();
    watch.add(&[key.as_str()], move |f| {
        let event = matches!(f, Followed::Event(_));
        if let Followed::Lost { error, retry_in } = &f {
            tracing::warn!(%error, ?retry_in, "route watch failed; polling until it is back");
        }
        if ctx.step(Event::Watched(Stream::Routes, f)).contains(&Action::WakeRoutes) {
            if event {
                metrics::Metrics::inc(&ctx.metrics.watch_events);
                ctx.metrics.route_change_seen(Instant::now());
            }
            wake.notify_one();
        }
        true
    });
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// Logs in and makes sure romanad knows this host (registering it when `--host-ip` is given);
/// returns the host's address. While no romanad replica can be reached or serve (it may
/// start after the agent), tries again with a capped backoff; the kernel is left as it is
/// meanwhile. A refusal (4xx: bad credentials, unknown host) or a server certificate the CA does
/// not vouch for ends the agent.
async fn connect(creds: &Credentials, args: &Args) -> Result<(Client, IpAddr)> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let tried = async {
            let client = Client::from_credentials(creds).await.context("logging in to romanad")?;
            let ip = register(&client, args).await?;
            anyhow::Ok((client, ip))
        };
        match tried.await {
            Ok(done) => return Ok(done),
            Err(e) if e.chain().any(|c| c.downcast_ref().is_some_and(romana_client::worth_retrying)) => {
                let wait = backoff.next_delay();
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "romanad not reachable yet"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn register(client: &Client, args: &Args) -> Result<IpAddr> {
    match client.host(&args.host).await {
        Ok(h) => h.ip.parse().with_context(|| format!("romanad's address {:?} for host {}", h.ip, args.host)),
        Err(e) if e.status() == Some(404) => {
            let Some(ip) = args.host_ip else {
                anyhow::bail!("romanad does not know host {:?}; pass --host-ip to register it", args.host);
            };
            let req = HostRequest {
                name: args.host.clone(),
                ip: ip.to_string(),
                ipv6: args.host_ipv6.map(|a| a.to_string()),
                agent_port: args.listen.map(|a| a.port()),
                tags: args.tags.iter().cloned().collect(),
                k8s_info: None,
            };
            client.add_host(&req).await.with_context(|| format!("registering host {}", args.host))?;
            Ok(ip)
        }
        Err(e) => Err(e).with_context(|| format!("looking up host {}", args.host)),
    }
}
