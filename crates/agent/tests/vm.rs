//! OpenStack VM endpoints on the agent, as networking-romana calls them: a host namespace with a
//! "tap" (a veth whose other end is the VM's eth0 in a VM namespace), the agent serving `/vm` on
//! 127.0.0.1, both driver generations' bodies, bad input, and a delete after an agent restart.
//! Nova's order is kept: the port binds (`POST /vm`, answered at once) before the tap exists; the
//! agent routes the VM when the tap appears; a delete works before and after the tap exists.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{VmHost, ping, route, wait_for};
use reqwest::Method;
use romana_test_support::Netns;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_vm_endpoints() {
    let Some(w) = VmHost::new("rmv", "10.30.0.0/16", "192.168.90.1").await else { return };
    let host = &w.host;
    let vm = Netns::new(&format!("rmv-{}-vm", std::process::id())).unwrap();
    let call = |m: Method, path: &'static str, body: Option<serde_json::Value>| w.vm(m, path, body);
    let mut a = w.agent("a.log", &["--vm-wait-ms", "300"]).await;

    // Neutron's IPAM driver allocated the VM's address in romanad (tenant = project, segment =
    // network, name = port id).
    w.post("/tenants", json!({"name": "proj1", "external_id": "proj1"})).await;
    w.post("/tenants/proj1/segments", json!({"name": "net1"})).await;
    w.post(
        "/addresses",
        json!({"name": "port-vm1", "host": "hv1", "tenant": "proj1", "segment": "net1", "ip": "10.30.0.5"}),
    )
    .await;
    assert_eq!(w.endpoint("port-vm1").await.0, 404, "not registered before it is plumbed");

    // 2017 driver: POST /vm {interface, mac, ip} while the tap does not exist yet: answered at once.
    let r = call(
        Method::POST,
        "/vm",
        Some(json!({"interface": "tapvm1", "mac": "FA:16:3E:00:00:01", "ip": "10.30.0.5"})),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(route(&host.0, "10.30.0.5"), "", "no tap yet, so no route");
    let r = call(Method::GET, "/vm", None).await;
    let listed: serde_json::Value = serde_json::from_str(&r.1).unwrap();
    assert_eq!(
        listed,
        json!([{"interface": "tapvm1", "mac": "fa:16:3e:00:00:01", "ip": "10.30.0.5", "plumbed": false}])
    );
    // Nova starts the VM: the tap appears, and the agent routes it.
    w.start_vm(&vm, "tapvm1", "10.30.0.5");
    wait_for("the agent never routed the VM's tap", 20, || !route(&host.0, "10.30.0.5").is_empty()).await;
    assert_eq!(route(&host.0, "10.30.0.5"), "10.30.0.5 dev tapvm1 proto 77 scope link");
    let proxy = std::process::Command::new("ip")
        .args(["netns", "exec", &host.0, "cat", "/proc/sys/net/ipv4/conf/tapvm1/proxy_arp"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&proxy.stdout).trim(), "1", "proxy ARP on the tap");
    // The host and the VM reach each other (the VM's gateway is the host's romana-gw address).
    wait_for("the VM cannot reach its gateway", 10, || ping(&vm.0, "169.254.1.1")).await;
    assert!(ping(&host.0, "10.30.0.5"), "the host reaches the VM");
    let r = call(Method::GET, "/vm", None).await;
    assert!(r.1.contains(r#""plumbed":true"#), "{}", r.1);
    // Plumbed, the VM is an endpoint like a pod: its address's tenant, segment and host.
    let rec = w.registered("port-vm1", "a.log").await;
    assert_eq!(
        (&rec["ip"], &rec["tenant"], &rec["segment"], &rec["host"], &rec["labels"]["romana.io/kind"]),
        (&json!("10.30.0.5"), &json!("proj1"), &json!("net1"), &json!("hv1"), &json!("vm"))
    );

    // Bad input names the problem.
    for (body, field) in [
        (json!({"interface": "tapvm1", "mac": "nope", "ip": "10.30.0.5"}), "mac"),
        (json!({"interface": "tapvm1", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0"}), "ip"),
        (json!({"interface": "tap/../x", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"}), "interface"),
        (
            json!({"interface": "tap0123456789abc", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"}),
            "interface",
        ),
        // The caller is unauthenticated: never the uplink, never one of our endpoint links.
        (json!({"interface": "eth0", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"}), "not a VM tap"),
        (
            json!({"interface": "romana0a1b2c3d4", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"}),
            "not a VM tap",
        ),
    ] {
        let r = call(Method::POST, "/vm", Some(body.clone())).await;
        assert_eq!(r.0, 400, "{body}: {}", r.1);
        assert!(r.1.contains(field), "{body}: {}", r.1);
    }
    // A port bound and deleted before its VM ever started: both answered, nothing left.
    let never = json!({"interface": "tapnever", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"});
    let r = call(Method::POST, "/vm", Some(never)).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = call(Method::DELETE, "/vm/fa:16:3e:00:00:09", None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = call(Method::GET, "/vm", None).await;
    assert!(!r.1.contains("tapnever"), "{}", r.1);
    assert_eq!(route(&host.0, "10.30.0.9"), "");

    // The agent restarts; the delete still finds the VM (state file) and removes only our route.
    drop(a);
    a = w.agent("a2.log", &["--vm-wait-ms", "300"]).await;
    // (The restarted agent re-plumbs and re-registers what its state file holds.)
    let start = Instant::now();
    while !call(Method::GET, "/vm", None).await.1.contains(r#""plumbed":true"#) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the restarted agent did not re-plumb: {}",
            w.log("a2.log")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = call(Method::DELETE, "/vm/fa:16:3e:00:00:01", None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(route(&host.0, "10.30.0.5"), "");
    assert_eq!(w.endpoint("port-vm1").await.0, 404, "the endpoint record goes with the VM");
    assert!(host.ip("-br link").contains("tapvm1"), "the tap is nova's: it stays");
    let r = call(Method::DELETE, "/vm/fa:16:3e:00:00:01", None).await;
    assert_eq!(r.0, 404, "a second delete finds nothing");

    // The mechanism driver registers the port's endpoint (with its security groups' labels)
    // before the bind; the agent keeps that record rather than writing its own.
    let labelled = json!({"name": "port-vm1", "ip": "10.30.0.5", "tenant": "proj1", "segment": "net1", "host": "hv1",
                          "labels": {"romana.io/kind": "vm", "sg.romana.io/g1": "member"}});
    let (st, b) = w.call(Method::PUT, "/endpoints/port-vm1", Some(labelled.clone())).await;
    assert_eq!(st, 200, "{b}");
    // 2016 driver: {interface_name, mac_address, ip_address}; DELETE /vm with a body.
    let old =
        json!({"interface_name": "tapvm1", "mac_address": "fa:16:3e:00:00:02", "ip_address": "10.30.0.5"});
    let r = call(Method::POST, "/vm", Some(old)).await;
    assert_eq!(r.0, 200);
    wait_for("the 2016 shape's VM was never routed", 20, || route(&host.0, "10.30.0.5").contains("proto 77"))
        .await;
    wait_for("the agent never looked at the registered record", 20, || {
        w.log("a2.log").contains("kept as it is")
    })
    .await;
    let rec: serde_json::Value = serde_json::from_str(&w.endpoint("port-vm1").await.1).unwrap();
    assert_eq!(rec["labels"], labelled["labels"], "the driver's labels were overwritten");
    let r = call(Method::DELETE, "/vm", Some(json!({"mac_address": "fa:16:3e:00:00:02"}))).await;
    assert_eq!(r.0, 200);
    assert_eq!(route(&host.0, "10.30.0.5"), "");
    assert_eq!(w.endpoint("port-vm1").await.0, 404, "the record goes with the VM");
    drop(a);
}
