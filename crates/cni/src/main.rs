//! romana-cni: reads the runtime's CNI invocation, asks the host's romana-agent over its Unix
//! socket, and prints the result (or a CNI error document with exit status 1).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use romana_api::agent::{
    AgentError, AttachRequest, Attached, DetachRequest, GcRequest, ValidAttachment, code,
};
use romana_cni::{
    CniError, Command, Invocation, SUPPORTED_VERSIONS, panic_error, parse, read_env, render_result,
    version_answer,
};
use serde_json::Value;

fn main() {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => Err((
            "1.1.0".to_owned(),
            CniError { code: code::IO_FAILURE, msg: "cannot read stdin".into(), details: e.to_string() },
        )),
        // A runtime must always read a CNI error: a panic (a bug) becomes one too. The default
        // hook still prints the panic's location to stderr, which runtimes log.
        Ok(_) => std::panic::catch_unwind(|| invoke(&stdin))
            .unwrap_or_else(|p| Err((version_of(&stdin), panic_error(&*p)))),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
        }
        Ok(None) => {}
        Err((version, e)) => {
            let _ = writeln!(out, "{}", e.render(&version));
            let _ = out.flush();
            std::process::exit(1);
        }
    }
}

/// One call: only the `CNI_*` variables the plugin reads (`std::env::vars` would panic on any
/// non-UTF-8 variable of the runtime's environment), the config, then the agent.
fn invoke(stdin: &[u8]) -> Result<Option<Value>, (String, CniError)> {
    let env = read_env(|name| std::env::var_os(name)).map_err(|e| (version_of(stdin), e))?;
    let inv = parse(&env, stdin).map_err(|e| (version_of(stdin), e))?;
    run(&inv).map_err(|e| (inv.version.clone(), e))
}

/// The version for an error about the config itself: the config's when it is a version (an
/// unsupported one too: the runtime reads the error in the version it asked for), else our newest
/// (an empty, garbage or huge `cniVersion` is no version a runtime can read).
fn version_of(stdin: &[u8]) -> String {
    let is_version = |v: &str| {
        v.len() <= 16
            && v.split('.').count() == 3
            && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(|v| v.as_str()).map(str::to_owned))
        .filter(|v| is_version(v))
        .unwrap_or_else(|| SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_owned())
}

fn run(inv: &Invocation) -> Result<Option<Value>, CniError> {
    let attach = || AttachRequest {
        network: inv.conf.name.clone(),
        container_id: inv.container_id.clone(),
        ifname: inv.ifname.clone(),
        netns: inv.netns.clone(),
        tenant: inv.tenant.clone(),
        segment: inv.segment.clone(),
        labels: inv.labels.clone(),
        ip: inv.prev_ip(),
        ips: inv.prev_ips(),
        pod: inv.pod.clone(),
        runtime_labels: inv.runtime_labels,
    };
    match inv.command {
        Command::Version => Ok(Some(version_answer(&inv.version))),
        Command::Add => {
            let body = call(&inv.socket, "POST", "/v1/cni/add", Some(&attach()), code::TRY_AGAIN_LATER)?;
            let a: Attached = serde_json::from_slice(&body).map_err(|e| CniError {
                code: code::DECODE_FAILURE,
                msg: "unexpected answer from romana-agent".into(),
                details: e.to_string(),
            })?;
            Ok(Some(render_result(&inv.version, &a)))
        }
        Command::Check => {
            call(&inv.socket, "POST", "/v1/cni/check", Some(&attach()), code::TRY_AGAIN_LATER).map(|_| None)
        }
        Command::Del => {
            let req = DetachRequest {
                network: inv.conf.name.clone(),
                container_id: inv.container_id.clone(),
                ifname: inv.ifname.clone(),
                netns: inv.netns.clone(),
            };
            call(&inv.socket, "POST", "/v1/cni/del", Some(&req), code::TRY_AGAIN_LATER).map(|_| None)
        }
        Command::Gc => {
            let valid = inv.conf.valid_attachments.clone().unwrap_or_default();
            let req = GcRequest {
                network: inv.conf.name.clone(),
                valid: valid
                    .into_iter()
                    .map(|v| ValidAttachment { container_id: v.container_id, ifname: v.ifname })
                    .collect(),
            };
            call(&inv.socket, "POST", "/v1/cni/gc", Some(&req), code::TRY_AGAIN_LATER).map(|_| None)
        }
        Command::Status => {
            call::<()>(&inv.socket, "GET", "/v1/status", None, code::NOT_AVAILABLE).map(|_| None)
        }
    }
}

/// One HTTP/1.1 request over the agent's Unix socket; a body of an error status is the agent's
/// CNI error. `unreachable` is the code when the agent cannot be reached at all.
fn call<B: serde::Serialize>(
    socket: &str,
    method: &str,
    path: &str,
    body: Option<&B>,
    unreachable: u32,
) -> Result<Vec<u8>, CniError> {
    let down = |e: std::io::Error| CniError {
        code: unreachable,
        msg: format!("romana-agent is not reachable at {socket}"),
        details: e.to_string(),
    };
    let mut s = UnixStream::connect(socket).map_err(down)?;
    // ADD waits for IPAM and netlink; a stuck agent must not hang the runtime forever.
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(down)?;
    let payload = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: romana-agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(&payload)).map_err(down)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(down)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| CniError {
        code: code::DECODE_FAILURE,
        msg: "romana-agent answered without HTTP headers".into(),
        details: String::from_utf8_lossy(&raw).chars().take(200).collect(),
    })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err(match serde_json::from_slice::<AgentError>(&body) {
        Ok(e) => CniError { code: e.code, msg: e.msg, details: e.details },
        Err(_) => CniError {
            code: code::OTHER,
            msg: format!("romana-agent answered HTTP {status}"),
            details: String::from_utf8_lossy(&body).chars().take(200).collect(),
        },
    })
}

/// Decodes a chunked body (hyper uses it when it does not know the length up front).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}
