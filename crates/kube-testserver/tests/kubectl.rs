//! The test API server driven by the real client `kubectl` (1.32): create, replace, label,
//! get, watch and delete of namespaces, pods, nodes and networkpolicies, each result checked
//! against the server's state and back. Needs `/usr/bin/kubectl`; no root, no namespaces.

use romana_kube_testserver::{ApiRequest, ApiServer};
use romana_test_support::TempDir;
use serde_json::{Value, json};
mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const KUBECTL: &str = "/usr/bin/kubectl";

/// Kills the child process when dropped, so a failing test leaves nothing running.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Kube {
    server: ApiServer,
    dir: TempDir,
    config: PathBuf,
}

fn kube(tag: &str) -> Option<Kube> {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} is not installed");
        return None;
    }
    let server = ApiServer::start().expect("start the test API server");
    let dir = TempDir::new(tag);
    let config = dir.path().join("kubeconfig");
    server.write_kubeconfig(&config).expect("write the kubeconfig");
    Some(Kube { server, dir, config })
}

impl Kube {
    /// Runs kubectl; returns (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    /// Writes `doc` to a file and passes it with `-f` after `verb`.
    fn file(&self, verb: &[&str], name: &str, doc: &Value) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(doc).expect("serialise")).expect("write manifest");
        let mut args = verb.to_vec();
        let p = path.to_str().expect("utf-8 path").to_string();
        args.extend(["-f", &p]);
        if verb[0] != "delete" {
            args.push("--validate=false");
        }
        self.ok(&args)
    }

    fn get_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl printed JSON")
    }
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn pod(ns: &str, name: &str, node: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 80}]}]}})
}

fn policy(ns: &str, name: &str, port: u16) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": port}]}]}})
}

#[test]
fn kubectl_create_get_label_replace_delete() {
    let Some(k) = kube("kapi-kubectl") else { return };
    let out = k.file(&["create"], "ns.json", &namespace("alpha", json!({"team": "a"})));
    assert!(out.contains("namespace/alpha created"), "{out}");
    let ns = k.server.get_object("v1", "namespaces", None, "alpha").expect("namespace stored");
    assert_eq!(ns["metadata"]["labels"], json!({"team": "a", "kubernetes.io/metadata.name": "alpha"}));

    k.file(&["create"], "pod.json", &pod("alpha", "web", "h1", json!({"app": "web"})));
    k.file(&["create"], "np.json", &policy("alpha", "allow-web", 80));
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "h1",
        "labels": {"topology.kubernetes.io/zone": "z1"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.9.0.1"}]}});
    k.file(&["create"], "node.json", &node);

    // kubectl sees what the server stores.
    let pods = k.get_json(&["pods", "-A"]);
    assert_eq!(pods["kind"], "List");
    let stored = k.server.get_object("v1", "pods", Some("alpha"), "web").expect("pod stored");
    assert_eq!(pods["items"][0]["metadata"]["uid"], stored["metadata"]["uid"]);
    assert_eq!(stored["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    let np = k.get_json(&["networkpolicy", "allow-web", "-n", "alpha"]);
    assert_eq!(np["metadata"]["generation"], 1);
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    let nodes = k.get_json(&["nodes", "-l", "topology.kubernetes.io/zone=z1"]);
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(1));
    let none = k.get_json(&["pods", "-A", "-l", "app notin (web)"]);
    assert_eq!(none["items"], json!([]));
    let on_h1 = k.get_json(&["pods", "-A", "--field-selector", "spec.nodeName=h1"]);
    assert_eq!(on_h1["items"].as_array().map(Vec::len), Some(1));

    // The server's direct writes are what kubectl reads.
    let mut p2 = pod("alpha", "db", "h2", json!({"app": "db"}));
    p2["metadata"]["annotations"] = json!({"romana.io/segment": "s1"});
    k.server.put_object("v1", "pods", p2).expect("put a pod directly");
    let db = k.get_json(&["pod", "db", "-n", "alpha"]);
    assert_eq!(db["metadata"]["annotations"]["romana.io/segment"], "s1");

    // label: a merge patch; metadata-only changes keep the generation.
    let rv_before = stored["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    k.ok(&["label", "pod", "web", "-n", "alpha", "tier=front"]);
    let web = k.server.get_object("v1", "pods", Some("alpha"), "web").expect("pod");
    assert_eq!(web["metadata"]["labels"], json!({"app": "web", "tier": "front"}));
    assert_ne!(web["metadata"]["resourceVersion"].as_str(), Some(rv_before.as_str()));
    k.ok(&["label", "pod", "web", "-n", "alpha", "tier-"]);
    let web = k.server.get_object("v1", "pods", Some("alpha"), "web").expect("pod");
    assert_eq!(web["metadata"]["labels"], json!({"app": "web"}));
    k.ok(&["label", "namespace", "alpha", "team=b", "--overwrite"]);
    assert_eq!(
        k.server.get_object("v1", "namespaces", None, "alpha").expect("ns")["metadata"]["labels"]["team"],
        "b"
    );
    k.ok(&["label", "networkpolicy", "allow-web", "-n", "alpha", "x=y"]);
    let np = k
        .server
        .get_object("networking.k8s.io/v1", "networkpolicies", Some("alpha"), "allow-web")
        .expect("np");
    assert_eq!(np["metadata"]["generation"], 1, "a label change is not a spec change");

    // Nodes and pods through label and replace too.
    k.ok(&["label", "node", "h1", "romana.io/rack=r7"]);
    let n = k.server.get_object("v1", "nodes", None, "h1").expect("node");
    assert_eq!(n["metadata"]["labels"]["romana.io/rack"], "r7");
    assert_eq!(n["metadata"]["labels"]["topology.kubernetes.io/zone"], "z1");
    let mut moved = pod("alpha", "web", "h3", json!({"app": "web", "v": "2"}));
    moved["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    k.file(&["replace"], "pod2.json", &moved);
    let web2 = k.server.get_object("v1", "pods", Some("alpha"), "web").expect("pod");
    assert_eq!(web2["spec"]["nodeName"], "h3");
    assert_eq!(web2["spec"]["containers"][0]["ports"][0]["containerPort"], 8080);
    assert_eq!(web2["metadata"]["uid"], web["metadata"]["uid"]);
    assert_eq!(web2["metadata"]["labels"], json!({"app": "web", "v": "2"}));

    // replace: a spec change bumps the generation; uid and creationTimestamp stay.
    k.file(&["replace"], "np2.json", &policy("alpha", "allow-web", 8080));
    let np2 = k
        .server
        .get_object("networking.k8s.io/v1", "networkpolicies", Some("alpha"), "allow-web")
        .expect("np");
    assert_eq!(np2["metadata"]["generation"], 2);
    assert_eq!(np2["metadata"]["uid"], np["metadata"]["uid"]);
    assert_eq!(np2["spec"]["ingress"][0]["ports"][0]["port"], 8080);

    // create of an existing object fails as AlreadyExists.
    let path = k.dir.path().join("np2.json");
    let (ok, _, err) = k.run(&["create", "-f", path.to_str().expect("utf-8"), "--validate=false"]);
    assert!(!ok && err.contains("AlreadyExists"), "{err}");
    // a pod in a missing namespace is refused with the real server's message.
    k.file(&["create"], "ns-beta.json", &namespace("beta", json!({})));
    let (ok, _, err) = k.run(&["get", "pod", "nope", "-n", "alpha"]);
    assert!(!ok && err.contains("pods \"nope\" not found"), "{err}");

    // delete -f, and namespace deletion takes its objects along.
    k.file(&["delete"], "np2.json", &policy("alpha", "allow-web", 8080));
    assert!(
        k.server.get_object("networking.k8s.io/v1", "networkpolicies", Some("alpha"), "allow-web").is_none()
    );
    k.ok(&["delete", "node", "h1"]);
    assert!(k.server.list_objects("v1", "nodes").is_empty());
    k.ok(&["delete", "namespace", "alpha"]);
    assert!(k.server.list_objects("v1", "pods").is_empty());
    assert_eq!(k.get_json(&["namespaces"])["items"].as_array().map(Vec::len), Some(1));

    // RBAC-shaped log: every verb kubectl used is there with group and namespace.
    let log = k.server.requests();
    let seen = |verb: &str, group: &str, resource: &str, ns: Option<&str>| {
        log.contains(&ApiRequest {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: ns.map(str::to_string),
        })
    };
    assert!(seen("create", "", "namespaces", None));
    assert!(seen("create", "networking.k8s.io", "networkpolicies", Some("alpha")));
    assert!(seen("list", "", "pods", None));
    assert!(seen("patch", "", "pods", Some("alpha")));
    assert!(seen("update", "networking.k8s.io", "networkpolicies", Some("alpha")));
    assert!(seen("delete", "", "nodes", None));
    assert!(!seen("watch", "", "pods", None));
}

#[test]
fn kubectl_watch_sees_changes() {
    let Some(k) = kube("kapi-watch") else { return };
    k.file(&["create"], "ns.json", &namespace("w", json!({})));
    k.server.put_object("v1", "pods", pod("w", "before", "h1", json!({"app": "a"}))).expect("put");
    let mut child = ChildGuard(
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&k.config)
            .args(["get", "pods", "-n", "w", "--watch", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl get --watch"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    // kubectl prints one pretty JSON object per event; collect names until both are seen.
    let mut names = Vec::new();
    let mut doc = String::new();
    let mut created = false;
    while let Some(Ok(l)) = lines.next() {
        doc.push_str(&l);
        if l == "}" {
            let v: Value = serde_json::from_str(&doc).expect("kubectl watch output is JSON");
            doc.clear();
            names.push(v["metadata"]["name"].as_str().unwrap_or("").to_string());
            if !created {
                // The initial state arrived: change something the watch must see.
                created = true;
                k.server.put_object("v1", "pods", pod("w", "after", "h1", json!({"app": "b"}))).expect("put");
            }
            if names.iter().any(|n| n == "after") {
                break;
            }
        }
    }
    drop(child);
    assert_eq!(names, vec!["before", "after"]);
    assert!(k.server.requests().iter().any(|r| r.verb == "watch" && r.resource == "pods"));
}

/// Starts the binary with `--kubeconfig-out CONFIG ARGS`; returns the process and the address
/// from its ready line.
fn start_binary(args: &[&str], config: &Path) -> (ChildGuard, SocketAddr) {
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_romana-kube-testserver"))
            .arg("--kubeconfig-out")
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start romana-kube-testserver"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    let addr: SocketAddr = line.trim().trim_start_matches("listening on http://").parse().expect("address");
    (child, addr)
}

#[test]
fn binary_prints_ready_line_and_honours_token() {
    let Some(_) = kube("kapi-bin-probe") else { return };
    let dir = TempDir::new("kapi-bin");
    let start =
        |args: &[&str], config: &Path| start_binary(&[&["--listen", "127.0.0.1:0"], args].concat(), config);
    // Without a token: kubectl works through the written kubeconfig.
    let open_cfg = dir.path().join("kc-open");
    let (_open, _) = start(&[], &open_cfg);
    let out = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&open_cfg)
        .args(["get", "namespaces", "-o", "json"])
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // With a token: requests need it. (kubectl 1.32 sends no bearer token over plain HTTP, so
    // this is checked at the HTTP level; the kubeconfig still carries it for clients that do.)
    let tok_cfg = dir.path().join("kc-token");
    let (_tok, addr) = start(&["--token", "s3cret"], &tok_cfg);
    assert!(std::fs::read_to_string(&tok_cfg).expect("kubeconfig").contains("token: \"s3cret\""));
    let none = common::request(addr, "GET", "/api/v1/namespaces", &[], None);
    assert_eq!((none.status, none.json()["reason"].as_str()), (401, Some("Unauthorized")));
    let wrong = common::request(addr, "GET", "/api", &[("Authorization", "Bearer nope")], None);
    assert_eq!(wrong.status, 401);
    let good =
        common::request(addr, "GET", "/api/v1/namespaces", &[("Authorization", "Bearer s3cret")], None);
    assert_eq!((good.status, good.json()["kind"].as_str()), (200, Some("NamespaceList")));
}

#[test]
fn binary_keeps_state_across_a_restart() {
    let Some(_) = kube("kapi-state-probe") else { return };
    let dir = TempDir::new("kapi-state");
    let config = dir.path().join("kc");
    let state = dir.path().join("state.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let (first, addr) = start_binary(&["--listen", "127.0.0.1:0", "--state", state_arg], &config);
    let kubectl = |args: &[&str], stdin: Option<&Value>| {
        let mut c = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let input = stdin.map(|v| v.to_string()).unwrap_or_default();
        std::io::Write::write_all(&mut c.stdin.take().expect("stdin"), input.as_bytes())
            .expect("write stdin");
        let out = c.wait_with_output().expect("kubectl ends");
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    kubectl(&["create", "--validate=false", "-f", "-"], Some(&namespace("keep", json!({"k": "v"}))));
    kubectl(&["create", "--validate=false", "-f", "-"], Some(&pod("keep", "p", "h1", json!({"app": "x"}))));
    let before: Value =
        serde_json::from_str(&kubectl(&["get", "pod", "p", "-n", "keep", "-o", "json"], None)).expect("json");
    let old_rv =
        common::request(addr, "GET", "/api/v1/pods", &[], None).json()["metadata"]["resourceVersion"]
            .as_str()
            .expect("list rv")
            .to_string();
    drop(first);

    // Same port, same state file: objects and uids are back, versions move on, and resuming a
    // watch from a version issued before the restart is 410 Expired (clients relist).
    let (_second, addr2) = start_binary(&["--listen", &addr.to_string(), "--state", state_arg], &config);
    assert_eq!(addr2, addr);
    let after: Value =
        serde_json::from_str(&kubectl(&["get", "pod", "p", "-n", "keep", "-o", "json"], None)).expect("json");
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["metadata"]["labels"], json!({"app": "x"}));
    let list = common::request(addr, "GET", "/api/v1/pods", &[], None).json();
    let new_rv: u64 = list["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).expect("rv");
    assert!(new_rv > old_rv.parse::<u64>().expect("old rv"));
    let path = format!("/api/v1/pods?watch=true&resourceVersion={old_rv}&timeoutSeconds=1");
    let events = common::request(addr, "GET", &path, &[], None).events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
    kubectl(&["label", "namespace", "keep", "k-"], None);
    let text = std::fs::read_to_string(&state).expect("state file");
    assert!(!text.contains("\"k\":\"v\""), "the label removal reached the state file");
}

#[test]
fn kubectl_apply_annotate_and_list_documents() {
    let Some(k) = kube("kapi-apply") else { return };
    // A List document: kubectl creates each item.
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        namespace("x", json!({})), namespace("y", json!({"env": "prod"}))]});
    k.file(&["create"], "list.json", &list);
    assert_eq!(k.server.list_objects("v1", "namespaces").len(), 2);
    // Client-side apply: create, then a strategic merge patch with the last-applied annotation.
    k.file(&["apply"], "np.json", &policy("x", "np", 80));
    let np = k.server.get_object("networking.k8s.io/v1", "networkpolicies", Some("x"), "np").expect("np");
    assert!(np["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());
    k.file(&["apply"], "np.json", &policy("x", "np", 81));
    let np = k.server.get_object("networking.k8s.io/v1", "networkpolicies", Some("x"), "np").expect("np");
    assert_eq!(np["spec"]["ingress"][0]["ports"], json!([{"port": 81, "protocol": "TCP"}]));
    assert_eq!(np["metadata"]["generation"], 2);
    // Unchanged apply: no write at all.
    let rv = np["metadata"]["resourceVersion"].clone();
    k.file(&["apply"], "np.json", &policy("x", "np", 81));
    let np = k.server.get_object("networking.k8s.io/v1", "networkpolicies", Some("x"), "np").expect("np");
    assert_eq!(np["metadata"]["resourceVersion"], rv);
    k.ok(&["annotate", "namespace", "x", "romana.io/isolation=tenant"]);
    let ns = k.server.get_object("v1", "namespaces", None, "x").expect("ns");
    assert_eq!(ns["metadata"]["annotations"]["romana.io/isolation"], "tenant");
    k.ok(&["annotate", "namespace", "x", "romana.io/isolation-"]);
    let ns = k.server.get_object("v1", "namespaces", None, "x").expect("ns");
    assert!(ns["metadata"]["annotations"].get("romana.io/isolation").is_none());
    // Selectors through kubectl against namespaces, and deletion by label.
    let prod = k.get_json(&["namespaces", "-l", "env=prod"]);
    assert_eq!(prod["items"][0]["metadata"]["name"], "y");
    k.ok(&["delete", "namespaces", "-l", "env=prod"]);
    assert!(k.server.get_object("v1", "namespaces", None, "y").is_none());
    assert!(k.server.get_object("v1", "namespaces", None, "x").is_some());
}

fn service(ns: &str, name: &str, port: u32, extra: Value) -> Value {
    let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"name": "http", "port": port}]}});
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    s
}

/// Services as the real server keeps them: defaults and a cluster IP on create, kept across
/// `kubectl apply`; `status` only through the subresource (a status patch leaves the spec, an
/// apply carrying a status leaves the status); bad ports and a changed cluster IP are 422.
#[test]
fn kubectl_services_and_their_status() {
    let Some(k) = kube("kapi-svc") else { return };
    k.file(&["create"], "ns.json", &namespace("s", json!({})));
    k.file(&["apply"], "svc.json", &service("s", "web", 80, json!({})));
    let v = k.get_json(&["-n", "s", "service", "web"]);
    let ip = v["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    assert!(ip.starts_with("10.96."), "{v}");
    assert_eq!(
        v["spec"]["ports"][0],
        json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(v["status"], json!({"loadBalancer": {}}));
    // A status patch through the subresource: the status changes, the spec it also names does not.
    let patch = r#"{"spec": {"type": "ClusterIP"}, "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}"#;
    k.ok(&["-n", "s", "patch", "service", "web", "--subresource=status", "--type=merge", "-p", patch]);
    // An apply that changes the port and carries a status: the port changes, the status stays.
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}});
    k.file(&["apply"], "svc.json", &service("s", "web", 81, status));
    let v = k.get_json(&["-n", "s", "service", "web"]);
    assert_eq!(v["spec"]["clusterIP"], ip.as_str());
    assert_eq!(v["spec"]["type"], "LoadBalancer");
    assert_eq!(v["spec"]["ports"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["spec"]["ports"][0]["port"], 81);
    assert_eq!(v["status"]["loadBalancer"]["ingress"], json!([{"ip": "198.51.100.1"}]));
    // A second Service gets another cluster IP.
    k.file(&["create"], "db.json", &service("s", "db", 5432, json!({})));
    let db = k.get_json(&["-n", "s", "service", "db"]);
    assert!(db["spec"]["clusterIP"].as_str().is_some_and(|d| d != ip), "{db}");
    // Refused: a port out of range, a changed cluster IP.
    k.file(&["delete"], "db.json", &service("s", "db", 5432, json!({})));
    let path = k.dir.path().join("bad.json");
    std::fs::write(&path, service("s", "bad", 70000, json!({})).to_string()).expect("write");
    let (ok, _, err) = k.run(&["create", "--validate=false", "-f", path.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("spec.ports[0].port: Invalid value: 70000"), "{err}");
    let (ok, _, err) = k.run(&[
        "-n",
        "s",
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec": {"clusterIP": "10.96.9.9"}}"#,
    ]);
    assert!(!ok && err.contains("may not change"), "{err}");
    assert!(k.server.requests().iter().any(|r| r.verb == "patch" && r.resource == "services/status"));
}
