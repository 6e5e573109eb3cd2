//! CNI output: the ADD result in the caller's version, VERSION's answer, and error documents.

use romana_api::agent::Attached;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{SUPPORTED_VERSIONS, version_key};

/// A CNI error document (`{"cniVersion","code","msg","details"}`, exit status 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn render(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

/// What the runtime gets when romana-cni itself failed (a panic): code 999 with the panic's
/// message, so a runtime always reads a CNI error instead of an empty stdout.
pub fn panic_error(payload: &(dyn std::any::Any + Send)) -> CniError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    CniError {
        code: romana_api::agent::code::OTHER,
        msg: "romana-cni failed internally (a bug: please report it)".into(),
        details: what,
    }
}

/// The ADD (and 1.x DEL/CHECK-less) result. From 0.3.0 to 0.4.0 each IP carries `version`;
/// 1.0.0 dropped it. Interface 0 is the host end, 1 the pod's. A dual-stack pod has two `ips`
/// (IPv4 first, so a runtime that reads only the first sees the address it always saw) and a
/// default route of each family.
pub fn render_result(version: &str, a: &Attached) -> Value {
    let addresses = a.addresses();
    let ips: Vec<Value> = addresses
        .iter()
        .map(|x| {
            let mut ip = json!({
                "address": format!("{}/{}", x.ip, x.prefix_len),
                "gateway": x.gateway,
                "interface": 1,
            });
            if version_key(version) < version_key("1.0.0") {
                ip["version"] = json!(if x.ip.contains(':') { "6" } else { "4" });
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = addresses
        .iter()
        .map(|x| json!({"dst": if x.ip.contains(':') { "::/0" } else { "0.0.0.0/0" }, "gw": x.gateway}))
        .collect();
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": a.host_link, "mac": a.host_mac},
            {"name": a.ifname, "mac": a.pod_mac, "sandbox": a.netns},
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

/// VERSION's answer.
pub fn version_answer(version: &str) -> Value {
    json!({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS})
}
