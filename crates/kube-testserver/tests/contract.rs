//! HTTP-level contract tests as data: each step is a request and the status and JSON shape the
//! documented Kubernetes API answers with. Steps run in order against one server; values
//! (resourceVersions, continue tokens) can be saved and used by later steps as `{name}`.
//! No root, no network namespaces.

mod common;

use romana_kube_testserver::ApiServer;
use serde_json::{Value, json};
use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Check {
    Eq(Value),
    /// Equal to a saved value (as a string).
    Var(&'static str),
    NotVar(&'static str),
    Len(usize),
    Prefix(&'static str),
    Absent,
    Present,
}
use Check::*;

#[derive(Debug, Clone)]
enum Step {
    Req {
        method: &'static str,
        path: &'static str,
        body: Option<Value>,
        ctype: &'static str,
        status: u16,
        checks: Vec<(&'static str, Check)>,
        save: Vec<(&'static str, &'static str)>,
    },
    Compact,
}

fn req(method: &'static str, path: &'static str, status: u16) -> Step {
    Step::Req { method, path, body: None, ctype: "application/json", status, checks: vec![], save: vec![] }
}

impl Step {
    fn body(mut self, b: Value) -> Step {
        if let Step::Req { body, .. } = &mut self {
            *body = Some(b);
        }
        self
    }
    fn ctype(mut self, c: &'static str) -> Step {
        if let Step::Req { ctype, .. } = &mut self {
            *ctype = c;
        }
        self
    }
    fn check(mut self, ptr: &'static str, c: Check) -> Step {
        if let Step::Req { checks, .. } = &mut self {
            checks.push((ptr, c));
        }
        self
    }
    fn save(mut self, ptr: &'static str, var: &'static str) -> Step {
        if let Step::Req { save, .. } = &mut self {
            save.push((ptr, var));
        }
        self
    }
}

fn pod(name: &str, node: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
}

fn ns(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn netpol(name: &str, port: u16, labels: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": port}]}]}})
}

fn substitute(s: &str, vars: &HashMap<String, String>) -> String {
    vars.iter().fold(s.to_string(), |acc, (k, v)| acc.replace(&format!("{{{k}}}"), v))
}

fn as_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn run(steps: Vec<Step>) {
    let server = ApiServer::start().expect("start the test API server");
    let mut vars: HashMap<String, String> = HashMap::new();
    for (i, step) in steps.into_iter().enumerate() {
        let Step::Req { method, path, body, ctype, status, checks, save } = step else {
            server.compact();
            continue;
        };
        let path = substitute(path, &vars);
        let body = body.map(|b| substitute(&b.to_string(), &vars));
        let headers = [("Content-Type", ctype), ("Accept", "application/json")];
        let answer = common::request(server.addr(), method, &path, &headers, body.as_deref());
        let what = format!("step {i}: {method} {path}");
        let doc = if path.contains("watch=") && answer.status == 200 {
            Value::Array(answer.events())
        } else {
            answer.json()
        };
        assert_eq!(answer.status, status, "{what}: {doc}");
        if status >= 400 {
            assert_eq!(
                (doc["kind"].as_str(), doc["status"].as_str()),
                (Some("Status"), Some("Failure")),
                "{what}"
            );
            assert_eq!(doc["code"], status, "{what}");
        }
        for (ptr, check) in checks {
            let got = doc.pointer(ptr);
            let ok = match (&check, got) {
                (Eq(want), Some(g)) => g == want,
                (Var(v), Some(g)) => Some(&as_text(g)) == vars.get(*v),
                (NotVar(v), Some(g)) => Some(&as_text(g)) != vars.get(*v),
                (Len(n), Some(g)) => g.as_array().map(Vec::len) == Some(*n),
                (Prefix(p), Some(g)) => g.as_str().is_some_and(|s| s.starts_with(p)),
                (Absent, None) | (Present, Some(_)) => true,
                _ => false,
            };
            assert!(ok, "{what}: {ptr} should be {check:?}, is {got:?}\n{doc}");
        }
        for (ptr, var) in save {
            let v = doc.pointer(ptr).unwrap_or_else(|| panic!("{what}: nothing at {ptr} to save\n{doc}"));
            vars.insert(var.to_string(), as_text(v));
        }
    }
}

#[test]
fn discovery() {
    run(vec![
        req("GET", "/version", 200).check("/major", Eq(json!("1"))),
        req("GET", "/api", 200)
            .check("/kind", Eq(json!("APIVersions")))
            .check("/versions", Eq(json!(["v1"]))),
        req("GET", "/apis", 200)
            .check("/kind", Eq(json!("APIGroupList")))
            .check("/groups/0/name", Eq(json!("networking.k8s.io")))
            .check("/groups/0/preferredVersion/groupVersion", Eq(json!("networking.k8s.io/v1"))),
        req("GET", "/apis/coordination.k8s.io", 200).check("/kind", Eq(json!("APIGroup"))),
        req("GET", "/api/v1", 200)
            .check("/kind", Eq(json!("APIResourceList")))
            .check("/groupVersion", Eq(json!("v1")))
            .check("/resources/0/name", Eq(json!("namespaces")))
            .check("/resources/0/namespaced", Eq(json!(false)))
            .check("/resources/0/shortNames", Eq(json!(["ns"])))
            .check("/resources/1/shortNames", Eq(json!(["po"])))
            .check("/resources/2/shortNames", Eq(json!(["no"]))),
        req("GET", "/apis/networking.k8s.io/v1", 200)
            .check("/resources/0/kind", Eq(json!("NetworkPolicy")))
            .check("/resources/0/shortNames", Eq(json!(["netpol"])))
            .check("/resources/0/namespaced", Eq(json!(true)))
            .check("/resources/0/verbs/7", Eq(json!("watch"))),
        req("GET", "/apis/apps/v1", 404).check("/reason", Eq(json!("NotFound"))),
        req("GET", "/api/v1/pods?limit=%zz", 400).check("/reason", Eq(json!("BadRequest"))),
        req("GET", "/api/v1/pods?limit=x", 400).check("/message", Eq(json!("invalid limit \"x\""))),
        req("GET", "/apis/networking.k8s.io/v1/ingresses", 404),
    ]);
}

#[test]
fn create_get_replace_delete() {
    run(vec![
        req("POST", "/api/v1/namespaces/a/pods", 404)
            .body(pod("p", "h1", json!({})))
            .check("/message", Eq(json!("namespaces \"a\" not found"))),
        req("POST", "/api/v1/namespaces", 201)
            .body(ns("a"))
            .check("/metadata/labels/kubernetes.io~1metadata.name", Eq(json!("a")))
            .check("/status/phase", Eq(json!("Active")))
            .check("/metadata/generation", Absent),
        req("POST", "/api/v1/namespaces/a/pods", 201)
            .body(pod("p", "h1", json!({"app": "web"})))
            .check("/metadata/namespace", Eq(json!("a")))
            .check("/metadata/uid", Present)
            .check("/metadata/creationTimestamp", Present)
            .save("/metadata/resourceVersion", "rv1")
            .save("/metadata/uid", "uid"),
        req("POST", "/api/v1/namespaces/a/pods", 409)
            .body(pod("p", "h1", json!({})))
            .check("/reason", Eq(json!("AlreadyExists")))
            .check("/details/name", Eq(json!("p")))
            .check("/details/kind", Eq(json!("pods"))),
        req("POST", "/api/v1/namespaces/a/pods", 201)
            .body(json!({"metadata": {"generateName": "gen-"}, "spec": {}}))
            .check("/metadata/name", Prefix("gen-"))
            .check("/kind", Eq(json!("Pod"))),
        req("POST", "/api/v1/namespaces/a/pods", 422).body(json!({"metadata": {}})).check("/reason", Eq(json!("Invalid"))),
        req("POST", "/api/v1/namespaces/a/pods", 422).body(pod("Bad_Name", "h", json!({}))),
        req("POST", "/api/v1/namespaces/a/pods", 400)
            .body(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "namespace": "other"}})),
        req("POST", "/api/v1/namespaces/a/pods", 400).body(json!({"apiVersion": "v2", "metadata": {"name": "q"}})),
        req("POST", "/api/v1/namespaces/a/pods", 400).body(json!("not an object")),
        req("GET", "/api/v1/namespaces/a/pods/p", 200).check("/metadata/resourceVersion", Var("rv1")),
        req("GET", "/api/v1/namespaces/a/pods/nope", 404)
            .check("/reason", Eq(json!("NotFound")))
            .check("/message", Eq(json!("pods \"nope\" not found"))),
        // PUT: a stale resourceVersion conflicts; the current one or none succeeds.
        req("PUT", "/api/v1/namespaces/a/pods/p", 409)
            .body(json!({"metadata": {"name": "p", "resourceVersion": "1"}, "spec": {"nodeName": "h9"}}))
            .check("/reason", Eq(json!("Conflict")))
            .check("/message", Prefix("Operation cannot be fulfilled on pods \"p\": the object has been modified")),
        req("PUT", "/api/v1/namespaces/a/pods/p", 200)
            .body(json!({"metadata": {"name": "p", "resourceVersion": "{rv1}", "labels": {"app": "web"}}, "spec": {"nodeName": "h2"}}))
            .check("/metadata/resourceVersion", NotVar("rv1"))
            .check("/metadata/uid", Var("uid"))
            .check("/spec/nodeName", Eq(json!("h2")))
            .save("/metadata/resourceVersion", "rv2"),
        req("PUT", "/api/v1/namespaces/a/pods/p", 409)
            .body(json!({"metadata": {"name": "p", "resourceVersion": "{rv1}"}, "spec": {}})),
        // The same content again: no change, no new resourceVersion.
        req("PUT", "/api/v1/namespaces/a/pods/p", 200)
            .body(json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"nodeName": "h2"}, "status": {"phase": "Pending"}}))
            .check("/metadata/resourceVersion", Var("rv2")),
        req("PUT", "/api/v1/namespaces/a/pods/p", 400).body(json!({"metadata": {"name": "q"}})),
        req("PUT", "/api/v1/namespaces/a/pods/p", 409)
            .body(json!({"metadata": {"name": "p", "uid": "another-uid"}}))
            .check("/message", Prefix("Operation cannot be fulfilled on pods \"p\": Precondition failed: UID")),
        req("PUT", "/api/v1/namespaces/a/pods/p", 422).body(json!({"metadata": {"name": "p", "labels": {"app": "no spaces"}}})),
        req("POST", "/api/v1/namespaces/a/pods", 422)
            .body(pod("bad-labels", "h", json!({"bad key": "v"})))
            .check("/message", Prefix("Pod \"bad-labels\" is invalid: metadata.labels: Invalid value: \"bad key\"")),
        req("PATCH", "/api/v1/namespaces/a/pods/p", 422)
            .ctype("application/merge-patch+json")
            .body(json!({"metadata": {"annotations": {"a": 1}}})),
        req("PUT", "/api/v1/namespaces/a/pods/absent", 404).body(json!({"metadata": {"name": "absent"}})),
        // DELETE: preconditions, then 200 with the object, then 404.
        req("DELETE", "/api/v1/namespaces/a/pods/p", 409)
            .body(json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "{rv1}"}})),
        req("DELETE", "/api/v1/namespaces/a/pods/p", 409).body(json!({"preconditions": {"uid": "not-the-uid"}})),
        req("DELETE", "/api/v1/namespaces/a/pods/p", 200)
            .body(json!({"propagationPolicy": "Background", "preconditions": {"uid": "{uid}"}}))
            .check("/kind", Eq(json!("Pod")))
            .check("/metadata/name", Eq(json!("p"))),
        req("DELETE", "/api/v1/namespaces/a/pods/p", 404),
        req("GET", "/api/v1/namespaces/a/pods/p", 404),
        // Cluster-scoped paths.
        req("POST", "/api/v1/nodes", 201).body(json!({"metadata": {"name": "n1", "namespace": "ignored"}})).check("/metadata/namespace", Absent),
        req("GET", "/api/v1/nodes/n1", 200).check("/kind", Eq(json!("Node"))),
        req("GET", "/api/v1/namespaces/a/nodes/n1", 404),
        req("GET", "/api/v1/pods/p", 404),
    ]);
}

#[test]
fn generation_and_merge_patch() {
    let np = "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies";
    let one = "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies/np";
    run(vec![
        req("POST", "/api/v1/namespaces", 201).body(ns("a")),
        req("POST", np, 201)
            .body(netpol("np", 80, json!({"x": "1", "y": "2"})))
            .check("/metadata/generation", Eq(json!(1)))
            .check("/spec/policyTypes", Eq(json!(["Ingress"])))
            .check("/spec/ingress/0/ports/0/protocol", Eq(json!("TCP"))),
        // metadata-only replace: generation stays.
        req("PUT", one, 200)
            .body(netpol("np", 80, json!({"x": "1"})))
            .check("/metadata/generation", Eq(json!(1))),
        // spec change: +1.
        req("PUT", one, 200)
            .body(netpol("np", 81, json!({"x": "1"})))
            .check("/metadata/generation", Eq(json!(2))),
        // merge patch: null deletes a key, other keys stay, metadata-only keeps the generation.
        req("PATCH", one, 200)
            .ctype("application/merge-patch+json")
            .body(json!({"metadata": {"labels": {"x": null, "z": "3"}, "annotations": {"a": "b"}}}))
            .check("/metadata/labels", Eq(json!({"z": "3"})))
            .check("/metadata/annotations", Eq(json!({"a": "b"})))
            .check("/metadata/generation", Eq(json!(2)))
            .save("/metadata/resourceVersion", "rv"),
        // a spec change by patch: +1; lists are replaced whole.
        req("PATCH", one, 200)
            .ctype("application/merge-patch+json")
            .body(json!({"spec": {"ingress": [{"ports": [{"port": 82}, {"port": 83}]}]}}))
            .check("/metadata/generation", Eq(json!(3)))
            .check("/spec/ingress/0/ports/1/port", Eq(json!(83))),
        // strategic merge patch for labels, with kubectl's directives dropped.
        req("PATCH", one, 200)
            .ctype("application/strategic-merge-patch+json")
            .body(json!({"metadata": {"labels": {"s": "1"}, "$setElementOrder/finalizers": []}}))
            .check("/metadata/labels", Eq(json!({"z": "3", "s": "1"}))),
        // a resourceVersion inside the patch is a precondition.
        req("PATCH", one, 409)
            .ctype("application/merge-patch+json")
            .body(json!({"metadata": {"resourceVersion": "{rv}", "labels": {"t": "1"}}})),
        // JSON patch: operations in order; a failed test is 422 and changes nothing.
        req("PATCH", one, 200)
            .ctype("application/json-patch+json")
            .body(json!([{"op": "test", "path": "/metadata/labels/z", "value": "3"},
                {"op": "add", "path": "/metadata/labels/j", "value": "p"},
                {"op": "remove", "path": "/metadata/labels/s"}]))
            .check("/metadata/labels", Eq(json!({"z": "3", "j": "p"})))
            .check("/metadata/generation", Eq(json!(3))),
        req("PATCH", one, 422)
            .ctype("application/json-patch+json")
            .body(json!([{"op": "add", "path": "/metadata/labels/k", "value": "v"},
                {"op": "test", "path": "/metadata/labels/z", "value": "wrong"}]))
            .check("/reason", Eq(json!("Invalid"))),
        req("GET", one, 200).check("/metadata/labels", Eq(json!({"z": "3", "j": "p"}))),
        req("PATCH", one, 400).ctype("application/json-patch+json").body(json!({"op": "add"})),
        req("PATCH", one, 415).ctype("application/apply-patch+yaml").body(json!({"metadata": {}})),
        req("PATCH", one, 400).ctype("application/merge-patch+json").body(json!([1])),
        req("PATCH", "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies/none", 404)
            .ctype("application/merge-patch+json")
            .body(json!({})),
    ]);
}

/// Three pods in `a` (p1 web h1, p2 db h2, p3 web+tier h1) and one in `b` (q1 web h2).
fn pods_setup() -> Vec<Step> {
    vec![
        req("POST", "/api/v1/namespaces", 201).body(ns("a")),
        req("POST", "/api/v1/namespaces", 201).body(ns("b")),
        req("POST", "/api/v1/namespaces/a/pods", 201).body(pod("p1", "h1", json!({"app": "web"}))),
        req("POST", "/api/v1/namespaces/a/pods", 201).body(pod("p2", "h2", json!({"app": "db"}))),
        req("POST", "/api/v1/namespaces/a/pods", 201).body(pod(
            "p3",
            "h1",
            json!({"app": "web", "tier": "front"}),
        )),
        req("POST", "/api/v1/namespaces/b/pods", 201).body(pod("q1", "h2", json!({"app": "web"}))),
    ]
}

#[test]
fn lists_selectors_and_pagination() {
    let mut steps = pods_setup();
    steps.extend(vec![
        req("GET", "/api/v1/namespaces/a/pods", 200)
            .check("/kind", Eq(json!("PodList")))
            .check("/apiVersion", Eq(json!("v1")))
            .check("/items", Len(3))
            .check("/metadata/continue", Absent)
            .save("/metadata/resourceVersion", "now"),
        req("GET", "/api/v1/pods", 200)
            .check("/items", Len(4))
            .check("/items/3/metadata/namespace", Eq(json!("b"))),
        req("GET", "/api/v1/namespaces/a/pods?labelSelector=app%3Dweb", 200).check("/items", Len(2)),
        req("GET", "/api/v1/namespaces/a/pods?labelSelector=app%3D%3Dweb,tier", 200)
            .check("/items", Len(1))
            .check("/items/0/metadata/name", Eq(json!("p3"))),
        req("GET", "/api/v1/namespaces/a/pods?labelSelector=app!%3Dweb", 200)
            .check("/items/0/metadata/name", Eq(json!("p2"))),
        req("GET", "/api/v1/pods?labelSelector=app%20in%20(db,web),!tier", 200).check("/items", Len(3)),
        req("GET", "/api/v1/pods?labelSelector=app%20notin%20(web)", 200).check("/items", Len(1)),
        req("GET", "/api/v1/pods?labelSelector=app%20in%20web", 400)
            .check("/reason", Eq(json!("BadRequest"))),
        req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dh2", 200).check("/items", Len(2)),
        req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dh1,metadata.name!%3Dp1", 200)
            .check("/items/0/metadata/name", Eq(json!("p3"))),
        req("GET", "/api/v1/pods?fieldSelector=metadata.namespace%3Db", 200).check("/items", Len(1)),
        req("GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx", 400)
            .check("/message", Eq(json!("invalid fieldSelector: field label not supported: spec.bogus"))),
        req("GET", "/api/v1/namespaces?fieldSelector=metadata.name%3Db", 200).check("/items", Len(1)),
        // pagination: a consistent snapshot at the first page's resourceVersion.
        req("GET", "/api/v1/pods?limit=2", 200)
            .check("/items", Len(2))
            .check("/items/1/metadata/name", Eq(json!("p2")))
            .save("/metadata/continue", "c1")
            .save("/metadata/resourceVersion", "page_rv"),
        req("POST", "/api/v1/namespaces/b/pods", 201).body(pod("q2", "h1", json!({}))),
        req("DELETE", "/api/v1/namespaces/b/pods/q1", 200),
        req("GET", "/api/v1/pods?limit=2&continue={c1}", 200)
            .check("/items", Len(2))
            .check("/items/0/metadata/name", Eq(json!("p3")))
            .check("/items/1/metadata/name", Eq(json!("q1")))
            .check("/metadata/resourceVersion", Var("page_rv"))
            .check("/metadata/continue", Absent),
        req("GET", "/api/v1/pods?limit=1&labelSelector=app%3Dweb", 200)
            .check("/items/0/metadata/name", Eq(json!("p1")))
            .save("/metadata/continue", "c2"),
        req("GET", "/api/v1/pods?limit=1&labelSelector=app%3Dweb&continue={c2}", 200)
            .check("/items/0/metadata/name", Eq(json!("p3")))
            .check("/metadata/continue", Absent),
        req("GET", "/api/v1/pods?continue=nonsense", 400),
        // resourceVersion semantics: NotOlderThan answers now; Exact answers the past.
        req("GET", "/api/v1/pods?resourceVersion={now}", 200)
            .check("/items", Len(4))
            .check("/items/3/metadata/name", Eq(json!("q2"))),
        req("GET", "/api/v1/pods?resourceVersion={now}&resourceVersionMatch=Exact", 200)
            .check("/items/3/metadata/name", Eq(json!("q1")))
            .check("/metadata/resourceVersion", Var("now")),
        req("GET", "/api/v1/pods?resourceVersion=999999", 504).check("/reason", Eq(json!("Timeout"))),
        // after compaction: an old continue token or exact version is 410 Expired.
        Step::Compact,
        req("GET", "/api/v1/pods?limit=1&labelSelector=app%3Dweb&continue={c2}", 410)
            .check("/reason", Eq(json!("Expired"))),
        req("GET", "/api/v1/pods?resourceVersion={now}&resourceVersionMatch=Exact", 410)
            .check("/reason", Eq(json!("Expired"))),
        req("GET", "/api/v1/pods?resourceVersion={now}", 200).check("/items", Len(4)),
        // deletecollection with a selector, and namespace deletion taking its objects along.
        req("DELETE", "/api/v1/namespaces/a/pods?labelSelector=app%3Dweb", 200).check("/items", Len(2)),
        req("GET", "/api/v1/namespaces/a/pods", 200).check("/items", Len(1)),
        req("DELETE", "/api/v1/namespaces/a", 200).check("/kind", Eq(json!("Namespace"))),
        req("GET", "/api/v1/namespaces/a/pods", 200).check("/items", Len(0)),
        req("GET", "/api/v1/pods", 200).check("/items", Len(1)),
    ]);
    run(steps);
}

#[test]
fn watches() {
    let mut steps =
        vec![req("POST", "/api/v1/namespaces", 201).body(ns("a")).save("/metadata/resourceVersion", "rv0")];
    steps.extend(pods_setup().into_iter().skip(1));
    steps.extend(vec![
        req("PATCH", "/api/v1/namespaces/a/pods/p1", 200)
            .ctype("application/merge-patch+json")
            .body(json!({"metadata": {"labels": {"app": "db"}}})),
        req("DELETE", "/api/v1/namespaces/a/pods/p2", 200).save("/metadata/resourceVersion", "del_rv"),
        // resume from rv0: every change after it, in order, in namespace a only.
        req("GET", "/api/v1/namespaces/a/pods?watch=true&resourceVersion={rv0}&timeoutSeconds=1", 200)
            .check("", Len(5))
            .check("/0/type", Eq(json!("ADDED")))
            .check("/0/object/metadata/name", Eq(json!("p1")))
            .check("/2/object/metadata/name", Eq(json!("p3")))
            .check("/3/type", Eq(json!("MODIFIED")))
            .check("/3/object/metadata/labels/app", Eq(json!("db")))
            .check("/4/type", Eq(json!("DELETED")))
            .check("/4/object/metadata/resourceVersion", Var("del_rv")),
        // a selector: p1 left app=web (DELETED for this watcher), p2 never matched.
        req("GET", "/api/v1/pods?watch=1&resourceVersion={rv0}&timeoutSeconds=1&labelSelector=app%3Dweb", 200)
            .check("", Len(4))
            .check("/2/object/metadata/name", Eq(json!("q1")))
            .check("/3/type", Eq(json!("DELETED")))
            .check("/3/object/metadata/name", Eq(json!("p1"))),
        req("GET", "/api/v1/pods?watch=true&resourceVersion={rv0}&timeoutSeconds=1&fieldSelector=spec.nodeName%3Dh2", 200)
            .check("", Len(3))
            .check("/2/type", Eq(json!("DELETED"))),
        // no resourceVersion: synthetic ADDED for the current state.
        req("GET", "/api/v1/namespaces/a/pods?watch=true&timeoutSeconds=1", 200)
            .check("", Len(2))
            .check("/0/type", Eq(json!("ADDED")))
            .check("/1/object/metadata/name", Eq(json!("p3"))),
        req("GET", "/api/v1/namespaces/a/pods?watch=true&resourceVersion=0&timeoutSeconds=1", 200).check("", Len(2)),
        // bookmarks: the stream ends with one at the current resourceVersion.
        req("GET", "/api/v1/namespaces", 200).save("/metadata/resourceVersion", "now"),
        req("GET", "/api/v1/namespaces/a/pods?watch=true&resourceVersion={now}&timeoutSeconds=1&allowWatchBookmarks=true", 200)
            .check("/0/type", Eq(json!("BOOKMARK")))
            .check("/0/object/kind", Eq(json!("Pod")))
            .check("/0/object/metadata/resourceVersion", Var("now")),
        req("GET", "/api/v1/namespaces/a/pods?watch=true&resourceVersion={now}&timeoutSeconds=1", 200).check("", Len(0)),
        // sendInitialEvents: ADDED, then the initial-events-end bookmark.
        req("GET", "/api/v1/namespaces/a/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1", 200)
            .check("/0/type", Eq(json!("ADDED")))
            .check("/2/type", Eq(json!("BOOKMARK")))
            .check("/2/object/metadata/annotations/k8s.io~1initial-events-end", Eq(json!("true")))
            .check("/2/object/metadata/resourceVersion", Var("now")),
        req("GET", "/api/v1/namespaces/a/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion={rv0}&allowWatchBookmarks=true&timeoutSeconds=1", 200)
            .check("/0/type", Eq(json!("ADDED")))
            .check("/1/type", Eq(json!("ADDED")))
            .check("/2/object/metadata/annotations/k8s.io~1initial-events-end", Eq(json!("true"))),
        req("GET", "/api/v1/pods?watch=true&timeoutSeconds=x", 400),
        // compaction: resuming from any version seen before is an ERROR event with 410 Expired.
        Step::Compact,
        req("GET", "/api/v1/namespaces/a/pods?watch=true&resourceVersion={now}&timeoutSeconds=1", 200)
            .check("", Len(1))
            .check("/0/type", Eq(json!("ERROR")))
            .check("/0/object/kind", Eq(json!("Status")))
            .check("/0/object/code", Eq(json!(410)))
            .check("/0/object/reason", Eq(json!("Expired"))),
        req("GET", "/api/v1/namespaces/a/pods", 200).save("/metadata/resourceVersion", "after"),
        req("GET", "/api/v1/namespaces/a/pods?watch=true&resourceVersion={after}&timeoutSeconds=1", 200).check("", Len(0)),
    ]);
    run(steps);
}

#[test]
fn lease_compare_and_swap() {
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/romana-k8s";
    let spec = |holder: &str, rv: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "romana-k8s", "resourceVersion": rv},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
    };
    run(vec![
        req("POST", "/api/v1/namespaces", 201).body(ns("kube-system")),
        req("GET", lease, 404),
        req("POST", leases, 201).body(spec("a", "")).save("/metadata/resourceVersion", "rv_a"),
        req("POST", leases, 409).body(spec("b", "")).check("/reason", Eq(json!("AlreadyExists"))),
        // Two candidates renew from the same read: the first wins, the second conflicts.
        req("PUT", lease, 200).body(spec("a", "{rv_a}")).check("/spec/holderIdentity", Eq(json!("a"))),
        req("PUT", lease, 200).body(spec("a2", "{rv_a}")).check("/metadata/resourceVersion", NotVar("rv_a")),
        req("PUT", lease, 409).body(spec("b", "{rv_a}")).check("/reason", Eq(json!("Conflict"))),
        req("GET", lease, 200)
            .check("/spec/holderIdentity", Eq(json!("a2")))
            .check("/metadata/generation", Absent),
    ]);
}
