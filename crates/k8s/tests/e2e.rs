//! End to end under the controller, as on a cluster: a `romana sandbox` (real agents and
//! romana-cni in network namespaces), pods created with kubectl in the test API server and then
//! started by the sandbox exactly as kubelet would (`K8S_POD_*` in `CNI_ARGS`, labels from the
//! pod record), NetworkPolicies and labels changed with kubectl, every step probed over TCP and
//! UDP; the controller killed while a policy changes and restarted; 410 Gone; a node deleted.
//! Needs root (namespaces); the sandbox's namespaces carry the prefix `rms-k<pid>-` and `down`
//! runs even when the test fails. Needs `cargo build -p romanad -p romana-cli -p romana-agent
//! -p romana-cni` first.

mod common;

#[path = "../../cni/tests/common/probe.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod probe;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, eventually};
use probe::Proto;
use romana_test_support::{Romanad, TempDir, sibling_bin};

const PROBES: [(Proto, u16); 2] = [(Proto::Tcp, 80), (Proto::Udp, 80)];
const TIMEOUT: Duration = Duration::from_millis(300);

struct Sandbox {
    romana: PathBuf,
    url: String,
    creds: PathBuf,
    state: PathBuf,
    name: String,
}

impl Sandbox {
    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(&self.romana)
            .args(args)
            .args(["--name", &self.name, "--state-dir"])
            .arg(&self.state)
            .env("ROMANA_ENDPOINT", &self.url)
            .env("ROMANA_CREDENTIALS", &self.creds)
            .env_remove("ROMANA_CONFIG")
            .output()
            .expect("romana runs");
        assert!(
            out.status.success(),
            "romana {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (netns path, ip) of a pod, from the sandbox's state file.
    fn pod(&self, pod: &str) -> (String, IpAddr) {
        let text = std::fs::read_to_string(self.state.join(&self.name).join("state.json")).expect("state");
        let v: serde_json::Value = serde_json::from_str(&text).expect("state parses");
        let p = v["pods"].as_array().into_iter().flatten().find(|p| p["name"] == pod).expect("pod in state");
        let ns = format!("/run/netns/{}", p["netns"].as_str().expect("netns"));
        (ns, p["ip"].as_str().expect("ip").parse().expect("an IP"))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(&self.romana)
            .args(["sandbox", "down", "--name", &self.name, "--state-dir"])
            .arg(&self.state)
            .env("ROMANA_ENDPOINT", &self.url)
            .env("ROMANA_CREDENTIALS", &self.creds)
            .status();
    }
}

fn can_make_namespaces() -> bool {
    let name = format!("rmk-probe{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    ok
}

fn pod_yaml(ns: &str, name: &str, app: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\n\
         spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n    ports:\n    - name: http\n      containerPort: 80\n"
    )
}

fn np_from_pods(app: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: db\n  namespace: shop\n\
         spec:\n  podSelector:\n    matchLabels:\n      app: db\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: {app}\n"
    )
}

fn np_from_namespaces(team: &str) -> String {
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: db\n  namespace: shop\n\
     spec:\n  podSelector:\n    matchLabels:\n      app: db\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          team: TEAM\n    ports:\n    - port: http\n    - protocol: UDP\n      port: 80\n"
        .replace("TEAM", team)
}

/// Probes until every (TCP and UDP) cell equals `want` (rows: from; columns: to; the diagonal
/// ignored) or 30 s pass.
fn expect(pods: &[(String, IpAddr)], names: &[&str], want: &[&str], step: &str) {
    let start = Instant::now();
    loop {
        let got = probe::matrix(pods, &PROBES, TIMEOUT);
        let mut wrong = Vec::new();
        for (k, p) in PROBES.iter().enumerate() {
            for (i, row) in want.iter().enumerate() {
                for (j, c) in row.chars().enumerate() {
                    if i != j && (c == '1') != got[k][i][j] {
                        wrong.push(format!("{:?}/{} {} -> {}: want {c}", p.0, p.1, names[i], names[j]));
                    }
                }
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{step}: {} cells differ:\n{}\nTCP:\n{}UDP:\n{}",
            wrong.len(),
            wrong.join("\n"),
            probe::render(&got[0]),
            probe::render(&got[1])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_labels_from_kubectl_are_enforced_in_the_sandbox() {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    }
    let me = env!("CARGO_BIN_EXE_romana-k8s");
    let romana = sibling_bin(me, "romana");
    sibling_bin(me, "romana-agent");
    sibling_bin(me, "romana-cni");
    let dir = TempDir::new("k8s-e2e");
    let store = dir.path().join("store");
    let romanad =
        Romanad::start(&sibling_bin(me, "romanad"), &["--data-dir".into(), store.display().to_string()])
            .expect("romanad starts");
    let env = Env::with_romanad("k8s-e2e", &romanad.url, &store.join("admin.credentials")).await;
    let c = &env.admin;
    let sb = Sandbox {
        romana,
        url: romanad.url.clone(),
        creds: store.join("admin.credentials"),
        state: dir.path().join("state"),
        name: format!("k{}", std::process::id() % 100_000),
    };
    sb.ok(&["sandbox", "up"]);
    // Nodes for three of the sandbox's hosts, with the addresses their agents registered.
    let hosts = c.hosts().await.expect("hosts").hosts;
    for h in ["r1h1", "r1h2", "r2h1"] {
        let ip = &hosts.iter().find(|x| x.name == h).expect("sandbox host").ip;
        env.kubectl_f(
            "create",
            &format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {h}\n  labels:\n    topology.kubernetes.io/zone: z1\n\
                 status:\n  addresses:\n  - type: InternalIP\n    address: {ip}\n"
            ),
        );
    }
    let ctl = env.controller("e2e-1", &[]);
    for (ns, team) in [("shop", "a"), ("other", "b")] {
        env.kubectl_f(
            "create",
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    team: {team}\n"
            ),
        );
    }
    eventually("tenants", 30, || async {
        (c.tenant("shop").await.is_ok() && c.tenant("other").await.is_ok()).then_some(())
    })
    .await;
    eventually("hosts adopted", 30, || async {
        let t = c.host("r2h1").await.ok()?.tags;
        (t.get("zone").map(String::as_str) == Some("z1")).then_some(())
    })
    .await;

    // Pods as kubelet starts them: the API object first, then CNI ADD with K8S_POD_*.
    let pods = [
        ("shop", "db", "db", "r1h1"),
        ("shop", "web", "web", "r1h2"),
        ("shop", "api", "api", "r2h1"),
        ("other", "x", "web", "r2h1"),
    ];
    for (ns, name, app, node) in pods {
        env.kubectl_f("create", &pod_yaml(ns, name, app, node));
        sb.ok(&["sandbox", "pod", "add", "--host", node, "--tenant", ns, "--pod", name, "--from-kubernetes"]);
    }
    let names: Vec<&str> = pods.iter().map(|p| p.1).collect();
    let list: Vec<(String, IpAddr)> = names.iter().map(|n| sb.pod(n)).collect();
    for (ns, _) in &list {
        probe::serve(ns);
    }
    // The endpoints carry the pods' labels from their records.
    let eps = c.endpoint_list().await.expect("endpoints");
    let db = eps.iter().find(|e| e.pod == "shop/db").expect("db's endpoint names its pod");
    assert_eq!(db.labels.get("app").map(String::as_str), Some("db"));
    assert_eq!(db.ports.first().map(|p| (p.name.as_str(), p.port)), Some(("http", 80)));

    //                db web api x
    let open = ["1111", "1111", "1111", "1111"];
    expect(&list, &names, &open, "no policy");
    env.kubectl_f("create", &np_from_pods("web"));
    expect(&list, &names, &["1111", "1111", "0111", "0111"], "db only from web pods of shop");
    env.kubectl(&["label", "pod", "-n", "shop", "api", "app=web", "--overwrite"]);
    expect(&list, &names, &["1111", "1111", "1111", "0111"], "api relabelled web");
    env.kubectl_f("replace", &np_from_namespaces("b"));
    expect(
        &list,
        &names,
        &["1111", "0111", "0111", "1111"],
        "db only from namespaces team=b, named port http (TCP) and UDP 80",
    );
    env.kubectl(&["label", "namespace", "other", "team=c", "--overwrite"]);
    expect(&list, &names, &["1111", "0111", "0111", "0111"], "other relabelled team=c");

    // Killed while the policy is replaced; the restarted controller applies it.
    let mut ctl = ctl;
    ctl.kill9();
    env.kubectl_f("replace", &np_from_pods("api"));
    env.kubectl(&["label", "pod", "-n", "shop", "api", "app=api", "--overwrite"]);
    let ctl = env.controller("e2e-1", &[]);
    expect(&list, &names, &["1111", "0111", "1111", "0111"], "after the restart: db from app=api");

    // 410 Gone: compacted history; the watchers relist and a change made meanwhile lands.
    env.api.compact();
    env.kubectl(&["delete", "networkpolicy", "-n", "shop", "db"]);
    expect(&list, &names, &open, "policy deleted after a compaction");

    // A node deleted: its host goes from romanad.
    env.kubectl(&["delete", "node", "r1h2"]);
    eventually("host r1h2 removed", 30, || async { c.host("r1h2").await.is_err().then_some(()) }).await;
    drop(ctl);
}
