//! Parses a CNI invocation: `CNI_*` environment variables and the network configuration on stdin,
//! with every problem reported as the CNI error the spec assigns to it.

use std::collections::BTreeMap;
use std::ffi::OsString;

use romana_api::agent::{PodRef, code};
use serde::Deserialize;

use crate::result::CniError;
use crate::{DEFAULT_SOCKET, SEGMENT_ANNOTATION, SUPPORTED_VERSIONS, version_key};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

/// The network configuration fields romana-cni reads (others are ignored, as the spec asks).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The agent's socket.
    #[serde(default)]
    pub agent_socket: Option<String>,
    /// Tenant and segment for runtimes that give no Kubernetes arguments.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `tenant` wins over the pod's namespace (every pod of this network in one tenant).
    #[serde(default)]
    pub force_tenant: bool,
    #[serde(default)]
    pub segment: Option<String>,
    /// The pod annotation naming the segment (default `romana.io/segment`).
    #[serde(default)]
    pub segment_annotation: Option<String>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<serde_json::Value>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Everything one call of the plugin needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub command: Command,
    /// The version to answer in (the config's, or the newest for a bare VERSION).
    pub version: String,
    pub conf: NetConf,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub tenant: String,
    pub segment: String,
    /// The endpoint's labels for policy selection (`ROMANA_LABELS=k=v,k2=v2` in CNI_ARGS).
    pub labels: BTreeMap<String, String>,
    /// `ROMANA_LABELS` was given (even empty): the runtime names the labels, no pod record is
    /// waited for.
    pub runtime_labels: bool,
    /// The Kubernetes pod (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`), when both names
    /// are given.
    pub pod: Option<PodRef>,
    pub socket: String,
}

fn fail(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError { code, msg: msg.into(), details: details.into() }
}

/// `CNI_ARGS`: `K=V;K=V`. Unknown keys are an error unless `IgnoreUnknown=1|true`.
fn cni_args(raw: &str) -> Result<BTreeMap<String, String>, CniError> {
    const KNOWN: [&str; 8] = [
        "IgnoreUnknown",
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
        "ROMANA_TENANT",
        "ROMANA_SEGMENT",
        "ROMANA_LABELS",
    ];
    let mut out = BTreeMap::new();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            fail(code::INVALID_ENV, "invalid CNI_ARGS", format!("{pair:?} is not KEY=VALUE"))
        })?;
        out.insert(k.to_owned(), v.to_owned());
    }
    let ignore = out.get("IgnoreUnknown").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !ignore && let Some(k) = out.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(fail(
            code::INVALID_ENV,
            "invalid CNI_ARGS",
            format!("unknown argument {k:?} (set IgnoreUnknown=1 to allow)"),
        ));
    }
    Ok(out)
}

/// The `CNI_*` variables romana-cni reads. Others (`CNI_PATH` included: we delegate to no other
/// plugin) are never looked at, so a stray non-UTF-8 variable cannot fail the call.
pub const CNI_VARS: [&str; 5] = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"];

/// Reads the variables of `CNI_VARS` through `get` (`std::env::var_os` in the binary); a value
/// that is not UTF-8 is the spec's "invalid environment variables" (code 4) naming the variable.
pub fn read_env(get: impl Fn(&str) -> Option<OsString>) -> Result<BTreeMap<String, String>, CniError> {
    let mut env = BTreeMap::new();
    for name in CNI_VARS {
        let Some(raw) = get(name) else { continue };
        match raw.into_string() {
            Ok(v) => {
                env.insert(name.to_owned(), v);
            }
            Err(raw) => {
                return Err(fail(
                    code::INVALID_ENV,
                    format!("{name} is not valid UTF-8"),
                    format!("{name}={:?}", raw.to_string_lossy()),
                ));
            }
        }
    }
    Ok(env)
}

/// Reads the invocation from `env` (name -> value) and `stdin`.
pub fn parse(env: &BTreeMap<String, String>, stdin: &[u8]) -> Result<Invocation, CniError> {
    let var = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
    let command = match var("CNI_COMMAND") {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "GC" => Command::Gc,
        "STATUS" => Command::Status,
        "VERSION" => Command::Version,
        "" => return Err(fail(code::INVALID_ENV, "CNI_COMMAND is not set", "")),
        other => return Err(fail(code::INVALID_ENV, format!("unknown CNI_COMMAND {other:?}"), "")),
    };
    let conf: NetConf = if stdin.iter().all(u8::is_ascii_whitespace) && command == Command::Version {
        NetConf::default()
    } else {
        serde_json::from_slice(stdin).map_err(|e| {
            fail(code::DECODE_FAILURE, "cannot decode the network configuration", e.to_string())
        })?
    };
    let version = if conf.cni_version.is_empty() {
        if command == Command::Version {
            SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_owned()
        } else {
            return Err(fail(code::DECODE_FAILURE, "the network configuration has no cniVersion", ""));
        }
    } else {
        conf.cni_version.clone()
    };
    let mut inv = Invocation {
        command,
        version: version.clone(),
        socket: conf.agent_socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.to_owned()),
        conf,
        container_id: var("CNI_CONTAINERID").to_owned(),
        netns: var("CNI_NETNS").to_owned(),
        ifname: var("CNI_IFNAME").to_owned(),
        tenant: String::new(),
        segment: String::new(),
        labels: BTreeMap::new(),
        runtime_labels: false,
        pod: None,
    };
    if command == Command::Version {
        return Ok(inv);
    }
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(fail(
            code::INCOMPATIBLE_VERSION,
            format!("CNI version {version} is not supported"),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let at_least = |v: &str| version_key(&version) >= version_key(v);
    match command {
        Command::Check if !at_least("0.4.0") => {
            return Err(fail(
                code::INCOMPATIBLE_VERSION,
                format!("CHECK needs CNI 0.4.0 or later, not {version}"),
                "",
            ));
        }
        Command::Gc | Command::Status if !at_least("1.1.0") => {
            let name = if command == Command::Gc { "GC" } else { "STATUS" };
            return Err(fail(
                code::INCOMPATIBLE_VERSION,
                format!("{name} needs CNI 1.1.0, not {version}"),
                "",
            ));
        }
        _ => {}
    }
    if inv.conf.name.is_empty() {
        return Err(fail(code::INVALID_CONFIG, "the network configuration has no name", ""));
    }
    if matches!(command, Command::Add | Command::Del | Command::Check) {
        for (k, v) in [("CNI_CONTAINERID", &inv.container_id), ("CNI_IFNAME", &inv.ifname)] {
            if v.is_empty() {
                return Err(fail(code::INVALID_ENV, format!("{k} is not set"), ""));
            }
        }
        // DEL may come without a namespace (the runtime already removed it).
        if command != Command::Del && inv.netns.is_empty() {
            return Err(fail(code::INVALID_ENV, "CNI_NETNS is not set", ""));
        }
    }
    let args = cni_args(var("CNI_ARGS"))?;
    // The tenant: the configuration's when it forces it, else the pod's namespace, else
    // ROMANA_TENANT, else the configuration's default.
    let forced = inv.conf.tenant.clone().filter(|_| inv.conf.force_tenant);
    inv.tenant = forced
        .or_else(|| args.get("K8S_POD_NAMESPACE").or_else(|| args.get("ROMANA_TENANT")).cloned())
        .or_else(|| inv.conf.tenant.clone())
        .unwrap_or_default();
    let arg = |k: &str| args.get(k).filter(|v| !v.is_empty()).cloned();
    if let (Some(namespace), Some(name)) = (arg("K8S_POD_NAMESPACE"), arg("K8S_POD_NAME")) {
        inv.pod = Some(PodRef { namespace, name, uid: arg("K8S_POD_UID").unwrap_or_default() });
    }
    inv.runtime_labels = args.contains_key("ROMANA_LABELS");
    let annotation = inv.conf.segment_annotation.clone().unwrap_or_else(|| SEGMENT_ANNOTATION.to_owned());
    let from_annotation = inv
        .conf
        .runtime_config
        .as_ref()
        .and_then(|rc| rc.get("io.kubernetes.cri.pod-annotations"))
        .and_then(|a| a.get(&annotation))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    inv.segment = from_annotation
        .or_else(|| args.get("ROMANA_SEGMENT").cloned())
        .or_else(|| inv.conf.segment.clone())
        .unwrap_or_default();
    if let Some(raw) = args.get("ROMANA_LABELS") {
        for pair in raw.split(',').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    inv.labels.insert(k.to_owned(), v.to_owned());
                }
                _ => {
                    return Err(fail(
                        code::INVALID_ENV,
                        "invalid ROMANA_LABELS",
                        format!("{pair:?} is not key=value (labels are k=v,k2=v2)"),
                    ));
                }
            }
        }
    }
    if command == Command::Add && inv.tenant.is_empty() {
        return Err(fail(
            code::INVALID_CONFIG,
            "no tenant for this container",
            "set \"tenant\" in the network configuration, or run under Kubernetes (K8S_POD_NAMESPACE)",
        ));
    }
    if command == Command::Gc && inv.conf.valid_attachments.is_none() {
        return Err(fail(
            code::INVALID_CONFIG,
            "GC without cni.dev/valid-attachments",
            "the runtime must list what it still has",
        ));
    }
    Ok(inv)
}

impl Invocation {
    /// The address the runtime was given for this interface (CHECK), from `prevResult`: the
    /// first of `prev_ips`.
    pub fn prev_ip(&self) -> Option<String> {
        self.prev_ips().into_iter().next()
    }

    /// Every address the runtime was given for this interface (CHECK), from `prevResult`: those
    /// of `ips` naming this interface, or the first of `ips` when none names one (a result
    /// without interfaces). A dual-stack pod has two.
    pub fn prev_ips(&self) -> Vec<String> {
        let Some(prev) = self.conf.prev_result.as_ref() else { return vec![] };
        let ifaces = prev.get("interfaces").and_then(|v| v.as_array());
        let ours = ifaces.and_then(|l| {
            l.iter().position(|i| i.get("name").and_then(|n| n.as_str()) == Some(&self.ifname))
        });
        let Some(ips) = prev.get("ips").and_then(|v| v.as_array()) else { return vec![] };
        let address = |ip: &serde_json::Value| {
            let addr = ip.get("address")?.as_str()?;
            Some(addr.split('/').next().unwrap_or(addr).to_owned())
        };
        let mine: Vec<String> = ips
            .iter()
            .filter(|ip| {
                ours.is_some() && ip.get("interface").and_then(|v| v.as_u64()) == ours.map(|o| o as u64)
            })
            .filter_map(address)
            .collect();
        if mine.is_empty() { ips.first().and_then(address).into_iter().collect() } else { mine }
    }
}
