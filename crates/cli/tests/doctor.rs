//! `romana doctor` and `romana check`'s kernel view on a sandbox (root): a healthy host reports
//! nothing; then each part of host r1h1 is broken in its namespace and the doctor must name it:
//! one rule of our nftables table deleted, the table flushed, the table deleted (the agent runs
//! and repairs these within its repair interval, so each is broken again until the doctor saw it,
//! a bounded number of times), and with the agent stopped (SIGSTOP, so nothing repairs): a route
//! deleted, the gateway link down, forwarding off, the agent itself not answering. Forwarding off
//! with the agent running is drift the agent does not repair: its heartbeat's report makes it a
//! `kernel-drift` disagreement in `romana check` and in `romana_check_disagreements`. Everything
//! is restored and the doctor is healthy again after each. On a BGP sandbox: a BGP session of
//! the host's BIRD disabled (named, with `birdc enable`), then healthy again once enabled; romanad
//! seen through a proxy whose Date is an hour ahead (clock skew, no clock is changed); BIRD
//! killed. Certificates (no root): files made with past and near ends of validity, and an expired
//! CA in the agent's credentials, each named with its file and date. Waits poll, nothing asserts
//! on time.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use romana_test_support::{Romanad, TempDir, sibling_bin};

#[allow(dead_code)]
mod common;
use common::{Sandbox, can_make_namespaces};

/// One sandbox at a time in this binary: two (a static and a BGP one) starting at once on a
/// loaded machine made romanad miss its request deadline for the sandboxes' own calls.
static ONE_SANDBOX: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn doctor(sb: &Sandbox) -> Output {
    doctor_via(sb, &sb.url)
}

/// The doctor on r1h1, with romanad reached at `endpoint`.
fn doctor_via(sb: &Sandbox, endpoint: &str) -> Output {
    let state = sb.state.display().to_string();
    Command::new(env!("CARGO_BIN_EXE_romana"))
        .args(["doctor", "r1h1", "--sandbox", &sb.name, "--state-dir", &state])
        .env("ROMANA_ENDPOINT", endpoint)
        .env("ROMANA_CREDENTIALS", &sb.creds)
        .env_remove("ROMANA_CONFIG")
        .output()
        .unwrap()
}

/// Polls the doctor until it is healthy (exit 0), or fails with its last output.
fn wait_healthy(sb: &Sandbox, why: &str) {
    let start = Instant::now();
    loop {
        let o = doctor(sb);
        if o.status.success() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{why}: never healthy again; last:\n{}", text(&o));
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `brk`, then the doctor, until the doctor names `kind` (the agent may repair the break
/// before the doctor looks; then it is broken again), at most 20 times.
fn named_while_agent_repairs(sb: &Sandbox, what: &str, kind: &str, brk: impl Fn()) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        brk();
        let o = doctor(sb);
        last = text(&o);
        if last.lines().any(|l| l.starts_with(kind)) {
            assert_eq!(o.status.code(), Some(1), "{what}: a problem fails the doctor: {last}");
            return last;
        }
    }
    panic!("{what}: the doctor never named {kind}; last:\n{last}");
}

/// Whether a line of a table starts with `kind` and holds `want`.
fn has(out: &str, kind: &str, want: &str) -> bool {
    out.lines().any(|l| l.starts_with(kind) && l.contains(want))
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let o = Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The first rule of our table, as (chain, handle), once there is one: with no policy the only
/// rules are egress NAT's, whose chain comes with the first local pod in a masqueraded network.
fn a_rule(ns: &str) -> (String, String) {
    let start = Instant::now();
    loop {
        match first_rule(ns) {
            Ok(rule) => return rule,
            Err(listing) if start.elapsed() > Duration::from_secs(20) => {
                panic!("no rule in the table:\n{listing}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The first rule of our table, or the listing without one.
fn first_rule(ns: &str) -> Result<(String, String), String> {
    let listing = in_ns(ns, &["nft", "-a", "list", "table", "inet", "romana"]);
    let mut chain = String::new();
    for l in listing.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("chain ") {
            chain = rest.split_whitespace().next().unwrap().to_owned();
        } else if !chain.is_empty()
            && l.contains("# handle")
            && !["set ", "map ", "table ", "type "].iter().any(|p| l.starts_with(p))
        {
            return Ok((chain, l.rsplit("# handle ").next().unwrap().trim().to_owned()));
        }
    }
    Err(listing)
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// A stopped agent is continued even when the test fails half-way (else `down` would hang on it).
struct Continue(u32);
impl Drop for Continue {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// romanad's `/metrics` text (public, plain HTTP on 127.0.0.1).
fn metrics(url: &str) -> String {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn drift_gauge(url: &str) -> u64 {
    let m = metrics(url);
    m.lines()
        .find_map(|l| l.strip_prefix(r#"romana_check_disagreements{kind="kernel-drift"} "#))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no kernel-drift gauge in:\n{m}"))
}

fn drift_in_check(sb: &Sandbox) -> Option<serde_json::Value> {
    let o = sb.plain(&["check", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["disagreements"].as_array()?.iter().find(|d| d["subject"] == "r1h1/forwarding-off").cloned()
}

#[test]
fn doctor_names_each_broken_part_and_check_sees_the_drift() {
    let _one = ONE_SANDBOX.lock().unwrap_or_else(|e| e.into_inner());
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    let dir = TempDir::new("doctor");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "d");
    sb.ok(&["sandbox", "up"]);
    sb.ok(&["sandbox", "pod", "add", "--host", "r1h1", "--tenant", "red", "--pod", "a"]);
    sb.ok(&["sandbox", "pod", "add", "--host", "r1h2", "--tenant", "red", "--pod", "b"]);
    let ns = format!("rms-{}-r1h1", sb.name);
    wait_healthy(&sb, "after up");
    let o = doctor(&sb);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "KIND  PROBLEM  WHAT TO DO", "{}", text(&o));
    assert!(text(&o).contains(&format!("0 problem(s) on r1h1 (namespace {ns})")), "{}", text(&o));

    // The table, with the agent running (it repairs each within its repair interval).
    let out = named_while_agent_repairs(&sb, "one rule deleted", "table-differs", || {
        let (chain, handle) = a_rule(&ns);
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &ns, "nft", "delete", "rule", "inet", "romana", &chain, "handle", &handle,
            ])
            .status();
    });
    assert!(out.contains("missing"), "{out}");
    wait_healthy(&sb, "after the rule came back");
    named_while_agent_repairs(&sb, "table flushed", "table-differs", || {
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "flush", "table", "inet", "romana"])
            .status();
    });
    wait_healthy(&sb, "after the flush was repaired");
    named_while_agent_repairs(&sb, "table deleted", "table-missing", || {
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "delete", "table", "inet", "romana"])
            .status();
    });
    wait_healthy(&sb, "after the table came back");

    // Forwarding off with the agent running: the agent does not repair it; the doctor names it,
    // and romanad learns it from the agent's report (romana check, the metric).
    in_ns(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let o = doctor(&sb);
    assert!(text(&o).lines().any(|l| l.starts_with("forwarding-off")), "{}", text(&o));
    let start = Instant::now();
    let drift = loop {
        if let Some(d) = drift_in_check(&sb) {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "romana check never showed r1h1's drift");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(drift["kind"], "kernel-drift", "{drift}");
    assert!(drift["detail"].as_str().unwrap().contains("ip_forward is 0"), "{drift}");
    let check = sb.plain(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(has(&text(&check), "kernel-drift", "r1h1/forwarding-off"), "{}", text(&check));
    // The gauge is set by romanad's periodic pass (every few seconds), not by `GET /check`.
    let start = Instant::now();
    while drift_gauge(&sb.url) < 1 {
        assert!(start.elapsed() < Duration::from_secs(60), "the gauge never counted the drift");
        std::thread::sleep(Duration::from_millis(500));
    }
    in_ns(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let start = Instant::now();
    while drift_in_check(&sb).is_some() || drift_gauge(&sb.url) > 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "the drift never left romana check");
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_healthy(&sb, "after forwarding came back");

    // The agent stopped: nothing repairs, so each break stays until restored.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.state.join(&sb.name).join("state.json")).unwrap())
            .unwrap();
    let pid = state["agents"]["r1h1"].as_u64().unwrap() as u32;
    signal(pid, "-STOP");
    let guard = Continue(pid);
    let o = doctor(&sb);
    assert!(text(&o).lines().any(|l| l.starts_with("agent-down")), "{}", text(&o));
    // A route of the route manager's set: through a host of the same rack, or a throw (hosts of
    // other racks are reached through the rack router).
    let listing = in_ns(&ns, &["ip", "route", "show", "proto", "77"]);
    let line = listing
        .lines()
        .find(|l| l.contains(" via ") || l.starts_with("throw "))
        .unwrap_or_else(|| panic!("no route of the set in:\n{listing}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let (route, del) = if words[0] == "throw" {
        (words[1].to_owned(), vec!["ip", "route", "del", "throw", words[1], "proto", "77"])
    } else {
        (words[0].to_owned(), vec!["ip", "route", "del", words[0], "proto", "77"])
    };
    in_ns(&ns, &del);
    in_ns(&ns, &["ip", "link", "set", "romana-gw", "down"]);
    in_ns(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let o = doctor(&sb);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for (kind, want) in [
        ("route-missing", format!("route {route} ")),
        ("gateway", "link romana-gw is down".to_owned()),
        ("forwarding-off", "net.ipv4.ip_forward is 0".to_owned()),
        ("agent-down", "does not answer".to_owned()),
    ] {
        assert!(has(&out, kind, &want), "{kind}: {want:?} not in:\n{out}");
    }
    in_ns(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    in_ns(&ns, &["ip", "link", "set", "romana-gw", "up"]);
    drop(guard);
    wait_healthy(&sb, "after the agent continued and the host was restored");
}

/// A proxy in front of romanad on 127.0.0.1 that answers every request as romanad does, with a
/// Date header `ahead` of this machine's clock: romanad's clock as a skewed host would see it,
/// without changing any clock. Runs on `rt` until it is dropped.
fn skewed_romanad(rt: &tokio::runtime::Runtime, upstream: &str, ahead: Duration) -> String {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::header::{CONTENT_LENGTH, DATE, HOST, TRANSFER_ENCODING};
    use axum::response::Response;

    async fn relay(State((up, ahead)): State<(String, Duration)>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut r = romana_client::http().request(parts.method.clone(), format!("{up}{path}")).body(body);
        for (k, v) in parts.headers.iter().filter(|(k, _)| *k != HOST) {
            r = r.header(k, v);
        }
        let resp = r.send().await.unwrap();
        let mut out = Response::builder().status(resp.status());
        for (k, v) in
            resp.headers().iter().filter(|(k, _)| ![DATE, CONTENT_LENGTH, TRANSFER_ENCODING].contains(k))
        {
            out = out.header(k, v);
        }
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() + ahead);
        out.header(DATE, date).body(Body::from(resp.bytes().await.unwrap())).unwrap()
    }

    let app =
        axum::Router::new().fallback(relay).with_state((upstream.trim_end_matches('/').to_owned(), ahead));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    url
}

fn bird_installed() -> bool {
    if Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: bird is not installed (Debian's bird2; scripts/setup.sh installs it)");
        return false;
    }
    true
}

#[test]
fn doctor_names_a_broken_bird_session_a_skewed_clock_and_a_dead_bird() {
    let _one = ONE_SANDBOX.lock().unwrap_or_else(|e| e.into_inner());
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    if !bird_installed() {
        return;
    }
    let dir = TempDir::new("doctor-bgp");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "g");
    sb.ok(&["sandbox", "up", "--routing", "bgp"]);
    sb.ok(&["sandbox", "pod", "add", "--host", "r1h1", "--tenant", "red", "--pod", "a"]);
    wait_healthy(&sb, "after up with BGP");
    let ns = format!("rms-{}-r1h1", sb.name);
    let d = sb.state.join(&sb.name);
    let ctl = d.join(format!("{ns}.ctl")).display().to_string();
    let birdc = |args: &[&str]| {
        let o = Command::new("birdc").args(["-s", &ctl]).args(args).output().unwrap();
        assert!(o.status.success(), "birdc {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let protocols = birdc(&["show", "protocols"]);
    let session = protocols
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("BGP"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no BGP session on r1h1:\n{protocols}"))
        .to_owned();

    // A session disabled in the host's BIRD: named, with the command that brings it back. The
    // agent's `birdc configure` after a route change restarts a protocol whose configuration
    // changed, which enables it again: then it is disabled again (at most 10 times).
    let mut out = String::new();
    for _ in 0..10 {
        birdc(&["disable", &session]);
        let o = doctor(&sb);
        out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}");
        if has(&out, "bird", &format!("BGP session {session} is down")) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(has(&out, "bird", &format!("BGP session {session} is down")), "{out}");
    assert!(has(&out, "bird", &format!("birdc enable {session}")), "{out}");
    birdc(&["enable", &session]);
    wait_healthy(&sb, "after the session was enabled");

    // romanad's clock an hour ahead, as the host sees it through a proxy.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let proxy = skewed_romanad(&rt, &sb.url, Duration::from_secs(3600));
    let o = doctor_via(&sb, &proxy);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let skew = out.lines().find(|l| l.starts_with("clock-skew")).unwrap_or_else(|| panic!("{out}"));
    // 3600 s, give or take the second the Date header is truncated to.
    assert!(["3599.", "3600.", "3601."].iter().any(|s| skew.contains(s)), "{skew}");
    assert!(skew.contains("ahead of r1h1's") && skew.contains("chrony"), "{skew}");
    assert_eq!(
        out.lines().filter(|l| !l.starts_with("KIND") && !l.contains("problem(s)")).count(),
        1,
        "{out}"
    );
    wait_healthy(&sb, "romanad itself has the host's time");

    // BIRD gone: nothing announces the host's pods.
    let pid = std::fs::read_to_string(d.join(format!("{ns}.pid"))).unwrap();
    signal(pid.trim().parse().unwrap(), "-KILL");
    let o = doctor(&sb);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(has(&out, "bird", "BIRD does not answer") && has(&out, "bird", "start BIRD"), "{out}");
}

/// A self-signed certificate named `cn`, valid until `not_after`, as PEM.
fn cert(cn: &str, not_after: time::OffsetDateTime) -> String {
    let mut p = rcgen::CertificateParams::new(vec!["romanad.test".into()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.not_before = not_after - time::Duration::days(365);
    p.not_after = not_after;
    p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
}

fn day(t: time::OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

#[test]
fn doctor_reports_certificates_expired_and_near_their_end() {
    let dir = TempDir::new("doctor-certs");
    let romanad_bin = sibling_bin(env!("CARGO_BIN_EXE_romana"), "romanad");
    let romanad =
        Romanad::start(&romanad_bin, &["--data-dir".into(), dir.path().join("store").display().to_string()])
            .expect("romanad starts");
    let now = time::OffsetDateTime::now_utc();
    let expired = time::OffsetDateTime::from_unix_timestamp(1_577_934_245).unwrap(); // 2020-01-02 03:04:05 UTC
    let files = [
        ("ca.pem", cert("romana CA", now + time::Duration::days(3650))),
        ("server.pem", cert("romanad", now + time::Duration::days(10) - time::Duration::hours(1))),
        ("old.pem", cert("old romanad", expired)),
    ];
    let mut args = vec!["doctor".to_owned(), "nosuchhost".into(), "-o".into(), "json".into()];
    for (name, pem) in &files {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        args.extend(["--cert".into(), p.display().to_string()]);
    }
    // The agent's credentials carry an expired CA.
    let agent_creds = dir.path().join("agent.credentials");
    let creds = serde_json::json!({"endpoint": romanad.url, "username": "nobody", "password": "x",
                                   "ca": cert("old CA", expired)});
    std::fs::write(&agent_creds, creds.to_string()).unwrap();
    args.extend(["--agent-credentials".into(), agent_creds.display().to_string()]);
    args.extend(["--socket".into(), dir.path().join("no-agent.sock").display().to_string()]);
    let o = Command::new(env!("CARGO_BIN_EXE_romana"))
        .args(&args)
        .env("ROMANA_ENDPOINT", &romanad.url)
        .env("ROMANA_CREDENTIALS", dir.path().join("store/admin.credentials"))
        .env_remove("ROMANA_CONFIG")
        .output()
        .unwrap();
    let problems: Vec<serde_json::Value> =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let certs: Vec<(String, String, String)> = problems
        .iter()
        .filter(|p| p["kind"].as_str().unwrap().starts_with("cert-"))
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_owned();
            (s("kind"), s("severity"), s("what"))
        })
        .collect();
    let path = |name: &str| dir.path().join(name).display().to_string();
    assert_eq!(certs.len(), 3, "{certs:#?}");
    assert_eq!(
        certs[0],
        (
            "cert-expired".into(),
            "error".into(),
            format!(
                "certificate \"old CA\" in the CA of {} expired on 2020-01-02 03:04:05 UTC",
                agent_creds.display()
            )
        )
    );
    assert_eq!(
        certs[1],
        (
            "cert-expired".into(),
            "error".into(),
            format!("certificate \"old romanad\" in {} expired on 2020-01-02 03:04:05 UTC", path("old.pem"))
        )
    );
    let (kind, severity, what) = &certs[2];
    assert_eq!((kind.as_str(), severity.as_str()), ("cert-expiring", "warning"));
    let want = format!(
        "certificate \"romanad\" in {} expires on {}",
        path("server.pem"),
        day(now + time::Duration::days(10) - time::Duration::hours(1))
    );
    assert!(what.starts_with(&want) && what.ends_with("(in 9 days)"), "{what}\nwant {want}");
    let fix = problems.iter().find(|p| p["kind"] == "cert-expiring").unwrap()["fix"].as_str().unwrap();
    assert!(fix.contains(&path("server.pem")) && fix.contains("--tls-issue"), "{fix}");
    assert_eq!(o.status.code(), Some(1), "an expired certificate fails the doctor");
}
