//! `romana sandbox` end to end: a romanad process (embedded store) on 127.0.0.1, a sandbox of 2
//! racks x 2 hosts with real agents, pods of two tenants on every host through romana-cni, a full
//! reachability matrix across racks, status, then `down`; then one rack with pods (`--racks 1`),
//! and `down` after a crash (agents and the router follower alive, state file gone). A guard runs `down` if the test fails half-way.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use romana_test_support::TempDir;

#[allow(dead_code)]
mod common;
use common::{Sandbox, can_make_namespaces, namespaces};

#[test]
fn sandbox_up_pods_probe_status_down() {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    let dir = TempDir::new("sandbox");
    let (_romanad, sb) = Sandbox::on_new_romanad(&dir, "t");
    let name = sb.name.clone();
    let prefix = format!("rms-{name}-");

    sb.ok(&["sandbox", "up"]);
    assert_eq!(namespaces(&prefix).len(), 7, "spine, 2 rack routers, 4 hosts");
    // Each agent runs as a service user bound to its own host, with a credentials file of its
    // own (0600).
    let agent_creds = sb.state.join(&name).join("r1h1.credentials");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&agent_creds).unwrap().permissions().mode() & 0o777, 0o600);
    let who = Command::new(env!("CARGO_BIN_EXE_romana"))
        .args(["whoami", "-o", "json"])
        .env("ROMANA_ENDPOINT", &sb.url)
        .env("ROMANA_CREDENTIALS", &agent_creds)
        .output()
        .unwrap();
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["roles"], serde_json::json!(["service"]), "{who}");
    assert_eq!(who["hosts"], serde_json::json!(["r1h1"]), "{who}");
    for (i, host) in ["r1h1", "r1h2", "r2h1", "r2h2"].iter().enumerate() {
        for tenant in ["red", "blue"] {
            let out = sb.ok(&[
                "sandbox",
                "pod",
                "add",
                "--host",
                host,
                "--tenant",
                tenant,
                "--segment",
                "web",
                "--label",
                &format!("app=a{i}"),
            ]);
            assert!(out.contains("10.112."), "pod address from the sandbox pool: {out}");
        }
    }
    let probe = sb.ok(&["sandbox", "probe"]);
    assert!(
        probe.contains("(64 of 64 pairs reachable"),
        "every pod reaches every pod, across racks:\n{probe}"
    );
    let status = sb.ok(&["sandbox", "status"]);
    assert_eq!(status.matches(" up ").count(), 4, "four agents up:\n{status}");
    assert!(status.contains("p8"), "{status}");

    // `romana user create` writes such files for real hosts; a duplicate user is refused.
    let creds_out = dir.path().join("node.credentials");
    let created = Command::new(env!("CARGO_BIN_EXE_romana"))
        .args(["user", "create", "agent-node9", "--role", "service", "--host", "node9", "--credentials-out"])
        .arg(&creds_out)
        .env("ROMANA_ENDPOINT", &sb.url)
        .env("ROMANA_CREDENTIALS", &sb.creds)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(!String::from_utf8_lossy(&created.stdout).contains("password"), "the password is not printed");
    let who = Command::new(env!("CARGO_BIN_EXE_romana"))
        .args(["whoami", "-o", "json"])
        .env("ROMANA_ENDPOINT", &sb.url)
        .env("ROMANA_CREDENTIALS", &creds_out)
        .output()
        .unwrap();
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["hosts"], serde_json::json!(["node9"]), "bound to its host: {who}");
    let again = Command::new(env!("CARGO_BIN_EXE_romana"))
        .args(["user", "create", "agent-node9", "--role", "service"])
        .env("ROMANA_ENDPOINT", &sb.url)
        .env("ROMANA_CREDENTIALS", &sb.creds)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a second agent-node9 is refused");

    // Bad input is refused with the reason.
    let out = sb.romana(&["sandbox", "pod", "add", "--host", "nope", "--tenant", "red"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host \"nope\""));

    sb.ok(&["sandbox", "down"]);
    assert!(namespaces(&prefix).is_empty(), "down removed every namespace");

    // One rack: its hosts' routes go to its router, not to the spine (they used to, and the
    // first pod failed with "Nexthop has invalid gateway"); pods reach each other.
    sb.ok(&["sandbox", "up", "--racks", "1"]);
    for host in ["r1h1", "r1h2"] {
        sb.ok(&["sandbox", "pod", "add", "--host", host, "--tenant", "red"]);
    }
    let probe = sb.ok(&["sandbox", "probe"]);
    assert!(probe.contains("(4 of 4 pairs reachable"), "one rack:\n{probe}");

    // After a crash: a sandbox whose state file is gone and whose agents still run.
    std::fs::remove_file(sb.state.join(&name).join("state.json")).unwrap();
    sb.ok(&["sandbox", "down"]);
    assert!(namespaces(&prefix).is_empty(), "down works from namespace names alone");
    let agents = Command::new("pgrep")
        .args(["-f", &format!("romana-agent.*{}", Path::new(&sb.state).display())])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&agents.stdout).trim().is_empty(), "no agent of the sandbox is left");
    let followers =
        Command::new("pgrep").args(["-f", &format!("follow-routers --name {name} ")]).output().unwrap();
    assert!(String::from_utf8_lossy(&followers.stdout).trim().is_empty(), "no router follower is left");
}
