//! The agent's I/O-free core: its state (the firewall's inputs, the host's route set, what is
//! stale), one closed `Event` enum (watch events, route reads, timer ticks, kernel observations,
//! CNI requests) and `step`, which updates the state and returns the `Action`s to perform, as
//! values. The binary's loops read events, call `step` and perform the actions through the
//! ports; nothing here does I/O, reads a clock or spawns a task (time comes in with the event).

pub mod cni;
pub mod inputs;
pub mod pass;
pub mod pod_wait;
pub mod route_loop;
pub mod routes;
pub mod saved_table;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use romana_api::rest::{Tenant, WatchEvent};
use romana_dataplane::{HostState, PeerRoute, Plan, diff};
use romana_store::follow::Followed;

use inputs::{Inputs, Lists};

/// How often everything is read again although the watch says nothing changed.
pub const FULL_REFRESH: Duration = Duration::from_secs(60);

/// How long after an endpoint pass the compile that confirms its table runs at the earliest (it
/// converges to the same table; later, so that a burst of pod starts never waits behind it).
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// The confirming compile waits until no CNI ADD came for this long (the CNI path is quiet):
/// it is a check, and a pod start must not share the machine's CPU with it.
pub const CNI_QUIET: Duration = Duration::from_millis(300);

/// ...but no longer than this past `CONFIRM_AFTER`, so that steady pod churn cannot put it off
/// for good.
pub const CONFIRM_LATEST: Duration = Duration::from_secs(10);

/// How long a start waits for the firewall's watch stream to deliver the cluster (`State::
/// stream_loads`) before it reads romanad's lists instead.
pub const STREAM_LOAD_WAIT: Duration = Duration::from_secs(10);

/// How often the repair check lists the kernel's table even though nftables' generation did not
/// move: a guard against what the generation cannot show, cheap at this interval.
pub const VERIFY_EVERY: Duration = Duration::from_secs(300);

/// Which of the agent's watches an event came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `routes/<host>`: the notice that this host's route set changed.
    Routes,
    /// What the firewall depends on: endpoints, policies, netpols, tenants, segments.
    Firewall,
}

/// Everything the agent reacts to.
#[derive(Debug)]
pub enum Event {
    /// The reconcile interval (heartbeat; a route read or converge when due, `route_loop`), or
    /// the route loop woken, at `now`.
    Tick {
        now: Instant,
    },
    /// The route manager's set for this host as the dataplane's routes (`routes::peer_routes`,
    /// parsed off the agent's runtime and the core's lock: 4,000 routes at 50,000 endpoints in
    /// a flat leaf); `None`: romanad could not be read. With the stamp the answer named (a
    /// read is due again while it is not the last notice's: `RouteLoop::answered`).
    RoutesRead(Option<Vec<PeerRoute>>, Option<String>),
    /// romanad answered the read 304: the routes are the ones held; with the stamp it named.
    RoutesUnchanged(Option<String>),
    /// The kernel's links, addresses and routes as observed for a converge.
    KernelObserved(HostState),
    /// The routes' plan (`ApplyRoutes`) applied (`true`), or the converge failed.
    RoutesApplied(bool),
    /// The VIPs this host serves changed (their addresses go on the gateway).
    VipsChanged(Vec<IpAddr>),
    /// What a watch follower said.
    Watched(Stream, Followed<WatchEvent>),
    /// The firewall loop woke (a change, a retry, the refresh timer) at `now`.
    FirewallWake {
        now: Instant,
    },
    /// romanad's lists, read while the watch-event count was `events_before`.
    ListsRead {
        lists: Lists,
        events_before: u64,
    },
    /// Reading the lists failed; `overtaken`: events came while they were read.
    ListsFailed {
        overtaken: bool,
    },
    TenantsRead(Vec<Tenant>),
    TenantsFailed,
    /// The repair timer, with what the kernel showed: `unchanged` is true when nftables'
    /// generation is still the one our last transaction left.
    RepairDue {
        now: Instant,
        unchanged: bool,
    },
    /// CNI ADD registered this endpoint with romanad at `now`; it must be enforced before ADD
    /// answers.
    CniAdd {
        info: romana_api::rest::EndpointInfo,
        now: Instant,
    },
    /// CNI DEL (or a failed ADD) removed this endpoint.
    CniForget(String),
}

/// What the adapters do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Heartbeat,
    ReadRoutes,
    /// Observe the kernel (the observation comes back as `KernelObserved`), then apply the
    /// plan the core answers with.
    ObserveKernel,
    /// Apply this plan to the kernel's routes and links (the outcome comes back as
    /// `RoutesApplied`).
    ApplyRoutes(Plan),
    /// Bring the fast path's map up to the kernel's state.
    SyncFastPath,
    /// Wake the route loop now (a change on its watch).
    WakeRoutes,
    /// The route set's read was answered by a replica behind the notice (another stamp): the
    /// next read goes to another of romanad's endpoints, if there are several.
    RoutesLagged,
    /// Wake the firewall loop now.
    WakeFirewall,
    /// Wake the firewall loop after this long (a failed read is retried).
    RetryIn(Duration),
    /// Read tenants, policies, NetworkPolicies (and every endpoint) from romanad.
    ReadLists {
        endpoints: bool,
    },
    ReadTenants,
    /// One firewall pass (compile, transaction); `read_kernel`: start from a fresh listing of
    /// the kernel's table (a repair).
    FirewallPass {
        read_kernel: bool,
    },
    /// Apply the pending endpoint changes to the table in force: their set elements and base
    /// chains only, no compile (the adapter compiles when the policy core refuses).
    EndpointPass,
    /// The compile that confirms the table endpoint passes left: from scratch, at low priority,
    /// without holding the pass lock (an ADD's endpoint pass never waits behind it); dropped
    /// when an endpoint pass changed the cache meanwhile (then due again, `pass::confirm_dropped`).
    ConfirmPass,
    /// Plumb the CNI's endpoint (its link, address and routes) and answer ADD.
    Plumb,
    /// Log what was left out of the firewall or could not be used.
    Problems(Vec<String>),
    /// Log that the host's desired routes do not compile (nothing is applied).
    RoutesDoNotCompile(String),
}

/// The agent's state.
#[derive(Debug)]
pub struct State {
    pub host: String,
    pub gateways: Vec<IpAddr>,
    /// The VIPs this host serves or stands by for: on the gateway link beside the gateways.
    pub vips: Vec<IpAddr>,
    /// Whether policies are enforced (`--no-policy` turns it off).
    pub policy: bool,
    /// The last route set romanad gave; kept while romanad is unreachable.
    pub routes: Vec<PeerRoute>,
    /// When the set is read and the kernel converged.
    pub route_loop: route_loop::RouteLoop,
    /// What the kernel should hold, compiled from `routes` (`None`: it does not compile). Shared
    /// with `kernel` once applied: 4,000 routes at 50,000 endpoints are not copied under the
    /// core's lock, which the CNI path takes too.
    pub desired: Option<Arc<HostState>>,
    /// What the kernel holds of ours (endpoints aside) as the last converge left it (`None`:
    /// unknown, observe it). A changed set is planned from it without reading the kernel: at
    /// 50,000 endpoints in a flat leaf that read is 4,000 routes dumped and parsed, ~6 ms of a
    /// 2-core host's CPU beside the pod starts that caused the change (issue 22). The recheck
    /// (`KERNEL_RECHECK`) still observes, and a failed apply makes it unknown.
    pub kernel: Option<Arc<HostState>>,
    /// What the plan in flight leaves in the kernel once it applied, and whether it was planned
    /// from the kernel as known (not from an observation).
    applying: Option<(Arc<HostState>, bool)>,
    pub inputs: Inputs,
    /// Watch events applied: a full re-read that events overtook is dropped.
    pub events: u64,
    /// Everything must be read again (at start, after a relisting watch, after an overtaken read).
    pub stale: bool,
    /// Tenants must be read again (their events carry no value the index keeps).
    pub tenants_stale: bool,
    /// When everything was last read.
    pub full_at: Option<Instant>,
    /// When the repair check last listed the kernel's table.
    pub verified_at: Option<Instant>,
    /// When the compile that confirms endpoint passes' table is due (at the earliest: it also
    /// waits for the CNI path to be quiet, `confirm_due`).
    pub confirm_at: Option<Instant>,
    /// When the last CNI ADD came.
    pub last_add: Option<Instant>,
    /// The firewall's watch stream, opened from revision 0, delivers the whole state first (then
    /// `Current`): at start that is the load (with the tenants read after it), instead of
    /// reading every endpoint a second time through romanad's lists (at 50,000 endpoints the two
    /// reads side by side were 0.6-0.85 s of a 0.9 s restart, issue 22). Set by the adapter that
    /// follows the stream; cleared once it loaded or failed (then the lists are read).
    pub stream_loads: bool,
    /// Until when a start waits for that stream (`STREAM_LOAD_WAIT` from the first wake).
    pub stream_until: Option<Instant>,
    /// The stream delivered the state: the tenants' read completes the load.
    pub load_with_tenants: bool,
}

impl State {
    pub fn new(host: String, gateways: Vec<IpAddr>, policy: bool) -> State {
        State {
            host,
            gateways,
            vips: Vec::new(),
            policy,
            routes: Vec::new(),
            route_loop: route_loop::RouteLoop::default(),
            desired: None,
            kernel: None,
            applying: None,
            inputs: Inputs::default(),
            events: 0,
            stale: true,
            tenants_stale: false,
            full_at: None,
            verified_at: None,
            confirm_at: None,
            last_add: None,
            stream_loads: false,
            stream_until: None,
            load_with_tenants: false,
        }
    }

    /// When the confirming compile runs: `confirm_at`, once no ADD came for `CNI_QUIET`, and
    /// `CONFIRM_LATEST` after `confirm_at` at the latest (`None`: not scheduled).
    pub fn confirm_due(&self) -> Option<Instant> {
        let at = self.confirm_at?;
        let quiet = self.last_add.map_or(at, |a| (a + CNI_QUIET).max(at));
        Some(quiet.min(at + CONFIRM_LATEST))
    }

    /// How long until everything is due to be read again, or the confirming compile is due.
    pub fn refresh_in(&self, now: Instant) -> Duration {
        let mut full = self
            .full_at
            .map_or(Duration::ZERO, |t| FULL_REFRESH.saturating_sub(now.saturating_duration_since(t)));
        if let (true, Some(until)) = (self.waits_for_stream(), self.stream_until) {
            full = full.min(until.saturating_duration_since(now));
        }
        match (self.inputs.confirm, self.confirm_at) {
            (false, _) => full,
            (true, None) => Duration::ZERO,
            (true, Some(_)) => {
                full.min(self.confirm_due().map_or(Duration::ZERO, |t| t.saturating_duration_since(now)))
            }
        }
    }

    /// A start waiting for the watch stream to load the inputs.
    fn waits_for_stream(&self) -> bool {
        self.stream_loads && !self.inputs.loaded
    }

    /// The key of this host's route set on the watch.
    pub fn routes_key(&self) -> String {
        format!("routes/{}", self.host)
    }

    /// What was left out since last asked, as an action (none when nothing was).
    fn problems(&mut self, out: &mut Vec<Action>) {
        if !self.inputs.problems.is_empty() {
            out.push(Action::Problems(std::mem::take(&mut self.inputs.problems)));
        }
    }

    /// The firewall pass, when the inputs changed since the last one: a compile, or an endpoint
    /// pass when only endpoints changed.
    fn pass_if_dirty(&self, out: &mut Vec<Action>) {
        if self.policy && self.inputs.dirty && self.inputs.loaded {
            out.push(if self.inputs.rules_dirty {
                Action::FirewallPass { read_kernel: false }
            } else {
                Action::EndpointPass
            });
        }
    }

    /// The converge of the routes as they are known: with `observe`, or when the kernel is not
    /// known, observe, then (on `KernelObserved`) plan; else plan from the kernel as known.
    fn converge(&mut self, out: &mut Vec<Action>, observe: bool) {
        self.route_loop.converging();
        match routes::desired(&[&self.gateways[..], &self.vips[..]].concat(), &self.routes) {
            Ok(d) => {
                let d = Arc::new(d);
                match self.kernel.as_ref().filter(|_| !observe) {
                    Some(k) => {
                        out.push(Action::ApplyRoutes(diff(k, &d)));
                        self.applying = Some((Arc::clone(&d), true));
                    }
                    None => out.push(Action::ObserveKernel),
                }
                self.desired = Some(d);
                out.push(Action::SyncFastPath);
            }
            Err(e) => {
                self.desired = None;
                out.push(Action::RoutesDoNotCompile(e.to_string()));
            }
        }
    }
}

impl State {
    /// A read was answered with the set of `stamp`: the next read goes to another replica when
    /// this one is behind the notice (`RouteLoop::answered`).
    fn answered(&mut self, out: &mut Vec<Action>, stamp: Option<&str>) {
        if self.route_loop.answered(stamp) {
            out.push(Action::RoutesLagged);
        }
    }
}

/// One event in, the actions out.
pub fn step(s: &mut State, ev: Event) -> Vec<Action> {
    let mut out = Vec::new();
    match ev {
        Event::Tick { now } => {
            out.push(Action::Heartbeat);
            match s.route_loop.tick(now) {
                route_loop::Next::Read => out.push(Action::ReadRoutes),
                route_loop::Next::Converge => s.converge(&mut out, false),
                route_loop::Next::Recheck => s.converge(&mut out, true),
                route_loop::Next::Nothing => {}
            }
        }
        Event::RoutesRead(r, stamp) => {
            // When romanad cannot be reached the last known routes stay: the kernel keeps
            // forwarding, and the next tick reads again.
            // A set read is planned from the kernel as known; a failed read converges as a
            // check.
            let observe = match r {
                Some(r) => {
                    s.routes = r;
                    s.answered(&mut out, stamp.as_deref());
                    false
                }
                None => {
                    s.route_loop.changed();
                    true
                }
            };
            s.converge(&mut out, observe);
        }
        Event::RoutesUnchanged(stamp) => {
            s.answered(&mut out, stamp.as_deref());
            match s.route_loop.unchanged() {
                route_loop::Next::Recheck => s.converge(&mut out, true),
                route_loop::Next::Converge => s.converge(&mut out, false),
                route_loop::Next::Read | route_loop::Next::Nothing => {}
            }
        }
        Event::KernelObserved(observed) => {
            // Endpoint links and their routes are the CNI path's: the plan never touches them.
            // Once applied, the kernel holds exactly `desired` of ours (`diff` adds what is
            // missing, removes what is not desired, and `desired` has no endpoints).
            if let Some(desired) = &s.desired {
                out.push(Action::ApplyRoutes(diff(&routes::without_endpoints(observed), desired)));
                s.applying = Some((Arc::clone(desired), false));
            }
        }
        Event::RoutesApplied(ok) => {
            let applying = s.applying.take();
            if ok {
                s.kernel = applying.map(|(target, _)| target);
            } else {
                s.kernel = None;
                // A plan from the kernel as known failed (partly applied, or the kernel was not
                // as known): observe at the next tick rather than at the recheck. A failed
                // observation or a plan from one waits for the recheck, so a failure that
                // persists costs a kernel dump every 5 s, not every tick.
                if applying.is_some_and(|(_, known)| known) {
                    s.route_loop.reconverge();
                }
            }
        }
        Event::VipsChanged(vips) => {
            s.vips = vips;
            s.route_loop.reconverge();
        }
        Event::Watched(Stream::Routes, f) => match f {
            // The prefix also matches longer host names: only our key counts.
            Followed::Event(ev) if ev.key == s.routes_key() => {
                // The notice names the set's stamp: a read answered with another is read again.
                let notice = ev
                    .value
                    .as_ref()
                    .and_then(|v| serde_json::from_str::<romana_api::rest::RouteSetNotice>(v.get()).ok());
                s.route_loop.notice(notice.map(|n| n.stamp));
                out.push(Action::WakeRoutes);
            }
            Followed::Synced { .. } => {
                s.route_loop.synced();
                out.push(Action::WakeRoutes);
            }
            Followed::Lost { .. } => s.route_loop.lost(),
            Followed::Event(_) | Followed::Current => {}
        },
        Event::Watched(Stream::Firewall, f) => match f {
            Followed::Event(ev) => {
                s.events += 1;
                if s.inputs.apply_watch(&ev) {
                    s.tenants_stale = true;
                }
                s.problems(&mut out);
                out.push(Action::WakeFirewall);
            }
            // Opened: the listing follows when a start waits for it (`stream_loads`).
            Followed::Synced { .. } if s.waits_for_stream() => {}
            Followed::Synced { relisted } => {
                // Resumed from a revision nothing was missed; after a relist deletes may have
                // been, and everything is read whole.
                if relisted {
                    s.stale = true;
                }
                out.push(Action::WakeFirewall);
            }
            Followed::Current if s.waits_for_stream() => {
                // The stream's first listing went into empty inputs: they hold the whole state
                // (nothing could have been deleted from them). Tenants, whose events carry no
                // value the inputs keep, are read to complete the load.
                s.stream_loads = false;
                s.stale = false;
                s.tenants_stale = true;
                s.load_with_tenants = true;
                out.push(Action::WakeFirewall);
            }
            Followed::Current => {}
            Followed::Lost { .. } if s.waits_for_stream() => {
                // The listing broke off: what it delivered is partial; the lists load instead.
                s.stream_loads = false;
                s.stale = true;
                out.push(Action::WakeFirewall);
            }
            Followed::Lost { .. } => {}
        },
        Event::FirewallWake { now } => {
            if s.waits_for_stream() {
                let until = *s.stream_until.get_or_insert(now + STREAM_LOAD_WAIT);
                if now < until {
                    s.full_at.get_or_insert(now);
                    return out;
                }
                // A stream that neither lists nor fails (a stalled romanad): the lists load.
                s.stream_loads = false;
                s.stale = true;
            }
            let full_due = s.full_at.is_none_or(|t| now.saturating_duration_since(t) >= FULL_REFRESH);
            if s.stale || full_due {
                s.stale = false;
                s.tenants_stale = false;
                s.full_at = Some(now);
                out.push(Action::ReadLists { endpoints: true });
            } else if s.tenants_stale {
                s.tenants_stale = false;
                out.push(Action::ReadTenants);
            } else if s.inputs.dirty {
                s.pass_if_dirty(&mut out);
            } else if s.inputs.confirm && s.policy && s.inputs.loaded {
                // Endpoint passes made the table in force: a compile confirms it, soon but not
                // at once (pods start in bursts), and not while pods are starting.
                s.confirm_at.get_or_insert(now + CONFIRM_AFTER);
                if s.confirm_due().is_some_and(|due| now >= due) {
                    out.push(Action::ConfirmPass);
                }
            }
            let compiles = out.iter().any(|a| matches!(a, Action::FirewallPass { .. } | Action::ConfirmPass));
            if !s.inputs.confirm || compiles {
                s.confirm_at = None;
            }
        }
        Event::ListsRead { lists, events_before } => {
            // A watch event applied while the lists were being read may be newer than what they
            // say (a delete would come back): then the lists are dropped and read again. Before
            // the first load something is better than nothing (under steady churn a clean read
            // might never come).
            if s.events != events_before {
                s.stale = true;
                if s.inputs.loaded {
                    out.push(Action::RetryIn(Duration::from_millis(50)));
                    return out;
                }
            }
            s.inputs.replace(lists);
            s.problems(&mut out);
            s.pass_if_dirty(&mut out);
        }
        Event::ListsFailed { overtaken } => {
            s.stale = true;
            // An overtaken read is retried soon; romanad being unreachable waits a second.
            out.push(Action::RetryIn(Duration::from_millis(if overtaken { 50 } else { 1_000 })));
        }
        Event::TenantsRead(t) => {
            s.inputs.set_tenants(t);
            if std::mem::take(&mut s.load_with_tenants) {
                s.inputs.mark_loaded();
            }
            s.pass_if_dirty(&mut out);
        }
        Event::TenantsFailed => {
            s.tenants_stale = true;
            out.push(Action::RetryIn(Duration::from_secs(1)));
        }
        Event::RepairDue { now, unchanged } => {
            // The first check counts from now: the generation tells until VERIFY_EVERY.
            let since = *s.verified_at.get_or_insert(now);
            let recent = now.saturating_duration_since(since) < VERIFY_EVERY;
            if s.policy && s.inputs.loaded && !(recent && unchanged) {
                s.verified_at = Some(now);
                out.push(Action::FirewallPass { read_kernel: true });
            }
        }
        Event::CniAdd { info, now } => {
            s.last_add = Some(now);
            // Fail closed: the endpoint's rules are in force before its link exists and ADD
            // answers; policies are read first when they never were.
            if s.policy {
                if !s.inputs.loaded {
                    out.push(Action::ReadLists { endpoints: true });
                }
                s.inputs.upsert(&info);
                s.problems(&mut out);
                // The endpoint's own elements, in one small transaction (a compile when
                // anything else changed too); the confirming compile comes later.
                out.push(if s.inputs.loaded && !s.inputs.rules_dirty {
                    Action::EndpointPass
                } else {
                    Action::FirewallPass { read_kernel: false }
                });
            }
            out.push(Action::Plumb);
        }
        Event::CniForget(name) => {
            if s.policy {
                s.inputs.remove(&name);
                s.pass_if_dirty(&mut out);
            }
        }
    }
    out
}

/// How long the repair check waits: at most a tenth of the time goes to listing the table, so
/// the interval stretches with the last listing's duration.
pub fn repair_wait(every: Duration, last_read: Duration) -> Duration {
    every.max(last_read * 10)
}

#[cfg(test)]
mod inputs_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;
