//! A VIP end to end on the sandbox's BGP fabric (root): `romana vip add` for a service with a
//! pod (label app=web, a TCP server on 8080) on r2h1 and on r1h1, preferring r2h1. A TCP client
//! in a spine namespace (outside the pods' hosts) connects to the VIP's port 80 and reaches the
//! pod on r2h1; every router holds the VIP as one /32 and no per-endpoint route; r2h1 is killed
//! (`kill-host`) and the client, reconnecting, reaches the pod on r1h1 (the standby, whose
//! announcement the fabric takes once BFD withdraws r2h1's); romanad then assigns the VIP to
//! r1h1. A guard runs `down`; the servers die with their namespaces. Waits poll; nothing asserts
//! on time. The second test does the same on static routing, where the routers get the VIP's
//! /32 from the fabric view.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_test_support::TempDir;

#[allow(dead_code)]
mod common;
use common::{Sandbox, can_make_namespaces, namespaces};

const VIP: &str = "198.51.100.5";

/// A TCP server in namespace `ns` on 8080 that answers each connection with `name`.
struct Server(Child);

impl Server {
    fn start(ns: &str, name: &str) -> Server {
        let script = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('0.0.0.0',8080))\ns.listen(16)\nwhile True:\n  c,_=s.accept()\n  c.sendall(b'{name}\\n')\n  c.close()\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One connection from namespace `ns` to the VIP's port 80 (1 s timeout): what it answered.
fn connect(ns: &str) -> Option<String> {
    let script = format!(
        "import socket\ns=socket.create_connection(('{VIP}',80),timeout=1)\nprint(s.recv(64).decode().strip())\n"
    );
    let out = Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &script]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Reconnects until the answer is `want` (60 s at most); the answers seen on the way.
fn reach(ns: &str, want: &str, explain: impl Fn() -> String) -> Vec<Option<String>> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let got = connect(ns);
        if got.as_deref() == Some(want) {
            return seen;
        }
        if seen.last() != Some(&got) {
            seen.push(got);
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never reached {want}: {seen:?}\n{}", explain());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn routes(ns: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "-o", "route", "show", "proto", "bird"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_vip_reaches_its_service_and_fails_over_to_another_host() {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    if Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: bird is not installed (Debian's bird2; scripts/setup.sh installs it)");
        return;
    }
    let dir = TempDir::new("sandbox-vip");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "v");
    let name = sb.name.clone();
    let prefix = format!("rms-{name}-");
    sb.ok(&["sandbox", "up", "--routing", "bgp"]);
    for (pod, host) in [("web1", "r1h1"), ("web2", "r2h1")] {
        sb.ok(&[
            "sandbox", "pod", "add", "--host", host, "--tenant", "red", "--pod", pod, "--label", "app=web",
        ]);
    }
    sb.ok(&[
        "sandbox", "pod", "add", "--host", "r1h2", "--tenant", "red", "--pod", "db1", "--label", "app=db",
    ]);
    let _servers: Vec<Server> =
        ["web1", "web2", "db1"].iter().map(|p| Server::start(&format!("{prefix}{p}"), p)).collect();

    // Bad input through the CLI names the problem.
    let out = sb.plain(&["vip", "add", "10.112.0.9", "--service", "web", "--tenant", "red"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside Romana network"), "{out:?}");
    let out = sb.plain(&["vip", "add", VIP, "--service", "web", "--tenant", "red", "--port", "tcp:80:x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a port number"), "{out:?}");

    sb.plain_ok(&[
        "vip",
        "add",
        VIP,
        "--service",
        "web",
        "--tenant",
        "red",
        "--host",
        "r2h1",
        "--port",
        "tcp:80:8080",
    ]);
    let spine = format!("{prefix}spine");
    let d = sb.state.join(&name);
    let explain = || {
        let log = |h: &str| {
            let text = std::fs::read_to_string(d.join(format!("{h}.log"))).unwrap_or_default();
            text.lines().rev().take(8).collect::<Vec<_>>().join("\n")
        };
        format!(
            "vips: {}\nspine routes: {}\nr2h1 log: {}\nr1h1 log: {}",
            sb.plain_ok(&["vip", "list"]),
            routes(&spine),
            log("r2h1"),
            log("r1h1")
        )
    };
    reach(&spine, "web2", explain);
    let list = sb.plain_ok(&["vip", "list"]);
    assert!(
        list.contains(VIP) && list.contains("r2h1") && list.contains("r1h1"),
        "served by r2h1, r1h1 standing by:\n{list}"
    );

    // The VIP is one /32 on every router; no other host route is there (no per-endpoint route).
    for r in ["spine", "spine2", "rack1", "rack2"] {
        let ns = format!("{prefix}{r}");
        let learned = routes(&ns);
        let hosts: Vec<&str> =
            learned.lines().filter(|l| !l.split_whitespace().next().unwrap_or("").contains('/')).collect();
        assert_eq!(hosts.len(), 1, "{ns}: one /32, the VIP's:\n{learned}");
        assert!(hosts[0].starts_with(VIP), "{ns}: {}", hosts[0]);
    }

    // The serving host dies; the client reconnects and reaches the service on the other host.
    sb.ok(&["sandbox", "kill-host", "r2h1"]);
    let seen = reach(&spine, "web1", explain);
    assert!(!seen.iter().any(|s| s.as_deref() == Some("db1")), "never another service: {seen:?}");
    let start = Instant::now();
    loop {
        let list = sb.plain_ok(&["vip", "list"]);
        if list.lines().any(|l| l.contains(VIP) && l.split_whitespace().nth(5) == Some("r1h1")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "romanad never moved the VIP to r1h1:\n{list}");
        std::thread::sleep(Duration::from_millis(200));
    }

    sb.plain_ok(&["vip", "delete", VIP]);
    sb.ok(&["sandbox", "down"]);
    assert!(namespaces(&prefix).is_empty(), "down removed every namespace");
}

/// Our routes (protocol 77) in router namespace `ns`.
fn static_routes(ns: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "-o", "route", "show", "proto", "77"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same VIP on the sandbox's static fabric (`--routing static`, no BIRD): the routers get
/// the VIP's /32 toward its serving host from the fabric view (the sandbox's router follower
/// installs it); when that host dies romanad assigns the VIP to the other host once its lease
/// lapses, the follower moves the routes, and the client, reconnecting, reaches the pod there.
#[test]
fn a_vip_on_static_routing_follows_its_host() {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    let dir = TempDir::new("sandbox-vip-static");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "w");
    let name = sb.name.clone();
    let prefix = format!("rms-{name}-");
    sb.ok(&["sandbox", "up", "--routing", "static"]);
    for (pod, host) in [("web1", "r1h1"), ("web2", "r2h1")] {
        sb.ok(&[
            "sandbox", "pod", "add", "--host", host, "--tenant", "red", "--pod", pod, "--label", "app=web",
        ]);
    }
    let _servers: Vec<Server> =
        ["web1", "web2"].iter().map(|p| Server::start(&format!("{prefix}{p}"), p)).collect();
    sb.plain_ok(&[
        "vip",
        "add",
        VIP,
        "--service",
        "web",
        "--tenant",
        "red",
        "--host",
        "r2h1",
        "--port",
        "tcp:80:8080",
    ]);
    let (spine, rack1, rack2) =
        (format!("{prefix}spine"), format!("{prefix}rack1"), format!("{prefix}rack2"));
    let explain = || {
        format!(
            "vips: {}\nspine: {}\nrack1: {}\nrack2: {}\nfollower log: {}",
            sb.plain_ok(&["vip", "list"]),
            static_routes(&spine),
            static_routes(&rack1),
            static_routes(&rack2),
            std::fs::read_to_string(sb.state.join(&name).join("routers.log")).unwrap_or_default()
        )
    };
    reach(&spine, "web2", explain);
    // One /32 per router on the way: the spine toward rack 2's router, rack 2's toward r2h1.
    let vip_route =
        |ns: &str| static_routes(ns).lines().find(|l| l.starts_with(&format!("{VIP} "))).map(str::to_owned);
    assert!(vip_route(&spine).is_some_and(|r| r.contains("via 192.168.254.10 ")), "{}", explain());
    assert!(vip_route(&rack2).is_some_and(|r| r.contains("via 192.168.2.11 ")), "{}", explain());
    assert_eq!(vip_route(&rack1), None, "{}", explain());

    // The serving host dies: after its lease lapses the VIP and its routes move to r1h1.
    sb.ok(&["sandbox", "kill-host", "r2h1"]);
    reach(&spine, "web1", explain);
    assert!(vip_route(&spine).is_some_and(|r| r.contains("via 192.168.254.6 ")), "{}", explain());
    assert!(vip_route(&rack1).is_some_and(|r| r.contains("via 192.168.1.11 ")), "{}", explain());
    assert_eq!(vip_route(&rack2), None, "{}", explain());

    // Deleted: the routes go.
    sb.plain_ok(&["vip", "delete", VIP]);
    let start = Instant::now();
    while vip_route(&spine).is_some() || vip_route(&rack1).is_some() {
        assert!(start.elapsed() < Duration::from_secs(30), "VIP routes stay: {}", explain());
        std::thread::sleep(Duration::from_millis(200));
    }
    sb.ok(&["sandbox", "down"]);
    assert!(namespaces(&prefix).is_empty(), "down removed every namespace");
    let followers =
        Command::new("pgrep").args(["-f", &format!("follow-routers --name {name} ")]).output().unwrap();
    assert!(String::from_utf8_lossy(&followers.stdout).trim().is_empty(), "the router follower is gone");
}
