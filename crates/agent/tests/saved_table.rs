//! A restarted agent and the table its predecessor saved (`--firewall-state`): taken without
//! reading the kernel's table while nothing was committed to nftables since, read back as
//! before after any commit in the host's namespace; either way the table in force is left as it
//! was. The saved file is root's alone. Real agent, real nftables, in a namespace of the test's
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
    assert!(text.starts_with("romana-table 1\n"), "{text}");
    let before = table(&ns);
    drop(first);

    // Nothing committed since: the second agent takes the saved table, reads nothing back,
    // and its first pass changes nothing.
    let second = h.agent("a2.log", &flags).await;
    let m = metrics.clone();
    let start = std::time::Instant::now();
    while metric(&m, "romana_agent_firewall_syncs_total").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no pass: {}", h.log("a2.log"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&m, "romana_agent_firewall_reads_total").await, 0.0, "{}", h.log("a2.log"));
    assert!(h.log("a2.log").contains("firewall table restored"), "{}", h.log("a2.log"));
    assert_eq!(table(&ns), before);
    drop(second);

    // A commit by someone else (a table of theirs, come and gone): the saved generation is gone,
    // so the third agent reads the kernel's table, and still leaves it as it was.
    nft(&ns, &format!("add table inet rsv-{}-foreign", std::process::id()));
    nft(&ns, &format!("delete table inet rsv-{}-foreign", std::process::id()));
    let _third = h.agent("a3.log", &flags).await;
    let start = std::time::Instant::now();
    while metric(&m, "romana_agent_firewall_syncs_total").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no pass: {}", h.log("a3.log"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&m, "romana_agent_firewall_reads_total").await >= 1.0, "{}", h.log("a3.log"));
    let log = h.log("a3.log");
    assert!(log.contains("out of date") && !log.contains("firewall table restored"), "{log}");
    assert_eq!(table(&ns), before);
}
