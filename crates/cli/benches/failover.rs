//! Failover, end to end, in one sandbox on BGP (root): a host is killed (`romana sandbox
//! kill-host`: link down, agent and BIRD SIGKILLed) and two clocks run from that moment: until
//! its rack router's kernel has lost the host's prefix (BGP with BFD, 100 ms x 3), and until a
//! neighbour host's kernel has lost its routes to it (the lease path: the route manager's 2 s
//! lease, then the neighbour's agent). A third clock runs until a TCP client in a spine,
//! reconnecting to a VIP served by the killed host (preferred) with a standby on r1h1, reaches
//! the service on r1h1. Rounds of kill and revive; prints each and the medians.
//! With `FAILOVER_ROUTING=static` the sandbox routes statically (no BIRD): the VIP's /32s come
//! from the fabric view and move when romanad reassigns the VIP after the lease (the sandbox's
//! router follower installs them); no BGP clock then.
//! Run: `cargo bench -p romana-cli --bench failover` (needs root, bird2; builds the binaries).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use romana_test_support::TempDir;

// The sandbox tests' harness: romanad and a sandbox of its own, `romana` against it, `down` on drop.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;
use common::Sandbox;

const ROUNDS: usize = 5;

fn routes(ns: &str, proto: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "-o", "route", "show", "proto", proto]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait(what: &str, cond: impl Fn() -> bool, explain: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: not reached in 60 s: {}", explain());
        std::thread::sleep(Duration::from_millis(50));
    }
}

const VIP: &str = "198.51.100.5";

/// A TCP server in namespace `ns` on 8080 answering `name`; killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(ns: &str, name: &str) -> Server {
    let script = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',8080))\ns.listen(16)\nwhile True:\n  c,_=s.accept()\n  c.sendall(b'{name}\\n')\n  c.close()\n"
    );
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Server(child)
}

/// A client in `ns` that reconnects to the VIP (100 ms connect timeout) until the answer is
/// `want`, then prints the wall clock of that answer.
fn vip_client(ns: &str, want: &str) -> std::process::Child {
    let script = format!(
        "import socket,time\nwhile True:\n  try:\n    s=socket.create_connection(('{VIP}',80),timeout=0.1)\n    \
         a=s.recv(64).decode().strip()\n    s.close()\n    if a=='{want}':\n      print(time.time())\n      break\n  \
         except OSError:\n    pass\n  time.sleep(0.01)\n"
    );
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let routing = std::env::var("FAILOVER_ROUTING").unwrap_or_else(|_| "bgp".to_owned());
    let bgp_on = routing == "bgp";
    if bgp_on && Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: bird2 is not installed");
        return;
    }
    let dir = TempDir::new("failover");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "f");
    let name = sb.name.clone();
    sb.ok(&["sandbox", "up", "--routing", &routing]);
    for (host, app) in
        [("r1h1", "app=web"), ("r1h2", "app=other"), ("r2h1", "app=web"), ("r2h2", "app=other")]
    {
        sb.ok(&["sandbox", "pod", "add", "--host", host, "--tenant", "red", "--label", app]);
    }
    // p1 on r1h1, p3 on r2h1 serve web: the VIP prefers r2h1, r1h1 stands by.
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
    let _servers = [server(&format!("rms-{name}-p1"), "p1"), server(&format!("rms-{name}-p3"), "p3")];
    let spine = format!("rms-{name}-spine");
    let rack = format!("rms-{name}-rack2");
    let neighbour = format!("rms-{name}-r2h2");
    let dead = "via 192.168.2.11";
    let (mut bgp, mut lease, mut vips) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let d = sb.state.join(&name);
        wait(
            "routes to r2h1 everywhere",
            || (!bgp_on || routes(&rack, "bird").contains(dead)) && routes(&neighbour, "77").contains(dead),
            || {
                let birdc = |ns: &str| {
                    let out = Command::new("birdc")
                        .arg("-s")
                        .arg(d.join(format!("{ns}.ctl")))
                        .args(["show", "protocols", "all"])
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout).into_owned()
                };
                let log = std::fs::read_to_string(d.join("r2h1.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "rack2 bird routes: {}\nneighbour 77: {}\nrack2: {}\nr2h1 bird: {}\nr2h1 agent log tail: {:#?}",
                    routes(&rack, "bird"),
                    routes(&neighbour, "77"),
                    birdc(&rack),
                    birdc(&format!("rms-{name}-r2h1")),
                    tail
                )
            },
        );
        // The VIP is served by r2h1 again (the client reaches p3) before the kill.
        let back = vip_client(&spine, "p3").wait_with_output().unwrap();
        assert!(back.status.success(), "no answer from p3 through the VIP");
        let client = vip_client(&spine, "p1");
        let wall0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let t0 = Instant::now();
        sb.ok(&["sandbox", "kill-host", "r2h1"]);
        let (mut b, mut l) = (None, None);
        if !bgp_on {
            b = Some(0.0);
        }
        while b.is_none() || l.is_none() {
            if b.is_none() && !routes(&rack, "bird").contains(dead) {
                b = Some(t0.elapsed().as_secs_f64());
            }
            if l.is_none() && !routes(&neighbour, "77").contains(dead) {
                l = Some(t0.elapsed().as_secs_f64());
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "no withdrawal in 60 s (bgp {b:?}, lease {l:?})");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (b, l) = (b.unwrap_or_default(), l.unwrap_or_default());
        let out = client.wait_with_output().unwrap();
        let v = String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap() - wall0;
        println!(
            "round {round} ({routing}): BGP+BFD withdrawn at the rack router {b:.3} s; lease path at a neighbour {l:.3} s; \
             VIP client reconnected to the other host's endpoint {v:.3} s"
        );
        bgp.push(b);
        lease.push(l);
        vips.push(v);
        sb.ok(&["sandbox", "revive-host", "r2h1"]);
    }
    let (b, l, v) = (median(&mut bgp), median(&mut lease), median(&mut vips));
    println!(
        "median of {ROUNDS} ({routing}): BGP+BFD {b:.3} s, lease {l:.3} s, ratio {:.2}; VIP reconnect {v:.3} s, ratio to the lease {:.2}",
        b / l,
        v / l
    );
}
