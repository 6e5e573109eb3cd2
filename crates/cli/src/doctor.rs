//! `romana doctor [HOST]`: gathers the facts about one host (in its network namespace: a
//! sandbox host's, found through the sandbox's state and layout, or this machine's), asks the
//! host's agent for its self-diagnosis on its socket, and prints each problem that
//! `doctor_checks` finds with what to do; the command fails (exit 1) when there is any.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use romana_api::diagnose::Diagnosis;
use romana_api::rest::Credentials;
use romana_client::Client;

use crate::Format;
use crate::doctor_certs::{CertSource, read_pem};
use crate::doctor_checks::{self, Facts, Link, Problem, Severity};
use crate::output::show;
use crate::sandbox_layout::Routing;

/// Where the host's parts are.
#[derive(Debug, Clone)]
pub struct Where {
    pub host: String,
    /// A named network namespace (`None`: this process's).
    pub netns: Option<String>,
    pub socket: PathBuf,
    /// The agent's credentials file (its login is checked when it can be read).
    pub credentials: PathBuf,
    /// BIRD's control socket, where the host announces over BGP.
    pub bird_socket: Option<PathBuf>,
    /// Whether the agent enforces policy (the table is expected).
    pub policy: bool,
    /// Certificate files whose expiry is checked (besides the CA in the agent's credentials).
    pub certs: Vec<PathBuf>,
}

/// A sandbox host's parts, from the sandbox's state and layout (`sandbox_bgp::agent_args` is
/// what its agent was started with).
pub fn in_sandbox(state_dir: &Path, name: &str, host: &str) -> Result<Where> {
    let state = crate::sandbox::load(state_dir, name)?;
    let layout = state.layout()?;
    let h = layout.hosts.iter().find(|h| h.name == host).with_context(|| {
        let names: Vec<&str> = layout.hosts.iter().map(|h| h.name.as_str()).collect();
        format!("sandbox {name} has no host {host:?} (hosts: {})", names.join(", "))
    })?;
    let d = crate::sandbox::dir(state_dir, name);
    let args = crate::sandbox_bgp::agent_args(&layout, &h.netns, &d);
    let bird_socket = (layout.routing == Routing::Bgp)
        .then(|| args.iter().skip_while(|a| *a != "--bird-socket").nth(1).map(PathBuf::from))
        .flatten();
    Ok(Where {
        host: host.to_owned(),
        netns: Some(h.netns.clone()),
        socket: d.join(format!("{host}.sock")),
        credentials: d.join(format!("{host}.credentials")),
        bird_socket,
        policy: true,
        certs: Vec::new(),
    })
}

/// `prog args` in the host's namespace.
fn run_in(netns: Option<&str>, prog: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, prog]);
            c
        }
        None => Command::new(prog),
    };
    let out = cmd.args(args).output().map_err(|e| format!("running {prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{prog} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn json(text: Result<String, String>) -> Result<serde_json::Value, String> {
    let t = text?;
    if t.trim().is_empty() {
        return Ok(serde_json::Value::Array(vec![]));
    }
    serde_json::from_str(&t).map_err(|e| format!("unreadable output: {e}"))
}

/// One GET on the agent's Unix socket (HTTP/1.1, connection closed after the answer).
fn agent_get(socket: &Path, path: &str, timeout: Duration) -> Result<String, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("writing to {}: {e}", socket.display()))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("no answer on {} within {} s ({e})", socket.display(), timeout.as_secs()))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("a truncated answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("{path} answered {status}: {body}"));
    }
    Ok(body.to_owned())
}

/// The agent's self-diagnosis.
fn diagnosis(socket: &Path) -> Result<Diagnosis, String> {
    let body = agent_get(socket, "/v1/diagnose", Duration::from_secs(5))?;
    serde_json::from_str(&body).map_err(|e| format!("an unreadable diagnosis ({e}); is the agent older?"))
}

/// romanad's clock minus this host's, from the Date header (the request's midpoint as ours).
fn skew_ms(before: SystemTime, after: SystemTime, date: Option<&str>) -> Option<i64> {
    let theirs = httpdate::parse_http_date(date?).ok()?;
    let mid = before + after.duration_since(before).unwrap_or_default() / 2;
    let ms = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).ok();
    // The header is truncated to the second: half a second is the expected difference.
    Some(ms(theirs)? + 500 - ms(mid)?)
}

async fn credentials(path: &Path) -> Option<Result<u64, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let creds: Credentials = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => return Some(Err(format!("{} does not parse: {e}", path.display()))),
    };
    let c = match Client::from_credentials(&creds).await {
        Ok(c) => c,
        Err(e) if e.status() == Some(401) => return Some(Err(format!("romanad refuses {}", creds.username))),
        Err(e) => return Some(Err(e.to_string())),
    };
    let t = c.login(&creds.username, &creds.password).await.map_err(|e| e.to_string());
    Some(t.map(|t| t.expires_in))
}

/// The certificate files, then the CA in the agent's credentials (when it names one).
fn certificates(w: &Where) -> Vec<CertSource> {
    let mut out: Vec<CertSource> = w
        .certs
        .iter()
        .map(|f| CertSource {
            name: f.display().to_string(),
            certs: std::fs::read_to_string(f).map_err(|e| e.to_string()).and_then(|t| read_pem(&t)),
        })
        .collect();
    let creds = std::fs::read_to_string(&w.credentials).ok();
    if let Some(ca) = creds.and_then(|t| serde_json::from_str::<Credentials>(&t).ok()).and_then(|c| c.ca) {
        out.push(CertSource { name: format!("the CA of {}", w.credentials.display()), certs: read_pem(&ca) });
    }
    out
}

/// Everything `doctor_checks::check` looks at.
pub async fn gather(c: &Client, w: &Where) -> Facts {
    let ns = w.netns.as_deref();
    let route_set = c.routes(&w.host).await.map(|r| r.routes).map_err(|e| e.to_string());
    // IPv6 routes too (a dual-stack host's route set has them); best effort: a kernel without
    // IPv6 has none.
    let v6 = json(run_in(ns, "ip", &["-j", "-6", "route", "show", "proto", "77"])).ok();
    let kernel_routes = json(run_in(ns, "ip", &["-j", "route", "show", "proto", "77"])).map(|v| {
        let mut routes = doctor_checks::kernel_routes(&v);
        routes.extend(v6.map(|v| doctor_checks::kernel_routes(&v)).unwrap_or_default());
        routes
    });
    let gateway = match run_in(ns, "ip", &["-j", "link", "show", "romana-gw"]) {
        Err(e) if e.contains("does not exist") => Ok(None),
        r => json(r).map(|v| {
            v.get(0).map(|l| Link {
                up: l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x.as_str() == Some("UP"))),
            })
        }),
    };
    let table = w.policy.then(|| match run_in(ns, "nft", &["list", "table", "inet", "romana"]) {
        Ok(_) => Ok(true),
        Err(e) if e.contains("No such file") => Ok(false),
        Err(e) => Err(e),
    });
    let socket = w.socket.clone();
    let agent = tokio::task::spawn_blocking(move || diagnosis(&socket))
        .await
        .unwrap_or_else(|e| Err(format!("asking the agent: {e}")));
    let bird = w.bird_socket.as_ref().map(|s| {
        let s = s.display().to_string();
        run_in(None, "birdc", &["-s", &s, "show", "protocols"]).map(|t| crate::bird_status::protocols(&t))
    });
    let before = SystemTime::now();
    let liveness = c.send(reqwest::Method::GET, "/liveness", None).await;
    let after = SystemTime::now();
    let (alive, skew) = match liveness {
        Ok(resp) => {
            let date = resp.headers().get("date").and_then(|d| d.to_str().ok()).map(str::to_owned);
            let v: serde_json::Value = resp.json().await.unwrap_or_default();
            let listed =
                |k: &str| v[k].as_array().is_some_and(|a| a.iter().any(|h| h.as_str() == Some(&w.host)));
            let alive = listed("monitored").then(|| listed("alive"));
            (alive, skew_ms(before, after, date.as_deref()))
        }
        Err(_) => (None, None),
    };
    Facts {
        host: w.host.clone(),
        forwarding: run_in(ns, "sysctl", &["-n", "net.ipv4.ip_forward"]),
        route_set,
        kernel_routes,
        gateway,
        table,
        agent,
        bird,
        alive,
        skew_ms: skew,
        credentials: credentials(&w.credentials).await,
        certificates: certificates(w),
        now_unix: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
    }
}

/// Runs the doctor on `w`; `Ok(true)` when nothing is wrong.
pub async fn run(c: &Client, f: Format, w: &Where) -> Result<bool> {
    let facts = gather(c, w).await;
    let problems = doctor_checks::check(&facts);
    show(f, &problems, &["KIND", "PROBLEM", "WHAT TO DO"], |ps: &Vec<Problem>| {
        ps.iter().map(|p| vec![p.kind.clone(), p.what.clone(), p.fix.clone()]).collect()
    })?;
    let errors = problems.iter().filter(|p| p.severity == Severity::Error).count();
    if f == Format::Table {
        let where_ = w.netns.as_deref().map(|n| format!(" (namespace {n})")).unwrap_or_default();
        eprintln!("{errors} problem(s) on {}{where_}", w.host);
        let warnings = problems.len() - errors;
        if warnings > 0 {
            eprintln!("{warnings} warning(s): the host works, but will not for long");
        }
    }
    // Warnings alone do not fail the command: it is healthy today.
    Ok(errors == 0)
}

/// This machine's host name (the default HOST).
pub fn this_host() -> Result<String> {
    let n = std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name")?;
    Ok(n.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_romanads_clock_minus_ours_from_the_date_header() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(t + Duration::from_secs(10));
        assert_eq!(skew_ms(t, t, Some(&date)), Some(10_500));
        assert_eq!(skew_ms(t, t, Some("not a date")), None);
        assert_eq!(skew_ms(t, t, None), None);
    }
}
