//! Services annotated `romana.io/vip`, driven with `kubectl apply` against the test API server,
//! and romanad in process: a VIP is drawn (`auto`) or given, follows the Service's ports, is
//! reported on the Service (annotation, LoadBalancer ingress, Events); romanad's refusals
//! (address taken: 409; inside a pod network: 422) are reported and not retried hot; a restarted
//! controller removes the VIPs no Service wants; VIPs made by hand are never touched. No root.

mod common;

use common::{Env, eventually};
use romana_api::vip::{VipConfig, VipInfo, VipPort, VipRequest};
use romana_client::Client;

fn svc_yaml(name: &str, ann: &[(&str, &str)], lb: bool, port: u16, target: &str) -> String {
    let ann: String = ann.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    let ann = if ann.is_empty() { String::new() } else { format!("  annotations:\n{ann}") };
    let ty = if lb { "  type: LoadBalancer\n" } else { "" };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n{ann}spec:\n{ty}  selector:\n    app: {name}\n\
         \x20 ports:\n  - name: main\n    port: {port}\n    targetPort: {target}\n"
    )
}

async fn ours(c: &Client, svc: &str) -> Vec<VipInfo> {
    let origin = format!("k8s:shop/{svc}");
    c.vips().await.map(|v| v.into_iter().filter(|v| v.origin == origin).collect()).unwrap_or_default()
}

fn tcp(port: u16, target_port: u16) -> Vec<VipPort> {
    vec![VipPort { protocol: "TCP".into(), port, target_port }]
}

/// The Service's `romana.io/vip-status` (empty when absent).
fn status(env: &Env, svc: &str) -> String {
    env.kubectl(&[
        "-n",
        "shop",
        "get",
        "service",
        svc,
        "-o",
        r"jsonpath={.metadata.annotations.romana\.io/vip-status}",
    ])
}

fn events(env: &Env, reason: &str) -> String {
    env.kubectl(&[
        "-n",
        "shop",
        "get",
        "events",
        "--field-selector",
        &format!("reason={reason}"),
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name}: {.message}{\"\\n\"}{end}",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_vips_from_their_annotation() {
    let env = Env::start("k8s-vips").await;
    let c = &env.admin;
    c.set_vip_config(&VipConfig { ranges: vec!["198.51.100.0/28".into()] }).await.expect("ranges");
    // No resync during the test: a refused VIP is then tried once per change of its Service only.
    let mut ctl = env.controller("v1", &["--resync-interval", "600"]);
    env.kubectl_f("apply", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n");

    // `auto` on a LoadBalancer: the lowest address of the range, reported three ways.
    env.kubectl_f("apply", &svc_yaml("web", &[("romana.io/vip", "auto")], true, 80, "8080"));
    let v = eventually("web's VIP", 30, || async { ours(c, "web").await.pop() }).await;
    assert_eq!(v.address, "198.51.100.1");
    assert_eq!((v.tenant.as_str(), v.service.as_str()), ("shop", "web"));
    assert_eq!(v.selector.get("app").map(String::as_str), Some("web"));
    assert_eq!(v.ports, tcp(80, 8080));
    eventually("web's status", 30, || async { (status(&env, "web") == "ok 198.51.100.1").then_some(()) })
        .await;
    let ingress = env.kubectl(&[
        "-n",
        "shop",
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ]);
    assert_eq!(ingress, "198.51.100.1");
    assert!(events(&env, "VipCreated").contains("web: VIP 198.51.100.1"), "{}", events(&env, "VipCreated"));

    // A VIP made by hand for the same service: not the controller's.
    let hand = VipRequest {
        address: "198.51.100.5".into(),
        service: "web".into(),
        tenant: "shop".into(),
        ..VipRequest::default()
    };
    c.add_vip(&hand).await.expect("hand-made VIP");

    // The ports change: the VIP keeps its address and takes the new ports.
    env.kubectl_f("apply", &svc_yaml("web", &[("romana.io/vip", "auto")], true, 443, "8443"));
    eventually("web's new ports", 30, || async {
        ours(c, "web").await.pop().filter(|v| v.ports == tcp(443, 8443) && v.address == "198.51.100.1")
    })
    .await;

    // Refusals: the hand-made VIP's address (409), an address inside the pod network (422).
    env.kubectl_f("apply", &svc_yaml("db", &[("romana.io/vip", "198.51.100.5")], false, 5432, "5432"));
    env.kubectl_f("apply", &svc_yaml("bad", &[("romana.io/vip", "10.20.0.5")], false, 80, "80"));
    let st =
        eventually("db's refusal", 30, || async { Some(status(&env, "db")).filter(|s| !s.is_empty()) }).await;
    assert!(st.starts_with("error: romanad refused it:") && st.contains("198.51.100.5 exists"), "{st}");
    let st =
        eventually("bad's refusal", 30, || async { Some(status(&env, "bad")).filter(|s| !s.is_empty()) })
            .await;
    assert!(st.starts_with("error: romanad refused it:") && st.contains("pods"), "{st}");
    let warned = events(&env, "VipRefusedByRomana");
    assert!(warned.contains("db: ") && warned.contains("bad: "), "{warned}");
    assert!(ours(c, "db").await.is_empty());
    let refused = r#"romana_k8s_writes_total{kind="vip",result="refused"}"#;
    assert_eq!(ctl.metric(refused).await, Some(2.0));
    // Other Services change, plans run: the refused ones are not tried again.
    env.kubectl_f("apply", &svc_yaml("web", &[("romana.io/vip", "auto")], true, 443, "9443"));
    eventually("web's target port", 30, || async {
        ours(c, "web").await.pop().filter(|v| v.ports == tcp(443, 9443))
    })
    .await;
    assert_eq!(ctl.metric(refused).await, Some(2.0), "refused VIPs were retried");
    // Fixing the annotation fixes the Service.
    env.kubectl_f("apply", &svc_yaml("db", &[("romana.io/vip", "198.51.100.6")], false, 5432, "5432"));
    eventually("db's VIP", 30, || async {
        ours(c, "db").await.pop().filter(|v| v.address == "198.51.100.6")
    })
    .await;
    eventually("db's status", 30, || async { (status(&env, "db") == "ok 198.51.100.6").then_some(()) }).await;

    // While the controller is down, db goes and web loses its annotation; the restarted
    // controller removes their VIPs from the whole picture, and keeps the hand-made one.
    ctl.kill9();
    env.kubectl(&["-n", "shop", "delete", "service", "db"]);
    env.kubectl(&["-n", "shop", "annotate", "service", "web", "romana.io/vip-"]);
    let _ctl = env.controller("v2", &["--resync-interval", "600"]);
    eventually("the controller's VIPs gone", 30, || async {
        (ours(c, "web").await.is_empty() && ours(c, "db").await.is_empty()).then_some(())
    })
    .await;
    eventually("web's report cleared", 30, || async { status(&env, "web").is_empty().then_some(()) }).await;
    let ingress = env.kubectl(&[
        "-n",
        "shop",
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ]);
    assert_eq!(ingress, "");
    let left: Vec<String> =
        c.vips().await.expect("vips").into_iter().map(|v| format!("{} {}", v.address, v.origin)).collect();
    assert_eq!(left, ["198.51.100.5 api"], "only the hand-made VIP stays");
}
