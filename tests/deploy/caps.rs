//! The agent's capability list (the DaemonSet's `capabilities.add`, the unit's
//! `CapabilityBoundingSet=`) is enough: two agents on two hosts made of network namespaces (a
//! veth pair between them, nothing else), one with all of root's capabilities, one bounded to the
//! list with no_new_privs (`setpriv`, as systemd and the container runtime do). Both must route
//! to each other's blocks, and the bounded one may report no problem the unbounded one does not.
//! Needs root; skips with a message otherwise.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_test_support::{HostPair, Romanad, TempDir};

use super::manifest::{arr, containers, find, pod_spec, s};
use super::{built, manifest};

const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.21.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn romana(admin: &Path, args: &[&str]) -> String {
    let out =
        Command::new(built("romana")).arg("--credentials").arg(admin).args(args).output().expect("romana");
    assert!(out.status.success(), "romana {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn our_routes(ns: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "route", "show", "proto", "77"]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The WARN and ERROR lines of an agent's log, without timestamps and with the host's own names
/// and addresses replaced, so that two hosts' logs compare.
fn problems(log: &Path, host: &str, ip: &str, ns: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(|l| {
            let l = l.split_once(' ').map_or(l, |(_, rest)| rest);
            l.replace(ns, "NS")
                .replace(ip, "IP")
                .replace(&format!("\"{host}\""), "HOST")
                .replace(host, "HOST")
        })
        .collect()
}

#[test]
fn the_agent_works_with_exactly_its_listed_capabilities() {
    if !Path::new("/usr/bin/setpriv").exists() {
        println!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let Some(pair) = HostPair::new("rmdep") else {
        println!("skipped: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let docs = manifest();
    let spec = pod_spec(find(&docs, "DaemonSet", "romana-agent")).expect("a pod template");
    let agent = containers(spec).into_iter().find(|c| s(c, "/name") == "romana-agent").expect("the agent");
    let caps: Vec<String> = arr(agent, "/securityContext/capabilities/add")
        .iter()
        .map(|c| format!("+{}", c.as_str().unwrap_or("").to_lowercase()))
        .collect();
    let bounding = format!("-all,{}", caps.join(","));

    let dir = TempDir::new("deploy-caps");
    let topo = dir.path().join("topology.json");
    std::fs::write(&topo, FLAT).expect("write");
    let data = dir.path().join("data");
    let _romanad = Romanad::start(
        &built("romanad"),
        &[
            "--data-dir".into(),
            data.display().to_string(),
            "--initial-topology".into(),
            topo.display().to_string(),
        ],
    )
    .expect("romanad starts");
    let admin = data.join("admin.credentials");

    let hosts =
        [("ha", "192.168.88.1", pair.0.0.clone(), false), ("hb", "192.168.88.2", pair.1.0.clone(), true)];
    let mut agents = Vec::new();
    for (host, ip, ns, bounded) in &hosts {
        let creds = dir.path().join(format!("{host}.credentials"));
        let creds_arg = creds.display().to_string();
        romana(
            &admin,
            &[
                "user",
                "create",
                &format!("agent-{host}"),
                "--role",
                "service",
                "--host",
                host,
                "--credentials-out",
                &creds_arg,
            ],
        );
        let mut cmd = if *bounded {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--bounding-set", &bounding, "--inh-caps", "-all", "--no-new-privs", "--"]);
            c.arg(built("romana-agent"));
            c
        } else {
            Command::new(built("romana-agent"))
        };
        let log = dir.path().join(format!("{host}.log"));
        let child = cmd
            .args(["--host", host, "--host-ip", ip, "--netns", ns, "--interval-ms", "200"])
            // Two agents on one machine would race for the default metrics port, and the loser's
            // warning is not about capabilities.
            .args(["--metrics-listen", "off"])
            .arg("--credentials")
            .arg(&creds)
            .arg("--socket")
            .arg(dir.path().join(format!("{host}.sock")))
            .arg("--state-dir")
            .arg(dir.path().join(format!("{host}-state")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("romana-agent starts");
        agents.push(Proc(child));
    }
    // One address on each host gives each a block; each must route to the other's.
    let mut blocks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (host, ..) in &hosts {
        loop {
            let out = Command::new(built("romana"))
                .arg("--credentials")
                .arg(&admin)
                .args([
                    "-o",
                    "json",
                    "address",
                    "allocate",
                    &format!("pod-{host}"),
                    "--host",
                    host,
                    "--tenant",
                    "t",
                ])
                .output()
                .expect("romana");
            if out.status.success() {
                let a: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
                blocks.push(a["block"].as_str().expect("a block").to_owned());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host {host} never registered: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let to_b = format!("{} via 192.168.88.2 dev eth0", blocks[1]);
    let to_a = format!("{} via 192.168.88.1 dev eth0", blocks[0]);
    while !(our_routes(&pair.0.0).contains(&to_b) && our_routes(&pair.1.0).contains(&to_a)) {
        assert!(Instant::now() < deadline + Duration::from_secs(30), "the agents never routed to each other");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few more passes (firewall, fast path, repair checks), then compare what each reported.
    std::thread::sleep(Duration::from_secs(3));
    drop(agents);
    let full = problems(&dir.path().join("ha.log"), "ha", "192.168.88.1", &pair.0.0);
    let bounded = problems(&dir.path().join("hb.log"), "hb", "192.168.88.2", &pair.1.0);
    // What each capability is for happened under both: links, routes, the firewall, the fast path.
    let (full_log, bounded_log) = (
        std::fs::read_to_string(dir.path().join("ha.log")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("hb.log")).unwrap_or_default(),
    );
    for event in ["add link romana-gw", "firewall updated", "fast path uplinks"] {
        assert!(
            !full_log.contains(event) || bounded_log.contains(event),
            "with only {bounding} the agent never logged {event:?}:\n{bounded_log}"
        );
    }
    let only_bounded: Vec<_> = bounded.difference(&full).collect();
    assert!(
        only_bounded.is_empty(),
        "with only {bounding} the agent reports what it does not with all capabilities: {only_bounded:#?}"
    );
    println!("bounded agent ({bounding}) matched the unbounded one; {} problem lines in both", full.len());
}
