//! OpenStack's calls to the agent (networking-romana, `romana-spec.md` §7.3): `POST /vm` when a
//! port binds, `DELETE /vm/<mac>` (or the 2016 driver's `DELETE /vm` with `{"mac_address"}`) when
//! it goes. Served on `--listen` over TCP without tokens, as the driver sends none: bind it to the
//! management network only. What was attached is kept in a state file so a delete after a restart
//! still finds the VM's address.
//!
//! `POST /vm` records the VM and answers at once, as Romana 1.x's agent did: nova binds the port
//! (the driver's call) while it allocates networking and creates the tap only later, when it starts
//! the VM, so waiting for the tap would stall the port update. A plumbing task (`plumb`) routes each
//! recorded VM whose tap exists, woken by every POST and otherwise every `poll`, and re-checks the
//! plumbed ones every `REPAIR_EVERY` passes (a tap recreated by a VM restart loses our route).
//! A plumbed VM whose address romanad's IPAM holds is registered as an endpoint (name, tenant,
//! segment and host of that address, as a pod's), so tenant isolation and policies select it;
//! a record the mechanism driver registered first (with the port's security-group labels) is
//! kept as it is; the record goes with `DELETE /vm`.
//!
//! A dual-stack port (one fixed IP of each family) sends every address in `ips` (`ip` is the
//! first, for callers that know one): each is routed through the tap and registered under the
//! IPAM's name for it (the port id, and `<port id>#v6` for the IPv6 one).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use romana_host::VmError;
use serde::{Deserialize, Serialize};

/// One VM endpoint; field names of both driver generations are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEndpoint {
    #[serde(alias = "interface_name")]
    pub interface: String,
    #[serde(alias = "mac_address")]
    pub mac: String,
    #[serde(alias = "ip_address")]
    pub ip: String,
    /// Every address of the VM, one per family at most (`ip` among them); the drivers of
    /// 2016 and 2017 send `ip` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

impl VmEndpoint {
    /// `ip`, then the other addresses of `ips`, each once.
    pub fn addresses(&self) -> Vec<String> {
        let mut out = vec![self.ip.clone()];
        for ip in &self.ips {
            if !out.contains(ip) {
                out.push(ip.clone());
            }
        }
        out
    }
}

#[derive(Debug, Deserialize)]
struct DeleteBody {
    #[serde(alias = "mac")]
    mac_address: String,
}

/// Every how many passes the plumbing task re-attaches VMs it already plumbed.
const REPAIR_EVERY: u64 = 20;

#[derive(Debug)]
pub struct Vms {
    pub host_ns: Option<PathBuf>,
    pub state_file: PathBuf,
    /// How often the plumbing task looks for the taps of VMs not yet plumbed.
    pub poll: Duration,
    pub by_mac: Mutex<BTreeMap<String, VmEndpoint>>,
    /// MACs whose route is in place (as of the last pass that touched them).
    plumbed: Mutex<BTreeSet<String>>,
    /// Held while a VM is plumbed or unplumbed, so a delete never races a pass's attach.
    kernel: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    /// romanad, for the endpoint registry (absent: VMs are routed but not registered).
    registry: Option<Arc<crate::ctx::Ctx>>,
    /// MAC -> address -> the endpoint name registered for it (empty: routed, not registered).
    registered: Mutex<BTreeMap<String, BTreeMap<IpAddr, String>>>,
}

/// What a plumbing pass attaches: every recorded VM not plumbed or not registered yet, or all of
/// them on a repair pass. Pure: the records and the two sets in, the work out.
pub fn due(
    records: &BTreeMap<String, VmEndpoint>,
    plumbed: &BTreeSet<String>,
    registered: &BTreeSet<String>,
    repair: bool,
) -> Vec<VmEndpoint> {
    records
        .iter()
        .filter(|(m, _)| repair || !plumbed.contains(*m) || !registered.contains(*m))
        .map(|(_, e)| e.clone())
        .collect()
}

/// Whether endpoint record `e` is the one of address `a` (same name, address, tenant, segment
/// and host): then it stays as registered, labels included.
pub fn same_address(e: &romana_api::rest::EndpointInfo, a: &romana_api::rest::Address) -> bool {
    (e.name.as_str(), e.ip.as_str(), e.tenant.as_str(), e.segment.as_str(), e.host.as_str())
        == (a.name.as_str(), a.ip.as_str(), a.tenant.as_str(), a.segment.as_str(), a.host.as_str())
}

impl Vms {
    pub fn load(host_ns: Option<PathBuf>, state_file: PathBuf, poll: Duration) -> Vms {
        let by_mac =
            std::fs::read(&state_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Vms {
            host_ns,
            state_file,
            poll,
            by_mac: Mutex::new(by_mac),
            plumbed: Mutex::new(BTreeSet::new()),
            kernel: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            registry: None,
            registered: Mutex::new(BTreeMap::new()),
        }
    }

    /// Registers plumbed VMs as endpoints through this agent's romanad client.
    pub fn with_registry(mut self, ctx: Arc<crate::ctx::Ctx>) -> Vms {
        self.registry = Some(ctx);
        self
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<IpAddr, String>>> {
        self.registered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint record of a plumbed VM: its address's name, tenant and segment from the IPAM.
    /// An address the IPAM does not hold (a VM addressed outside Romana) is routed only.
    async fn register(&self, ep: &VmEndpoint, ip: IpAddr) {
        let Some(ctx) = &self.registry else { return };
        if self.registered().get(&ep.mac).is_some_and(|m| m.contains_key(&ip)) {
            return;
        }
        let done = |name: String| {
            self.registered().entry(ep.mac.clone()).or_default().insert(ip, name);
        };
        let client = ctx.client();
        let a = match client.address(&ip.to_string()).await {
            Ok(a) => a,
            Err(e) if e.status() == Some(404) => {
                tracing::info!(mac = %ep.mac, %ip, "VM address is not in romanad's IPAM; routed, not registered");
                done(String::new());
                return;
            }
            Err(e) => {
                tracing::warn!(mac = %ep.mac, %ip, error = %e, "looking up a VM's address failed; retrying");
                return;
            }
        };
        // A pod's address (CNI names it) is never registered as a VM: the unauthenticated caller
        // would otherwise relabel a pod's endpoint record.
        if a.name.starts_with("cni:") {
            tracing::warn!(mac = %ep.mac, %ip, name = %a.name, "a VM claims a pod's address; not registered");
            done(String::new());
            return;
        }
        // `#`: a dual-stack port's IPv6 name (`<port id>#v6`); the client escapes it in paths.
        if !a.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-:#".contains(c)) {
            tracing::warn!(name = %a.name, "VM address name cannot be an endpoint path; not registered");
            return;
        }
        // The mechanism driver registers the port's endpoint before it binds, with its security
        // groups' labels: that record is kept as it is (writing ours would drop the labels).
        match client.endpoint(&a.name).await {
            Ok(e) if same_address(&e, &a) => {
                tracing::info!(mac = %ep.mac, endpoint = %a.name, "VM endpoint already registered; kept as it is");
                done(a.name);
                return;
            }
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(e) => {
                tracing::warn!(mac = %ep.mac, error = %e, "looking up a VM's endpoint failed; retrying");
                return;
            }
        }
        let body = serde_json::json!({
            "name": a.name, "ip": a.ip, "tenant": a.tenant, "segment": a.segment, "host": a.host,
            "labels": {"romana.io/kind": "vm"},
        });
        // Built from JSON, so fields the record gains keep their defaults.
        let record: romana_api::rest::EndpointInfo = match serde_json::from_value(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(mac = %ep.mac, error = %e, "a VM's endpoint record does not build");
                return;
            }
        };
        match client.put_endpoint(&record).await {
            Ok(_) => {
                tracing::info!(mac = %ep.mac, endpoint = %a.name, tenant = %a.tenant, "VM endpoint registered");
                done(a.name);
            }
            Err(e) => tracing::warn!(mac = %ep.mac, error = %e, "registering a VM endpoint failed; retrying"),
        }
    }

    fn save(&self, m: &BTreeMap<String, VmEndpoint>) -> std::io::Result<()> {
        if let Some(d) = self.state_file.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = self.state_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(m).expect("serializes"))?;
        std::fs::rename(tmp, &self.state_file)
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VmEndpoint>> {
        self.by_mac.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn plumbed(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.plumbed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches one recorded VM if its tap exists. True when its route is in place.
    async fn attach(&self, ep: &VmEndpoint) -> bool {
        let _k = self.kernel.lock().await;
        // Deleted since the pass began: nothing to do.
        if !self.records().contains_key(&ep.mac) {
            return false;
        }
        let Ok(ips) = ep.addresses().iter().map(|ip| ip.parse::<IpAddr>()).collect::<Result<Vec<_>, _>>()
        else {
            tracing::warn!(mac = %ep.mac, ips = ?ep.addresses(), "recorded VM has an invalid address; skipped");
            return false;
        };
        let (ns, tap, all) = (self.host_ns.clone(), ep.interface.clone(), ips.clone());
        let r = tokio::task::spawn_blocking(move || {
            all.iter().try_for_each(|ip| romana_host::attach_vm(ns.as_deref(), &tap, *ip, Duration::ZERO))
        })
        .await;
        match r {
            Ok(Ok(())) => {
                if self.plumbed().insert(ep.mac.clone()) {
                    tracing::info!(interface = %ep.interface, mac = %ep.mac, ?ips, "VM endpoint plumbed");
                }
                for ip in ips {
                    self.register(ep, ip).await;
                }
                true
            }
            Ok(Err(VmError::NoInterface(..))) => {
                // Not created yet (or gone with its VM): routed when it appears.
                self.plumbed().remove(&ep.mac);
                false
            }
            Ok(Err(e)) => {
                self.plumbed().remove(&ep.mac);
                tracing::warn!(interface = %ep.interface, mac = %ep.mac, error = %e, "plumbing a VM failed; retrying");
                false
            }
            Err(e) => {
                tracing::warn!(mac = %ep.mac, error = %e, "plumbing task failed");
                false
            }
        }
    }
}

/// The plumbing task: routes recorded VMs as their taps appear (see the file's comment).
pub async fn plumb(v: Arc<Vms>) {
    let mut pass: u64 = 0;
    loop {
        let registered: BTreeSet<String> = if v.registry.is_some() {
            let names = v.registered();
            v.records()
                .values()
                .filter(|e| {
                    names.get(&e.mac).is_some_and(|m| {
                        e.addresses().iter().all(|ip| ip.parse().is_ok_and(|ip: IpAddr| m.contains_key(&ip)))
                    })
                })
                .map(|e| e.mac.clone())
                .collect()
        } else {
            v.records().keys().cloned().collect()
        };
        let work = due(&v.records(), &v.plumbed(), &registered, pass.is_multiple_of(REPAIR_EVERY));
        for ep in work {
            v.attach(&ep).await;
        }
        pass += 1;
        let _ = tokio::time::timeout(v.poll, v.wake.notified()).await;
    }
}

#[derive(Debug)]
struct Fail(StatusCode, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error": self.1}))).into_response()
    }
}

/// `aa:bb:cc:dd:ee:ff` in either case, normalised to lower case.
fn mac(s: &str) -> Result<String, Fail> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(Fail(StatusCode::BAD_REQUEST, format!("mac: {s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")))
    }
}

fn vm_error(e: VmError) -> Fail {
    let status = match e {
        VmError::IfName(_) => StatusCode::BAD_REQUEST,
        VmError::ForeignRoute { .. } | VmError::EndpointRoute { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Fail(status, e.to_string())
}

/// Records the VM and answers at once; the plumbing task routes it when its tap exists.
async fn add(State(v): State<Arc<Vms>>, Json(mut ep): Json<VmEndpoint>) -> Result<Json<VmEndpoint>, Fail> {
    ep.mac = mac(&ep.mac)?;
    let ip: IpAddr = ep
        .ip
        .parse()
        .map_err(|_| Fail(StatusCode::BAD_REQUEST, format!("ip: {:?} is not an IP address", ep.ip)))?;
    let mut ips = Vec::new();
    for a in ep.addresses() {
        let parsed: IpAddr = a
            .parse()
            .map_err(|_| Fail(StatusCode::BAD_REQUEST, format!("ips: {a:?} is not an IP address")))?;
        if ips.iter().any(|o: &IpAddr| o.is_ipv4() == parsed.is_ipv4() && *o != parsed) {
            return Err(Fail(
                StatusCode::BAD_REQUEST,
                format!(
                    "ips: {:?} holds two addresses of one family; a VM takes one of each",
                    ep.addresses()
                ),
            ));
        }
        ips.push(parsed);
    }
    if !valid_ifname(&ep.interface) {
        return Err(Fail(
            StatusCode::BAD_REQUEST,
            format!(
                "interface: {:?} is not an interface name (1 to 15 characters, no '/' or whitespace)",
                ep.interface
            ),
        ));
    }
    // The caller is not authenticated (the drivers send no token): only a VM's tap, as nova names
    // them, may be routed, never the uplink or one of our endpoint links.
    if !ep.interface.starts_with(VM_TAP_PREFIX) {
        return Err(Fail(
            StatusCode::BAD_REQUEST,
            format!(
                "interface: {:?} is not a VM tap (nova names them {VM_TAP_PREFIX}<port id>)",
                ep.interface
            ),
        ));
    }
    {
        let mut m = v.records();
        // A changed record (same MAC, another tap or address) is plumbed afresh.
        if m.get(&ep.mac) != Some(&ep) {
            v.plumbed().remove(&ep.mac);
        }
        m.insert(ep.mac.clone(), ep.clone());
        v.save(&m).map_err(|e| {
            Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("saving {}: {e}", v.state_file.display()))
        })?;
    }
    v.wake.notify_one();
    tracing::info!(interface = %ep.interface, mac = %ep.mac, %ip, ?ips, "VM endpoint recorded");
    Ok(Json(ep))
}

/// The prefix of the tap interfaces nova creates for `vif_type` tap ports.
const VM_TAP_PREFIX: &str = "tap";

/// What the kernel's interface names allow (as `romana_host` checks them).
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c.is_whitespace())
}

/// Forgets the VM and removes our route, whether or not its tap ever appeared.
async fn remove(v: &Arc<Vms>, raw_mac: &str) -> Result<Json<VmEndpoint>, Fail> {
    let key = mac(raw_mac)?;
    let _k = v.kernel.lock().await;
    let ep =
        v.records().get(&key).cloned().ok_or_else(|| {
            Fail(StatusCode::NOT_FOUND, format!("no VM endpoint with MAC {key} on this host"))
        })?;
    for ip in ep.addresses().iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
        let (ns, tap) = (v.host_ns.clone(), ep.interface.clone());
        tokio::task::spawn_blocking(move || romana_host::detach_vm(ns.as_deref(), &tap, ip))
            .await
            .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(vm_error)?;
    }
    let names = v.registered().remove(&key).unwrap_or_default();
    for name in names.into_values().filter(|n| !n.is_empty()) {
        let Some(ctx) = &v.registry else { break };
        // Already gone (404) counts as deleted; a failure is logged: the record names an address
        // that is released with the port, and `romana` can remove it.
        if let Err(e) = ctx.client().delete_endpoint(&name).await {
            tracing::warn!(endpoint = %name, error = %e, "could not delete a VM's endpoint record");
        }
    }
    let mut m = v.records();
    m.remove(&key);
    v.plumbed().remove(&key);
    v.save(&m).map_err(|e| {
        Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("saving {}: {e}", v.state_file.display()))
    })?;
    tracing::info!(interface = %ep.interface, mac = %key, "VM endpoint removed");
    Ok(Json(ep))
}

async fn remove_path(State(v): State<Arc<Vms>>, Path(m): Path<String>) -> Result<Json<VmEndpoint>, Fail> {
    remove(&v, &m).await
}

async fn remove_body(State(v): State<Arc<Vms>>, Json(b): Json<DeleteBody>) -> Result<Json<VmEndpoint>, Fail> {
    remove(&v, &b.mac_address).await
}

/// A recorded VM and whether its route is in place.
#[derive(Debug, Serialize)]
struct VmStatus {
    #[serde(flatten)]
    endpoint: VmEndpoint,
    plumbed: bool,
}

async fn list(State(v): State<Arc<Vms>>) -> Json<Vec<VmStatus>> {
    let plumbed = v.plumbed().clone();
    Json(
        v.records()
            .values()
            .map(|e| VmStatus { plumbed: plumbed.contains(&e.mac), endpoint: e.clone() })
            .collect(),
    )
}

pub fn router(v: Arc<Vms>) -> Router {
    Router::new()
        .route("/vm", post(add).delete(remove_body).get(list))
        .route("/vm/{mac}", delete(remove_path))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_driver_generations_parse() {
        let a: VmEndpoint =
            serde_json::from_str(r#"{"interface":"tap1234","mac":"FA:16:3E:00:00:01","ip":"10.1.0.5"}"#)
                .expect("2017");
        let b: VmEndpoint = serde_json::from_str(
            r#"{"interface_name":"tap1234","mac_address":"FA:16:3E:00:00:01","ip_address":"10.1.0.5"}"#,
        )
        .expect("2016");
        assert_eq!(a, b);
        assert_eq!(mac(&a.mac).expect("valid"), "fa:16:3e:00:00:01");
        assert!(mac("fa:16:3e:00:00").is_err());
        assert!(mac("zz:16:3e:00:00:01").is_err());
    }

    #[test]
    fn a_dual_stack_port_sends_every_address_once() {
        let a: VmEndpoint = serde_json::from_str(
            r#"{"interface":"tap1","mac":"fa:16:3e:00:00:01","ip":"10.1.0.5","ips":["10.1.0.5","fd00::5"]}"#,
        )
        .expect("dual");
        assert_eq!(a.addresses(), ["10.1.0.5", "fd00::5"]);
        let b: VmEndpoint =
            serde_json::from_str(r#"{"interface":"tap1","mac":"fa:16:3e:00:00:01","ip":"fd00::5"}"#)
                .expect("v6");
        assert_eq!(b.addresses(), ["fd00::5"]);
        // A single-address record is written as the old drivers' agents wrote it (no `ips`).
        assert!(!serde_json::to_string(&b).expect("json").contains("ips"));
    }

    #[test]
    fn a_record_of_the_same_address_is_kept() {
        let a: romana_api::rest::Address = serde_json::from_value(serde_json::json!({
            "name": "port1", "ip": "10.1.0.5", "prefix_len": 32, "network": "vms", "block": "10.1.0.0/28",
            "host": "hv1", "tenant": "p1", "segment": "n1"
        }))
        .expect("address");
        let rec = |name: &str, ip: &str, tenant: &str, segment: &str, host: &str| {
            serde_json::from_value::<romana_api::rest::EndpointInfo>(serde_json::json!({
                "name": name, "ip": ip, "tenant": tenant, "segment": segment, "host": host,
                "labels": {"sg.romana.io/g1": "member"}
            }))
            .expect("record")
        };
        for (e, keep) in [
            (rec("port1", "10.1.0.5", "p1", "n1", "hv1"), true),
            (rec("port1", "10.1.0.6", "p1", "n1", "hv1"), false),
            (rec("port1", "10.1.0.5", "p2", "n1", "hv1"), false),
            (rec("port1", "10.1.0.5", "p1", "n2", "hv1"), false),
            (rec("port1", "10.1.0.5", "p1", "n1", "hv2"), false),
            (rec("port2", "10.1.0.5", "p1", "n1", "hv1"), false),
        ] {
            assert_eq!(same_address(&e, &a), keep, "{e:?}");
        }
    }

    fn ep(m: &str) -> VmEndpoint {
        VmEndpoint {
            interface: format!("tap{}", &m[15..]),
            mac: m.into(),
            ip: "10.1.0.5".into(),
            ips: vec![],
        }
    }

    /// (recorded MACs, plumbed MACs, registered MACs, repair pass) -> the MACs a pass attaches.
    fn check(records: &[&str], plumbed: &[&str], registered: &[&str], repair: bool, expect: &[&str]) {
        let r: BTreeMap<String, VmEndpoint> = records.iter().map(|m| (m.to_string(), ep(m))).collect();
        let p: BTreeSet<String> = plumbed.iter().map(|m| m.to_string()).collect();
        let g: BTreeSet<String> = registered.iter().map(|m| m.to_string()).collect();
        let got: Vec<String> = due(&r, &p, &g, repair).into_iter().map(|e| e.mac).collect();
        assert_eq!(
            got, expect,
            "records {records:?} plumbed {plumbed:?} registered {registered:?} repair {repair}"
        );
    }

    #[test]
    fn a_pass_attaches_what_is_not_plumbed_and_everything_on_repair() {
        let (a, b) = ("fa:16:3e:00:00:01", "fa:16:3e:00:00:02");
        check(&[], &[], &[], true, &[]);
        check(&[a, b], &[], &[], false, &[a, b]);
        check(&[a, b], &[a], &[a], false, &[b]);
        check(&[a, b], &[a, b], &[a, b], false, &[]);
        check(&[a, b], &[a, b], &[a, b], true, &[a, b]);
        // Plumbed but not registered yet (romanad was away): retried.
        check(&[a, b], &[a, b], &[b], false, &[a]);
        // A plumbed MAC no longer recorded (deleted meanwhile) is not attached.
        check(&[b], &[a], &[a], false, &[b]);
    }
}
