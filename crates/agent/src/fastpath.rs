//! The fast path on this host (`romana_host::FastPath`): loaded at start, attached to the uplinks
//! (the links holding the host's address: `romana_deliver`) and, unless `--no-fast-path-send`,
//! the endpoints' veths (`romana_send`, while the CNI path is quiet; it hands packets to veth
//! uplinks' far ends where nothing would see them leave), and its map kept equal to the local
//! endpoints no firewall rule filters (isolated in neither direction), or empty while other
//! netfilter hooks would miss its packets. The firewall narrows that set before a transaction
//! that isolates an endpoint and widens it only after one applied, so no packet skips a rule that
//! is in force; until the firewall's first pass nothing is eligible.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use romana_dataplane::LinkName;
use romana_dataplane::fastpath::{EndpointRoute, deliveries, diff_map, handoff};
use romana_host::{FastPath, Kernel, Program};

/// How often other hooks are looked for although nftables' generation did not move.
const RECHECK: Duration = Duration::from_secs(10);
/// How long endpoint links' attaches wait after the CNI path last plumbed.
const QUIET: Duration = Duration::from_millis(300);

#[derive(Debug)]
struct Inner {
    fp: FastPath,
    /// `None`: every endpoint (no firewall on this host).
    eligible: Option<BTreeSet<IpAddr>>,
    /// Endpoint routes as last observed.
    routes: Vec<EndpointRoute>,
    /// Why the map must stay empty (other netfilter hooks that delivered packets would skip),
    /// and why packets are not handed to uplinks' far ends (nftables egress chains).
    blockers: romana_host::Blockers,
    /// nftables' generation and the time when `blockers` were last taken.
    checked: Option<(Option<u32>, Instant)>,
    /// Links whose attachment was last verified at that time.
    attached: BTreeMap<u32, Instant>,
    /// Links and addresses being plumbed or removed (`hold`): kept out of the map.
    held: Vec<(LinkName, Option<IpAddr>)>,
    /// When the last plumbing ended (`release`).
    last_plumbed: Option<Instant>,
    /// Bumped by `hold` and `release`: a sync whose observation began before it drops its
    /// routes (they may show a link as it was before the plumbing).
    epoch: u64,
}

impl Inner {
    /// Writes the map from what is known now; returns how many entries changed.
    fn write(&mut self) -> Result<usize, romana_host::BpfError> {
        let want = if self.blockers.path.is_empty() {
            let held = |r: &EndpointRoute| self.held.iter().any(|(l, ip)| *l == r.link || *ip == Some(r.ip));
            let routes: Vec<EndpointRoute> = self.routes.iter().filter(|r| !held(r)).cloned().collect();
            deliveries(&routes, self.eligible.as_ref())
        } else {
            Default::default()
        };
        let d = diff_map(self.fp.entries(), &want);
        self.fp.apply(&d)?;
        Ok(d.put.len() + d.delete.len())
    }
}

#[derive(Debug)]
pub struct Deliver {
    host_ns: Option<PathBuf>,
    /// The host's addresses (IPv4, and IPv6 with an IPv6 underlay): links holding one are uplinks.
    host_ips: Vec<IpAddr>,
    programs: Arc<romana_host::Programs>,
    /// Attach `romana_send` to endpoint links too (not with `--no-fast-path-send`).
    send: bool,
    /// Hand packets to veth uplinks' far ends where nothing would see them leave (not with
    /// `--no-fast-path-handoff`).
    handoff: bool,
    inner: Mutex<Inner>,
    /// The uplinks the program is attached to, by name, each with whether `romana_send` hands
    /// packets to its far end or, if not, why (for status).
    pub uplinks: Mutex<Vec<(String, Result<(), String>)>>,
}

impl Deliver {
    /// Loads the program; `None` (with the reason logged) where the kernel cannot run it: then the
    /// kernel's forwarding path carries everything, as before.
    pub fn load(
        host_ns: Option<PathBuf>,
        host_ips: Vec<IpAddr>,
        firewall: bool,
        send: bool,
        handoff: bool,
    ) -> Option<Arc<Deliver>> {
        match FastPath::load() {
            Ok(fp) => {
                let programs = fp.programs();
                let eligible = firewall.then(BTreeSet::new);
                let inner = Mutex::new(Inner {
                    fp,
                    eligible,
                    routes: vec![],
                    blockers: Default::default(),
                    checked: None,
                    attached: BTreeMap::new(),
                    held: vec![],
                    last_plumbed: None,
                    epoch: 0,
                });
                Some(Arc::new(Deliver {
                    host_ns,
                    host_ips,
                    programs,
                    send,
                    handoff,
                    inner,
                    uplinks: Mutex::default(),
                }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no fast path (needs Linux 6.6+ with BPF); the kernel forwards everything");
                None
            }
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The map's entry count.
    pub fn entries(&self) -> usize {
        self.inner().fp.entries().len()
    }

    /// Whether the CNI path plumbs now or did within QUIET.
    fn plumbing(&self) -> bool {
        let inner = self.inner();
        !inner.held.is_empty() || inner.last_plumbed.is_some_and(|t| t.elapsed() < QUIET)
    }

    /// Why the fast path is off, if it is.
    pub fn blockers(&self) -> Vec<String> {
        self.inner().blockers.path.clone()
    }

    /// Observes the uplinks and endpoint routes in the host's namespace, attaches the program
    /// where it is missing and writes the map. Called from the reconcile loop.
    pub async fn sync(self: &Arc<Self>) -> anyhow::Result<usize> {
        let me = self.clone();
        let ns = self.host_ns.clone();
        tokio::task::spawn_blocking(move || {
            romana_host::in_netns_path(ns.as_deref(), move || async move {
                let epoch = me.inner().epoch;
                let view = Kernel::connect()?.fast_path_view(&me.host_ips).await?;
                // Other hooks are looked for again when nftables' generation moved (any table
                // changed) and every RECHECK (legacy iptables and IPVS have no generation).
                let generation = romana_host::nft::generation().ok();
                let due = match me.inner().checked {
                    Some((g, at)) => g != generation || at.elapsed() >= RECHECK,
                    None => true,
                };
                let blockers = due.then(romana_host::fast_path_blockers);
                // Attachments are verified once per RECHECK per link (a link made again has a new
                // index, so it is new here), without the lock: a tcx attach waits for an RCU grace
                // period, which the firewall's and the CNI path's calls must not wait behind.
                let now = Instant::now();
                // With `--no-fast-path-send`, a `romana_send` an earlier run left on an endpoint
                // link is removed: it would read that run's map, which nobody writes any more.
                let todo: Vec<(Option<Program>, u32, String)> = {
                    let mut inner = me.inner();
                    inner.attached.retain(|_, at| now.duration_since(*at) < RECHECK);
                    let uplinks = view.uplinks.iter().map(|u| (Some(Program::Deliver), u.ifindex, u.name.clone()));
                    let send = me.send.then_some(Program::Send);
                    let links = view.routes.iter().map(|r| (send, r.ifindex, r.link.to_string()));
                    uplinks.chain(links).filter(|(_, i, _)| !inner.attached.contains_key(i)).collect()
                };
                let mut done = vec![];
                for (which, ifindex, name) in &todo {
                    // An endpoint link's attach waits while the CNI path plumbs, and for QUIET
                    // after: both need rtnl, which an attach holds through an RCU grace period,
                    // so a burst of ADDs would queue behind the attaches of the pods it just
                    // made. Deferred ones are taken on a later pass (the kernel's path carries
                    // those pods meanwhile).
                    if *which == Some(Program::Send) && me.plumbing() {
                        break;
                    }
                    // A link that went meanwhile fails here and is simply not recorded.
                    let r = match which {
                        Some(w) => me.programs.attach(*w, *ifindex).map(|c| c as usize),
                        None => romana_host::detach_marked(*ifindex),
                    };
                    match r {
                        Ok(n) => {
                            if n > 0 {
                                tracing::debug!(link = %name, ?which, "fast path attached (or stale program removed)");
                            }
                            done.push(*ifindex);
                        }
                        Err(e) => tracing::warn!(link = %name, error = %e, "fast path attach"),
                    }
                }
                let mut inner = me.inner();
                for ifindex in done {
                    inner.attached.insert(ifindex, now);
                }
                if let Some(b) = blockers {
                    if b.path != inner.blockers.path {
                        if b.path.is_empty() {
                            tracing::info!("fast path on: no other netfilter hooks on its packets' way");
                        } else {
                            tracing::warn!(blockers = ?b.path, "fast path off: the kernel forwards pod traffic, so these see it");
                        }
                    }
                    inner.blockers = b;
                    inner.checked = Some((generation, Instant::now()));
                }
                let handoffs: Vec<_> = view
                    .uplinks
                    .iter()
                    .map(|u| {
                        let h = if me.handoff {
                            handoff(u, &inner.blockers.egress_chains)
                        } else {
                            Err("off: --no-fast-path-handoff".to_owned())
                        };
                        (u, h)
                    })
                    .collect();
                inner.fp.set_uplinks(&handoffs.iter().map(|(u, h)| (u.ifindex, h.as_ref().ok().copied())).collect())?;
                let status = handoffs.into_iter().map(|(u, h)| (u.name.clone(), h.map(drop))).collect();
                let mut shown = me.uplinks.lock().unwrap_or_else(|e| e.into_inner());
                if *shown != status {
                    tracing::info!(uplinks = ?status, "fast path uplinks (Ok: packets handed to the far end of the wire)");
                    *shown = status;
                }
                drop(shown);
                if inner.epoch == epoch {
                    inner.routes = view.routes;
                }
                Ok::<_, anyhow::Error>(inner.write()?)
            })
        })
        .await?
        .map_err(anyhow::Error::from)?
    }

    /// Only endpoints in `allowed` from now on (before a firewall transaction that may isolate
    /// some): drops the others' entries at once.
    pub fn narrow(&self, allowed: &BTreeSet<IpAddr>) -> Result<usize, romana_host::BpfError> {
        let mut inner = self.inner();
        let kept = match &inner.eligible {
            Some(e) => e.intersection(allowed).copied().collect(),
            None => allowed.clone(),
        };
        inner.eligible = Some(kept);
        inner.write()
    }

    /// Exactly the endpoints in `allowed` (after the firewall transaction that made the others'
    /// rules applied).
    pub fn allow(&self, allowed: BTreeSet<IpAddr>) -> Result<usize, romana_host::BpfError> {
        let mut inner = self.inner();
        inner.eligible = Some(allowed);
        inner.write()
    }

    /// An endpoint's link is about to go or be made again (CNI DEL, GC, ADD), or its address is
    /// about to be given to a link: their entries leave the map now and stay out, whatever a sync
    /// meanwhile observes, until `release`; so no packet is handed to an index that no longer
    /// exists (or, reused, is someone else's). The kernel's path carries them meanwhile.
    pub fn hold(&self, link: &LinkName, ip: Option<IpAddr>) {
        let mut inner = self.inner();
        inner.held.push((link.clone(), ip));
        inner.epoch += 1;
        // What was observed of them is stale once the plumbing runs.
        inner.routes.retain(|r| &r.link != link && Some(r.ip) != ip);
        if let Err(e) = inner.write() {
            tracing::warn!(%link, error = %e, "cannot drop the endpoint from the fast path map");
        }
    }

    /// The plumbing `hold` waited for is done; the next sync takes what it made.
    pub fn release(&self, link: &LinkName, ip: Option<IpAddr>) {
        let mut inner = self.inner();
        if let Some(i) = inner.held.iter().position(|(l, a)| l == link && *a == ip) {
            inner.held.swap_remove(i);
        }
        inner.last_plumbed = Some(Instant::now());
        inner.epoch += 1;
    }
}

/// Detaches our programs from this host's uplinks and endpoint links (the agent run with the
/// fast path off).
pub async fn remove(host_ns: Option<PathBuf>, host_ips: Vec<IpAddr>) {
    let r = tokio::task::spawn_blocking(move || {
        romana_host::in_netns_path(host_ns.as_deref(), move || async move {
            let view = Kernel::connect()?.fast_path_view(&host_ips).await?;
            let mut removed = 0;
            let links = view.uplinks.iter().map(|u| u.ifindex).chain(view.routes.iter().map(|r| r.ifindex));
            for ifindex in links {
                removed += romana_host::detach_marked(ifindex)?;
            }
            Ok::<_, anyhow::Error>(removed)
        })
    })
    .await;
    match r {
        Ok(Ok(Ok(0))) => {}
        Ok(Ok(Ok(n))) => tracing::info!(programs = n, "fast path programs removed"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot remove the fast path"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove the fast path"),
        Err(e) => tracing::warn!(error = %e, "cannot remove the fast path"),
    }
}
