//! romana-agent: keeps its host alive with romanad (heartbeats), follows the route manager's set
//! for the host, and converges the kernel to it through `romana-dataplane` and `romana-host`.
//! Endpoint links and their routes belong to the CNI path and are left alone here.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use romana_api::rest::{Credentials, HostRequest, HostRoutes};
use romana_client::Client;
use romana_dataplane::{HostState, HostView, LinkKind, LinkName, NextHop, PeerRoute, Plan, compile, diff};
use romana_host::{Kernel, in_netns};

#[derive(Debug, Parser)]
#[command(name = "romana-agent", version, about = "Romana's per-host agent: liveness and routes")]
struct Args {
    /// This host's name in the topology.
    #[arg(long, env = "ROMANA_HOST")]
    host: String,
    /// This host's address; when given, the agent registers the host if romanad does not know it.
    #[arg(long)]
    host_ip: Option<IpAddr>,
    /// Credentials file (endpoint, user, password) written by romanad or an admin.
    #[arg(long, env = "ROMANA_CREDENTIALS", default_value = "/var/lib/romana/admin.credentials")]
    credentials: PathBuf,
    /// Program this network namespace (`/run/netns/NAME`) instead of the agent's own; romanad is
    /// still reached from the agent's namespace. For sandboxes and tests.
    #[arg(long)]
    netns: Option<String>,
    /// Addresses of the gateway link `romana-gw` (endpoints' next hop).
    #[arg(long = "gateway-ip")]
    gateway_ips: Vec<IpAddr>,
    /// How often to heartbeat and reconcile, in milliseconds.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Reconcile once and exit (prints the plan applied).
    #[arg(long)]
    once: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.credentials)
        .with_context(|| format!("reading credentials {}", args.credentials.display()))?;
    let creds: Credentials = serde_json::from_str(&text)
        .with_context(|| format!("parsing credentials {}", args.credentials.display()))?;
    let mut client = Client::from_credentials(&creds).await.context("logging in to romanad")?;
    register(&client, &args).await?;
    let gateway = LinkName::new("romana-gw").expect("a marked, short name");
    let mut routes: Vec<PeerRoute> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(50)));
    loop {
        tick.tick().await;
        if let Err(e) = client.heartbeat(&args.host).await {
            if e.status() == Some(401) {
                // The access token expired: log in again and try next tick.
                if let Ok(c) = Client::from_credentials(&creds).await {
                    client = c;
                }
            }
            tracing::warn!(host = %args.host, error = %e, "heartbeat failed");
        }
        // When romanad cannot be reached the last known routes stay: the kernel keeps forwarding.
        match client.routes(&args.host).await {
            Ok(r) => routes = peer_routes(&r),
            Err(e) => {
                tracing::warn!(host = %args.host, error = %e, "cannot read this host's routes; keeping the last set")
            }
        }
        let view = HostView {
            gateway: gateway.clone(),
            gateway_addresses: args.gateway_ips.clone(),
            endpoints: vec![],
            routes: routes.clone(),
        };
        let desired = match compile(&view) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "the host's desired state does not compile; nothing applied");
                continue;
            }
        };
        match converge(args.netns.clone(), desired).await {
            Ok(plan) if !plan.is_empty() => {
                for step in &plan.steps {
                    tracing::info!(host = %args.host, "{step}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(host = %args.host, error = %e, "reconcile failed"),
        }
        if args.once {
            return Ok(());
        }
    }
}

/// Makes sure romanad knows this host; registers it when `--host-ip` is given.
async fn register(client: &Client, args: &Args) -> Result<()> {
    match client.host(&args.host).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(404) => {
            let Some(ip) = args.host_ip else {
                anyhow::bail!("romanad does not know host {:?}; pass --host-ip to register it", args.host);
            };
            let req = HostRequest {
                name: args.host.clone(),
                ip: ip.to_string(),
                agent_port: None,
                tags: Default::default(),
                k8s_info: None,
            };
            client.add_host(&req).await.with_context(|| format!("registering host {}", args.host))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("looking up host {}", args.host)),
    }
}

/// The route manager's set as the dataplane's input: routes via other hosts, and throws.
fn peer_routes(r: &HostRoutes) -> Vec<PeerRoute> {
    r.routes
        .iter()
        .filter_map(|x| {
            let dest = x.dest.parse().ok()?;
            match x.kind.as_str() {
                "throw" => Some(PeerRoute { dest, via: None }),
                _ => x.via_ip.parse().ok().map(|ip| PeerRoute { dest, via: Some(ip) }),
            }
        })
        .collect()
}

/// Observe, diff, apply in the target namespace. Endpoint links and their routes are the CNI's:
/// they are taken out of the observed state so the plan never touches them.
async fn converge(netns: Option<String>, desired: HostState) -> Result<Plan> {
    async fn run(desired: HostState) -> Result<Plan> {
        let mut k = Kernel::connect()?;
        let mut observed = k.observe().await?;
        let endpoints: Vec<LinkName> = observed
            .links
            .iter()
            .filter(|(_, k)| **k == LinkKind::Endpoint)
            .map(|(l, _)| l.clone())
            .collect();
        observed.links.retain(|_, k| *k != LinkKind::Endpoint);
        observed.addresses.retain(|(l, _)| !endpoints.contains(l));
        observed.routes.retain(|_, n| !matches!(n, NextHop::Dev(l) if endpoints.contains(l)));
        let plan = diff(&observed, &desired);
        k.apply(&plan).await?;
        Ok(plan)
    }
    match netns {
        None => run(desired).await,
        Some(ns) => tokio::task::spawn_blocking(move || in_netns(&ns, move || run(desired)))
            .await
            .context("namespace thread")??,
    }
}
