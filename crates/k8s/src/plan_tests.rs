//! Data tests of the reconcile plan: a desired and an actual picture in, the writes out; and
//! convergence: applying a plan's writes to the actual picture leaves nothing to do.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use romana_api::rest::{PodInfo, TenantRequest};
use serde_json::json;

use super::*;
use crate::map::{HostDesired, MANAGED_BY, MANAGER, NetpolDesired};
use crate::state::{Actual, Desired, EndpointActual, Key, TenantActual};

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn tenant(name: &str, owned: bool, extra: &[(&str, &str)]) -> TenantRequest {
    let mut labels = tags(extra);
    if owned {
        labels.insert(MANAGED_BY.into(), MANAGER.into());
    }
    TenantRequest { name: name.into(), external_id: format!("uid-{name}"), labels, isolation: "none".into() }
}

fn pod(ns: &str, name: &str, app: &str, segment: &str) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("u-{name}"),
        host: "h1".into(),
        labels: tags(&[("app", app)]),
        ports: vec![],
        segment: segment.into(),
    }
}

fn host(name: &str, ip: &str, owned: bool) -> HostDesired {
    let mut t = tags(&[("zone", "z1")]);
    if owned {
        t.insert(MANAGED_BY.into(), MANAGER.into());
    }
    HostDesired { name: name.into(), ip: ip.into(), tags: t }
}

fn np(ns: &str, name: &str, app: &str) -> NetpolDesired {
    let json = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": {"podSelector": {"matchLabels": {"app": app}}}});
    NetpolDesired { policy: serde_json::from_value(json.clone()).expect("parses"), json, uid: String::new() }
}

fn key(ns: &str, name: &str) -> Key {
    (ns.into(), name.into())
}

#[derive(Default)]
struct Case {
    d: Desired,
    a: Actual,
    orphans: BTreeMap<String, Instant>,
}

impl Case {
    fn tenant(mut self, t: TenantRequest, segments: &[&str]) -> Self {
        self.d.tenants.insert(t.name.clone(), t);
        let _ = segments;
        self
    }
    fn held_tenant(mut self, t: TenantRequest, segments: &[&str]) -> Self {
        let name = t.name.clone();
        let segments = segments.iter().map(|s| (*s).to_owned()).collect();
        self.a.tenants.insert(name, TenantActual { req: t, segments });
        self
    }
    fn pod(mut self, p: PodInfo) -> Self {
        self.d.pods.insert(key(&p.namespace, &p.name), p);
        self
    }
    fn held_pod(mut self, p: PodInfo) -> Self {
        self.a.pods.insert(key(&p.namespace, &p.name), p);
        self
    }
    fn host(mut self, h: HostDesired) -> Self {
        self.d.hosts.insert(h.name.clone(), h);
        self
    }
    fn held_host(mut self, h: HostDesired) -> Self {
        self.a.hosts.insert(h.name.clone(), h);
        self
    }
    fn np(mut self, n: NetpolDesired) -> Self {
        let k = key(&n.policy.metadata.namespace, &n.policy.metadata.name);
        self.d.netpols.insert(k, n);
        self
    }
    fn held_np(mut self, n: NetpolDesired) -> Self {
        let k = key(&n.policy.metadata.namespace, &n.policy.metadata.name);
        self.a.netpols.insert(k, n.policy);
        self
    }
    fn endpoint(mut self, name: &str, tenant: &str, pod: Option<(&str, &str)>) -> Self {
        let e = EndpointActual { tenant: tenant.into(), pod: pod.map(|(n, p)| key(n, p)) };
        self.a.endpoints.insert(name.into(), e);
        self
    }
}

const GRACE: Duration = Duration::from_secs(300);

/// Plans `c` at `now` (orphans tracked from `c.orphans`), checks the writes, then checks that
/// applying them leaves only `after` (writes that wait: tenants with endpoints, reclaims in grace).
fn check(c: Case, now: Instant, expect: &[Write], after: &[Write]) {
    let orphaned = orphans(&c.d, &c.a, &c.orphans, now);
    let ctx = Ctx { orphans: &orphaned, now, grace: GRACE };
    let got = plan(&c.d, &c.a, ctx);
    assert_eq!(got, expect, "plan");
    let mut a = c.a.clone();
    for w in &got {
        w.apply_to(&mut a);
    }
    let orphaned = orphans(&c.d, &a, &orphaned, now);
    let again = plan(&c.d, &a, Ctx { orphans: &orphaned, now, grace: GRACE });
    assert_eq!(again, after, "plan after applying the first");
}

#[test]
fn creates_in_dependency_order() {
    let now = Instant::now();
    let c = Case::default()
        .tenant(tenant("n", true, &[("team", "a")]), &[])
        .pod(pod("n", "p1", "web", "front"))
        .pod(pod("n", "p2", "web", "front"))
        .pod(pod("n", "p3", "db", ""))
        .host(host("h1", "10.0.0.1", true))
        .np(np("n", "allow", "db"));
    check(
        c,
        now,
        &[
            Write::PutTenant { create: true, req: tenant("n", true, &[("team", "a")]) },
            // One segment creation for two pods naming it; none for the default segment.
            Write::AddSegment { tenant: "n".into(), segment: "front".into() },
            Write::AddHost(host("h1", "10.0.0.1", true)),
            Write::ApplyNetpol(key("n", "allow"), np("n", "allow", "db")),
            Write::PutPod(pod("n", "p1", "web", "front")),
            Write::PutPod(pod("n", "p2", "web", "front")),
            Write::PutPod(pod("n", "p3", "db", "")),
        ],
        &[],
    );
}

#[test]
fn equal_pictures_plan_nothing() {
    let now = Instant::now();
    let c = Case::default()
        .tenant(tenant("n", true, &[]), &[])
        .held_tenant(tenant("n", true, &[]), &["front"])
        .pod(pod("n", "p1", "web", "front"))
        .held_pod(pod("n", "p1", "web", "front"))
        .host(host("h1", "10.0.0.1", true))
        .held_host(host("h1", "10.0.0.1", true))
        .np(np("n", "a", "x"))
        .held_np(np("n", "a", "x"))
        .endpoint("cni:e1", "n", Some(("n", "p1")));
    check(c, now, &[], &[]);
}

#[test]
fn changes_apply_in_place() {
    let now = Instant::now();
    let c = Case::default()
        .tenant(tenant("n", true, &[("team", "b")]), &[])
        .held_tenant(tenant("n", true, &[("team", "a")]), &[])
        .pod(pod("n", "p1", "db", ""))
        .held_pod(pod("n", "p1", "web", ""))
        .host(host("h1", "10.0.0.1", true))
        .held_host(HostDesired { tags: tags(&[]), ..host("h1", "10.0.0.1", true) })
        .np(np("n", "a", "y"))
        .held_np(np("n", "a", "x"));
    check(
        c,
        now,
        &[
            Write::PutTenant { create: false, req: tenant("n", true, &[("team", "b")]) },
            Write::SetTags { host: "h1".into(), tags: host("h1", "10.0.0.1", true).tags },
            Write::ApplyNetpol(key("n", "a"), np("n", "a", "y")),
            Write::PutPod(pod("n", "p1", "db", "")),
        ],
        &[],
    );
}

#[test]
fn a_hand_made_tenant_or_host_is_adopted_when_kubernetes_names_it() {
    let now = Instant::now();
    // The agent registered h1 with its rack (the topology places by it); an operator made
    // tenant n. Both get Kubernetes' view, and the agent's tags stay (only a node's tags are
    // laid over them).
    let c = Case::default()
        .tenant(tenant("n", true, &[]), &[])
        .held_tenant(tenant("n", false, &[]), &[])
        .host(host("h1", "10.0.0.1", true))
        .held_host(HostDesired {
            tags: tags(&[("rack", "rack-1"), ("zone", "old")]),
            ..host("h1", "10.0.0.1", false)
        });
    let mut merged = host("h1", "10.0.0.1", true).tags;
    merged.insert("rack".into(), "rack-1".into());
    check(
        c,
        now,
        &[
            Write::PutTenant { create: false, req: tenant("n", true, &[]) },
            Write::SetTags { host: "h1".into(), tags: merged },
        ],
        &[],
    );
}

#[test]
fn a_tenant_of_another_origin_is_never_adopted() {
    let now = Instant::now();
    // An OpenStack project's tenant "n" (its own external id, not ours) and its NetworkPolicy;
    // Kubernetes gets a namespace "n" with a policy of its own: neither side is touched.
    let held = TenantRequest { external_id: "os-project-7".into(), ..tenant("n", false, &[]) };
    let c = Case::default()
        .tenant(tenant("n", true, &[]), &[])
        .held_tenant(held, &[])
        .np(np("n", "k8s", "x"))
        .held_np(np("n", "hand-made", "y"));
    check(c, now, &[], &[]);
}

#[test]
fn deletions_touch_only_what_is_owned() {
    let now = Instant::now();
    let c = Case::default()
        .tenant(tenant("kept", true, &[]), &[])
        .held_tenant(tenant("kept", true, &[]), &[])
        .held_tenant(tenant("gone", true, &[]), &[])
        .held_tenant(tenant("manual", false, &[]), &[])
        .held_pod(pod("gone", "p", "x", ""))
        .held_np(np("gone", "a", "x"))
        .held_np(np("kept", "b", "x"))
        // An operator's policy in a tenant we do not own stays.
        .held_np(np("manual", "c", "x"))
        .held_host(host("h-owned", "10.0.0.2", true))
        .held_host(host("h-manual", "10.0.0.3", false));
    check(
        c,
        now,
        &[
            Write::DeletePod(key("gone", "p")),
            Write::DeleteNetpol(key("gone", "a")),
            Write::DeleteNetpol(key("kept", "b")),
            Write::DeleteTenant("gone".into()),
            Write::RemoveHost("h-owned".into()),
        ],
        &[],
    );
}

#[test]
fn a_deleted_namespace_keeps_its_tenant_while_endpoints_remain() {
    let now = Instant::now();
    let c = Case::default()
        .held_tenant(tenant("gone", true, &[]), &[])
        .held_np(np("gone", "a", "x"))
        .endpoint("cni:e1", "gone", None);
    check(c, now, &[Write::DeleteNetpol(key("gone", "a"))], &[]);
}

#[test]
fn lost_pods_are_reclaimed_after_the_grace_period() {
    let t0 = Instant::now();
    let base = || {
        Case::default()
            .tenant(tenant("n", true, &[]), &[])
            .held_tenant(tenant("n", true, &[]), &[])
            .pod(pod("n", "alive", "x", ""))
            .held_pod(pod("n", "alive", "x", ""))
            .endpoint("cni:alive", "n", Some(("n", "alive")))
            .endpoint("cni:lost", "n", Some(("n", "lost")))
            // Not a kubelet pod: never reclaimed.
            .endpoint("cni:other", "n", None)
    };
    // First seen orphaned now: nothing yet.
    check(base(), t0, &[], &[]);
    // Seen since t0, grace not over.
    let mut c = base();
    c.orphans.insert("cni:lost".into(), t0);
    check(c, t0 + GRACE - Duration::from_secs(1), &[], &[]);
    let mut c = base();
    c.orphans.insert("cni:lost".into(), t0);
    check(c, t0 + GRACE, &[Write::Reclaim("cni:lost".into())], &[]);
    // The pod came back (same name) after the orphans were found: not reclaimed.
    let c = base().pod(pod("n", "lost", "x", ""));
    let stale: BTreeMap<String, Instant> = [("cni:lost".to_owned(), t0)].into();
    let ctx = Ctx { orphans: &stale, now: t0 + GRACE, grace: GRACE };
    assert_eq!(plan(&c.d, &c.a, ctx), [Write::PutPod(pod("n", "lost", "x", ""))]);
    // And once the orphans are found again, no longer one.
    let mut c = base().pod(pod("n", "lost", "x", ""));
    c.orphans.insert("cni:lost".into(), t0);
    check(c, t0 + GRACE, &[Write::PutPod(pod("n", "lost", "x", ""))], &[]);
}

#[test]
fn a_deleted_namespace_with_only_lost_pods_goes_with_their_reclaim() {
    let t0 = Instant::now();
    let mut c = Case::default().held_tenant(tenant("gone", true, &[]), &[]).endpoint(
        "cni:lost",
        "gone",
        Some(("gone", "p")),
    );
    c.orphans.insert("cni:lost".into(), t0);
    check(c, t0 + GRACE, &[Write::Reclaim("cni:lost".into()), Write::DeleteTenant("gone".into())], &[]);
}

#[test]
fn refused_writes_wait_for_a_change() {
    let bad_x = Write::ApplyNetpol(key("n", "bad"), np("n", "bad", "x"));
    let bad_y = Write::ApplyNetpol(key("n", "bad"), np("n", "bad", "y"));
    let other = Write::PutPod(pod("n", "p", "web", ""));
    let tags = Write::SetTags { host: "h1".into(), tags: tags(&[("zone", "z")]) };
    // Refused before with the same content: skipped; the others go on.
    let mut refused = vec![bad_x.clone(), tags.clone()];
    let got = skip_refused(vec![bad_x.clone(), other.clone(), tags.clone()], &mut refused);
    assert_eq!(got, std::slice::from_ref(&other));
    assert_eq!(refused, [bad_x.clone(), tags.clone()]);
    // The policy changed: tried again, and the old refusal is forgotten; so is the tags one,
    // no longer planned (the node changed back).
    let got = skip_refused(vec![bad_y.clone(), other.clone()], &mut refused);
    assert_eq!(got, [bad_y, other]);
    assert!(refused.is_empty());
}

#[test]
fn a_host_held_with_another_ip_is_reported_not_changed() {
    let now = Instant::now();
    let c = Case::default().host(host("h1", "10.0.0.1", true)).held_host(host("h1", "10.9.9.9", false));
    assert_eq!(host_conflicts(&c.d, &c.a), vec![("h1", "10.0.0.1", "10.9.9.9")]);
    check(c, now, &[], &[]);
}

#[test]
fn orphans_keep_their_first_time() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(5);
    let c = Case::default().endpoint("e1", "n", Some(("n", "p"))).endpoint("e2", "n", Some(("n", "q")));
    let prev: BTreeMap<String, Instant> = [("e1".to_owned(), t0), ("gone".to_owned(), t0)].into();
    let got = orphans(&c.d, &c.a, &prev, t1);
    let want: BTreeMap<String, Instant> = [("e1".to_owned(), t0), ("e2".to_owned(), t1)].into();
    assert_eq!(got, want);
}
