//! Data tests of Services' VIPs: Services (as the API server sends them, JSON) and romanad's VIPs
//! in, the VIP writes and the reports out; then convergence: applying the writes leaves nothing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use romana_api::rest::{EndpointPort, PodInfo};
use romana_api::vip::{VipInfo, VipPort, VipRequest};
use serde_json::{Value, json};

use super::*;
use crate::plan::{Write, vip_info};
use crate::state::{Actual, Desired};
use crate::svc::{ServiceDesired, service};

fn svc(ns: &str, name: &str, ann: Value, spec: Value, ingress: &[&str]) -> Service {
    let ingress: Vec<Value> = ingress.iter().map(|ip| json!({ "ip": ip })).collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": ns, "uid": format!("uid-{name}"), "annotations": ann },
        "spec": spec,
        "status": { "loadBalancer": { "ingress": ingress } },
    }))
    .expect("a Service")
}

fn web_spec() -> Value {
    json!({ "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 8080, "protocol": "TCP" }] })
}

fn mapped(s: &Service) -> ServiceDesired {
    service(s).expect("maps").expect("in scope")
}

fn req(ns: &str, name: &str, address: &str, ports: &[(u16, u16)]) -> VipRequest {
    VipRequest {
        address: address.into(),
        service: name.into(),
        tenant: ns.into(),
        selector: [("app".to_owned(), "web".to_owned())].into(),
        ports: ports
            .iter()
            .map(|(p, t)| VipPort { protocol: "TCP".into(), port: *p, target_port: *t })
            .collect(),
        host: String::new(),
        origin: format!("k8s:{ns}/{name}"),
    }
}

fn held(r: &VipRequest) -> VipInfo {
    VipInfo { assigned: "h1".into(), ..vip_info(r) }
}

#[derive(Default)]
struct Case {
    d: Desired,
    a: Actual,
    refusals: BTreeMap<Key, String>,
    skip: BTreeSet<&'static str>,
}

impl Case {
    fn svc(mut self, s: Service) -> Self {
        let s = mapped(&s);
        self.d.services.insert(s.key.clone(), s);
        self
    }
    fn vip(mut self, v: VipInfo) -> Self {
        self.a.vips.insert(v.address.clone(), v);
        self
    }
    fn pod(mut self, ns: &str, name: &str, app: &str, port: (&str, u16)) -> Self {
        let p = PodInfo {
            namespace: ns.into(),
            name: name.into(),
            labels: [("app".to_owned(), app.to_owned())].into(),
            ports: vec![EndpointPort { name: port.0.into(), protocol: "TCP".into(), port: port.1 }],
            ..PodInfo::default()
        };
        self.d.pods.insert((ns.into(), name.into()), p);
        self
    }
}

/// (key, status, ingress) of a report.
type Rep<'a> = (&'a str, Option<&'a str>, Option<&'a [&'a str]>);

/// Plans `c`, checks writes and reports; applies the writes (a drawn address becomes `drawn`, as
/// romanad's answer would make it) and checks that nothing is left to write.
fn check(c: Case, writes: &[Write], reps: &[Rep<'_>], drawn: &str) {
    let reqs = requests(&c.d, &c.skip);
    let got = super::writes(&reqs, &c.a);
    assert_eq!(got, writes, "writes");
    let got: Vec<Report> = reports(&c.d, &reqs, &c.a, &c.refusals);
    let want: Vec<Report> = reps
        .iter()
        .map(|(k, st, ing)| {
            let (ns, n) = k.split_once('/').expect("ns/name");
            Report {
                key: (ns.into(), n.into()),
                uid: format!("uid-{n}"),
                status: st.map(str::to_owned),
                ingress: ing.map(|i| i.iter().map(|s| (*s).to_owned()).collect()),
            }
        })
        .collect();
    assert_eq!(got, want, "reports");
    let mut a = c.a.clone();
    for w in &got_writes(&reqs, &c.a) {
        w.apply_to(&mut a);
        if let Write::CreateVip(r) = w
            && r.address.is_empty()
        {
            a.vips.insert(drawn.into(), held(&VipRequest { address: drawn.into(), ..r.clone() }));
        }
    }
    assert_eq!(super::writes(&reqs, &a), [], "writes after applying the first");
}

fn got_writes(reqs: &BTreeMap<Key, Result<VipRequest, String>>, a: &Actual) -> Vec<Write> {
    super::writes(reqs, a)
}

fn k(ns: &str, n: &str) -> Key {
    (ns.into(), n.into())
}

#[test]
fn annotation_added_makes_a_vip() {
    // `auto`: drawn by romanad; the report waits for it.
    let c = Case::default().svc(svc("shop", "web", json!({"romana.io/vip": "auto"}), web_spec(), &[]));
    check(c, &[Write::CreateVip(req("shop", "web", "", &[(80, 8080)]))], &[], "198.51.100.1");
    // A given address, held already: reported on the Service, and on a LoadBalancer's status.
    let r = req("shop", "web", "198.51.100.7", &[(80, 8080)]);
    let mut spec = web_spec();
    spec["type"] = json!("LoadBalancer");
    let c = Case::default()
        .svc(svc("shop", "web", json!({"romana.io/vip": "198.51.100.7"}), spec, &[]))
        .vip(held(&r));
    check(c, &[], &[("shop/web", Some("ok 198.51.100.7"), Some(&["198.51.100.7"]))], "");
}

#[test]
fn annotation_changed() {
    let old = req("shop", "web", "198.51.100.1", &[(80, 8080)]);
    let ann = json!({"romana.io/vip": "198.51.100.2", "romana.io/vip-status": "ok 198.51.100.1"});
    // Another address: the old VIP goes first, then the new one.
    let c = Case::default().svc(svc("shop", "web", ann, web_spec(), &[])).vip(held(&old));
    check(
        c,
        &[
            Write::DeleteVip("198.51.100.1".into(), k("shop", "web")),
            Write::CreateVip(req("shop", "web", "198.51.100.2", &[(80, 8080)])),
        ],
        &[],
        "",
    );
    // `auto` keeps whatever address the Service holds; its ports changed: made again in place.
    let spec = json!({ "selector": { "app": "web" }, "ports": [{ "port": 443, "targetPort": 8443 }] });
    let ann = json!({"romana.io/vip": "auto", "romana.io/vip-status": "ok 198.51.100.1"});
    let c = Case::default().svc(svc("shop", "web", ann, spec, &[])).vip(held(&old));
    check(c, &[Write::ReplaceVip(req("shop", "web", "198.51.100.1", &[(443, 8443)]))], &[], "");
}

#[test]
fn annotation_removed_or_service_deleted() {
    let old = req("shop", "web", "198.51.100.1", &[(80, 8080)]);
    // No annotation but our report: the VIP goes, the report and the ingress we set are cleared.
    let mut spec = web_spec();
    spec["type"] = json!("LoadBalancer");
    let s = svc("shop", "web", json!({"romana.io/vip-status": "ok 198.51.100.1"}), spec, &["198.51.100.1"]);
    let c = Case::default().svc(s).vip(held(&old));
    check(
        c,
        &[Write::DeleteVip("198.51.100.1".into(), k("shop", "web"))],
        &[("shop/web", None, Some(&[]))],
        "",
    );
    // Neither annotated nor reported: out of scope.
    assert_eq!(service(&svc("shop", "web", json!({}), web_spec(), &[])), Ok(None));
    // The Service is gone: its VIP too.
    let c = Case::default().vip(held(&old));
    check(c, &[Write::DeleteVip("198.51.100.1".into(), k("shop", "web"))], &[], "");
}

#[test]
fn hand_made_vips_are_never_touched() {
    // Same service and tenant, made with `romana vip add`: not ours. The Service gets its own.
    let hand = VipInfo { origin: "api".into(), ..held(&req("shop", "web", "198.51.100.9", &[])) };
    let other = VipInfo { origin: "api:ops".into(), ..held(&req("shop", "db", "198.51.100.10", &[])) };
    let c = Case::default()
        .svc(svc("shop", "web", json!({"romana.io/vip": "auto"}), web_spec(), &[]))
        .vip(hand)
        .vip(other);
    check(c, &[Write::CreateVip(req("shop", "web", "", &[(80, 8080)]))], &[], "198.51.100.1");
}

#[test]
fn refusals_and_what_cannot_be_a_vip() {
    // romanad refused (address taken): reported, LoadBalancer ingress emptied.
    let mut spec = web_spec();
    spec["type"] = json!("LoadBalancer");
    let mut c = Case::default().svc(svc("shop", "web", json!({"romana.io/vip": "198.51.100.9"}), spec, &[]));
    c.refusals.insert(k("shop", "web"), "VIP 198.51.100.9 exists".into());
    let want = Write::CreateVip(req("shop", "web", "198.51.100.9", &[(80, 8080)]));
    let reqs = requests(&c.d, &c.skip);
    assert_eq!(super::writes(&reqs, &c.a), [want]);
    let reps = reports(&c.d, &reqs, &c.a, &c.refusals);
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].status.as_deref(), Some("error: romanad refused it: VIP 198.51.100.9 exists"));
    assert_eq!(reps[0].ingress, None, "already empty");
    // Refused again with the same report on the Service: nothing to write.
    let s = svc(
        "shop",
        "web",
        json!({"romana.io/vip": "198.51.100.9", "romana.io/vip-status": "error: romanad refused it: VIP 198.51.100.9 exists"}),
        web_spec(),
        &[],
    );
    let mut c = Case::default().svc(s);
    c.refusals.insert(k("shop", "web"), "VIP 198.51.100.9 exists".into());
    assert_eq!(reports(&c.d, &requests(&c.d, &c.skip), &c.a, &c.refusals), []);

    // What the Service asks cannot be a VIP: reported; a VIP it held goes.
    let old = held(&req("shop", "web", "198.51.100.1", &[(80, 8080)]));
    for (ann, spec, why) in [
        ("10.0.0.300", web_spec(), "error: annotation romana.io/vip=\"10.0.0.300\" is neither"),
        ("auto", json!({ "ports": [{ "port": 80 }] }), "error: the Service has no selector"),
        ("auto", json!({ "type": "ExternalName", "externalName": "x.example" }), "error: an ExternalName"),
        (
            "auto",
            json!({ "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": "http" }] }),
            "error: targetPort \"http\": no pod the selector picks has a TCP port of that name",
        ),
    ] {
        let c = Case::default()
            .svc(svc("shop", "web", json!({"romana.io/vip": ann}), spec, &[]))
            .vip(old.clone());
        let reqs = requests(&c.d, &c.skip);
        assert_eq!(super::writes(&reqs, &c.a), [Write::DeleteVip("198.51.100.1".into(), k("shop", "web"))]);
        let reps = reports(&c.d, &reqs, &c.a, &c.refusals);
        let st = reps.first().and_then(|r| r.status.clone()).unwrap_or_default();
        assert!(st.starts_with(why), "{ann}: {st:?} does not start with {why:?}");
    }
}

#[test]
fn named_target_ports_resolve_through_the_selected_pods() {
    let spec = json!({ "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": "http" }] });
    let s = || svc("shop", "web", json!({"romana.io/vip": "auto"}), spec.clone(), &[]);
    // Pods of other apps or namespaces do not count.
    let c = Case::default()
        .svc(s())
        .pod("shop", "w1", "web", ("http", 8080))
        .pod("shop", "d1", "db", ("http", 9999))
        .pod("other", "w9", "web", ("http", 7777));
    check(c, &[Write::CreateVip(req("shop", "web", "", &[(80, 8080)]))], &[], "198.51.100.1");
    let c = Case::default().svc(s()).pod("shop", "w1", "web", ("http", 8080)).pod(
        "shop",
        "w2",
        "web",
        ("http", 8081),
    );
    let reqs = requests(&c.d, &c.skip);
    assert_eq!(
        reqs.get(&k("shop", "web")),
        Some(&Err("targetPort \"http\": the selected pods disagree on its number (8080, 8081)".into()))
    );
}

#[test]
fn foreign_namespaces_and_the_whole_plan() {
    // A namespace left alone (its tenant is another's): no VIP asked there.
    let mut c = Case::default().svc(svc("os", "web", json!({"romana.io/vip": "auto"}), web_spec(), &[]));
    c.skip.insert("os");
    check(c, &[], &[], "");
    // Through `plan`: the tenant first, then the VIP.
    let s = mapped(&svc(
        "shop",
        "web",
        json!({"romana.io/vip": "auto", "romana.io/vip-host": "h2"}),
        web_spec(),
        &[],
    ));
    let mut d = Desired::default();
    let t = romana_api::rest::TenantRequest {
        name: "shop".into(),
        external_id: "u".into(),
        labels: [(crate::map::MANAGED_BY.to_owned(), crate::map::MANAGER.to_owned())].into(),
        isolation: "none".into(),
    };
    d.tenants.insert("shop".into(), t.clone());
    d.services.insert(s.key.clone(), s);
    let ctx = crate::plan::Ctx {
        orphans: &BTreeMap::new(),
        now: std::time::Instant::now(),
        grace: Default::default(),
    };
    let got = crate::plan::plan(&d, &Actual::default(), ctx);
    let want = VipRequest { host: "h2".into(), ..req("shop", "web", "", &[(80, 8080)]) };
    assert_eq!(got, [Write::PutTenant { create: true, req: t }, Write::CreateVip(want)]);
}
