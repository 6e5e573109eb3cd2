//! romana-cni called exactly as kubelet calls it: containerd's CRI plugin (Debian's 1.6), driven
//! over its socket with RunPodSandbox, StopPodSandbox and RemovePodSandbox, so `CNI_ARGS` carries
//! `K8S_POD_*` and DEL comes twice. containerd runs inside a test namespace (the "node",
//! programmed by an agent), with its state, CNI configuration and plugin directory in a temporary
//! directory. The pod record that romana-k8s would write is written with `Client::put_pod`.
//! Also the bounded wait of ADD for the record, with kubelet's arguments: no record fails with
//! code 11 after `--pod-wait-ms`; a record that appears during the wait is used.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/cri.rs"]
mod cri_api;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_with, busybox_tar, cni, conf, have, wait_for};
use romana_api::rest::{Credentials, EndpointPort, PodInfo};
use romana_client::Client;
use romana_test_support::{Netns, TempDir};

/// containerd in the node's namespace, killed on drop.
struct Containerd(Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pod sandbox the test ran: stopped and removed on drop unless the test did, and its network
/// namespace (containerd's `cni-<uuid>`) deleted if it is still there.
struct Sandbox {
    socket: PathBuf,
    id: String,
    netns: String,
    removed: bool,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.removed {
            let (socket, id) = (self.socket.clone(), self.id.clone());
            // Drop runs inside the test's runtime: the calls go on a thread of their own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(c) = cri_api::Cri::connect(socket).await {
                        let _ = c.stop(&id).await;
                        let _ = c.remove(&id).await;
                    }
                });
            })
            .join();
        }
        if let Some(name) = Path::new(&self.netns).file_name().and_then(|n| n.to_str())
            && Path::new(&self.netns).exists()
        {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

async fn admin(creds: &Path) -> Client {
    let c: Credentials = serde_json::from_str(&std::fs::read_to_string(creds).unwrap()).unwrap();
    Client::from_credentials(&c).await.unwrap()
}

fn record(ns: &str, name: &str, uid: &str, host: &str) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        host: host.into(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        ports: vec![EndpointPort { name: "http".into(), protocol: "TCP".into(), port: 80 }],
        segment: String::new(),
    }
}

/// The endpoint links (not the gateway) in the node's namespace.
fn endpoint_links(node: &Netns) -> Vec<String> {
    node.ip("-br link")
        .lines()
        .filter(|l| l.starts_with("romana") && !l.starts_with("romana-gw"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_through_containerd_cri_runs_stops_and_removes_a_pod() {
    if !(have("containerd") && have("podman") && have("runc")) {
        eprintln!("SKIP: containerd, podman or runc missing (scripts/setup.sh installs them)");
        return;
    }
    let pid = std::process::id();
    let Some(node) = Netns::new(&format!("rmk-{pid}-node")) else {
        eprintln!("SKIP: cannot create network namespaces (needs root)");
        return;
    };
    node.ip("link set lo up");
    let dir = TempDir::new("cri");
    let creds = common::romanad(dir.path()).await;
    let admin = admin(&creds).await;
    let socket = dir.path().join("agent.sock");
    let _agent =
        agent_with(&creds, "node1", "192.168.76.1", &node.0, &socket, &dir.path().join("agent.log"), &[]);
    wait_for("agent ready", 20, || cni("STATUS", "", "", &conf("1.1.0", &socket), "").0 == 0).await;

    // The sandbox ("pause") image: busybox sleeping, imported with podman (temporary storage)
    // and saved as an OCI archive for containerd's k8s.io namespace, where the CRI looks.
    let tar = busybox_tar(dir.path());
    let image = dir.path().join("pause.tar");
    let d = dir.path().display().to_string();
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .args([
                "--storage-driver",
                "vfs",
                "--root",
                &format!("{d}/proot"),
                "--runroot",
                &format!("{d}/prun"),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    podman(&[
        "import",
        "--change",
        r#"ENTRYPOINT ["/bin/sleep", "100000"]"#,
        tar.to_str().unwrap(),
        "localhost/rmpause:latest",
    ]);
    podman(&["save", "--format", "oci-archive", "-o", image.to_str().unwrap(), "localhost/rmpause:latest"]);

    // The CRI's CNI setup: our plugin and Debian's loopback (the CRI sets up lo through it).
    let bin = dir.path().join("cni-bin");
    let confdir = dir.path().join("cni-conf");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&confdir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_romana-cni"), bin.join("romana-cni")).unwrap();
    if Path::new("/usr/lib/cni/loopback").exists() {
        std::os::unix::fs::symlink("/usr/lib/cni/loopback", bin.join("loopback")).unwrap();
    }
    // No tenant in the configuration: the namespace is the tenant.
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": "romanacri",
        "plugins": [{"type": "romana-cni", "agent_socket": socket}]
    });
    std::fs::write(confdir.join("10-romana.conflist"), conflist.to_string()).unwrap();

    let sock = dir.path().join("containerd.sock");
    // This machine's kernel sandbox refuses what runc does for a pod sandbox's cgroup and OOM
    // score ("can't get final child's PID"): the CRI's switches for such hosts turn those off.
    let config = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{s}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/rmpause:latest"
  restrict_oom_score_adj = true
  disable_cgroup = true
  disable_apparmor = true
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{b}"
  conf_dir = "{c}"
"#,
        s = sock.display(),
        b = bin.display(),
        c = confdir.display()
    );
    std::fs::write(dir.path().join("containerd.toml"), config).unwrap();
    let _containerd = Containerd(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.0))
            .arg("containerd")
            .arg("--config")
            .arg(dir.path().join("containerd.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.path().join("containerd.log")).unwrap_or_default();
    let start = Instant::now();
    let cri = loop {
        if sock.exists()
            && let Ok(c) = cri_api::Cri::connect(sock.clone()).await
            && c.version().await.is_ok()
        {
            break c;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "containerd's CRI did not come up:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", node.0))
        .args([
            "ctr",
            "-a",
            sock.to_str().unwrap(),
            "-n",
            "k8s.io",
            "images",
            "import",
            image.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "ctr images import: {}", String::from_utf8_lossy(&out.stderr));

    // The controller's record first (the pod is scheduled on node1), then kubelet's RunPodSandbox.
    let pod = record("shop", "web-0", "3f1c-uid", "node1");
    admin.put_pod(&pod).await.unwrap();
    let id = match cri.run("shop", "web-0", "3f1c-uid").await {
        Ok(id) => id,
        Err(e) => panic!("RunPodSandbox: {e}\n{}", log()),
    };
    let (ip, netns) = cri.status(&id).await.unwrap();
    let mut sandbox = Sandbox { socket: sock.clone(), id: id.clone(), netns: netns.clone(), removed: false };
    assert!(ip.starts_with("10.20."), "the sandbox has a romana address: {ip:?}");
    assert!(netns.starts_with("/var/run/netns/cni-") || netns.starts_with("/run/netns/cni-"), "{netns}");

    // The endpoint carries the record's labels and ports, the pod's name and the namespace as tenant.
    let endpoints = admin.endpoint_list().await.unwrap();
    let e =
        endpoints.iter().find(|e| e.ip == ip).unwrap_or_else(|| panic!("no endpoint {ip}: {endpoints:?}"));
    assert_eq!(
        (e.tenant.as_str(), e.pod.as_str(), e.host.as_str()),
        ("shop", "shop/web-0", "node1"),
        "{e:?}"
    );
    assert_eq!((&e.labels, &e.ports), (&pod.labels, &pod.ports));
    // The address is the pod's, inside its namespace, and answers from the node.
    let inside = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ip", "-4", "-o", "addr"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&inside.stdout).contains(&format!("inet {ip}/")), "{inside:?}");
    let ping =
        Command::new("ip").args(["netns", "exec", &node.0, "ping", "-c1", "-W2", &ip]).output().unwrap();
    assert!(ping.status.success(), "the node reaches the pod at {ip}: {ping:?}");
    // A label change of the record is the endpoint's.
    let mut relabelled = pod.clone();
    relabelled.labels.insert("tier".into(), "front".into());
    admin.put_pod(&relabelled).await.unwrap();
    let e = admin.endpoint(&e.name).await.unwrap();
    assert_eq!(e.labels, relabelled.labels);

    // StopPodSandbox (DEL), StopPodSandbox again, RemovePodSandbox (DEL again): all succeed, and
    // nothing is left: no address, no endpoint, no link, no namespace.
    let dels = || common::agent_metric(&socket, "romana_agent_cni_del_total");
    let before = dels();
    cri.stop(&id).await.unwrap();
    cri.stop(&id).await.unwrap();
    cri.remove(&id).await.unwrap();
    sandbox.removed = true;
    assert!(
        dels() - before >= 2.0,
        "containerd called DEL at Stop and at Remove ({} calls)",
        dels() - before
    );
    let left: Vec<_> =
        admin.addresses("?host=node1").await.unwrap().into_iter().filter(|a| a.ip == ip).collect();
    assert!(left.is_empty(), "the address was released: {left:?}");
    assert_eq!(admin.endpoint(&e.name).await.unwrap_err().status(), Some(404), "the endpoint is gone");
    assert_eq!(endpoint_links(&node), Vec::<String>::new(), "no endpoint link on the node");
    assert!(!Path::new(&netns).exists(), "containerd removed the pod's namespace");
    drop(sandbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_add_waits_for_the_pod_record_bounded() {
    let pid = std::process::id();
    let (Some(node), Some(p1), Some(p2)) = (
        Netns::new(&format!("rmw-{pid}-node")),
        Netns::new(&format!("rmw-{pid}-p1")),
        Netns::new(&format!("rmw-{pid}-p2")),
    ) else {
        eprintln!("SKIP: cannot create network namespaces (needs root)");
        return;
    };
    node.ip("link set lo up");
    let dir = TempDir::new("podwait");
    let creds = common::romanad(dir.path()).await;
    let admin = admin(&creds).await;
    let socket = dir.path().join("agent.sock");
    let log = dir.path().join("agent.log");
    let _agent =
        agent_with(&creds, "node1", "192.168.75.1", &node.0, &socket, &log, &["--pod-wait-ms", "1500"]);
    let c = conf("1.0.0", &socket);
    wait_for("agent ready", 20, || cni("STATUS", "", "", &conf("1.1.0", &socket), "").0 == 0).await;
    let kubelet = |name: &str, cid: &str, uid: &str| {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uid}"
        )
    };

    // No record: code 11 after the wait, naming the pod and romana-k8s; nothing allocated.
    let (rc, r) = cni("ADD", "c1", &format!("/run/netns/{}", p1.0), &c, &kubelet("late", "c1", "u1"));
    assert_ne!(rc, 0, "{r}");
    assert_eq!(r["code"], 11, "{r}");
    let msg = r["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("shop/late") && msg.contains("romana-k8s") && msg.contains("1500 ms"), "{r}");
    assert!(admin.addresses("?host=node1").await.unwrap().is_empty(), "nothing allocated");
    assert_eq!(endpoint_links(&node), Vec::<String>::new());

    // A stale record (another uid) is not this pod's: the wait goes on, and ADD takes the new
    // record when the controller writes it during the wait.
    admin.put_pod(&record("shop", "late", "u0", "node1")).await.unwrap();
    let args = kubelet("late", "c2", "u1");
    let p2_path = format!("/run/netns/{}", p2.0);
    let c2 = c.clone();
    let add = tokio::task::spawn_blocking(move || cni("ADD", "c2", &p2_path, &c2, &args));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = record("shop", "late", "u1", "node1");
    admin.put_pod(&fresh).await.unwrap();
    let (rc, r) = add.await.unwrap();
    assert_eq!(rc, 0, "ADD whose record came during the wait: {r}");
    let ip = r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned();
    let e = admin.endpoint_list().await.unwrap().into_iter().find(|e| e.ip == ip).unwrap();
    assert_eq!((e.pod.as_str(), &e.labels), ("shop/late", &fresh.labels), "{e:?}");

    // DEL twice (containerd's Stop and Remove) succeeds and leaves nothing.
    for _ in 0..2 {
        let (rc, r) = cni("DEL", "c2", &format!("/run/netns/{}", p2.0), &c, &kubelet("late", "c2", "u1"));
        assert_eq!(rc, 0, "DEL: {r}");
    }
    assert!(admin.addresses("?host=node1").await.unwrap().is_empty());
    assert!(admin.endpoint_list().await.unwrap().is_empty());
    assert_eq!(endpoint_links(&node), Vec::<String>::new());
}
