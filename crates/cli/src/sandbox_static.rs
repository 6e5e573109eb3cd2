//! The sandbox's static routers: romanad's fabric view (the groups' aggregates and each VIP's
//! /32 toward the host serving it) reconciled into the spine and rack router namespaces as routes
//! of our protocol (77): once after each change (`sync`), and by a follower process that `up`
//! starts with static routing (`follow`), so a VIP's route moves when romanad moves the VIP to
//! another host. `plan` is pure; the rest runs `ip`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use romana_client::Client;

use crate::sandbox_layout::Layout;

/// Our routes in the routers: (namespace, destination) -> next hop.
pub type Routes = BTreeMap<(String, String), String>;

/// `ip route`'s destination as the fabric view writes it (`ip` prints a /32 or /128 without
/// its length).
fn normal(dest: &str) -> String {
    match (dest.contains('/'), dest.contains(':')) {
        (true, _) => dest.to_owned(),
        (false, false) => format!("{dest}/32"),
        (false, true) => format!("{dest}/128"),
    }
}

/// The `ip` invocations that take the routers from `observed` to `desired` (namespace,
/// destination, next hop): a changed or missing route replaced in place (never withdrawn first,
/// so a moving VIP is never without a route), then the routes no longer wanted deleted.
pub fn plan(observed: &Routes, desired: &[(String, String, String)]) -> Vec<Vec<String>> {
    let want: Routes = desired.iter().map(|(ns, d, via)| ((ns.clone(), normal(d)), via.clone())).collect();
    let mut out = Vec::new();
    for ((ns, dest), via) in &want {
        if observed.get(&(ns.clone(), dest.clone())) != Some(via) {
            out.push(format!("-n {ns} route replace {dest} via {via} proto 77"));
        }
    }
    for (ns, dest) in observed.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("-n {ns} route del {dest} proto 77"));
    }
    out.into_iter().map(|c| c.split_whitespace().map(str::to_owned).collect()).collect()
}

/// Our routes in every router namespace now (IPv6 ones too in a dual-stack sandbox).
fn observe(layout: &Layout) -> Result<Routes> {
    let mut out = Routes::new();
    let families: &[&str] = if layout.ipv6.is_some() { &["-4", "-6"] } else { &["-4"] };
    for (ns, family) in layout.routers().iter().flat_map(|ns| families.iter().map(move |f| (ns, f))) {
        let text = Command::new("ip")
            .args(["-n", ns, *family, "-o", "route", "show", "proto", "77"])
            .output()
            .with_context(|| format!("reading routes in {ns}"))?;
        for line in String::from_utf8_lossy(&text.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let (Some(dest), Some(i)) = (words.first(), words.iter().position(|w| *w == "via"))
                && let Some(via) = words.get(i + 1)
            {
                out.insert((ns.clone(), normal(dest)), (*via).to_owned());
            }
        }
    }
    Ok(out)
}

/// Brings the routers to the fabric view now; returns how many routes changed.
pub async fn sync(c: &Client, layout: &Layout) -> Result<usize> {
    let fabric = c.fabric().await.context("reading the fabric routes")?;
    let mut desired = layout.fabric_routes(&fabric);
    desired.extend(crate::sandbox_ipv6::fabric_routes(layout, &fabric));
    let steps = plan(&observe(layout)?, &desired);
    for s in &steps {
        let out = Command::new("ip").args(s).output().context("running ip")?;
        // Deleting what is already gone is success: the follower and a command's own sync may
        // both be at it.
        let gone =
            s.iter().any(|w| w == "del") && String::from_utf8_lossy(&out.stderr).contains("No such process");
        if !out.status.success() && !gone {
            bail!("ip {}: {}", s.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(steps.len())
}

/// `romana sandbox follow-routers`: `sync` every 200 ms until the sandbox is gone (its directory
/// removed by `down`, which also kills this process). A failed pass is logged and retried.
pub async fn follow(c: &Client, d: &Path, layout: &Layout) -> Result<()> {
    let mut last_error = String::new();
    while d.exists() {
        match sync(c, layout).await {
            Ok(0) => {}
            Ok(n) => eprintln!("routers: {n} route(s) changed"),
            Err(e) => {
                let text = format!("{e:#}");
                if text != last_error {
                    eprintln!("routers: {text} (retrying)");
                    last_error = text;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn pid_file(d: &Path) -> std::path::PathBuf {
    d.join("routers.pid")
}

/// Starts the follower (this program again, with `env`: the connection settings it was given),
/// its own process group, its log in the sandbox directory; its pid in `routers.pid`.
pub fn start_follower(state_dir: &Path, name: &str, d: &Path, env: &[(String, String)]) -> Result<u32> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("routers.log"))?;
    let me = std::env::current_exe().context("finding this program")?;
    let child = Command::new(me)
        .args(["sandbox", "follow-routers", "--name", name, "--state-dir"])
        .arg(state_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the router follower")?;
    std::fs::write(pid_file(d), child.id().to_string())?;
    Ok(child.id())
}

/// Stops the follower found by its pid file (only if that pid is still a follower).
pub fn stop_follower(d: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file(d)).ok().and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return;
    };
    if crate::sandbox_bgp::pid_alive(pid, "follow-routers") {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(observed: &[(&str, &str, &str)], desired: &[(&str, &str, &str)], expect: &[&str]) {
        let observed: Routes =
            observed.iter().map(|(n, d, v)| (((*n).to_owned(), normal(d)), (*v).to_owned())).collect();
        let desired: Vec<(String, String, String)> =
            desired.iter().map(|(n, d, v)| ((*n).to_owned(), (*d).to_owned(), (*v).to_owned())).collect();
        let got: Vec<String> = plan(&observed, &desired).iter().map(|c| c.join(" ")).collect();
        assert_eq!(got, expect);
        // Applying the plan reaches the desired state: a second plan is empty.
        let after: Routes = desired.iter().map(|(n, d, v)| ((n.clone(), normal(d)), v.clone())).collect();
        assert!(plan(&after, &desired).is_empty());
    }

    #[test]
    fn routers_converge_on_the_fabric_view() {
        let agg = ("s", "10.112.0.0/17", "192.168.254.6");
        check(&[], &[], &[]);
        check(&[agg], &[agg], &[]);
        check(&[], &[agg], &["-n s route replace 10.112.0.0/17 via 192.168.254.6 proto 77"]);
        // A VIP moves (failover): replaced in place, never deleted first. `ip` prints a /32
        // without its length; it is the same route.
        check(
            &[agg, ("s", "198.51.100.5", "192.168.254.10")],
            &[agg, ("s", "198.51.100.5/32", "192.168.254.6")],
            &["-n s route replace 198.51.100.5/32 via 192.168.254.6 proto 77"],
        );
        // A VIP deleted, a host's aggregate gone.
        check(
            &[agg, ("r", "198.51.100.5", "192.168.1.11"), ("r", "10.112.0.0/28", "192.168.1.11")],
            &[agg],
            &["-n r route del 10.112.0.0/28 proto 77", "-n r route del 198.51.100.5/32 proto 77"],
        );
        // IPv6: `ip` prints a /128 without its length too.
        let v6 = ("r", "fd00:10::/122", "fd72:6d73:1::11");
        check(&[v6, ("r", "fd00:10::40", "x")], &[v6], &["-n r route del fd00:10::40/128 proto 77"]);
    }
}
