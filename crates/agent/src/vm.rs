//! OpenStack's calls to the agent (networking-romana, `romana-spec.md` §7.3): `POST /vm` when a
//! port binds, `DELETE /vm/<mac>` (or the 2016 driver's `DELETE /vm` with `{"mac_address"}`) when
//! it goes. Served on `--listen` over TCP without tokens, as the driver sends none: bind it to the
//! management network only. What was attached is kept in a state file so a delete after a restart
//! still finds the VM's address.

use std::collections::BTreeMap;
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
}

#[derive(Debug, Deserialize)]
struct DeleteBody {
    #[serde(alias = "mac")]
    mac_address: String,
}

#[derive(Debug)]
pub struct Vms {
    pub host_ns: Option<PathBuf>,
    pub state_file: PathBuf,
    /// How long POST waits for nova to create the tap.
    pub wait: Duration,
    pub by_mac: Mutex<BTreeMap<String, VmEndpoint>>,
}

impl Vms {
    pub fn load(host_ns: Option<PathBuf>, state_file: PathBuf, wait: Duration) -> Vms {
        let by_mac =
            std::fs::read(&state_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Vms { host_ns, state_file, wait, by_mac: Mutex::new(by_mac) }
    }

    fn save(&self, m: &BTreeMap<String, VmEndpoint>) -> std::io::Result<()> {
        if let Some(d) = self.state_file.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = self.state_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(m).expect("serializes"))?;
        std::fs::rename(tmp, &self.state_file)
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
        VmError::NoInterface(..) => StatusCode::NOT_FOUND,
        VmError::IfName(_) => StatusCode::BAD_REQUEST,
        VmError::ForeignRoute { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Fail(status, e.to_string())
}

async fn add(State(v): State<Arc<Vms>>, Json(mut ep): Json<VmEndpoint>) -> Result<Json<VmEndpoint>, Fail> {
    ep.mac = mac(&ep.mac)?;
    let ip: IpAddr = ep
        .ip
        .parse()
        .map_err(|_| Fail(StatusCode::BAD_REQUEST, format!("ip: {:?} is not an IP address", ep.ip)))?;
    let (ns, tap, wait) = (v.host_ns.clone(), ep.interface.clone(), v.wait);
    tokio::task::spawn_blocking(move || romana_host::attach_vm(ns.as_deref(), &tap, ip, wait))
        .await
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(vm_error)?;
    let mut m = v.by_mac.lock().unwrap_or_else(|e| e.into_inner());
    m.insert(ep.mac.clone(), ep.clone());
    v.save(&m).map_err(|e| {
        Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("saving {}: {e}", v.state_file.display()))
    })?;
    tracing::info!(interface = %ep.interface, mac = %ep.mac, %ip, "VM endpoint attached");
    Ok(Json(ep))
}

async fn remove(v: &Arc<Vms>, raw_mac: &str) -> Result<Json<VmEndpoint>, Fail> {
    let key = mac(raw_mac)?;
    let ep =
        v.by_mac.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned().ok_or_else(|| {
            Fail(StatusCode::NOT_FOUND, format!("no VM endpoint with MAC {key} on this host"))
        })?;
    let ip: IpAddr = ep
        .ip
        .parse()
        .map_err(|_| Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("bad stored ip {}", ep.ip)))?;
    let ns = v.host_ns.clone();
    tokio::task::spawn_blocking(move || romana_host::detach_vm(ns.as_deref(), ip))
        .await
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(vm_error)?;
    let mut m = v.by_mac.lock().unwrap_or_else(|e| e.into_inner());
    m.remove(&key);
    v.save(&m).map_err(|e| {
        Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("saving {}: {e}", v.state_file.display()))
    })?;
    tracing::info!(interface = %ep.interface, mac = %key, "VM endpoint detached");
    Ok(Json(ep))
}

async fn remove_path(State(v): State<Arc<Vms>>, Path(m): Path<String>) -> Result<Json<VmEndpoint>, Fail> {
    remove(&v, &m).await
}

async fn remove_body(State(v): State<Arc<Vms>>, Json(b): Json<DeleteBody>) -> Result<Json<VmEndpoint>, Fail> {
    remove(&v, &b.mac_address).await
}

async fn list(State(v): State<Arc<Vms>>) -> Json<Vec<VmEndpoint>> {
    Json(v.by_mac.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect())
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
}
