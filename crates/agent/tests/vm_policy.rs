//! OpenStack VMs under tenant isolation: three VMs (namespaces behind tap-like veths) on one
//! agent's host namespace, two of project A (no isolation) and one of project B (isolated per
//! tenant). Once the agent has registered them as endpoints, A's VMs reach each other and B's
//! VM refuses A's traffic, as it would a pod's.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{VmHost, ping, wait_for};
use reqwest::Method;
use romana_test_support::Netns;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_under_tenant_isolation() {
    let Some(w) = VmHost::new("rmp", "10.31.0.0/16", "192.168.92.1").await else { return };
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("SKIP: nft is not installed");
        return;
    }
    let pid = std::process::id();
    let _a = w.agent("agent.log", &[]).await;
    w.post("/tenants", json!({"name": "proja", "external_id": "proja"})).await;
    w.post("/tenants/proja/segments", json!({"name": "net1"})).await;
    w.post("/tenants", json!({"name": "projb", "external_id": "projb", "isolation": "tenant"})).await;
    w.post("/tenants/projb/segments", json!({"name": "net1"})).await;

    // (namespace, tap, mac, address, tenant): allocated as the IPAM driver does, bound, started.
    let vms = [
        (Netns::new(&format!("rmp-{pid}-a1")).unwrap(), "tapa1", "fa:16:3e:00:01:01", "10.31.0.11", "proja"),
        (Netns::new(&format!("rmp-{pid}-a2")).unwrap(), "tapa2", "fa:16:3e:00:01:02", "10.31.0.12", "proja"),
        (Netns::new(&format!("rmp-{pid}-b1")).unwrap(), "tapb1", "fa:16:3e:00:02:01", "10.31.0.21", "projb"),
    ];
    for (ns, tap, mac, ip, tenant) in &vms {
        w.post(
            "/addresses",
            json!({"name": format!("port-{tap}"), "host": "hv1", "tenant": tenant, "segment": "net1", "ip": ip}),
        )
        .await;
        let r = w.vm(Method::POST, "/vm", Some(json!({"interface": tap, "mac": mac, "ip": ip}))).await;
        assert_eq!(r.0, 200, "{}", r.1);
        w.start_vm(ns, tap, ip);
    }
    // Every VM registered as an endpoint of its tenant.
    for (_, tap, _, ip, tenant) in &vms {
        let e = w.registered(&format!("port-{tap}"), "agent.log").await;
        assert_eq!((&e["ip"], &e["tenant"]), (&json!(ip), &json!(tenant)));
    }
    let (a1, a2, b1) = (&vms[0].0.0, &vms[1].0.0, &vms[2].0.0);
    // Same tenant, no isolation: reachable (once routed).
    wait_for("a1 cannot reach a2", 30, || ping(a1, "10.31.0.12")).await;
    // B isolates per tenant: A's VM is refused once the firewall holds B's VM (and stays refused),
    // while A's VMs still reach each other and B's VM reaches its host.
    wait_for("another tenant's isolated VM stays reachable", 30, || !ping(a1, "10.31.0.21")).await;
    assert!(!ping(a1, "10.31.0.21"), "refused for good");
    assert!(!ping(a2, "10.31.0.21"), "refused from A's other VM too");
    assert!(ping(a2, "10.31.0.11"), "A's VMs still reach each other");
    assert!(ping(b1, "169.254.1.1"), "B's VM still reaches its gateway");
    // The control: with B's isolation off, A's VM reaches it again, so the refusal was policy.
    let (st, b) = w
        .call(
            Method::PUT,
            "/tenants/projb",
            Some(json!({"name": "projb", "external_id": "projb", "isolation": "none"})),
        )
        .await;
    assert!((200..300).contains(&st), "{b}");
    wait_for("B's VM stays refused without isolation", 30, || ping(a1, "10.31.0.21")).await;

    // The VMs go: their records go with them.
    for (_, tap, mac, _, _) in &vms {
        let r = w.vm(Method::DELETE, &format!("/vm/{mac}"), None).await;
        assert_eq!(r.0, 200);
        assert_eq!(w.endpoint(&format!("port-{tap}")).await.0, 404, "{tap}'s endpoint record stays");
    }
}
