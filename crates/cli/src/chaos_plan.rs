//! `romana chaos`, pure: the seeded generator, the scenario's model of what was acknowledged
//! (pods added, deleted, relabelled; policies applied), the choice of the next operation, and the
//! kill schedule (time is an argument; never more down at once than the quorum allows). No I/O.

use std::collections::{BTreeMap, BTreeSet};

/// SplitMix64: small, fast, and the same sequence for the same seed on every machine (the
/// scenario's decisions are reproducible from the printed seed; their timing is not).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    /// An independent stream for another part of the scenario (kills, churn).
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// The tenants pods are spread over: `red` with no isolation (Kubernetes' default), `blue`
/// isolated per tenant, so the probes see both the policies and the implicit isolation.
pub const TENANTS: [(&str, &str); 2] = [("red", "none"), ("blue", "tenant")];

/// The `app` labels pods get; the policies select them.
pub const APPS: [&str; 3] = ["web", "db", "client"];

/// The NetworkPolicies the churn applies and deletes: (namespace, name, spec).
pub fn policy_templates() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    use serde_json::json;
    let sel = |app: &str| json!({"matchLabels": {"app": app}});
    vec![
        (
            "red",
            "db-from-web",
            json!({"podSelector": sel("db"), "ingress": [{"from": [{"podSelector": sel("web")}]}]}),
        ),
        (
            "red",
            "client-to-db",
            json!({"podSelector": sel("client"), "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": sel("db")}]}]}),
        ),
        ("blue", "web-closed", json!({"podSelector": sel("web"), "policyTypes": ["Ingress"], "ingress": []})),
        (
            "blue",
            "from-red",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector":
            {"matchLabels": {"romana.io/tenant": "red"}}}]}]}),
        ),
    ]
}

/// Where a pod is in its life, as far as the scenario was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// ADD acknowledged: it must exist until a DEL is acknowledged.
    Live,
    /// ADD failed or DEL not yet acknowledged: DEL is retried (as a runtime does) until it is.
    Deleting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub host: usize,
    pub tenant: String,
    pub labels: BTreeMap<String, String>,
    /// The IPv4 address ADD answered with.
    pub ip: Option<String>,
    /// The IPv6 address ADD answered with (a dual-stack sandbox gives one of each).
    pub ipv6: Option<String>,
    pub state: PodState,
    /// A relabel failed: it may or may not have been applied, until one is acknowledged.
    pub labels_unsure: bool,
}

/// What the scenario did and was acknowledged: the truth the checks hold the system to.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub pods: BTreeMap<String, Pod>,
    /// Pods whose DEL was acknowledged: nothing of them may remain.
    pub gone: BTreeSet<String>,
    /// Indexes into `policy_templates` that are applied.
    pub policies: BTreeSet<usize>,
    /// Templates whose last toggle failed: applied or not, nobody was told.
    pub policies_unsure: BTreeSet<usize>,
    /// The sandbox is dual-stack: every acknowledged ADD must have answered with an address of
    /// each family.
    pub dual_stack: bool,
    next: usize,
}

/// One step of the churn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Add {
        pod: String,
        host: usize,
        tenant: String,
        labels: BTreeMap<String, String>,
    },
    Del {
        pod: String,
    },
    Relabel {
        pod: String,
        labels: BTreeMap<String, String>,
    },
    /// Apply template `index` when it is not applied, else delete it.
    TogglePolicy {
        index: usize,
    },
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Del { .. } => "del",
            Op::Relabel { .. } => "relabel",
            Op::TogglePolicy { .. } => "policy",
        }
    }
}

fn app_labels(rng: &mut Rng) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), APPS[rng.below(APPS.len())].to_owned())])
}

fn pick<'a>(rng: &mut Rng, names: &[&'a String]) -> Option<&'a String> {
    (!names.is_empty()).then(|| names[rng.below(names.len())])
}

impl Model {
    pub fn live(&self) -> impl Iterator<Item = (&String, &Pod)> {
        self.pods.iter().filter(|(_, p)| p.state == PodState::Live)
    }

    fn named(&self, state: PodState) -> Vec<&String> {
        self.pods.iter().filter(|(_, p)| p.state == state).map(|(n, _)| n).collect()
    }

    /// The next operation: a pending DEL is retried half the time; otherwise ADD (below
    /// `max_pods` live), DEL, relabel or a policy toggle.
    pub fn next_op(&mut self, rng: &mut Rng, hosts: usize, max_pods: usize) -> Op {
        let deleting = self.named(PodState::Deleting);
        if let Some(pod) = pick(rng, &deleting).filter(|_| rng.below(2) == 0) {
            return Op::Del { pod: pod.clone() };
        }
        let live = self.named(PodState::Live);
        let roll = rng.below(100);
        if (roll < 40 && live.len() < max_pods) || live.is_empty() {
            self.next += 1;
            let tenant = TENANTS[rng.below(TENANTS.len())].0.to_owned();
            return Op::Add {
                pod: format!("c{}", self.next),
                host: rng.below(hosts),
                tenant,
                labels: app_labels(rng),
            };
        }
        let pod = pick(rng, &live).cloned().unwrap_or_default();
        match roll {
            0..=64 => Op::Del { pod },
            65..=84 => Op::Relabel { pod, labels: app_labels(rng) },
            _ => Op::TogglePolicy { index: rng.below(policy_templates().len()) },
        }
    }

    /// Records what the operation's answer means for the model; `ips`: the addresses an ADD
    /// answered with (any order, any family).
    pub fn outcome(&mut self, op: &Op, ok: bool, ips: &[String]) {
        match op {
            Op::Add { pod, host, tenant, labels } => {
                let state = if ok { PodState::Live } else { PodState::Deleting };
                let of = |v6: bool| ips.iter().find(|a| a.contains(':') == v6).cloned();
                let p = Pod {
                    host: *host,
                    tenant: tenant.clone(),
                    labels: labels.clone(),
                    ip: of(false),
                    ipv6: of(true),
                    state,
                    labels_unsure: false,
                };
                self.pods.insert(pod.clone(), p);
            }
            Op::Del { pod } if ok => {
                self.pods.remove(pod);
                self.gone.insert(pod.clone());
            }
            Op::Del { pod } => {
                if let Some(p) = self.pods.get_mut(pod) {
                    p.state = PodState::Deleting;
                }
            }
            Op::Relabel { pod, labels } => {
                if let Some(p) = self.pods.get_mut(pod) {
                    p.labels_unsure = !ok;
                    if ok {
                        p.labels = labels.clone();
                    }
                }
            }
            Op::TogglePolicy { index } if ok => {
                self.policies_unsure.remove(index);
                if !self.policies.remove(index) {
                    self.policies.insert(*index);
                }
            }
            Op::TogglePolicy { index } => drop(self.policies_unsure.insert(*index)),
        }
    }

    pub fn pending_deletes(&self) -> Vec<String> {
        self.named(PodState::Deleting).into_iter().cloned().collect()
    }
}

/// What the killer may kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Agent,
    Romanad,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Romanad => "romanad replica",
            Kind::Etcd => "etcd member",
        }
    }
}

/// One process: its kind and index (host, replica or member number).
pub type Target = (Kind, usize);

/// How many of each kind there are (0: not ours to kill, e.g. a control plane given to us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub agents: usize,
    pub replicas: usize,
    pub members: usize,
}

impl Sizes {
    fn count(&self, k: Kind) -> usize {
        match k {
            Kind::Agent => self.agents,
            Kind::Romanad => self.replicas,
            Kind::Etcd => self.members,
        }
    }

    /// How many of a kind may be down at once: etcd keeps a majority; one romanad replica
    /// stays up; one agent at a time (so most hosts keep taking CNI calls).
    pub fn may_be_down(&self, k: Kind) -> usize {
        let n = self.count(k);
        match k {
            Kind::Etcd => n.saturating_sub(n / 2 + 1),
            Kind::Romanad => n.saturating_sub(1),
            Kind::Agent => n.min(1),
        }
    }
}

/// The kill schedule: a kill every 2 to 6 s, each victim down 1 to 5 s.
#[derive(Debug, Clone)]
pub struct Killer {
    sizes: Sizes,
    /// Down now, with the time (ms) to restart it.
    pub down: BTreeMap<Target, u64>,
    next_kill: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAction {
    Kill(Target),
    Restart(Target),
}

impl Killer {
    pub fn new(sizes: Sizes, rng: &mut Rng) -> Killer {
        Killer { sizes, down: BTreeMap::new(), next_kill: rng.between(1_000, 3_000) }
    }

    /// What to do at `now` (ms since the start): restarts that are due, then at most one kill.
    pub fn tick(&mut self, now: u64, rng: &mut Rng) -> Vec<KillAction> {
        let due: Vec<Target> = self.down.iter().filter(|(_, at)| **at <= now).map(|(t, _)| *t).collect();
        let mut actions: Vec<KillAction> = due.iter().map(|t| KillAction::Restart(*t)).collect();
        for t in &due {
            self.down.remove(t);
        }
        if now < self.next_kill {
            return actions;
        }
        self.next_kill = now + rng.between(2_000, 6_000);
        let kinds: Vec<Kind> = [Kind::Agent, Kind::Romanad, Kind::Etcd]
            .into_iter()
            .filter(|k| self.down.keys().filter(|(d, _)| d == k).count() < self.sizes.may_be_down(*k))
            .collect();
        if kinds.is_empty() {
            return actions;
        }
        let kind = kinds[rng.below(kinds.len())];
        let up: Vec<usize> =
            (0..self.sizes.count(kind)).filter(|i| !self.down.contains_key(&(kind, *i))).collect();
        let victim = (kind, up[rng.below(up.len())]);
        self.down.insert(victim, now + rng.between(1_000, 5_000));
        actions.push(KillAction::Kill(victim));
        actions
    }

    /// Everything still down, to restart when the churn stops.
    pub fn all_down(&mut self) -> Vec<Target> {
        std::mem::take(&mut self.down).into_keys().collect()
    }
}

#[cfg(test)]
mod tests;
