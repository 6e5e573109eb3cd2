//! The sandbox's "internet" and its egress checks (docs/fabric.md, "Egress NAT"): an echo server
//! (TCP and UDP) that answers each peer with the address it saw and logs it, run in the
//! "internet" namespace by `up --internet` (or in a pod by `reach --to-pod`, `sandbox_reach.rs`);
//! the echo client `reach` runs in the source pod; and `nat on|off`, which re-applies the
//! sandbox's topology with its network's `nat_outgoing` set. No packet capture: the far end says
//! what it saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use romana_client::Client;

use crate::sandbox::{dir, load, save};
use crate::sandbox_bgp::pid_alive;
use crate::sandbox_layout::{ECHO_PORT, INTERNET_IP};

/// Serves forever: every TCP connection and UDP datagram on `listen` is answered with the
/// peer's address and a newline, and the address is appended to `log` (`tcp 192.168.1.11`).
pub fn serve(listen: SocketAddr, log: Option<PathBuf>) -> Result<()> {
    let tcp = TcpListener::bind(listen).with_context(|| format!("binding tcp {listen}"))?;
    let udp = UdpSocket::bind(listen).with_context(|| format!("binding udp {listen}"))?;
    let note = move |proto: &str, peer: IpAddr| {
        if let Some(p) = &log
            && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p)
        {
            let _ = writeln!(f, "{proto} {peer}");
        }
    };
    let note_udp = note.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            note_udp("udp", peer.ip());
            let _ = udp.send_to(format!("{}\n", peer.ip()).as_bytes(), peer);
        }
    });
    for conn in tcp.incoming() {
        let Ok(mut s) = conn else { continue };
        if let Ok(peer) = s.peer_addr() {
            note("tcp", peer.ip());
            let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes());
        }
    }
    Ok(())
}

/// Asks an echo server at `to` which address it sees: `Some(address)` when it answered within
/// `wait` (connections refused before the server listens are retried), `None` otherwise.
pub fn ask(to: SocketAddr, udp: bool, wait: Duration) -> Result<Option<String>> {
    let start = Instant::now();
    let left = || wait.saturating_sub(start.elapsed()).max(Duration::from_millis(10));
    if udp {
        let any: SocketAddr = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse()?;
        let s = UdpSocket::bind(any).context("binding a udp socket")?;
        let mut buf = [0u8; 128];
        // Datagrams may be lost (the first one waits for neighbour resolution): a few tries.
        while start.elapsed() < wait {
            s.send_to(b"?", to).with_context(|| format!("sending to {to}"))?;
            s.set_read_timeout(Some(left().min(Duration::from_millis(500))))?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(Some(String::from_utf8_lossy(&buf[..n]).trim().to_owned()));
            }
        }
        return Ok(None);
    }
    while start.elapsed() < wait {
        match TcpStream::connect_timeout(&to, left()) {
            Ok(s) => {
                s.set_read_timeout(Some(left()))?;
                let mut line = String::new();
                let read = BufReader::new(s).take(128).read_line(&mut line);
                return Ok(read.ok().filter(|n| *n > 0).map(|_| line.trim().to_owned()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

fn echo_pid_file(d: &Path, ns: &str) -> PathBuf {
    d.join(format!("{ns}.echo.pid"))
}

/// The echo log of a namespace (the "internet" or a pod's).
pub fn echo_log(d: &Path, ns: &str) -> PathBuf {
    d.join(format!("{ns}.echo.log"))
}

/// Starts the echo server in namespace `ns` (own process group, pid file in `d`).
pub(crate) fn start_echo(ns: &str, listen: &str, d: &Path) -> Result<u32> {
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(std::env::current_exe().context("finding the romana binary")?)
        .args(["sandbox", "serve-echo", "--listen", listen, "--log"])
        .arg(echo_log(d, ns))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting the echo server in {ns}"))?;
    std::fs::write(echo_pid_file(d, ns), child.id().to_string())?;
    Ok(child.id())
}

/// After `up --internet`: the echo server in the "internet" namespace.
pub fn start_internet(state_dir: &Path, name: &str) -> Result<()> {
    let layout = load(state_dir, name)?.layout()?;
    start_echo(&layout.internet_ns(), &format!("{INTERNET_IP}:{ECHO_PORT}"), &dir(state_dir, name))
        .map(|_| ())
}

/// Kills every echo server the sandbox started (by pid file; `ip netns exec` execs the server,
/// so the pid is the server's); before `down`, which removes the directory.
pub fn stop_echoes(state_dir: &Path, name: &str) {
    let d = dir(state_dir, name);
    let Ok(entries) = std::fs::read_dir(&d) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".echo.pid")
            && let Some(pid) =
                std::fs::read_to_string(e.path()).ok().and_then(|p| p.trim().parse::<u32>().ok())
            && pid_alive(pid, "serve-echo")
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// `romana sandbox nat on|off [--no-nat CIDR]...`: the sandbox network's `nat_outgoing` and the
/// topology's `no_nat` list, through a topology update (agents pick it up within their NAT
/// interval).
pub async fn set_nat(c: &Client, state_dir: &Path, name: &str, on: bool, no_nat: &[String]) -> Result<()> {
    let mut state = load(state_dir, name)?;
    state.egress.nat_outgoing = on;
    state.egress.no_nat = no_nat.to_vec();
    let layout = state.layout()?;
    let topology = serde_json::from_value(layout.topology())?;
    c.apply_topology(&topology).await.context("applying the sandbox topology")?;
    save(state_dir, &state)?;
    let exempt = if no_nat.is_empty() { String::new() } else { format!(", no NAT to {}", no_nat.join(", ")) };
    println!("sandbox {name}: nat_outgoing {}{exempt}", if on { "on" } else { "off" });
    Ok(())
}
