//! `romana chaos`: a bounded, seeded scenario. It starts a replicated control plane (or uses the
//! one given), brings up a sandbox whose agents know every replica, then for `--duration` runs
//! random CNI ADD/DEL (through romana-cni), label and policy churn while killing (`kill -9`)
//! agents, romanad replicas and etcd members and restarting them; then it stops, waits for
//! convergence (bounded) and checks the invariants (`chaos_check.rs`). Exit 1 on any violation.
//! Everything it started is torn down, also on failure and Ctrl-C (guards).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use romana_api::rest::{LabelsRequest, TenantRequest};
use romana_client::Client;

use crate::chaos_check::{Family, NETWORK, Violation, address_name};
use crate::chaos_plan::{KillAction, Killer, Kind, Model, Op, Rng, TENANTS, policy_templates};
use crate::chaos_plane::Plane;
use crate::sandbox_layout::{Egress, Layout, Routing};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// The scenario's seed (printed; the same seed makes the same choices) [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sandbox hosts (one rack up to 4 hosts, else two racks of half each; even above 4).
    #[arg(long, default_value_t = 3)]
    pub hosts: usize,
    /// How long the churn and the kills last, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Most live pods per host.
    #[arg(long, default_value_t = 3)]
    pub pods_per_host: usize,
    /// Dual stack: the sandbox's IPv6 pod network (e.g. fd00:113::/64) beside the IPv4 one;
    /// every ADD must answer with an address of each family, the address checks cover the
    /// `#v6` records and every pod pair is probed over both families.
    #[arg(long, value_name = "CIDR")]
    pub ipv6: Option<String>,
    /// How long to wait for convergence after the churn, in seconds.
    #[arg(long, default_value_t = 120)]
    pub converge_timeout: u64,
    /// Churn only, no kills (the same-run baseline for the failure counts).
    #[arg(long)]
    pub no_kills: bool,
    /// Use the control plane given by --endpoint and the credentials instead of starting one
    /// (then only agents are killed).
    #[arg(long)]
    pub given: bool,
    /// Test hook: allocate an address under a pod name no pod has, after the churn, so the run
    /// must report a leak (the tests' proof that a violation fails the command).
    #[arg(long, hide = true)]
    pub inject_leak: bool,
    /// Where logs, data and the sandbox's state go [default: a new directory under /tmp, removed
    /// after a run without violations].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Operations per kind: (acknowledged, failed).
type OpCounts = BTreeMap<&'static str, (usize, usize)>;

/// Runs the sandbox's `down` when dropped (a failure or Ctrl-C half-way), from a thread of its
/// own: `down` is async and a drop cannot await. Without a client, hosts stay in romanad (ours
/// goes down anyway; a given one keeps them, as after a crash).
struct SandboxGuard {
    state_dir: PathBuf,
    name: String,
    armed: bool,
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (dir, name) = (self.state_dir.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(crate::sandbox::down(&dir, &name, None)).ok()
        })
        .join();
    }
}

/// The killer thread: kills and restarts on the schedule until stopped, then restarts whatever
/// is still down. Joined when dropped.
struct KillerThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<BTreeMap<Kind, usize>>>,
}

impl KillerThread {
    fn start(plane: Arc<Mutex<Plane>>, mut killer: Killer, mut rng: Rng, started: Instant) -> KillerThread {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut kills: BTreeMap<Kind, usize> = BTreeMap::new();
            let act = |a: KillAction, kills: &mut BTreeMap<Kind, usize>| {
                let mut p = plane.lock().unwrap_or_else(|e| e.into_inner());
                let t = started.elapsed().as_secs_f64();
                match a {
                    KillAction::Kill(target) => match p.kill(target) {
                        Ok(what) => {
                            *kills.entry(target.0).or_default() += 1;
                            println!("[{t:7.1}s] kill -9 {what}");
                        }
                        Err(e) => {
                            println!("[{t:7.1}s] could not kill {} {}: {e:#}", target.0.name(), target.1)
                        }
                    },
                    KillAction::Restart(target) => match p.restart(target) {
                        Ok(what) => println!("[{t:7.1}s] restarted {what}"),
                        Err(e) => {
                            println!("[{t:7.1}s] RESTART FAILED {} {}: {e:#}", target.0.name(), target.1)
                        }
                    },
                }
            };
            while !flag.load(Ordering::Relaxed) {
                for a in killer.tick(started.elapsed().as_millis() as u64, &mut rng) {
                    act(a, &mut kills);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            for target in killer.all_down() {
                act(KillAction::Restart(target), &mut kills);
            }
            kills
        });
        KillerThread { stop, handle: Some(handle) }
    }

    fn finish(&mut self) -> BTreeMap<Kind, usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for KillerThread {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One rack up to 4 hosts; two racks of half each above (the sandbox's racks are equal).
fn shape(hosts: usize) -> Result<(usize, usize)> {
    match hosts {
        0 => anyhow::bail!("--hosts must be at least 1"),
        1..=4 => Ok((1, hosts)),
        n if n % 2 == 0 => Ok((2, n / 2)),
        n => anyhow::bail!("--hosts {n}: above 4 hosts, an even number (two racks of equal size)"),
    }
}

/// `romana chaos`. `given`: a logged-in client of a control plane that is not ours.
pub async fn run(o: &Options, given: Option<Client>) -> Result<bool> {
    let (racks, per_rack) = shape(o.hosts)?;
    let seed = o.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "romana chaos: seed {seed}, {} hosts, {} s of churn (reproduce: --seed {seed})",
        o.hosts, o.duration
    );
    let (work, temporary) = match &o.work_dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("romana-chaos-{}", std::process::id())), true),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    println!("work directory (logs, data, sandbox state): {}", work.display());
    let outcome = tokio::select! {
        r = scenario(o, seed, racks, per_rack, &work, given) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; everything started was torn down")),
    };
    if temporary && matches!(outcome, Ok(true)) {
        let _ = std::fs::remove_dir_all(&work);
    }
    outcome
}

async fn scenario(
    o: &Options,
    seed: u64,
    racks: usize,
    per_rack: usize,
    work: &Path,
    given: Option<Client>,
) -> Result<bool> {
    let mut rng = Rng::new(seed);
    let (plane, c) = match given {
        Some(c) => (Plane::given(c.endpoints().to_vec()), c),
        None => {
            let plane = Plane::start(work, 3, 3)?;
            let c = Client::new(plane.urls.clone());
            let admin = plane.admin.as_ref().context("the admin's credentials")?;
            c.login(&admin.username, &admin.password).await.context("logging in as the admin")?;
            (plane, c)
        }
    };
    let plane = Arc::new(Mutex::new(plane));
    let name = format!("c{}", std::process::id() % 100_000);
    let state_dir = work.join("sandbox");
    let up = crate::sandbox::UpOptions {
        name: name.clone(),
        racks,
        hosts_per_rack: per_rack,
        cidr: "10.113.0.0/16".into(),
        block_mask: 28,
        state_dir: state_dir.clone(),
        routing: Routing::Static,
        // No egress NAT: the hosts' tables are then the policy compiler's alone.
        egress: Egress { internet: false, nat_outgoing: false, no_nat: vec![] },
        reflectors: 0,
        ipv6: o.ipv6.clone(),
        // The router follower reaches every replica; with our own plane it logs in with the
        // admin's credentials file, with a given one it reads the caller's configuration.
        follower_env: follower_env(
            c.endpoints(),
            (!o.given).then(|| work.join("romanad-0/admin.credentials")),
        ),
    };
    let mut guard = SandboxGuard { state_dir: state_dir.clone(), name: name.clone(), armed: true };
    crate::sandbox::up(&c, &up).await?;
    let layout = crate::sandbox::load(&state_dir, &name)?.layout()?;
    let sb_dir = crate::sandbox::dir(&state_dir, &name);
    plane.lock().unwrap_or_else(|e| e.into_inner()).attach_sandbox(&state_dir, &name);
    for (t, isolation) in TENANTS {
        let req = TenantRequest {
            name: t.into(),
            external_id: String::new(),
            labels: BTreeMap::new(),
            isolation: isolation.into(),
        };
        match c.create_tenant(&req).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(409) => {
                drop(c.update_tenant(&req).await.context("updating a tenant")?)
            }
            Err(e) => return Err(e).context("creating the tenants"),
        }
    }

    let started = Instant::now();
    let sizes = plane.lock().unwrap_or_else(|e| e.into_inner()).sizes(layout.hosts.len());
    let mut kill_rng = rng.fork();
    let mut killer = (!o.no_kills).then(|| {
        KillerThread::start(plane.clone(), Killer::new(sizes, &mut kill_rng), kill_rng.fork(), started)
    });
    let mut model = Model::default();
    model.dual_stack = o.ipv6.is_some();
    let mut ops: OpCounts = BTreeMap::new();
    let max_pods = o.pods_per_host * layout.hosts.len();
    let mut last_login = Instant::now();
    let mut add_ms: Vec<u128> = Vec::new();
    // Every operation with its answer, for finding what a violation came from.
    let ops_log = work.join("ops.log");
    let mut log =
        std::fs::File::create(&ops_log).with_context(|| format!("creating {}", ops_log.display()))?;
    while started.elapsed() < Duration::from_secs(o.duration) {
        relogin(&c, &plane, &mut last_login).await;
        let op = model.next_op(&mut rng, layout.hosts.len(), max_pods);
        let sent = Instant::now();
        let r = apply(&c, &layout, &sb_dir, &model, &op).await;
        if matches!(op, Op::Add { .. }) && r.is_ok() {
            add_ms.push(sent.elapsed().as_millis());
        }
        count(&mut ops, &op, r.is_ok());
        let at = started.elapsed().as_secs_f64();
        if let Err(e) = &r {
            println!("[{at:7.1}s] {} failed: {e:#}", describe(&op));
        }
        let answer = match &r {
            Ok(ips) => format!("ok {}", ips.join(" ")),
            Err(e) => format!("failed: {e:#}"),
        };
        let _ = writeln!(log, "[{at:7.1}s] {} {answer}", describe(&op));
        model.outcome(&op, r.is_ok(), r.as_deref().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kills = killer.as_mut().map(KillerThread::finish).unwrap_or_default();
    println!("[{:7.1}s] churn stopped; everything killed was restarted", started.elapsed().as_secs_f64());
    if o.inject_leak {
        let req = romana_api::rest::AddressRequest {
            name: address_name("leaked"),
            host: layout.hosts[0].name.clone(),
            tenant: TENANTS[0].0.into(),
            segment: String::new(),
            ip: None,
        };
        let a = c.allocate(&req, None).await.context("allocating the injected leak")?;
        println!("injected a leak: {} holds {}", req.name, a.ip);
    }

    // Convergence: pending DELs retried (as a runtime does) until acknowledged, then every
    // check repeated until it passes or the bound runs out.
    let stopped = Instant::now();
    let bound = Duration::from_secs(o.converge_timeout);
    let mut violations;
    loop {
        relogin(&c, &plane, &mut last_login).await;
        for pod in model.pending_deletes() {
            let op = Op::Del { pod };
            let r = apply(&c, &layout, &sb_dir, &model, &op).await;
            count(&mut ops, &op, r.is_ok());
            model.outcome(&op, r.is_ok(), &[]);
        }
        violations = settled(&c, &layout, &sb_dir, &model).await;
        if violations.is_empty() || stopped.elapsed() > bound {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let converged = violations.is_empty().then(|| stopped.elapsed());
    let families: &[Family] = if o.ipv6.is_some() { &[Family::V4, Family::V6] } else { &[Family::V4] };
    let mut probed = Vec::new();
    if violations.is_empty() {
        match crate::chaos_probe::probe(&c, &layout, &sb_dir, &model, families).await {
            Ok(p) => probed = p,
            Err(e) => violations.push(Violation { kind: "probe-failed", detail: format!("{e:#}") }),
        }
        violations.extend(probed.iter().flat_map(|p| p.violations.iter().cloned()));
    }

    add_ms.sort_unstable();
    let pct = |p: f64| add_ms.get(((add_ms.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    println!(
        "acknowledged ADD through romana-cni: p50 {} ms, p99 {} ms, max {} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    print_report(&ops, &kills, converged, bound, &model, &violations);
    print_families(&model, &probed);
    if !violations.is_empty() {
        keep_agent_logs(&sb_dir, work);
    }
    crate::sandbox::down(&state_dir, &name, Some(&c)).await?;
    guard.armed = false;
    drop(plane);
    Ok(violations.is_empty())
}

/// `down` removes the sandbox's directory; after a violation its agents' logs are worth keeping.
fn keep_agent_logs(sb_dir: &Path, work: &Path) {
    let keep = work.join("agent-logs");
    let _ = std::fs::create_dir_all(&keep);
    for e in std::fs::read_dir(sb_dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
        }
    }
    println!("agents' logs kept in {}, operations in {}", keep.display(), work.join("ops.log").display());
}

/// Tokens last 15 minutes; a long run logs in again every 10 (only on a plane of its own: a
/// given client keeps what it was given).
async fn relogin(c: &Client, plane: &Arc<Mutex<Plane>>, last: &mut Instant) {
    if last.elapsed() < Duration::from_secs(600) {
        return;
    }
    let admin = plane.lock().unwrap_or_else(|e| e.into_inner()).admin.clone();
    if let Some(a) = admin
        && c.login(&a.username, &a.password).await.is_ok()
    {
        *last = Instant::now();
    }
}

fn count(ops: &mut OpCounts, op: &Op, ok: bool) {
    let e = ops.entry(op.kind()).or_default();
    if ok { e.0 += 1 } else { e.1 += 1 }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Add { pod, host, tenant, labels } => format!("ADD {pod} (host {host}, {tenant}, {labels:?})"),
        Op::Del { pod } => format!("DEL {pod}"),
        Op::Relabel { pod, labels } => format!("relabel {pod} {labels:?}"),
        Op::TogglePolicy { index } => format!("policy toggle {}", policy_templates()[*index].1),
    }
}

/// Runs one operation; an ADD answers with the pod's addresses (both families when dual-stack).
async fn apply(c: &Client, layout: &Layout, sb_dir: &Path, model: &Model, op: &Op) -> Result<Vec<String>> {
    let cni_args = |pod: &str, tenant: &str, labels: &BTreeMap<String, String>| {
        let o = crate::sandbox::PodOptions {
            name: layout.name.clone(),
            host: String::new(),
            tenant: tenant.into(),
            segment: String::new(),
            labels: labels.clone(),
            pod: None,
            uid: None,
            from_kubernetes: false,
            state_dir: PathBuf::new(),
        };
        crate::sandbox::pod_cni_args(&o, pod, pod)
    };
    match op {
        Op::Add { pod, host, tenant, labels } => {
            let ns = layout.pod_netns(pod);
            netns("add", &ns)?;
            let sock = sb_dir.join(format!("{}.sock", layout.hosts[*host].name));
            let r = crate::sandbox::cni(
                &sock,
                "ADD",
                pod,
                &format!("/run/netns/{ns}"),
                NETWORK,
                &cni_args(pod, tenant, labels),
            )?;
            let (v4, v6) = crate::sandbox_ipv6::addresses(&r);
            Ok([Some(v4).filter(|a| !a.is_empty()), v6].into_iter().flatten().collect())
        }
        Op::Del { pod } => {
            let p = model.pods.get(pod).context("DEL of a pod the scenario does not know")?;
            let ns = layout.pod_netns(pod);
            let sock = sb_dir.join(format!("{}.sock", layout.hosts[p.host].name));
            crate::sandbox::cni(
                &sock,
                "DEL",
                pod,
                &format!("/run/netns/{ns}"),
                NETWORK,
                &cni_args(pod, &p.tenant, &p.labels),
            )?;
            // The runtime removes the pod's namespace once DEL succeeded.
            if Path::new("/run/netns").join(&ns).exists() {
                netns("del", &ns)?;
            }
            Ok(Vec::new())
        }
        Op::Relabel { pod, labels } => {
            // Every record of the pod (a dual-stack pod's `#v6` too: records are labelled one
            // by one, and the evaluator holds each family's probes to its own record).
            let p = model.pods.get(pod).context("relabel of a pod the scenario does not know")?;
            for (name, _) in crate::chaos_check::records(pod, p) {
                c.set_endpoint_labels(&name, &LabelsRequest { labels: labels.clone() }).await?;
            }
            Ok(Vec::new())
        }
        Op::TogglePolicy { index } => {
            let (ns, name, spec) = &policy_templates()[*index];
            if model.policies.contains(index) {
                match c.delete_netpol(ns, name).await {
                    Err(e) if e.status() != Some(404) => return Err(e.into()),
                    _ => {}
                }
            } else {
                let np = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": name, "namespace": ns}, "spec": spec});
                c.apply_netpol(&np).await?;
            }
            Ok(Vec::new())
        }
    }
}

/// `ip netns add|del NAME` (a pod's namespace, made and removed as a runtime does).
fn netns(verb: &str, name: &str) -> Result<()> {
    let out = std::process::Command::new("ip").args(["netns", verb, name]).output().context("running ip")?;
    if !out.status.success() {
        anyhow::bail!("ip netns {verb} {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Every check but the probes: they are repeated until they pass (convergence).
async fn settled(c: &Client, layout: &Layout, sb_dir: &Path, model: &Model) -> Vec<Violation> {
    let mut out = crate::chaos_observe::agents_ready(layout, sb_dir);
    let hosts: Vec<String> = layout.hosts.iter().map(|h| h.name.clone()).collect();
    match crate::chaos_observe::snapshot(c).await {
        Ok(s) => {
            out.extend(crate::chaos_check::registry(model, &hosts, &s));
            out.extend(crate::chaos_observe::kernel(c, layout, &s).await);
        }
        Err(e) => out.push(Violation { kind: "unreadable", detail: format!("{e:#}") }),
    }
    out.extend(crate::chaos_observe::pod_interfaces(model, layout));
    for pod in model.pending_deletes() {
        out.push(Violation { kind: "del-not-acknowledged", detail: format!("DEL of {pod} never succeeded") });
    }
    out
}

fn print_report(
    ops: &OpCounts,
    kills: &BTreeMap<Kind, usize>,
    converged: Option<Duration>,
    bound: Duration,
    model: &Model,
    violations: &[Violation],
) {
    println!("\noperations (acknowledged / failed):");
    for (kind, (ok, failed)) in ops {
        println!("  {kind:<8} {ok:>6} / {failed}");
    }
    let kills_line: Vec<String> = [Kind::Agent, Kind::Romanad, Kind::Etcd]
        .iter()
        .map(|k| format!("{} {}", k.name(), kills.get(k).copied().unwrap_or(0)))
        .collect();
    println!("kills: {}", kills_line.join(", "));
    println!("pods at the end: {} live, {} deleted", model.live().count(), model.gone.len());
    match converged {
        Some(t) => println!(
            "converged {:.1} s after the churn stopped (bound {} s)",
            t.as_secs_f64(),
            bound.as_secs()
        ),
        None => println!("NOT converged within {} s", bound.as_secs()),
    }
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for v in violations {
        *by_kind.entry(v.kind).or_default() += 1;
    }
    if violations.is_empty() {
        println!("violations: none");
        return;
    }
    let counts: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("violations: {}", counts.join(", "));
    for v in violations {
        println!("  {}: {}", v.kind, v.detail);
    }
}

/// The per-family lines: live pods holding an address of each family (dual-stack) and the
/// probe violations of each family probed.
fn print_families(model: &Model, probed: &[crate::chaos_probe::FamilyProbes]) {
    if model.dual_stack {
        let v4 = model.live().filter(|(_, p)| p.ip.is_some()).count();
        let v6 = model.live().filter(|(_, p)| p.ipv6.is_some()).count();
        println!("live pods with an IPv4 address {v4}, with an IPv6 address {v6}");
    }
    if !probed.is_empty() {
        let each: Vec<String> =
            probed.iter().map(|p| format!("{} {}", p.family.name(), p.violations.len())).collect();
        println!("probe violations per family: {}", each.join(", "));
    }
}

/// The environment of the sandbox's router follower (`sandbox_static.rs`): every replica, and
/// the admin's credentials file when the control plane is ours.
fn follower_env(endpoints: &[String], credentials: Option<PathBuf>) -> Vec<(String, String)> {
    let mut env = vec![("ROMANA_ENDPOINT".to_owned(), endpoints.join(","))];
    if let Some(p) = credentials {
        env.push(("ROMANA_CREDENTIALS".to_owned(), p.display().to_string()));
    }
    env
}
