//! Connectivity probes between pod namespaces, the way Kubernetes' netpol e2e tests probe: every
//! pod serves TCP and UDP on ports 80 and 81 (UDP echoes), and a probe from one pod to another
//! says whether a connection (TCP) or an answered datagram (UDP) got through.

use std::fmt::Write;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

pub const PORTS: [u16; 2] = [80, 81];

fn enter(netns: &str) {
    let f = File::open(netns).unwrap_or_else(|e| panic!("{netns}: {e}"));
    setns(&f, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {netns}: {e}"));
}

/// Starts the servers inside `netns` (a `/run/netns/...` path). They live as long as the test
/// process; the sockets keep nothing outside the namespace.
pub fn serve(netns: &str) {
    let ns = netns.to_owned();
    let (tcp, udp) = std::thread::spawn(move || {
        enter(&ns);
        // `::` serves both families (IPv4 as mapped addresses: bindv6only is 0 in a new namespace).
        let tcp: Vec<TcpListener> = PORTS.iter().map(|p| TcpListener::bind(("::", *p)).unwrap()).collect();
        let udp: Vec<UdpSocket> = PORTS.iter().map(|p| UdpSocket::bind(("::", *p)).unwrap()).collect();
        (tcp, udp)
    })
    .join()
    .unwrap();
    for l in tcp {
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
    }
    for u in udp {
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = u.recv_from(&mut buf) {
                let _ = u.send_to(&buf[..n], from);
            }
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// From inside `netns`: does `proto` to `dst:port` get through within `timeout`?
fn probe_once(proto: Proto, dst: IpAddr, port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::new(dst, port);
    match proto {
        Proto::Tcp => TcpStream::connect_timeout(&addr, timeout).is_ok(),
        Proto::Udp => {
            let any: IpAddr = if dst.is_ipv6() { "::".parse().unwrap() } else { "0.0.0.0".parse().unwrap() };
            let s = UdpSocket::bind((any, 0)).unwrap();
            s.set_read_timeout(Some(timeout)).unwrap();
            if s.connect(addr).is_err() {
                return false;
            }
            let mut buf = [0u8; 8];
            // Two tries: the first datagram to a new neighbour may be lost while ARP resolves.
            (0..2).any(|_| s.send(b"probe").is_ok() && s.recv(&mut buf).is_ok())
        }
    }
}

/// Probes every (source, destination) pair for every (proto, port), in parallel: one thread per
/// pair, each inside the source's namespace. Returns `result[probe][src][dst]`.
pub fn matrix(pods: &[(String, IpAddr)], probes: &[(Proto, u16)], timeout: Duration) -> Vec<Vec<Vec<bool>>> {
    let mut handles = Vec::new();
    for (i, (src, _)) in pods.iter().enumerate() {
        for (j, (_, dst)) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            let (src, dst, probes) = (src.clone(), *dst, probes.to_vec());
            handles.push((
                i,
                j,
                std::thread::spawn(move || {
                    enter(&src);
                    probes.iter().map(|(p, port)| probe_once(*p, dst, *port, timeout)).collect::<Vec<bool>>()
                }),
            ));
        }
    }
    let mut out = vec![vec![vec![true; pods.len()]; pods.len()]; probes.len()];
    for (i, j, h) in handles {
        for (k, ok) in h.join().unwrap().into_iter().enumerate() {
            out[k][i][j] = ok;
        }
    }
    out
}

/// A matrix as the examples write it: rows of '1'/'0', the diagonal as '.'.
pub fn render(m: &[Vec<bool>]) -> String {
    let mut s = String::new();
    for (i, row) in m.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            s.push(if i == j {
                '.'
            } else if *v {
                '1'
            } else {
                '0'
            });
        }
        let _ = writeln!(s);
    }
    s
}
