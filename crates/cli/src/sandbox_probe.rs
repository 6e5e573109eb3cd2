//! `romana sandbox probe`: every pod pings every pod, the IPv4 matrix, then, in a dual-stack
//! sandbox, the IPv6 matrix under an `IPv6:` line (each pair pinged at the target's IPv6
//! address; the IPv4 one stays first and untitled, as scripts read it). `render` is pure.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::sandbox::{Pod, load};

/// A cell: reached, not reached, or not probed (a pod without an address of the family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Reached,
    Refused,
    NotProbed,
}

/// The matrix as printed: header, one row per source pod (`name@host`), a summary line.
pub fn render(title: Option<&str>, pods: &[Pod], cells: &[Cell]) -> String {
    let mut out = String::new();
    if let Some(t) = title {
        out.push_str(&format!("{t}\n"));
    }
    out.push_str(&format!("{:<10}", "from\\to"));
    for p in pods {
        out.push_str(&format!(" {:>6}", p.name));
    }
    out.push('\n');
    for (i, from) in pods.iter().enumerate() {
        out.push_str(&format!("{:<10}", format!("{}@{}", from.name, from.host)));
        for j in 0..pods.len() {
            let c = match cells[i * pods.len() + j] {
                Cell::Reached => ".",
                Cell::Refused => "X",
                Cell::NotProbed => "-",
            };
            out.push_str(&format!(" {c:>6}"));
        }
        out.push('\n');
    }
    let probed = cells.iter().filter(|c| **c != Cell::NotProbed).count();
    let reached = cells.iter().filter(|c| **c == Cell::Reached).count();
    let not_probed = if probed < cells.len() { "; - not probed: no address of the family" } else { "" };
    out.push_str(&format!("({reached} of {probed} pairs reachable; . reachable, X not{not_probed})\n"));
    out
}

/// Pings every pair (all in parallel: a failing pair costs its timeout once, not once per
/// pair); `target` picks the address, `None`: not probed.
fn ping_all(pods: &[Pod], target: impl Fn(&Pod) -> Option<String>) -> Result<Vec<Cell>> {
    let mut children: Vec<Option<Child>> = Vec::new();
    for from in pods {
        for to in pods {
            let child = match target(to).filter(|_| target(from).is_some()) {
                Some(addr) => Some(
                    Command::new("ip")
                        .args(["netns", "exec", &from.netns, "ping", "-c1", "-W1", &addr])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .context("running ping (iputils-ping)")?,
                ),
                None => None,
            };
            children.push(child);
        }
    }
    Ok(children
        .into_iter()
        .map(|c| match c.map(|mut c| c.wait().is_ok_and(|s| s.success())) {
            Some(true) => Cell::Reached,
            Some(false) => Cell::Refused,
            None => Cell::NotProbed,
        })
        .collect())
}

/// Prints the matrices; returns how many probed pairs failed (both families).
pub fn probe(state_dir: &Path, name: &str) -> Result<usize> {
    let state = load(state_dir, name)?;
    let pods = &state.pods;
    if pods.is_empty() {
        bail!("sandbox {name} has no pods; add some with `romana sandbox pod add`");
    }
    let v4 = ping_all(pods, |p| Some(p.ip.clone()))?;
    let dual = state.ipv6.is_some();
    let v6 = if dual { ping_all(pods, |p| p.ipv6.clone())? } else { Vec::new() };
    print!("{}", render(None, pods, &v4));
    if dual {
        print!("{}", render(Some("IPv6:"), pods, &v6));
    }
    Ok(v4.iter().chain(&v6).filter(|c| **c == Cell::Refused).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, host: &str) -> Pod {
        Pod {
            name: name.into(),
            host: host.into(),
            netns: String::new(),
            ip: String::new(),
            ipv6: None,
            tenant: String::new(),
            segment: String::new(),
            labels: Default::default(),
        }
    }

    fn check(title: Option<&str>, cells: &[Cell], expect: &str) {
        let pods = [pod("a", "r1h1"), pod("b", "r2h1")];
        assert_eq!(render(title, &pods, cells), expect);
    }

    #[test]
    fn matrices_mark_reached_refused_and_unprobed_pairs() {
        use Cell::*;
        check(
            None,
            &[Reached, Refused, Reached, Reached],
            "from\\to         a      b\na@r1h1          .      X\nb@r2h1          .      .\n\
             (3 of 4 pairs reachable; . reachable, X not)\n",
        );
        check(
            Some("IPv6:"),
            &[Reached, NotProbed, NotProbed, NotProbed],
            "IPv6:\nfrom\\to         a      b\na@r1h1          .      -\nb@r2h1          -      -\n\
             (1 of 1 pairs reachable; . reachable, X not; - not probed: no address of the family)\n",
        );
    }
}
