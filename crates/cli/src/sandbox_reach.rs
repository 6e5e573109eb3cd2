//! `romana sandbox reach`: from a pod to the "internet" or another pod, over TCP or UDP and over
//! IPv4, IPv6 or both (a dual-stack sandbox probes a pod over both families unless one is asked
//! for, by `--family` or by giving the target pod's address). `plan` decides the legs from the
//! sandbox's state (pure); `reach` runs each: an echo server at the far end, the echo client in
//! the source pod, and prints what the far end saw as the source and whether it answered.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::sandbox::{Pod, State, dir, load};
use crate::sandbox_internet::{echo_log, start_echo};
use crate::sandbox_layout::{ECHO_PORT, INTERNET_IP};

/// Where `reach` goes.
#[derive(Debug, Clone)]
pub enum Target {
    Internet,
    /// A pod, by name or by one of its addresses (which picks the family).
    Pod(String),
}

/// `--family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv6() { Family::Ipv6 } else { Family::Ipv4 }
    }

    fn flag(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// One probe: from the source pod's address to the far end's, with the far end's namespace
/// and name, and whether an echo server must be started there (a pod) or runs already (the
/// "internet").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub src_ip: IpAddr,
    pub far: String,
    pub far_ns: String,
    pub addr: IpAddr,
    pub start_server: bool,
}

fn parse(ip: &str, what: &str) -> Result<IpAddr, String> {
    ip.parse().map_err(|_| format!("{what} has no usable address ({ip:?}); add it again"))
}

/// The pod's address of `family`, or why it has none.
fn address(p: &Pod, family: Family, name: &str) -> Result<IpAddr, String> {
    match family {
        Family::Ipv4 => parse(&p.ip, &format!("pod {}", p.name)),
        Family::Ipv6 => match &p.ipv6 {
            Some(a) => parse(a, &format!("pod {}", p.name)),
            None => Err(format!(
                "pod {} of sandbox {name} has no IPv6 address (added before the sandbox was dual-stack?)",
                p.name
            )),
        },
    }
}

/// The legs of one `reach`: its checks and choices, from the sandbox's state alone.
pub fn plan(
    state: &State,
    internet_ns: &str,
    from: &str,
    to: &Target,
    family: Option<Family>,
) -> Result<Vec<Leg>, String> {
    let name = &state.name;
    let pod =
        |p: &str| state.pods.iter().find(|x| x.name == p).ok_or(format!("sandbox {name} has no pod {p:?}"));
    let src = pod(from)?;
    if family == Some(Family::Ipv6) && state.ipv6.is_none() {
        return Err(format!(
            "sandbox {name} is IPv4 only: --family ipv6 needs a dual-stack sandbox (`romana sandbox up --ipv6 CIDR`)"
        ));
    }
    match to {
        Target::Internet => {
            if !state.egress.internet {
                return Err(format!(
                    "sandbox {name} has no internet; bring it up with `romana sandbox up --internet`"
                ));
            }
            if family == Some(Family::Ipv6) {
                return Err(format!(
                    "the sandbox's internet is IPv4 only ({INTERNET_IP}): reach it with --family ipv4, or \
                     reach a pod over IPv6 with --to-pod"
                ));
            }
            Ok(vec![Leg {
                src_ip: address(src, Family::Ipv4, name)?,
                far: "internet".into(),
                far_ns: internet_ns.into(),
                addr: INTERNET_IP.parse().map_err(|_| "the internet's address".to_owned())?,
                start_server: false,
            }])
        }
        Target::Pod(p) => {
            // An address names the pod and the family; a name probes the asked family, or
            // every family the sandbox gives.
            let (dst, families) = match p.parse::<IpAddr>() {
                Ok(ip) => {
                    let owner = state
                        .pods
                        .iter()
                        .find(|x| x.ip == ip.to_string() || x.ipv6.as_deref() == Some(&ip.to_string()))
                        .ok_or(format!("no pod of sandbox {name} holds {ip}"))?;
                    if let Some(f) = family.filter(|f| *f != Family::of(ip)) {
                        return Err(format!(
                            "--to-pod {ip} is an {} address but --family {} was given",
                            Family::of(ip).flag(),
                            f.flag()
                        ));
                    }
                    (owner, vec![Family::of(ip)])
                }
                Err(_) => {
                    let all = if state.ipv6.is_some() {
                        vec![Family::Ipv4, Family::Ipv6]
                    } else {
                        vec![Family::Ipv4]
                    };
                    (pod(p)?, family.map_or(all, |f| vec![f]))
                }
            };
            families
                .into_iter()
                .map(|f| {
                    Ok(Leg {
                        src_ip: address(src, f, name)?,
                        far: dst.name.clone(),
                        far_ns: dst.netns.clone(),
                        addr: address(dst, f, name)?,
                        start_server: true,
                    })
                })
                .collect()
        }
    }
}

/// `romana sandbox reach`: every leg of the plan, one line each. Returns whether all answered.
pub fn reach(
    state_dir: &Path,
    name: &str,
    from: &str,
    to: &Target,
    udp: bool,
    family: Option<Family>,
) -> Result<bool> {
    let state = load(state_dir, name)?;
    let layout = state.layout()?;
    let legs = plan(&state, &layout.internet_ns(), from, to, family).map_err(anyhow::Error::msg)?;
    let d = dir(state_dir, name);
    let mut all = true;
    for leg in legs {
        all &= run_leg(&d, &state, from, &leg, udp)?;
    }
    Ok(all)
}

fn run_leg(d: &Path, state: &State, from: &str, leg: &Leg, udp: bool) -> Result<bool> {
    let src = state.pods.iter().find(|p| p.name == from).context("the source pod")?;
    let to = std::net::SocketAddr::new(leg.addr, ECHO_PORT);
    // The server listens on the pod's address of the leg's family only, so the two families'
    // servers never contend for the port and the peer is never an IPv4-mapped IPv6 address.
    let server = if leg.start_server { Some(start_echo(&leg.far_ns, &to.to_string(), d)?) } else { None };
    let log = echo_log(d, &leg.far_ns);
    let seen_before = std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &src.netns]).arg(std::env::current_exe()?).args([
        "sandbox",
        "ask-echo",
        "--to",
        &to.to_string(),
    ]);
    if udp {
        cmd.arg("--udp");
    }
    let out = cmd.output().context("running the echo client in the pod")?;
    if let Some(pid) = server {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let proto = if udp { "udp" } else { "tcp" };
    let seen: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .skip(seen_before)
        .filter_map(|l| l.strip_prefix(&format!("{proto} ")).map(str::to_owned))
        .collect();
    let seen_as = seen.last().map_or("nothing arrived".to_owned(), |s| format!("seen as {s}"));
    let answered = !answer.is_empty();
    println!(
        "{from} {} -> {} {to}/{proto}: {}; {seen_as}",
        leg.src_ip,
        leg.far,
        if answered { "answered" } else { "no answer" }
    );
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox_layout::Egress;

    fn pod(name: &str, ip: &str, ipv6: Option<&str>) -> Pod {
        Pod {
            name: name.into(),
            host: "r1h1".into(),
            netns: format!("ns-{name}"),
            ip: ip.into(),
            ipv6: ipv6.map(str::to_owned),
            tenant: "red".into(),
            segment: String::new(),
            labels: Default::default(),
        }
    }

    fn state(dual: bool, internet: bool) -> State {
        let v6 = |a: &'static str| dual.then_some(a);
        State {
            name: "s".into(),
            racks: 1,
            hosts_per_rack: 2,
            cidr: "10.112.0.0/16".into(),
            block_mask: 28,
            agents: Default::default(),
            pods: vec![pod("a", "10.112.0.2", v6("fd00:10::2")), pod("b", "10.112.0.3", v6("fd00:10::3"))],
            routing: Default::default(),
            egress: Egress { internet, ..Egress::default() },
            reflectors: 0,
            ipv6: dual.then(|| "fd00:10::/64".to_owned()),
        }
    }

    /// The legs as `src -> far addr (server)` texts, or the error.
    fn check(s: &State, to: Target, family: Option<Family>, expect: Result<&[&str], &str>) {
        let got = plan(s, "ns-internet", "a", &to, family).map(|legs| {
            legs.iter()
                .map(|l| {
                    let server = if l.start_server { " (server)" } else { "" };
                    format!("{} -> {} {} in {}{server}", l.src_ip, l.far, l.addr, l.far_ns)
                })
                .collect::<Vec<_>>()
        });
        match (got, expect) {
            (Ok(legs), Ok(want)) => assert_eq!(legs, want, "{to:?} {family:?}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{e}"),
            (got, want) => panic!("{to:?} {family:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn reach_plans_one_leg_per_family() {
        let b = || Target::Pod("b".into());
        let dual = state(true, true);
        // Dual-stack: both families unless one is asked for.
        check(
            &dual,
            b(),
            None,
            Ok(&[
                "10.112.0.2 -> b 10.112.0.3 in ns-b (server)",
                "fd00:10::2 -> b fd00:10::3 in ns-b (server)",
            ]),
        );
        check(&dual, b(), Some(Family::Ipv6), Ok(&["fd00:10::2 -> b fd00:10::3 in ns-b (server)"]));
        check(&dual, b(), Some(Family::Ipv4), Ok(&["10.112.0.2 -> b 10.112.0.3 in ns-b (server)"]));
        // An address picks the pod and the family.
        check(
            &dual,
            Target::Pod("fd00:10::3".into()),
            None,
            Ok(&["fd00:10::2 -> b fd00:10::3 in ns-b (server)"]),
        );
        check(
            &dual,
            Target::Pod("10.112.0.3".into()),
            None,
            Ok(&["10.112.0.2 -> b 10.112.0.3 in ns-b (server)"]),
        );
        check(
            &dual,
            Target::Pod("fd00:10::3".into()),
            Some(Family::Ipv4),
            Err("--to-pod fd00:10::3 is an ipv6 address but --family ipv4 was given"),
        );
        check(&dual, Target::Pod("fd00:10::99".into()), None, Err("no pod of sandbox s holds fd00:10::99"));
        check(&dual, Target::Pod("nobody".into()), None, Err("sandbox s has no pod \"nobody\""));
        // The internet is IPv4 only; a dual-stack sandbox reaches it over IPv4.
        check(&dual, Target::Internet, None, Ok(&["10.112.0.2 -> internet 198.18.0.1 in ns-internet"]));
        check(&dual, Target::Internet, Some(Family::Ipv6), Err("the sandbox's internet is IPv4 only"));
        // IPv4-only sandboxes.
        let v4 = state(false, false);
        check(&v4, b(), None, Ok(&["10.112.0.2 -> b 10.112.0.3 in ns-b (server)"]));
        check(
            &v4,
            b(),
            Some(Family::Ipv6),
            Err("sandbox s is IPv4 only: --family ipv6 needs a dual-stack sandbox"),
        );
        check(&v4, Target::Internet, None, Err("sandbox s has no internet"));
        // A pod added before the sandbox had IPv6 (its state has none).
        let mut old = state(true, false);
        old.pods[1].ipv6 = None;
        check(&old, b(), Some(Family::Ipv6), Err("pod b of sandbox s has no IPv6 address"));
    }
}
