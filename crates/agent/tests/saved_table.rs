//! A restarted agent and the table its predecessor saved (`--firewall-state`): taken without
//! reading the kernel's table while nothing was committed to nftables since; after someone
//! else's commit, taken once the table's structure is checked, its elements then read by the
//! repair check (which puts back an element added meanwhile); read whole before the first pass
//! when the structure differs. The table in force ends as it was every time. The saved file is
//! root's alone. Real agent, real nftables, in a namespace of the test's
//! own (`rsv-<pid>-host`, deleted by its guard).
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::VmHost;
use serde_json::json;

/// The agent's metric `name` from its `/metrics` on `listen` (0 when absent or unreachable).
async fn metric(listen: &str, name: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("http://{listen}/metrics")).await else { return 0.0 };
    let body = r.text().await.unwrap_or_default();
    body.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// `nft list table inet romana` in the host's namespace.
fn table(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "inet", "romana"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nft list: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft(ns: &str, cmd: &str) {
    let st =
        Command::new("ip").args(["netns", "exec", ns, "nft"]).args(cmd.split_whitespace()).status().unwrap();
    assert!(st.success(), "nft {cmd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_takes_its_saved_table_only_while_nothing_was_committed() {
    let Some(h) = VmHost::new("rsv", "10.31.0.0/16", "192.168.91.1").await else { return };
    let ns = h.host.0.clone();
    let saved = h.dir().join("run").join("firewall-table");
    let metrics = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let flags = ["--firewall-state", saved.to_str().unwrap(), "--metrics-listen", &metrics];
    let first = h.agent("a1.log", &flags).await;
    // Something for the table to hold: a tenant (the agent registered hv1).
    h.post("/tenants", json!({"name": "proj1", "external_id": "proj1"})).await;
    h.post("/tenants/proj1/segments", json!({"name": "net1"})).await;
    h.post("/addresses", json!({"name": "vm1", "tenant": "proj1", "segment": "net1", "host": "hv1"})).await;

    // Saved once its passes are quiet: wait until they are, and the file is there.
    let (mut syncs, start) = (-1.0, std::time::Instant::now());
    loop {
        assert!(start.elapsed() < Duration::from_secs(30), "never quiet: {}", h.log("a1.log"));
        let now = metric(&metrics, "romana_agent_firewall_syncs_total").await;
        if now >= 1.0 && now == syncs && saved.exists() {
            break;
        }
        syncs = now;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the saved table is root's alone");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.starts_with("romana-table 2\n"), "{text}");
    let before = table(&ns);
    drop(first);

    // Nothing committed since: the second agent takes the saved table, reads nothing back,
    // and its first pass changes nothing.
    let second = h.agent("a2.log", &flags).await;
    first_pass(&metrics, &h, "a2.log").await;
    assert_eq!(metric(&metrics, "romana_agent_firewall_reads_total").await, 0.0, "{}", h.log("a2.log"));
    assert!(h.log("a2.log").contains("nothing was committed since"), "{}", h.log("a2.log"));
    assert_eq!(table(&ns), before);
    drop(second);

    // A commit by someone else (a table of theirs, come and gone): the generation moved, so the
    // third agent checks the table's structure (a read without elements), takes the saved table,
    // and the repair check reads the elements after its first pass.
    nft(&ns, &format!("add table inet rsv-{}-foreign", std::process::id()));
    nft(&ns, &format!("delete table inet rsv-{}-foreign", std::process::id()));
    let third = h.agent("a3.log", &flags).await;
    first_pass(&metrics, &h, "a3.log").await;
    assert!(h.log("a3.log").contains("its structure is the one saved"), "{}", h.log("a3.log"));
    until(&metrics, "romana_agent_firewall_reads_total", 1.0, &h, "a3.log").await;
    assert_eq!(table(&ns), before);
    drop(third);

    // An element added to our table while no agent runs (a commit too): the structure holds, so
    // the table is taken, and the repair check's read takes the element out again.
    nft(&ns, "add element inet romana local-4 { 10.31.255.254 }");
    assert_ne!(table(&ns), before);
    let fourth = h.agent("a4.log", &flags).await;
    first_pass(&metrics, &h, "a4.log").await;
    assert!(h.log("a4.log").contains("its structure is the one saved"), "{}", h.log("a4.log"));
    until(&metrics, "romana_agent_firewall_repairs_total", 1.0, &h, "a4.log").await;
    assert_eq!(table(&ns), before, "{}", h.log("a4.log"));
    // The repair's commit removed the saved table (before committing); it comes back once the
    // passes are quiet.
    let start = std::time::Instant::now();
    while !saved.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "never saved again: {}", h.log("a4.log"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(fourth);

    // A chain added to our table: not the structure saved, so the fifth agent reads the whole
    // table before its first pass, which removes the chain.
    nft(&ns, "add chain inet romana rsv-extra");
    let _fifth = h.agent("a5.log", &flags).await;
    first_pass(&metrics, &h, "a5.log").await;
    let log = h.log("a5.log");
    assert!(log.contains("not the one saved") && !log.contains("firewall table restored"), "{log}");
    assert!(metric(&metrics, "romana_agent_firewall_reads_total").await >= 1.0, "{log}");
    assert_eq!(table(&ns), before, "{log}");
}

/// Waits for the agent's first firewall pass.
async fn first_pass(metrics: &str, h: &VmHost, log: &str) {
    until(metrics, "romana_agent_firewall_syncs_total", 1.0, h, log).await;
}

/// Waits until the agent's metric `name` is at least `at`.
async fn until(metrics: &str, name: &str, at: f64, h: &VmHost, log: &str) {
    let start = std::time::Instant::now();
    while metric(metrics, name).await < at {
        assert!(start.elapsed() < Duration::from_secs(30), "{name} never reached {at}: {}", h.log(log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
