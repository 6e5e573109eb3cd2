//! The install artefacts in `deploy/`: every Kubernetes manifest parses with the kinds and API
//! versions expected; every container command line and every systemd `ExecStart=` is accepted by
//! the binary it starts (run with `--help` after the arguments, so clap checks each flag and
//! value); the CNI configuration is accepted by romana-cni; the controller's RBAC is exactly what
//! `romana-k8s --print-permissions` lists; the objects refer to each other consistently;
//! romanad as the manifest runs it serves HTTPS only with bootstrap.sh's certificate, and the
//! credentials bootstrap.sh hands out carry the CA every client checks it with; and
//! `systemd-analyze verify` accepts the units. Needs the workspace's binaries built
//! (`cargo build -p romanad -p romana-agent -p romana-cni -p romana-cli -p romana-k8s`); no root.

#[path = "deploy/bootstrap.rs"]
mod bootstrap;
#[path = "deploy/caps.rs"]
mod caps;
#[path = "deploy/manifest.rs"]
mod manifest;
#[path = "deploy/scripts.rs"]
mod scripts;
#[path = "deploy/systemd.rs"]
mod systemd;
#[path = "deploy/tls.rs"]
mod tls;
#[path = "deploy/units.rs"]
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use manifest::{Grant, arr, containers, find, kind, name, pod_spec, s};
use serde_json::{Value, json};

const NS: &str = "romana-system";
/// Where the image puts the binaries (deploy/Containerfile).
const BIN_DIR: &str = "/usr/local/bin";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_owned()
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn manifest() -> Vec<Value> {
    manifest::load(&deploy("kubernetes/romana.yaml"))
}

/// A workspace binary built next to this test (target/<profile>/NAME).
fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build -p romanad -p romana-agent -p romana-cni -p romana-cli -p romana-k8s` first",
        p.display()
    );
    p
}

/// Runs our binary `name` with `args` and `--help` after them: clap parses (and checks the value
/// of) every flag before it reaches `--help`, so an unknown flag or a bad value fails here.
/// Returns the help text (which lists the environment variables the binary reads).
fn accepted(name: &str, args: &[String], what: &str) -> String {
    let bin = built(name);
    let out = Command::new(&bin)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("Usage:"),
        "{what}: `{name} {}` is refused:\n{}{}",
        args.join(" "),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Checks that every variable set for a program is read by it (listed as `[env: NAME=...]` in its
/// help) or used on its command line: a misspelt variable would otherwise be silently ignored.
fn check_env(what: &str, help: &str, set: &BTreeSet<String>, used: &BTreeSet<String>) {
    for var in set {
        assert!(
            used.contains(var)
                || (help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]"))),
            "{what}: {var} is set but neither read by the program nor used on its command line"
        );
    }
}

/// What the Containerfile installs into BIN_DIR.
fn image_binaries() -> BTreeSet<String> {
    let text = std::fs::read_to_string(deploy("Containerfile")).expect("deploy/Containerfile");
    let copy = text
        .lines()
        .find(|l| l.starts_with("COPY --from=build") && l.trim_end().ends_with(&format!("{BIN_DIR}/")))
        .expect("a COPY of the built binaries into /usr/local/bin/");
    let words: Vec<&str> = copy.split_whitespace().collect();
    words[2..words.len() - 1]
        .iter()
        .map(|p| Path::new(p).file_name().expect("a file").to_string_lossy().into_owned())
        .collect()
}

#[test]
fn manifests_parse_into_the_expected_objects() {
    #[rustfmt::skip]
    let expected: &[(&str, &str, &str)] = &[
        ("v1", "Namespace", NS),
        ("v1", "ServiceAccount", "romanad"),
        ("v1", "ConfigMap", "romanad-topology"),
        ("v1", "Service", "romanad"),
        ("v1", "Service", "romanad-peers"),
        ("apps/v1", "StatefulSet", "romanad"),
        ("v1", "ServiceAccount", "romana-k8s"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", "romana-k8s"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "romana-k8s"),
        ("rbac.authorization.k8s.io/v1", "Role", "romana-k8s-leader"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "romana-k8s-leader"),
        ("apps/v1", "Deployment", "romana-k8s"),
        ("v1", "ServiceAccount", "romana-agent"),
        ("v1", "ConfigMap", "romana-cni"),
        ("apps/v1", "DaemonSet", "romana-agent"),
    ];
    let docs = manifest();
    let got: Vec<(&str, &str, &str)> = docs.iter().map(|d| (s(d, "/apiVersion"), kind(d), name(d))).collect();
    assert_eq!(got, expected, "deploy/kubernetes/romana.yaml's objects");
    let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
    for d in &docs {
        let want = if cluster_scoped.contains(&kind(d)) { "" } else { NS };
        assert_eq!(s(d, "/metadata/namespace"), want, "{} {}: namespace", kind(d), name(d));
    }
    // The per-node credential pod and the etcd variant's patch.
    let pod = manifest::load(&deploy("kubernetes/agent-credentials-pod.yaml"));
    let got: Vec<_> = pod.iter().map(|d| (s(d, "/apiVersion"), kind(d))).collect();
    assert_eq!(got, [("v1", "Pod")]);
    let patch = manifest::load(&deploy("kubernetes/romanad-etcd-patch.yaml"));
    assert_eq!(patch.len(), 1, "one strategic-merge patch of the StatefulSet");
}

/// Every container of every workload (and of the credential pod), checked by what it runs.
#[test]
fn every_container_command_line_is_accepted() {
    let image = image_binaries();
    let mut docs = manifest();
    let pod_template = std::fs::read_to_string(deploy("kubernetes/agent-credentials-pod.yaml"))
        .expect("the credential pod")
        .replace("__NODE__", "node-1")
        .replace("__IMAGE__", "localhost/romana:0.1.0");
    docs.extend(serde_saphyr::from_multiple::<Value>(&pod_template).expect("the rendered credential pod"));
    let mut checked = 0;
    for d in &docs {
        let Some(spec) = pod_spec(d) else { continue };
        for c in containers(spec) {
            let what = format!("{} {} container {}", kind(d), name(d), s(c, "/name"));
            checked += 1;
            let line = manifest::command_line(c);
            assert!(!line.is_empty(), "{what}: give the command (the image runs nothing by default)");
            let program = Path::new(&line[0]);
            let file = program.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            if program.parent() == Some(Path::new(BIN_DIR)) {
                assert!(image.contains(&file), "{what}: {} is not in the image", line[0]);
                let help = accepted(&file, &line[1..], &what);
                let set: BTreeSet<String> = arr(c, "/env").iter().map(|e| s(e, "/name").to_owned()).collect();
                check_env(&what, &help, &set, &manifest::referenced_vars(c));
            } else {
                // A shell script (the installers): it must parse, and run only what the image has.
                assert_eq!(line[..2], ["/bin/sh".to_owned(), "-ec".to_owned()], "{what}: runs {line:?}");
                let ok = Command::new("/bin/sh").args(["-n", "-c", &line[2]]).status().expect("sh");
                assert!(ok.success(), "{what}: the script does not parse:\n{}", line[2]);
                for word in line[2].split_whitespace().filter(|w| w.starts_with(BIN_DIR)) {
                    let f = Path::new(word).file_name().expect("a file").to_string_lossy().into_owned();
                    assert!(image.contains(&f), "{what}: uses {word}, which is not in the image");
                }
            }
        }
    }
    assert_eq!(checked, 5, "containers checked: romanad, romana-k8s, install-cni, romana-agent, install");
}

#[test]
fn the_image_holds_every_binary() {
    let want: BTreeSet<String> =
        ["romanad", "romana-agent", "romana-cni", "romana", "romana-k8s"].map(String::from).into();
    assert_eq!(image_binaries(), want);
    let text = std::fs::read_to_string(deploy("Containerfile")).expect("deploy/Containerfile");
    for pkg in ["romanad", "romana-agent", "romana-cni", "romana-cli", "romana-k8s"] {
        assert!(text.contains(&format!("-p {pkg}")), "the Containerfile does not build {pkg}");
    }
    // The run stage (debian:bookworm-slim) has glibc and libgcc; libnftables is loaded at run
    // time by the agent and must be installed.
    assert!(text.contains("libnftables1") && text.contains("nftables"), "the run stage lacks nftables");
    let base = [
        "linux-vdso.so.1",
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
    ];
    for bin in &want {
        let out = Command::new("ldd").arg(built(bin)).output().expect("ldd");
        let text = String::from_utf8_lossy(&out.stdout);
        for lib in text.lines().filter_map(|l| l.split_whitespace().next()) {
            let ok = base.contains(&lib) || lib.contains("/ld-linux") || lib.starts_with("ld-linux");
            assert!(ok, "{bin} links {lib}, which the Containerfile's run stage does not install");
        }
    }
}

/// The conflist as kubelet's runtime hands it to the plugin (libcni copies the list's name and
/// cniVersion into each plugin's configuration), checked by romana-cni's own parser with the
/// variables kubelet sets, and by the binary's VERSION answer.
#[test]
fn the_cni_configuration_is_accepted_by_romana_cni() {
    let docs = manifest();
    let cm = find(&docs, "ConfigMap", "romana-cni");
    let text = s(cm, "/data/10-romana.conflist");
    let list: Value = serde_json::from_str(text).expect("10-romana.conflist is JSON");
    let plugins = arr(&list, "/plugins");
    assert_eq!(plugins.len(), 1, "one plugin: romana-cni");
    let mut conf = plugins[0].clone();
    assert_eq!(s(&conf, "/type"), "romana-cni", "the plugin's type is the binary's name in /opt/cni/bin");
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    // containerd adds the pod's annotations because the plugin declares the capability.
    assert_eq!(conf.pointer("/capabilities/io.kubernetes.cri.pod-annotations"), Some(&json!(true)));
    conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {"romana.io/segment": "front"}});
    let env: BTreeMap<String, String> = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "4f0c2a9e51b3"),
        ("CNI_NETNS", "/var/run/netns/cni-2d1e4c7b"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=4f0c2a9e51b3;K8S_POD_UID=0b6e2f5c-1111-2222-3333-444455556666",
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let stdin = serde_json::to_vec(&conf).expect("JSON");
    let inv =
        romana_cni::parse(&env, &stdin).unwrap_or_else(|e| panic!("romana-cni refuses the conflist: {e:?}"));
    assert_eq!(
        (inv.tenant.as_str(), inv.segment.as_str()),
        ("shop", "front"),
        "tenant = namespace, segment = annotation"
    );
    // The socket the plugin dials is the agent's, on a host path the agent's container shares.
    let ds = find(&docs, "DaemonSet", "romana-agent");
    let spec = pod_spec(ds).expect("a pod template");
    let agent = containers(spec).into_iter().find(|c| s(c, "/name") == "romana-agent").expect("the agent");
    let line = manifest::command_line(agent);
    assert_eq!(flag(&line, "--socket"), inv.socket, "the agent's --socket and the conflist's agent_socket");
    assert_eq!(host_path_of(spec, agent, Path::new(&inv.socket).parent().expect("a dir")), "/run/romana");
    // The binary agrees on the version.
    let cni = built("romana-cni");
    let mut child = Command::new(cni)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("romana-cni");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &stdin).expect("write");
    let out = child.wait_with_output().expect("romana-cni VERSION");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("a VERSION answer");
    assert!(
        arr(&answer, "/supportedVersions").contains(&list["cniVersion"]),
        "romana-cni does not speak the conflist's version: {answer}"
    );
}

/// The value after `flag` on a command line.
fn flag(line: &[String], flag: &str) -> String {
    let i = line.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} is not on {line:?}"));
    line.get(i + 1).cloned().unwrap_or_default()
}

/// The host path a container sees at `path` (a hostPath volume mounted exactly there).
fn host_path_of(spec: &Value, container: &Value, path: &Path) -> String {
    let m = arr(container, "/volumeMounts")
        .iter()
        .find(|m| Path::new(s(m, "/mountPath")) == path)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()));
    let v =
        arr(spec, "/volumes").iter().find(|v| s(v, "/name") == s(m, "/name")).expect("the mount's volume");
    s(v, "/hostPath/path").to_owned()
}

/// What the controller calls, in RBAC's terms, as the binary itself lists it.
fn controller_permissions(lease_ns: &str) -> BTreeSet<Grant> {
    let out = Command::new(built("romana-k8s"))
        .arg("--print-permissions")
        .env_clear()
        .output()
        .expect("romana-k8s");
    assert!(out.status.success(), "romana-k8s --print-permissions: {}", String::from_utf8_lossy(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).expect("--print-permissions prints JSON");
    let mut out = BTreeSet::new();
    for r in rows.as_array().expect("a list of permissions") {
        let scope = match s(r, "/scope") {
            "cluster" => "cluster".to_owned(),
            "namespace" => format!("namespace:{lease_ns}"),
            other => panic!("unknown scope {other:?} in {r}"),
        };
        for v in arr(r, "/verbs") {
            let v = v.as_str().expect("a verb").to_owned();
            out.insert((s(r, "/apiGroup").to_owned(), s(r, "/resource").to_owned(), v, scope.clone()));
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_controller_calls() {
    let docs = manifest();
    let deployment = find(&docs, "Deployment", "romana-k8s");
    let spec = pod_spec(deployment).expect("a pod template");
    assert_eq!(s(spec, "/serviceAccountName"), "romana-k8s");
    let line = manifest::command_line(containers(spec)[0]);
    let lease_ns = flag(&line, "--lease-namespace");
    assert_eq!(lease_ns, NS, "the lease lives in the controller's own namespace");
    let granted = manifest::grants_of(&docs, NS, "romana-k8s");
    let needed = controller_permissions(&lease_ns);
    let extra: Vec<_> = granted.difference(&needed).collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "RBAC for romana-k8s: granted but never used {extra:?}; used but not granted {missing:?}"
    );
    // The others need no Kubernetes API at all: nothing bound, no token mounted.
    for sa in ["romanad", "romana-agent"] {
        assert!(manifest::grants_of(&docs, NS, sa).is_empty(), "{sa} is granted API access");
        assert_eq!(
            find(&docs, "ServiceAccount", sa).get("automountServiceAccountToken"),
            Some(&json!(false))
        );
    }
}

/// The objects refer to each other: accounts, config maps, secrets (made by bootstrap.sh),
/// volumes, selectors; and what the API server's admission would refuse is absent.
#[test]
fn objects_refer_to_each_other_and_would_be_admitted() {
    let docs = manifest();
    let bootstrap = std::fs::read_to_string(deploy("kubernetes/bootstrap.sh")).expect("bootstrap.sh");
    for d in &docs {
        let Some(spec) = pod_spec(d) else { continue };
        let what = format!("{} {}", kind(d), name(d));
        find(&docs, "ServiceAccount", s(spec, "/serviceAccountName"));
        // romana is the pod network: nothing of it may wait for a pod address.
        assert_eq!(spec.get("hostNetwork"), Some(&json!(true)), "{what}: hostNetwork");
        let labels = d.pointer("/spec/template/metadata/labels").expect("template labels");
        let selector = d.pointer("/spec/selector/matchLabels").expect("a selector");
        for (k, v) in selector.as_object().expect("labels") {
            assert_eq!(labels.get(k), Some(v), "{what}: the selector does not match the template");
        }
        for v in arr(spec, "/volumes") {
            if let Some(cm) = v.pointer("/configMap/name").and_then(Value::as_str) {
                find(&docs, "ConfigMap", cm);
            }
            if let Some(secret) = v.pointer("/secret/secretName").and_then(Value::as_str) {
                assert!(bootstrap.contains(secret), "{what}: Secret {secret} is not made by bootstrap.sh");
            }
        }
        let claims: Vec<&str> =
            arr(d, "/spec/volumeClaimTemplates").iter().map(|c| s(c, "/metadata/name")).collect();
        for c in containers(spec) {
            for m in arr(c, "/volumeMounts") {
                let n = s(m, "/name");
                assert!(
                    arr(spec, "/volumes").iter().any(|v| s(v, "/name") == n) || claims.contains(&n),
                    "{what}: mount {n} has no volume"
                );
            }
            // Validation in the API server: no_new_privs cannot be asked beside full privileges.
            let sc = c.get("securityContext").cloned().unwrap_or(json!({}));
            if sc.get("allowPrivilegeEscalation") == Some(&json!(false)) {
                let adds = arr(&sc, "/capabilities/add");
                assert!(
                    sc.get("privileged") != Some(&json!(true)) && !adds.contains(&json!("SYS_ADMIN")),
                    "{what}: allowPrivilegeEscalation false is refused beside privileged or SYS_ADMIN"
                );
            }
        }
    }
    for svc in docs.iter().filter(|d| kind(d) == "Service") {
        let app = s(svc, "/spec/selector/app.kubernetes.io~1name");
        let sts = find(&docs, "StatefulSet", app);
        assert_eq!(s(sts, "/spec/template/metadata/labels/app.kubernetes.io~1name"), app);
    }
    let sts = find(&docs, "StatefulSet", "romanad");
    assert_eq!(s(find(&docs, "Service", s(sts, "/spec/serviceName")), "/spec/clusterIP"), "None");
    // The agent reads the credential file the per-node pod writes, on the same host path.
    let ds = find(&docs, "DaemonSet", "romana-agent");
    let spec = pod_spec(ds).expect("a pod template");
    let agent = containers(spec).into_iter().find(|c| s(c, "/name") == "romana-agent").expect("the agent");
    let creds = flag(&manifest::command_line(agent), "--credentials");
    assert_eq!(host_path_of(spec, agent, Path::new(&creds)), "/etc/romana/agent.credentials");
    // The agent's /metrics listens on the node's address (hostNetwork: a Prometheus outside the
    // node reaches it there), on the port its container declares.
    let listen = flag(&manifest::command_line(agent), "--metrics-listen");
    let port = arr(agent, "/ports").iter().find(|p| s(p, "/name") == "metrics").expect("a metrics port");
    assert_eq!(listen, format!("192.0.2.10:{}", port["containerPort"]), "status.hostIP's sample address");
    let pod = &manifest::load(&deploy("kubernetes/agent-credentials-pod.yaml"))[0];
    let pod_spec = pod_spec(pod).expect("a spec");
    let dir = host_path_of(pod_spec, containers(pod_spec)[0], Path::new("/host/etc/romana"));
    assert_eq!(dir, "/etc/romana");
    assert!(s(containers(pod_spec)[0], "/command/2").contains("/host/etc/romana/agent.credentials"));
    // The etcd variant patches the romanad container with variables romanad reads.
    let patch = &manifest::load(&deploy("kubernetes/romanad-etcd-patch.yaml"))[0];
    let c = &arr(patch, "/spec/template/spec/containers")[0];
    assert_eq!(s(c, "/name"), "romanad");
    let help = accepted("romanad", &[], "the etcd patch");
    let set: BTreeSet<String> = arr(c, "/env").iter().map(|e| s(e, "/name").to_owned()).collect();
    assert!(set.contains("ROMANAD_ETCD_ENDPOINTS"));
    check_env("the etcd patch", &help, &set, &BTreeSet::new());
    // The first topology is one romana carves.
    let topo = s(find(&docs, "ConfigMap", "romanad-topology"), "/data/topology.json");
    let dir = tempdir("topology");
    let file = dir.join("topology.json");
    std::fs::write(&file, topo).expect("write");
    let romana = built("romana");
    let out = Command::new(romana).arg("ipam").arg("plan").arg(&file).env_clear().output().expect("romana");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "romana ipam plan refuses the topology: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("romana-deploy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a temporary directory");
    d
}

/// kubectl's own reading (`kubectl kustomize`, offline: Go's YAML parser and the strategic merge
/// kubectl patch uses) gives the same objects as ours, and the etcd patch merges into the romanad
/// container as meant: its variable added, its command line kept.
#[test]
fn kubectl_reads_the_manifest_as_we_do_and_merges_the_etcd_patch() {
    let kubectl = Path::new("/usr/bin/kubectl");
    if !kubectl.exists() {
        println!("skipped: {} is not installed", kubectl.display());
        return;
    }
    let dir = tempdir("kustomize");
    let by_key = |docs: Vec<Value>| -> BTreeMap<(String, String), Value> {
        docs.into_iter().map(|d| ((kind(&d).to_owned(), name(&d).to_owned()), d)).collect()
    };
    let build = |patch: bool| -> Vec<Value> {
        for f in ["romana.yaml", "romanad-etcd-patch.yaml"] {
            std::fs::copy(deploy(&format!("kubernetes/{f}")), dir.join(f)).expect("copy");
        }
        let patches = if patch { "patches:\n  - path: romanad-etcd-patch.yaml\n" } else { "" };
        std::fs::write(dir.join("kustomization.yaml"), format!("resources: [romana.yaml]\n{patches}"))
            .expect("write");
        let out = Command::new(kubectl)
            .arg("kustomize")
            .arg(&dir)
            .env("KUBECONFIG", dir.join("none"))
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("kubectl's YAML")
    };
    let plain = by_key(build(false));
    let patched = by_key(build(true));
    let _ = std::fs::remove_dir_all(&dir);
    let ours = by_key(manifest());
    assert_eq!(plain.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>(), "kubectl's objects");
    for (k, v) in &ours {
        if let Some(d) = first_difference(v, &plain[k], "") {
            panic!("kubectl reads {k:?} differently: {d}");
        }
    }

    let key = ("StatefulSet".to_owned(), "romanad".to_owned());
    let (before, after) = (&plain[&key], &patched[&key]);
    assert_eq!(after.pointer("/spec/replicas"), Some(&json!(3)));
    let (c0, c1) =
        (containers(pod_spec(before).expect("spec"))[0], containers(pod_spec(after).expect("spec"))[0]);
    assert_eq!(c0.get("command"), c1.get("command"), "the patch changed romanad's command line");
    let names: BTreeSet<String> = arr(c1, "/env").iter().map(|e| s(e, "/name").to_owned()).collect();
    assert_eq!(names, ["ROMANAD_ETCD_ENDPOINTS"].map(String::from).into());
    let line = manifest::command_line(c1);
    let help = accepted("romanad", &line[1..], "romanad with the etcd patch");
    check_env("romanad with the etcd patch", &help, &names, &manifest::referenced_vars(c1));
    // The rest is untouched.
    for (k, v) in &plain {
        if *k != key {
            assert_eq!(first_difference(v, &patched[k], ""), None, "the patch changed {k:?}");
        }
    }
}

/// Where two JSON values first differ (a JSON pointer and both values), if they do.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (p, q) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                first_difference(p, q, &format!("{at}/{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}/{i}")))
        }
        _ if a == b => None,
        _ => Some(format!("{at}: ours {a}, kubectl's {b}")),
    }
}
