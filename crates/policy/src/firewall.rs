//! The firewall compiler: policies, tenants and endpoints -> the `inet romana` ruleset of one
//! host. Pure. Layout (docs in ARCHITECTURE.md):
//!
//! - Base chains `fwd-egress` (forward, priority 0), `fwd-ingress` (forward, 1), `in-egress`
//!   (input: local endpoint -> this host) and `out-ingress` (output: this host -> local
//!   endpoint). Each accepts established/related traffic, jumps to `egress` or `ingress`, then drops
//!   what comes from (to) an isolated local endpoint. Policy `accept` is final only for its base
//!   chain, so a connection between two local endpoints passes both the egress and the ingress
//!   check, as Kubernetes requires. No base chain drops anything but an isolated endpoint's traffic,
//!   so a direction's base chains exist only while a local endpoint is isolated in it: a host
//!   without isolation has no hooks of ours and no conntrack from us.
//! - `egress-policies` / `ingress-policies`: a jump to each non-empty bucket chain
//!   (`egress-bNN` / `ingress-bNN`, 64 per direction); a bucket holds one jump per policy and
//!   family, guarded by the policy's target set. Policies fall in buckets by a hash of their id.
//! - `p-<id>-eg` / `p-<id>-in`: the policy's rules, accepts only.
//! - With host-scoped policies (the host itself as target): base chain `in-ingress` (input,
//!   priority 1) jumps to `host-policies` (one jump per such policy) and then drops what this
//!   host's endpoints open to it.
//! - Sets: targets per policy (local endpoints), isolated endpoints per direction, endpoint
//!   selector memberships (cluster-wide), named ports (address . port), this host's endpoints.
//!
//! Only active policies are in the table: those that select one of this host's endpoints (or,
//! host-scoped, the host). Another's chains could only be reached through a jump guarded by an
//! empty target set, so they, its target sets and the sets only it names stay out; the cache
//! keeps them compiled and up to date for when it becomes active (`PolicyEntry::active`).
//!
//! So an endpoint or label change is a set-element change (or, for a policy's first or last
//! local target, its chains and sets in or out); a policy change adds, rewrites or removes its
//! own chains and sets and rewrites its bucket (a few dozen rules at 1,000 policies).
//! No change needs a rule handle: every chain that differs is flushed and refilled in the same
//! transaction, which is what keeps `nft` from reading the whole table back first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use romana_model::{Cidr, Family};

use crate::endpoint_index::EndpointIndex;
use crate::eval::{Endpoint, World, selects, tenant_matches};
use crate::model::{
    ICMPV6_ALWAYS_ALLOWED, Peer, PolicyRules, Port, PortRule, Protocol, Rule, Scope, Selector,
};
use crate::ruleset::{Chain, Dir, Element, Hook, Line, Match, Ruleset, Set, SetType, Verdict, fnv1a};

mod assemble;

/// What one host's firewall is compiled from.
#[derive(Debug, Clone, Copy)]
pub struct FirewallInput<'a> {
    pub host: &'a str,
    /// User policies and the implicit isolation policies, shared: a policy that is the same
    /// object as last compile's is known unchanged without comparing it.
    pub policies: &'a [Arc<PolicyRules>],
    pub world: &'a World,
    /// Every endpoint of the cluster with an address (hosts are not endpoints here).
    pub endpoints: &'a [Endpoint],
}

pub(crate) const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// Bucket chains per direction that policies' jumps are spread over.
pub const BUCKETS: u64 = 64;

pub(crate) fn fam_suffix(f: Family) -> &'static str {
    match f {
        Family::V4 => "4",
        Family::V6 => "6",
    }
}

/// A name nft accepts and a reader recognises: the id's safe characters, then a hash of the whole
/// id so that two ids never collide after sanitising.
pub fn policy_base(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(40)
        .collect();
    format!("p-{safe}-{:08x}", fnv1a(id.as_bytes()) as u32)
}

/// What earlier compiles computed from the endpoints and tenants alone (selector and named-port
/// sets, each policy target's local endpoints), valid while the caller's `stamp` (which it
/// changes whenever endpoints or tenants change) stays the same. A policy change then costs only
/// that policy's own work.
#[derive(Debug, Default)]
pub struct CompileCache {
    pub(crate) stamp: Option<u64>,
    pub(crate) sets: BTreeMap<String, Arc<Set>>,
    /// What each cached set holds, so that one endpoint's change updates it in place.
    rules: BTreeMap<String, Membership>,
    /// Local endpoints' addresses by policy target (tenant and selector): policies with the same
    /// target share the work. Addresses, not positions, since the caller may reorder endpoints.
    targets: BTreeMap<String, Vec<IpAddr>>,
    /// The host compiled for: only its endpoints' changes move policy targets.
    pub(crate) host: Option<String>,
    /// Each policy as last compiled, reused while the policy is unchanged.
    pub(crate) policies: BTreeMap<String, PolicyEntry>,
    /// Each bucket chain with the policies it was built from: reused while they are the same.
    buckets: BTreeMap<String, (Vec<Arc<CompiledPolicy>>, Arc<Chain>)>,
    /// The table the last compile returned, while nothing but policies changed since (an
    /// endpoint change drops it): the next compile patches it by the policies that changed
    /// (`patch`) instead of building 20,000 chains and sets again at 5,000 policies.
    last: Option<Ruleset>,
    /// How many of the last compile's policies isolate each local address, per direction
    /// (`ingress-isolated`, `egress-isolated`): an address leaves its set with its last policy.
    /// Read only beside `last` (an endpoint change leaves it stale and drops `last`; the next
    /// whole compile counts again).
    isolating: HashMap<IpAddr, [u32; 2]>,
}

#[derive(Debug)]
pub(crate) struct PolicyEntry {
    pub(crate) compiled: Arc<CompiledPolicy>,
    /// `target_sets` and `target_ips` are computed (and kept up to date by `endpoint_changed`).
    targets_known: bool,
    /// The target sets (`<base>-t-4`, `-6`) and their addresses (for the isolation sets).
    pub(crate) target_sets: Vec<(String, Arc<Set>)>,
    pub(crate) target_ips: Vec<IpAddr>,
}

impl PolicyEntry {
    /// Whether the policy is in this host's table: while it applies to one of the host's
    /// endpoints, or to the host itself. A policy of endpoints elsewhere would only add chains
    /// no packet here reaches (guarded by an empty target set) and selector sets no rule here
    /// reads: at 5,000 policies on 100 hosts, 99 in 100 of them (docs/policy.md, "Cost").
    pub(crate) fn active(&self) -> bool {
        self.compiled.host_jump.is_some() || !self.target_ips.is_empty()
    }

    /// Whether this entry is `p` compiled: the same object (no comparison), or equal rules.
    fn compiles(&self, p: &Arc<PolicyRules>) -> bool {
        Arc::ptr_eq(&self.compiled.rules, p) || *self.compiled.rules == **p
    }
}

/// What depends on a policy alone: its chains and jumps (the sets they name are found by name).
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    rules: Arc<PolicyRules>,
    pub(crate) chains: Vec<(String, Arc<Chain>)>,
    /// The selector and named-port sets the chains name (in `CompileCache::sets`).
    pub(crate) sets: Vec<String>,
    /// (bucket chain, jump line, its key).
    pub(crate) jumps: Vec<(String, Line, String)>,
    /// `<base>-t-4`, `<base>-t-6`.
    pub(crate) target_names: [String; 2],
    /// `ingress-isolated` and/or `egress-isolated`: where the policy's targets go.
    pub(crate) isolates: Vec<&'static str>,
    /// A host-scoped policy's jump from `host-policies` (with its key) instead of bucket jumps.
    host_jump: Option<(Line, String)>,
}

#[derive(Debug, Clone)]
enum Membership {
    Peer(PeerKey, Family),
    NamedPort(String, Protocol, Family),
}

/// What one endpoint change touched in a `CompileCache`: the selector and named-port sets, and
/// the policies whose target sets moved (read from the cache after the last change).
#[derive(Debug, Default)]
pub(crate) struct Touched {
    pub(crate) sets: Vec<String>,
    pub(crate) policies: Vec<String>,
}

impl CompileCache {
    /// A change of one of the host's own endpoints: each policy's targets take or lose it, each
    /// target set copied and changed by that one address (not built again: a Deployment's
    /// replicas on one host make target sets of hundreds); the policies that changed go to
    /// `touched`.
    fn local_changed(&mut self, old: Option<&Endpoint>, new: Option<&Endpoint>, touched: &mut Touched) {
        let host = self.host.as_deref();
        let local = |e: &&Endpoint| !e.is_host && e.ip.is_some() && Some(e.host.as_str()) == host;
        let (old, new) = (old.filter(local), new.filter(local));
        if old.is_none() && new.is_none() {
            return;
        }
        self.targets.clear();
        let old_ip = old.and_then(|e| e.ip);
        for (id, entry) in self.policies.iter_mut().filter(|(_, e)| e.targets_known) {
            let new_ip = new.and_then(|e| e.ip.filter(|_| selects(&entry.compiled.rules, e)));
            // Out: the old address, unless it stays (the same address, still selected).
            let out = old_ip.filter(|ip| new_ip != Some(*ip) && entry.target_ips.contains(ip));
            let into = new_ip.filter(|ip| !entry.target_ips.contains(ip));
            if out.is_none() && into.is_none() {
                continue;
            }
            entry.target_ips.retain(|x| Some(*x) != out);
            entry.target_ips.extend(into);
            for (f, (_, set)) in FAMILIES.into_iter().zip(entry.target_sets.iter_mut()) {
                for (ip, add) in [(out, false), (into, true)] {
                    let Some(ip) = ip.filter(|ip| Family::of(*ip) == f) else { continue };
                    let set = Arc::make_mut(set);
                    if add {
                        set.elements.insert(Element::Addr(ip));
                    } else {
                        set.elements.remove(&Element::Addr(ip));
                    }
                }
            }
            touched.policies.push(id.clone());
        }
    }

    /// One endpoint was added (`old` `None`), changed, or removed (`new` `None`): the cached sets
    /// take or lose its address, as a compile from scratch would. `world` must be the one the
    /// cache was filled with (tenant changes need a new stamp instead).
    pub fn endpoint_changed(&mut self, world: &World, old: Option<&Endpoint>, new: Option<&Endpoint>) {
        self.endpoint_changed_into(world, old, new, &mut Touched::default());
    }

    /// `endpoint_changed`, noting what it changed in `touched`.
    pub(crate) fn endpoint_changed_into(
        &mut self,
        world: &World,
        old: Option<&Endpoint>,
        new: Option<&Endpoint>,
        touched: &mut Touched,
    ) {
        // The table as last compiled no longer is what the cache gives.
        self.last = None;
        self.local_changed(old, new, touched);
        for (name, rule) in &self.rules {
            let Some(set) = self.sets.get_mut(name) else { continue };
            // What the set should lose and gain; the set is copied (it may be shared with the
            // table as last applied) only when it changes.
            let gone: Vec<Element> = match old.and_then(|e| e.ip) {
                Some(ip) => {
                    let addr = Element::Addr(ip);
                    let ports =
                        set.elements.range(Element::AddrPort(ip, 0)..=Element::AddrPort(ip, u16::MAX));
                    set.elements.get(&addr).into_iter().chain(ports).cloned().collect()
                }
                None => vec![],
            };
            let mut new_elements = Vec::new();
            if let Some((e, ip)) = new.filter(|e| !e.is_host).and_then(|e| Some((e, e.ip?))) {
                match rule {
                    Membership::Peer(key, f) => {
                        let own = key.own_tenant.as_deref().unwrap_or("");
                        if Family::of(ip) == *f
                            && tenant_matches(world, own, key.tenants.as_ref(), &e.tenant)
                            && key.endpoints.as_ref().is_none_or(|s| s.matches(&e.labels))
                        {
                            new_elements.push(Element::Addr(ip));
                        }
                    }
                    Membership::NamedPort(port, protocol, f) if Family::of(ip) == *f => {
                        for p in e.ports.iter().filter(|p| &p.name == port && p.protocol == *protocol) {
                            new_elements.push(Element::AddrPort(ip, p.port));
                        }
                    }
                    Membership::NamedPort(..) => {}
                }
            }
            if gone.is_empty() && new_elements.iter().all(|el| set.elements.contains(el)) {
                continue;
            }
            touched.sets.push(name.clone());
            let set = Arc::make_mut(set);
            for el in &gone {
                set.elements.remove(el);
            }
            set.elements.extend(new_elements);
        }
    }
}

impl CompileCache {
    /// The chain of `bucket` holding its `members`' jumps (in their order): `old` (the bucket as
    /// last built) while its members are the same objects, else built again; kept in the cache.
    /// No members: no chain.
    pub(crate) fn bucket_chain(
        &mut self,
        bucket: &str,
        members: Vec<Arc<CompiledPolicy>>,
        old: Option<(Vec<Arc<CompiledPolicy>>, Arc<Chain>)>,
    ) -> Option<Arc<Chain>> {
        if members.is_empty() {
            self.buckets.remove(bucket);
            return None;
        }
        let chain = match old {
            Some((was, chain))
                if was.len() == members.len() && was.iter().zip(&members).all(|(a, b)| Arc::ptr_eq(a, b)) =>
            {
                chain
            }
            _ => {
                let mut chain = Chain::new(None, vec![]);
                for (line, key) in members
                    .iter()
                    .flat_map(|m| &m.jumps)
                    .filter(|(b, ..)| *b == bucket)
                    .map(|(_, line, key)| (line, key))
                {
                    chain.push_keyed(line.clone(), key.clone());
                }
                Arc::new(chain)
            }
        };
        self.buckets.insert(bucket.to_owned(), (members, chain.clone()));
        Some(chain)
    }

    /// The policies the cache holds, and how many of them are in the table (active).
    pub fn policy_counts(&self) -> (usize, usize) {
        (self.policies.len(), self.policies.values().filter(|e| e.active()).count())
    }

    /// The selector and named-port sets the active policies name.
    pub(crate) fn named_sets(&self) -> BTreeSet<&String> {
        self.policies.values().filter(|e| e.active()).flat_map(|e| &e.compiled.sets).collect()
    }

    /// The chains of `buckets` as the cache's active policies (in id order) make them now (`None`:
    /// no member, no chain), found in one walk over the policies.
    pub(crate) fn rebuild_buckets(
        &mut self,
        buckets: &BTreeSet<String>,
    ) -> Vec<(String, Option<Arc<Chain>>)> {
        let mut members: BTreeMap<&String, Vec<Arc<CompiledPolicy>>> =
            buckets.iter().map(|b| (b, vec![])).collect();
        for e in self.policies.values().filter(|e| e.active()) {
            for (b, ..) in &e.compiled.jumps {
                if let Some(m) =
                    members.get_mut(b).filter(|m| !m.last().is_some_and(|l| Arc::ptr_eq(l, &e.compiled)))
                {
                    m.push(e.compiled.clone());
                }
            }
        }
        members
            .into_iter()
            .map(|(b, m)| {
                let old = self.buckets.remove(b);
                (b.clone(), self.bucket_chain(b, m, old))
            })
            .collect()
    }
}

struct Compiler<'a> {
    input: FirewallInput<'a>,
    /// This host's endpoints, found once: every policy's targets are among them.
    local: Vec<&'a Endpoint>,
    /// Endpoints by label and by tenant, so that a selector's set looks only at the endpoints
    /// that can match it. Built when first needed.
    index: Option<EndpointIndex<'a>>,
    cache: CompileCache,
    rs: Ruleset,
    /// Selector and named-port sets the policy being compiled declared.
    declared: Vec<String>,
}

/// Which endpoints a `Peer::Endpoints` names, with the policy's tenant filled in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PeerKey {
    own_tenant: Option<String>,
    tenants: Option<Selector>,
    endpoints: Option<Selector>,
}

impl<'a> Compiler<'a> {
    /// Declares (once) the pair of address sets `name-4`/`name-6` holding `members`' addresses.
    fn addr_sets<'e>(&mut self, name: &str, members: impl Iterator<Item = &'e Endpoint>) {
        let ips: Vec<IpAddr> = members.filter_map(|e| e.ip).collect();
        for f in FAMILIES {
            self.rs
                .sets
                .entry(format!("{name}-{}", fam_suffix(f)))
                .or_insert_with(|| Arc::new(Set::new(SetType::Addr(f))));
        }
        self.add_addrs(name, &ips);
    }

    /// Adds addresses to the declared pair of sets `name-4`/`name-6`.
    fn add_addrs(&mut self, name: &str, ips: &[IpAddr]) {
        for f in FAMILIES {
            let mut of_family = ips.iter().filter(|ip| Family::of(**ip) == f).peekable();
            if of_family.peek().is_none() {
                continue;
            }
            let set = self.rs.sets.get_mut(&format!("{name}-{}", fam_suffix(f))).expect("declared first");
            for ip in of_family {
                if !set.elements.contains(&Element::Addr(*ip)) {
                    Arc::make_mut(set).elements.insert(Element::Addr(*ip));
                }
            }
        }
    }

    /// The pair of selector sets `sel-<hash>-4`/`-6` of `key`, computed into the cache unless it
    /// holds them (the table takes them only from an active policy: `Compiler::policy`).
    fn selector_set(&mut self, key: PeerKey) -> String {
        let name = format!("sel-{:016x}", fnv1a(format!("{key:?}").as_bytes()));
        let names = FAMILIES.map(|f| format!("{name}-{}", fam_suffix(f)));
        self.declared.extend(names.iter().cloned());
        if names.iter().all(|n| self.cache.sets.contains_key(n)) {
            return name;
        }
        let world = self.input.world;
        let own = key.own_tenant.as_deref().unwrap_or("");
        // Tenants are few: each is decided once, and the endpoints of the others are not read.
        let all = self.input.endpoints;
        let index = self.index.get_or_insert_with(|| EndpointIndex::new(all));
        let members = index
            .candidates(key.endpoints.as_ref(), |t| tenant_matches(world, own, key.tenants.as_ref(), t))
            .into_iter()
            .map(|i| &all[i])
            .filter(|e| key.endpoints.as_ref().is_none_or(|s| s.matches(&e.labels)));
        let mut sets = FAMILIES.map(|f| Set::new(SetType::Addr(f)));
        for ip in members.filter_map(|e| e.ip) {
            let k = usize::from(Family::of(ip) == Family::V6);
            sets[k].elements.insert(Element::Addr(ip));
        }
        for ((f, n), set) in FAMILIES.into_iter().zip(names).zip(sets) {
            self.cache.rules.insert(n.clone(), Membership::Peer(key.clone(), f));
            self.cache.sets.insert(n, Arc::new(set));
        }
        name
    }

    /// The named-port set of `port`, computed into the cache unless it holds it.
    fn named_port_set(&mut self, port: &str, protocol: Protocol, f: Family) -> String {
        let safe: String = port.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(15).collect();
        let proto = format!("{protocol:?}").to_ascii_lowercase();
        let name = format!("np-{safe}-{proto}-{:04x}-{}", fnv1a(port.as_bytes()) as u16, fam_suffix(f));
        self.declared.push(name.clone());
        if !self.cache.sets.contains_key(&name) {
            let mut set = Set::new(SetType::AddrPort(f));
            for e in self.input.endpoints.iter().filter(|e| !e.is_host) {
                let Some(ip) = e.ip.filter(|ip| Family::of(*ip) == f) else { continue };
                for p in e.ports.iter().filter(|p| p.name == port && p.protocol == protocol) {
                    set.elements.insert(Element::AddrPort(ip, p.port));
                }
            }
            self.cache.sets.insert(name.clone(), Arc::new(set));
            self.cache.rules.insert(name.clone(), Membership::NamedPort(port.to_owned(), protocol, f));
        }
        name
    }

    /// A peer as alternatives, each a list of matches and the family it is limited to.
    fn peer_alts(
        &mut self,
        policy: &PolicyRules,
        peer: &Peer,
        dir: Dir,
    ) -> Vec<(Vec<Match>, Option<Family>)> {
        let by_family = |name: &str| {
            FAMILIES
                .iter()
                .map(|f| {
                    let set = format!("{name}-{}", fam_suffix(*f));
                    (vec![Match::InSet { dir, family: *f, set }], Some(*f))
                })
                .collect()
        };
        match peer {
            Peer::Endpoints { tenants, endpoints } => {
                let key = PeerKey {
                    own_tenant: tenants.is_none().then(|| policy.tenant.clone()),
                    tenants: tenants.clone(),
                    endpoints: endpoints.clone(),
                };
                let name = self.selector_set(key);
                by_family(&name)
            }
            Peer::Cidr { cidr, except } => {
                let except: Vec<Cidr> =
                    except.iter().filter(|x| x.family() == cidr.family()).copied().collect();
                vec![(vec![Match::InNet { dir, cidr: *cidr, except }], Some(cidr.family()))]
            }
            Peer::Any => vec![(vec![], None)],
            Peer::Host => vec![(vec![Match::LocalAddr(dir)], None)],
            Peer::Local => by_family("local"),
        }
    }

    fn port_alts(&mut self, p: &PortRule) -> Vec<(Vec<Match>, Option<Family>)> {
        match (&p.port, p.protocol) {
            // ICMP lives in IPv4 and ICMPv6 in IPv6: a peer of the other family cannot meet it.
            (None, proto) => vec![(vec![Match::Proto(proto)], proto.family())],
            (Some(Port::Range(a, b)), proto) if !proto.is_icmp() => {
                vec![(vec![Match::Ports { protocol: proto, first: *a, last: *b }], None)]
            }
            (Some(Port::Named(n)), proto) if !proto.is_icmp() => FAMILIES
                .iter()
                .map(|f| {
                    let set = self.named_port_set(n, proto, *f);
                    (vec![Match::DstPortIn { protocol: proto, family: *f, set }], Some(*f))
                })
                .collect(),
            (Some(Port::Icmp { icmp_type, code }), proto @ (Protocol::Icmp | Protocol::Icmpv6)) => {
                let family = if proto == Protocol::Icmp { Family::V4 } else { Family::V6 };
                vec![(vec![Match::Icmp { family, icmp_type: *icmp_type, code: *code }], Some(family))]
            }
            // Ranges or names of ICMP, or ICMP types of a port protocol: no front end produces
            // them, and nothing can match them.
            _ => vec![],
        }
    }

    fn rule_lines(&mut self, policy: &PolicyRules, rule: &Rule, dir: Dir) -> Vec<Line> {
        let peers: Vec<(Vec<Match>, Option<Family>)> = match &rule.peers {
            None => vec![(vec![], None)],
            Some(ps) => ps.iter().flat_map(|p| self.peer_alts(policy, p, dir)).collect(),
        };
        let ports: Vec<(Vec<Match>, Option<Family>)> = match &rule.ports {
            None => vec![(vec![], None)],
            Some(ps) => ps.iter().flat_map(|p| self.port_alts(p)).collect(),
        };
        let mut lines = Vec::new();
        for (pm, pf) in &peers {
            for (qm, qf) in &ports {
                if matches!((pf, qf), (Some(a), Some(b)) if a != b) {
                    continue;
                }
                let matches = pm.iter().chain(qm).cloned().collect();
                lines.push(Line { matches, verdict: Verdict::Accept });
            }
        }
        // Equal lines (a peer listed twice) would be one rule to the kernel's eye but two here.
        let mut seen = BTreeSet::new();
        lines.retain(|l| seen.insert(l.clone()));
        lines
    }

    /// Compiles a policy (from the cache where it can) and, while it is active here (`active`),
    /// adds it to the table: its chains, its target sets and the selector and named-port sets it
    /// names, and its targets' isolation. Returns its compiled form while it is active.
    fn policy(&mut self, p: &Arc<PolicyRules>) -> Option<Arc<CompiledPolicy>> {
        if !self.cache.policies.get(&p.id).is_some_and(|e| e.compiles(p)) {
            let compiled = Arc::new(self.compile_policy(p));
            let e = PolicyEntry { compiled, targets_known: false, target_sets: vec![], target_ips: vec![] };
            self.cache.policies.insert(p.id.clone(), e);
        }
        if !self.cache.policies[&p.id].targets_known {
            let (sets, ips) = if p.scope == Scope::Host { (vec![], vec![]) } else { self.targets_of(p) };
            let e = self.cache.policies.get_mut(&p.id).expect("inserted above");
            // An unchanged set keeps its object, which the planner then skips.
            let sets = sets
                .into_iter()
                .map(|(n, s)| match e.target_sets.iter().find(|(o, old)| *o == n && **old == s) {
                    Some((_, old)) => (n, old.clone()),
                    None => (n, Arc::new(s)),
                })
                .collect();
            (e.targets_known, e.target_sets, e.target_ips) = (true, sets, ips);
        }
        let e = &self.cache.policies[&p.id];
        if !e.active() {
            return None;
        }
        for (n, set) in &e.target_sets {
            self.rs.sets.insert(n.clone(), set.clone());
        }
        for (n, chain) in &e.compiled.chains {
            self.rs.chains.insert(n.clone(), chain.clone());
        }
        for n in &e.compiled.sets {
            if let Some(set) = self.cache.sets.get(n) {
                self.rs.sets.insert(n.clone(), set.clone());
            }
        }
        let compiled = e.compiled.clone();
        if !e.target_ips.is_empty() {
            let ips = e.target_ips.clone();
            self.isolate(&ips, &compiled.isolates, true);
        }
        Some(compiled)
    }

    /// Counts `ips` into (`add`) or out of the isolation of each direction in `isolates`: an
    /// address enters the direction's set with its first policy and leaves it with its last.
    fn isolate(&mut self, ips: &[IpAddr], isolates: &[&'static str], add: bool) {
        for iso in isolates {
            let k = usize::from(*iso == "egress-isolated");
            for ip in ips {
                let n = &mut self.cache.isolating.entry(*ip).or_default()[k];
                let was = *n;
                *n = if add { was + 1 } else { was.saturating_sub(1) };
                if (add && was == 0) || (!add && was == 1) {
                    let name = format!("{iso}-{}", fam_suffix(Family::of(*ip)));
                    let set = Arc::make_mut(self.rs.sets.get_mut(&name).expect("declared first"));
                    if add {
                        set.elements.insert(Element::Addr(*ip));
                    } else {
                        set.elements.remove(&Element::Addr(*ip));
                    }
                }
            }
        }
    }

    /// Puts the chain of `bucket` holding its `members`' jumps into the table (none without
    /// members), with `old` as the cache's `bucket_chain` takes it.
    fn place_bucket(
        &mut self,
        bucket: String,
        members: Vec<Arc<CompiledPolicy>>,
        old: Option<(Vec<Arc<CompiledPolicy>>, Arc<Chain>)>,
    ) {
        match self.cache.bucket_chain(&bucket, members, old) {
            Some(chain) => self.rs.chains.insert(bucket, chain),
            None => self.rs.chains.remove(&bucket),
        };
    }

    /// The policy's target sets (this host's endpoints it applies to) and their addresses.
    fn targets_of(&mut self, p: &PolicyRules) -> (Vec<(String, Set)>, Vec<IpAddr>) {
        let key = format!("{}\u{0}{:?}\u{0}{:?}", p.tenant, p.scope, p.target);
        let ips = match self.cache.targets.get(&key) {
            Some(ips) => ips.clone(),
            None => {
                let ips: Vec<IpAddr> =
                    self.local.iter().filter(|e| selects(p, e)).filter_map(|e| e.ip).collect();
                self.cache.targets.insert(key, ips.clone());
                ips
            }
        };
        let names = &self.cache.policies[&p.id].compiled.target_names;
        (target_sets(names, &ips), ips)
    }

    /// A policy's own chains and its jumps: what depends on the policy alone.
    fn compile_policy(&mut self, p: &Arc<PolicyRules>) -> CompiledPolicy {
        self.declared.clear();
        let base = policy_base(&p.id);
        let mut out = CompiledPolicy {
            rules: p.clone(),
            chains: vec![],
            sets: vec![],
            jumps: vec![],
            target_names: FAMILIES.map(|f| format!("{base}-t-{}", fam_suffix(f))),
            isolates: vec![],
            host_jump: None,
        };
        let host = p.scope == Scope::Host;
        for (rules, suffix, dispatch, target_dir, peer_dir) in [
            (&p.ingress, "in", "ingress", Dir::Dst, Dir::Src),
            (&p.egress, "eg", "egress", Dir::Src, Dir::Dst),
        ] {
            let Some(rules) = rules else { continue };
            // The host as target: ingress rules only, reached from `in-ingress` for what the
            // host's own endpoints open to it; no target set, no isolation set.
            if host && dispatch != "ingress" {
                continue;
            }
            let chain = format!("{base}-{suffix}");
            let lines: Vec<Line> = rules.iter().flat_map(|r| self.rule_lines(p, r, peer_dir)).collect();
            let mut seen = BTreeSet::new();
            let lines: Vec<Line> = lines.into_iter().filter(|l| seen.insert(l.clone())).collect();
            out.chains.push((chain.clone(), Arc::new(Chain::new(None, lines))));
            if host {
                let line = Line { matches: vec![], verdict: Verdict::Jump(chain) };
                let key = line.key();
                out.host_jump = Some((line, key));
                continue;
            }
            out.isolates.push(if dispatch == "ingress" { "ingress-isolated" } else { "egress-isolated" });
            // The policy's jumps go into one of a fixed number of bucket chains (by a hash of its
            // id), so adding or removing a policy rewrites a small bucket, never a long chain.
            let bucket = format!("{dispatch}-b{:02}", fnv1a(p.id.as_bytes()) % BUCKETS);
            for (f, set) in FAMILIES.into_iter().zip(out.target_names.clone()) {
                let line = Line {
                    matches: vec![Match::InSet { dir: target_dir, family: f, set }],
                    verdict: Verdict::Jump(chain.clone()),
                };
                let key = line.key();
                out.jumps.push((bucket.clone(), line, key));
            }
        }
        out.sets = std::mem::take(&mut self.declared);
        out.sets.sort();
        out.sets.dedup();
        out
    }
}

/// A policy's pair of target sets holding `ips`.
fn target_sets(names: &[String; 2], ips: &[IpAddr]) -> Vec<(String, Set)> {
    FAMILIES
        .into_iter()
        .zip(names)
        .map(|(f, name)| {
            let mut set = Set::new(SetType::Addr(f));
            set.elements.extend(ips.iter().filter(|ip| Family::of(**ip) == f).map(|ip| Element::Addr(*ip)));
            (name.clone(), set)
        })
        .collect()
}

/// The bucket chains of `direction` among `chains`' names: `<direction>-bNN`, the names from
/// `<direction>-b` up to `-c`.
pub(crate) fn buckets_of<'m, V>(
    chains: &'m BTreeMap<String, V>,
    direction: &str,
) -> impl Iterator<Item = &'m String> {
    let (from, to) = (format!("{direction}-b"), format!("{direction}-c"));
    chains.range::<String, _>(from..to).map(|(name, _)| name)
}

/// `<direction>-policies`: one jump to each of the direction's bucket chains, in name order.
pub(crate) fn dispatch_chain<'b>(buckets: impl Iterator<Item = &'b String>) -> Arc<Chain> {
    let lines = buckets.map(|b| Line { matches: vec![], verdict: Verdict::Jump(b.clone()) }).collect();
    Arc::new(Chain::new(None, lines))
}

/// What passes every base chain of ours before any policy: neighbour discovery, router
/// discovery and multicast listener messages (`ICMPV6_ALWAYS_ALLOWED`, docs/policy.md). ICMP
/// errors need no line: conntrack marks them `related` to the connection they are about.
pub(crate) fn always_allowed() -> Line {
    Line { matches: vec![Match::Icmpv6Types(ICMPV6_ALWAYS_ALLOWED.to_vec())], verdict: Verdict::Accept }
}

/// `direction` is `egress` or `ingress` (both nft keywords, hence the longer names).
pub(crate) fn base_chain(hook: Hook, prio: i32, direction: &str, dir: Dir) -> Arc<Chain> {
    let mut lines = vec![
        Line { matches: vec![Match::Established], verdict: Verdict::Accept },
        always_allowed(),
        Line { matches: vec![], verdict: Verdict::Jump(format!("{direction}-policies")) },
    ];
    for f in FAMILIES {
        let set = format!("{direction}-isolated-{}", fam_suffix(f));
        lines.push(Line { matches: vec![Match::InSet { dir, family: f, set }], verdict: Verdict::Drop });
    }
    Arc::new(Chain::new(Some((hook, prio)), lines))
}

/// The host's local endpoints (both families) that no rule of `rs` filters, in either direction
/// (local, neither ingress- nor egress-isolated): a packet from another host to one of them is
/// accepted by the forward hook whatever it is, so the agent's fast path may hand it over past
/// that hook. Egress isolation counts too: its chain accepts replies by conntrack state, which a
/// request that skipped the host never created. The only drops on the forward path are of
/// isolated endpoints' traffic, which this leaves out. Each family by its own sets: a dual-stack
/// endpoint is in both or neither, as the policies select it by labels.
pub fn unfiltered(rs: &Ruleset) -> BTreeSet<IpAddr> {
    unfiltered_in(|name| rs.sets.get(name).map(|s| &**s))
}

/// `unfiltered` of the table whose sets `set` names: also a table in force with a part applied
/// (the agent's endpoint passes), without building it.
pub fn unfiltered_in<'a>(set: impl Fn(&str) -> Option<&'a Set>) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    for f in FAMILIES {
        let addrs = |prefix: &str| -> BTreeSet<IpAddr> {
            set(&format!("{prefix}-{}", fam_suffix(f)))
                .map(|s| {
                    s.elements
                        .iter()
                        .filter_map(|e| match e {
                            Element::Addr(ip) if Family::of(*ip) == f => Some(*ip),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let (ingress, egress) = (addrs("ingress-isolated"), addrs("egress-isolated"));
        out.extend(addrs("local").into_iter().filter(|ip| !ingress.contains(ip) && !egress.contains(ip)));
    }
    out
}

/// The host's whole ruleset.
pub fn compile(input: FirewallInput<'_>) -> Ruleset {
    compile_cached(input, &mut CompileCache::default(), 0)
}

/// `compile`, reusing what `cache` holds from earlier compiles with the same `stamp`.
pub fn compile_cached(input: FirewallInput<'_>, cache: &mut CompileCache, stamp: u64) -> Ruleset {
    if cache.stamp != Some(stamp) || cache.host.as_deref() != Some(input.host) {
        *cache =
            CompileCache { stamp: Some(stamp), host: Some(input.host.to_owned()), ..CompileCache::default() };
    }
    let local =
        input.endpoints.iter().filter(|e| !e.is_host && e.ip.is_some() && e.host == input.host).collect();
    // Policies in id order: the output does not depend on the order policies were listed in.
    let mut policies: Vec<&Arc<PolicyRules>> = input.policies.iter().collect();
    policies.sort_by(|a, b| a.id.cmp(&b.id));
    // The cache keeps one entry per id: with two policies of one id only a whole compile is exact.
    let unique = policies.windows(2).all(|w| w[0].id != w[1].id);
    let last = cache.last.take().filter(|_| unique);
    let mut c = Compiler {
        input,
        local,
        index: None,
        cache: std::mem::take(cache),
        rs: Ruleset::default(),
        declared: vec![],
    };
    let host_jumps = match last {
        Some(rs) => {
            c.rs = rs;
            c.patch(&policies)
        }
        None => c.all(&policies),
    };
    c.finish(host_jumps);
    *cache = std::mem::take(&mut c.cache);
    cache.last = unique.then(|| c.rs.clone());
    c.rs
}
