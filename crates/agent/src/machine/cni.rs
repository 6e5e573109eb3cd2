//! CNI ADD and DEL as pure flows: each request is a value (`Add`, `Del`) that takes the outcome
//! of the last action as an event and returns the next actions: wait for the pod's record,
//! allocate, register the endpoint, put it under its policies, plumb, answer, and on a failure
//! roll back what was done (the rules, the records, the addresses) before answering with a CNI
//! code. No I/O: the adapter (`drive_cni`) performs the actions through the ports.
//!
//! Dual stack: the allocation is the IPAM's stack (`POST /address-stacks`: one address of each
//! family the host draws from for the tenant, both or neither). A dual-stack endpoint is two
//! registry records with the same labels, `<name>` (IPv4) and `<name>#v6` (IPv6), because a
//! record holds one address and the policy dataplane selects records: both addresses are then
//! under the same policies with no change to the registry or the compiler.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use romana_api::agent::{
    AgentError, AttachRequest, Attached, AttachedIp, DetachRequest, PodRef, address_name, code, stack_base,
    v6_address_name,
};
use romana_api::rest::{Address, AddressRequest, EndpointInfo, PodInfo};
use romana_client::ClientError;
use romana_dataplane::LinkName;
use romana_host::{Attachment, EndpointError, EndpointSpec, IPV6_GATEWAY, PodAddress, host_link_name};

use super::pod_wait::{self, Lookup, Next};

/// romanad's answer to a call that failed, as the flow needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Unreachable(String),
    Status(u16, String),
    Other(String),
}

impl From<&ClientError> for Refused {
    fn from(e: &ClientError) -> Refused {
        match e {
            ClientError::Unreachable { .. } => Refused::Unreachable(e.to_string()),
            ClientError::Api { status, .. } => Refused::Status(*status, e.to_string()),
            ClientError::Decode { .. } => Refused::Other(e.to_string()),
        }
    }
}

impl Refused {
    fn not_found(&self) -> bool {
        matches!(self, Refused::Status(404, _))
    }

    /// As a CNI error: unreachable or busy is "try again later", a refusal of the request
    /// (unknown tenant, no such host...) is a configuration error.
    pub fn answer(&self, what: &str) -> AgentError {
        let (c, msg, details) = match self {
            Refused::Unreachable(d) => (code::TRY_AGAIN_LATER, "romanad is unreachable", d),
            Refused::Status(503 | 429 | 502 | 504, d) => (code::TRY_AGAIN_LATER, "romanad is busy", d),
            Refused::Status(400..=499, d) => (code::INVALID_CONFIG, "romanad refused", d),
            Refused::Status(_, d) | Refused::Other(d) => (code::OTHER, "romanad failed", d),
        };
        fail(c, format!("{what}: {msg}"), details.clone())
    }
}

pub fn fail(code: u32, msg: impl Into<String>, details: impl Into<String>) -> AgentError {
    AgentError { code, msg: msg.into(), details: details.into() }
}

/// Why plumbing failed, as a CNI code and text (from `romana_host`'s error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlumbFailure {
    pub code: u32,
    pub text: String,
}

impl From<&EndpointError> for PlumbFailure {
    fn from(e: &EndpointError) -> PlumbFailure {
        let code = match e {
            EndpointError::NoPodNamespace { .. } => code::UNKNOWN_CONTAINER,
            EndpointError::IfName(_) | EndpointError::Family { .. } => code::INVALID_CONFIG,
            EndpointError::Mismatch(_) => code::OTHER,
            _ => code::IO_FAILURE,
        };
        PlumbFailure { code, text: e.to_string() }
    }
}

/// Why the endpoint's rules are not in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnforceFailure {
    /// Policies could not be read (the first time).
    NotLoaded(String),
    /// The table could not be written.
    NotEnforced(String),
}

/// What a flow hears back.
#[derive(Debug, Clone, PartialEq)]
pub enum CniEvent {
    /// The request begins; `netns_exists`: the runtime's namespace file is there (ADD).
    Start {
        netns_exists: bool,
    },
    /// One look at the pod's record, `waited` after the first.
    PodLooked {
        record: Result<PodInfo, Refused>,
        waited: Duration,
    },
    /// The endpoint's addresses, one per family (IPv4 first).
    Allocated(Result<Vec<Address>, Refused>),
    /// romanad's record of the endpoint (its first address's), if it has one.
    EndpointRead(Result<EndpointInfo, Refused>),
    /// Each record's registration, in the order asked (the flow forgets those written when any
    /// was refused).
    Registered(Vec<Result<EndpointInfo, Refused>>),
    Enforced(Result<(), EnforceFailure>),
    Plumbed(Result<Attachment, PlumbFailure>),
    /// DEL's unplumbing (`true`: a link was removed).
    Unplumbed(Result<bool, PlumbFailure>),
    /// DEL's deletion of the endpoint's records (one already gone counts as deleted).
    Unregistered(Result<(), Refused>),
    /// DEL's release of the addresses.
    Released(Result<(), Refused>),
}

/// The answer to the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Added(Box<Attached>),
    Deleted,
}

/// What the adapter does, in order. Every action but `Forget`, `ReleaseQuietly` and `Answer`
/// is answered by one event, and is the last action of its batch.
#[derive(Debug, Clone, PartialEq)]
pub enum CniAction {
    /// Look up the pod's record after this pause.
    LookUpPod {
        pod: PodRef,
        after: Duration,
    },
    /// Allocate the endpoint's addresses (one per family its host draws from).
    Allocate(AddressRequest),
    ReadEndpoint(String),
    /// Write these records (in order, stopping at the first refused; a dual-stack endpoint's two
    /// at once), answered by `Registered` with each one's outcome.
    Register(Vec<EndpointInfo>),
    /// Put the registered records under their policies, in the kernel, before anything else.
    Enforce(Vec<EndpointInfo>),
    Plumb(EndpointSpec),
    Unplumb(LinkName),
    /// Best effort, unanswered: delete the endpoint's record and take it out of the table.
    Forget(String),
    /// DEL's: delete the endpoint's records (`<name>` and `<name>#v6`), answered by
    /// `Unregistered`; each one gone is taken out of the table. Not best effort: a record left
    /// behind keeps the address in every host's policies (for the next pod that gets it) and in
    /// no one's care.
    Unregister(Vec<String>),
    /// Best effort, unanswered (a failed ADD's rollback). romanad releases a name's `#v6`
    /// address with it.
    ReleaseQuietly(String),
    /// DEL's release (of both families, as `ReleaseQuietly`), answered by `Released`.
    Release(String),
    Answer(Result<Answer, AgentError>),
}

/// CNI names: container ids and network names are `[A-Za-z0-9][A-Za-z0-9_.-]*` (CNI spec).
pub fn cni_name(field: &str, v: &str) -> Result<(), AgentError> {
    let ok = v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(fail(code::INVALID_ENV, format!("invalid {field} {v:?}"), "expected [A-Za-z0-9][A-Za-z0-9_.-]*"))
    }
}

/// The pod's next hop for `ip`: for IPv6 the link-local `IPV6_GATEWAY` on the host end of its
/// veth (romana-host's `endpoint.rs` says why), for IPv4 the host's IPv4 gateway address.
pub fn gateway_for(host: &str, gateways: &[IpAddr], ip: IpAddr) -> Result<IpAddr, AgentError> {
    if ip.is_ipv6() {
        return Ok(IpAddr::V6(IPV6_GATEWAY));
    }
    gateways.iter().copied().find(|g| g.is_ipv4()).ok_or_else(|| {
        fail(
            code::INVALID_CONFIG,
            format!("host {host} has no gateway address for {ip}"),
            "start romana-agent with --gateway-ip of that family",
        )
    })
}

/// The endpoint to plumb or check for `req` with the addresses IPAM gave it (one per family).
pub fn endpoint_spec(
    host: &str,
    gateways: &[IpAddr],
    req: &AttachRequest,
    ips: &[&str],
) -> Result<EndpointSpec, AgentError> {
    let mut addresses = Vec::with_capacity(ips.len());
    for ip in ips {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| fail(code::OTHER, "romanad answered an unparsable address", (*ip).to_owned()))?;
        if addresses.iter().any(|a: &PodAddress| a.ip.is_ipv4() == ip.is_ipv4()) {
            return Err(fail(code::OTHER, "romanad answered two addresses of one family", ips.join(", ")));
        }
        addresses.push(PodAddress { ip, gateway: gateway_for(host, gateways, ip)? });
    }
    if addresses.is_empty() {
        return Err(fail(code::OTHER, "romanad answered no address", ""));
    }
    Ok(EndpointSpec {
        host_link: host_link_name(&req.container_id, &req.ifname),
        ifname: req.ifname.clone(),
        netns: PathBuf::from(&req.netns),
        addresses,
    })
}

/// CHECK: what the runtime was given (`prevResult`) against the addresses IPAM holds for the
/// endpoint, first one first; `None` when they agree. A plugin that sends `ips` is compared on
/// every address (a dual-stack result lists both); one that sends only `ip`, on the first.
pub fn prev_differs(req: &AttachRequest, held: &[String]) -> Option<String> {
    // One spelling per address (IPv6 has many).
    let norm = |v: &String| v.parse::<IpAddr>().map_or_else(|_| v.clone(), |ip| ip.to_string());
    let held: Vec<String> = held.iter().map(norm).collect();
    let (prev, same) = if req.ips.is_empty() {
        let prev = norm(req.ip.as_ref()?);
        let same = held.first() == Some(&prev);
        (vec![prev], same)
    } else {
        let prev: Vec<String> = req.ips.iter().map(norm).collect();
        let sorted = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
        let same = sorted(&prev) == sorted(&held) && prev.len() == held.len();
        (prev, same)
    };
    (!same).then(|| format!("prevResult has {}, IPAM has {}", prev.join(", "), held.join(", ")))
}

/// `GET /pods/{namespace}/{name}`'s answer as the wait sees it.
fn lookup(record: Result<PodInfo, Refused>) -> Lookup {
    match record {
        Ok(p) => Lookup::Found(p),
        Err(r) if r.not_found() => Lookup::Missing,
        // 401 is an expired token, which the route loop renews: worth another look.
        Err(Refused::Status(400 | 403, e)) => Lookup::Refused(e),
        Err(Refused::Status(_, e) | Refused::Unreachable(e) | Refused::Other(e)) => Lookup::Unavailable(e),
    }
}

/// What the agent knows that an ADD needs.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub gateways: Vec<IpAddr>,
    /// Policies are enforced (`--no-policy` turns it off; then no endpoint is registered).
    pub policy: bool,
    /// How long ADD waits for a kubelet-started pod's record (`--pod-wait-ms`).
    pub pod_wait: Duration,
}

/// One CNI ADD.
#[derive(Debug)]
pub struct Add {
    host: Host,
    req: AttachRequest,
    name: String,
    attempt: u32,
    /// What IPAM gave, one per family (IPv4 first); a rollback releases them.
    addresses: Vec<Address>,
    spec: Option<EndpointSpec>,
    /// The records written: a rollback deletes them and takes them out of the table.
    registered: Vec<String>,
}

impl Add {
    pub fn new(host: Host, req: AttachRequest) -> Add {
        let name = address_name(&req.network, &req.container_id, &req.ifname);
        Add { host, req, name, attempt: 0, addresses: vec![], spec: None, registered: vec![] }
    }

    /// The IPAM name of the endpoint's address.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails the ADD after undoing what it did; `err` is the answer.
    fn rollback(&self, err: AgentError) -> Vec<CniAction> {
        let mut out: Vec<CniAction> = self.registered.iter().cloned().map(CniAction::Forget).collect();
        if !self.addresses.is_empty() {
            out.push(CniAction::ReleaseQuietly(self.name.clone()));
        }
        out.push(CniAction::Answer(Err(err)));
        out
    }

    fn allocate(&self) -> Vec<CniAction> {
        vec![CniAction::Allocate(AddressRequest {
            name: self.name.clone(),
            host: self.host.name.clone(),
            tenant: self.req.tenant.clone(),
            segment: self.req.segment.clone(),
            ip: None,
        })]
    }

    /// The registration of the address held by IPAM name `name`: the runtime's labels, no named
    /// ports, the pod when its record is the truth for them (romanad then takes labels and ports
    /// from it).
    fn info(&self, name: &str, ip: IpAddr) -> EndpointInfo {
        EndpointInfo {
            name: name.to_owned(),
            ip: ip.to_string(),
            tenant: self.req.tenant.clone(),
            segment: self.req.segment.clone(),
            host: self.host.name.clone(),
            labels: self.req.labels.clone(),
            ports: vec![],
            pod: match (&self.req.pod, self.req.runtime_labels) {
                (Some(p), false) => p.key(),
                _ => String::new(),
            },
        }
    }

    pub fn step(&mut self, ev: CniEvent) -> Vec<CniAction> {
        match ev {
            CniEvent::Start { netns_exists } => {
                let checked = cni_name("network name", &self.req.network)
                    .and_then(|()| cni_name("container id", &self.req.container_id));
                if let Err(e) = checked {
                    return vec![CniAction::Answer(Err(e))];
                }
                if !netns_exists {
                    let msg = format!("network namespace {} does not exist", self.req.netns);
                    return vec![CniAction::Answer(Err(fail(code::UNKNOWN_CONTAINER, msg, "")))];
                }
                // A pod kubelet started, without labels from the runtime: its record (labels,
                // ports, segment) comes from romana-k8s, and ADD waits for it, so the pod is
                // under the policies its labels select before ADD answers.
                if let (Some(pod), false) = (&self.req.pod, self.req.runtime_labels) {
                    return vec![CniAction::LookUpPod { pod: pod.clone(), after: Duration::ZERO }];
                }
                self.allocate()
            }
            CniEvent::PodLooked { record, waited } => {
                let Some(pod) = &self.req.pod else { return vec![] };
                let decided = pod_wait::next(pod, lookup(record), self.attempt, waited, self.host.pod_wait);
                self.attempt += 1;
                match decided {
                    Next::Ready(record) => {
                        if !record.segment.is_empty() {
                            self.req.segment = record.segment;
                        }
                        self.allocate()
                    }
                    Next::Retry { after, .. } => vec![CniAction::LookUpPod { pod: pod.clone(), after }],
                    Next::GiveUp { code, msg } => vec![CniAction::Answer(Err(fail(code, msg, "")))],
                }
            }
            CniEvent::Allocated(Err(r)) => vec![CniAction::Answer(Err(r.answer("allocating an address")))],
            CniEvent::Allocated(Ok(addrs)) => {
                let ips: Vec<&str> = addrs.iter().map(|a| a.ip.as_str()).collect();
                let spec =
                    endpoint_spec(&self.host.name, &self.host.gateways, &self.req, &ips).and_then(|s| {
                        // Each address's name is the endpoint's or its `#v6` (the records' names).
                        match addrs.iter().find(|a| stack_base(&a.name) != self.name) {
                            Some(a) => Err(fail(
                                code::OTHER,
                                "romanad answered an address of another endpoint",
                                format!("{} is {}, not {}", a.ip, a.name, self.name),
                            )),
                            None => Ok(s),
                        }
                    });
                // Whatever was answered is released on a failure, even a wrong answer.
                self.addresses = addrs;
                match spec {
                    Err(e) => self.rollback(e),
                    Ok(spec) => {
                        self.spec = Some(spec.clone());
                        if self.host.policy {
                            vec![CniAction::ReadEndpoint(self.name.clone())]
                        } else {
                            vec![CniAction::Plumb(spec)]
                        }
                    }
                }
            }
            CniEvent::EndpointRead(known) => {
                let Some(spec) = &self.spec else { return vec![] };
                let mut infos: Vec<EndpointInfo> = spec
                    .addresses
                    .iter()
                    .zip(&self.addresses)
                    .map(|(pa, a)| self.info(&a.name, pa.ip))
                    .collect();
                // A repeated ADD (a runtime retrying) keeps what a controller set since the
                // first one: the runtime's labels and no named ports are only the
                // registration's starting point. The first record speaks for all.
                match known {
                    Ok(k)
                        if infos
                            .first()
                            .is_some_and(|i| k.ip == i.ip && k.host == i.host && k.tenant == i.tenant) =>
                    {
                        for i in &mut infos {
                            i.labels.clone_from(&k.labels);
                            i.ports.clone_from(&k.ports);
                        }
                    }
                    Ok(_) => {}
                    Err(r) if r.not_found() => {}
                    Err(r) => return self.rollback(r.answer("reading the endpoint's record")),
                }
                vec![CniAction::Register(infos)]
            }
            CniEvent::Registered(results) => {
                // Every record written is noted before a refusal rolls them back (a dual-stack
                // endpoint's two are written at once: the second may stand after the first
                // was refused).
                let mut infos = Vec::with_capacity(results.len());
                let mut refused = None;
                for r in results {
                    match r {
                        Ok(info) => {
                            self.registered.push(info.name.clone());
                            infos.push(info);
                        }
                        Err(r) => refused = refused.or(Some(r)),
                    }
                }
                if let Some(r) = refused {
                    return self.rollback(r.answer("registering the endpoint"));
                }
                if infos.len() != self.addresses.len() {
                    let msg = format!("{} of {} records registered", infos.len(), self.addresses.len());
                    return self.rollback(fail(code::OTHER, "registering the endpoint", msg));
                }
                vec![CniAction::Enforce(infos)]
            }
            CniEvent::Enforced(Ok(())) => self.spec.clone().map(CniAction::Plumb).into_iter().collect(),
            CniEvent::Enforced(Err(f)) => {
                let (msg, d) = match f {
                    EnforceFailure::NotLoaded(d) => ("policies are not loaded yet", d),
                    EnforceFailure::NotEnforced(d) => ("the endpoint's policies could not be enforced", d),
                };
                self.rollback(fail(code::TRY_AGAIN_LATER, msg, d))
            }
            CniEvent::Plumbed(Ok(a)) => {
                let Some(spec) = &self.spec else { return vec![] };
                let ips: Vec<AttachedIp> = spec
                    .addresses
                    .iter()
                    .zip(&self.addresses)
                    .map(|(pa, a)| AttachedIp {
                        ip: pa.ip.to_string(),
                        prefix_len: a.prefix_len,
                        gateway: pa.gateway.to_string(),
                    })
                    .collect();
                let Some(first) = ips.first().cloned() else { return vec![] };
                vec![CniAction::Answer(Ok(Answer::Added(Box::new(Attached {
                    host_link: a.host_link,
                    host_mac: a.host_mac,
                    ifname: a.ifname,
                    pod_mac: a.pod_mac,
                    netns: self.req.netns.clone(),
                    ip: first.ip,
                    prefix_len: first.prefix_len,
                    gateway: first.gateway,
                    address_name: self.name.clone(),
                    ips,
                }))))]
            }
            // Nothing half-made stays: the endpoint and its address go (attach removed its
            // links).
            CniEvent::Plumbed(Err(f)) => self.rollback(fail(f.code, "plumbing the endpoint", f.text)),
            CniEvent::Unplumbed(_) | CniEvent::Unregistered(_) | CniEvent::Released(_) => vec![],
        }
    }
}

/// One CNI DEL: idempotent (runtimes send it twice, and for what never was).
#[derive(Debug)]
pub struct Del {
    req: DetachRequest,
    policy: bool,
    name: String,
}

impl Del {
    pub fn new(req: DetachRequest, policy: bool) -> Del {
        let name = address_name(&req.network, &req.container_id, &req.ifname);
        Del { req, policy, name }
    }

    pub fn step(&mut self, ev: CniEvent) -> Vec<CniAction> {
        match ev {
            CniEvent::Start { .. } => match cni_name("container id", &self.req.container_id) {
                Err(e) => vec![CniAction::Answer(Err(e))],
                Ok(()) => vec![CniAction::Unplumb(host_link_name(&self.req.container_id, &self.req.ifname))],
            },
            CniEvent::Unplumbed(Err(f)) => {
                vec![CniAction::Answer(Err(fail(f.code, "removing the endpoint", f.text)))]
            }
            CniEvent::Unplumbed(Ok(_)) if self.policy => {
                vec![CniAction::Unregister(vec![self.name.clone(), v6_address_name(&self.name)])]
            }
            CniEvent::Unplumbed(Ok(_)) => vec![CniAction::Release(self.name.clone())],
            // The record must be gone before DEL succeeds (romanad down or refusing: the runtime
            // tries DEL again); the address goes after it, as on every path.
            CniEvent::Unregistered(Ok(())) => vec![CniAction::Release(self.name.clone())],
            CniEvent::Unregistered(Err(r)) if r.not_found() => vec![CniAction::Release(self.name.clone())],
            CniEvent::Unregistered(Err(r)) => {
                vec![CniAction::Answer(Err(r.answer("deleting the endpoint record")))]
            }
            // DEL of something already gone is success.
            CniEvent::Released(Ok(())) => vec![CniAction::Answer(Ok(Answer::Deleted))],
            CniEvent::Released(Err(r)) if r.not_found() => vec![CniAction::Answer(Ok(Answer::Deleted))],
            CniEvent::Released(Err(r)) => vec![CniAction::Answer(Err(r.answer("releasing the address")))],
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests;
