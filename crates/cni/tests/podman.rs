//! A real caller: rootful podman (Debian's 4.3, CNI backend, runc) starts containers whose network
//! is romana-cni. podman runs inside a test namespace (the "node", programmed by an agent), so
//! every link it makes stays there; storage lives in a temporary directory (vfs driver, no mounts
//! left behind).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{agent, busybox_tar, cni, conf, have, wait_for};
use romana_test_support::{Netns, TempDir};

/// podman inside the node's namespace (nsenter keeps the mount namespace, which podman needs).
struct Podman {
    node: String,
    dir: std::path::PathBuf,
}

impl Podman {
    fn run(&self, args: &[&str]) -> Output {
        let dir = self.dir.display();
        Command::new("timeout")
            .arg("120")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node))
            .args([
                "podman",
                "--storage-driver",
                "vfs",
                "--root",
                &format!("{dir}/root"),
                "--runroot",
                &format!("{dir}/runroot"),
            ])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
    }
}

fn setup(dir: &Path, socket: &Path) {
    let bin = dir.join("cni-bin");
    let net = dir.join("net.d");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&net).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_romana-cni"), bin.join("romana-cni")).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": "romanapod",
        "plugins": [{"type": "romana-cni", "agent_socket": socket, "tenant": "acme", "segment": "web"}]
    });
    std::fs::write(net.join("50-romanapod.conflist"), conflist.to_string()).unwrap();
    // runc, not crun: crun 1.8 refuses this machine's hybrid cgroup layout. podman's default
    // nofile limit is above the hard limit here.
    let conf = format!(
        r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}", "/usr/lib/cni"]
network_config_dir = "{net}"
default_network = "romanapod"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#,
        bin = bin.display(),
        net = net.display()
    );
    std::fs::write(dir.join("containers.conf"), conf).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_containers_get_romana_addresses_and_talk() {
    if !(have("podman") && have("runc") && have("nsenter")) {
        eprintln!("SKIP: podman, runc or nsenter missing (scripts/setup.sh installs them)");
        return;
    }
    let Some(node) = Netns::new(&format!("rmo-{}-node", std::process::id())) else {
        eprintln!("SKIP: cannot create network namespaces (needs root)");
        return;
    };
    node.ip("link set lo up");
    let dir = TempDir::new("podman");
    let creds = common::romanad(dir.path()).await;
    let socket = dir.path().join("agent.sock");
    let _agent = agent(&creds, "node1", "192.168.77.1", &node.0, &socket, &dir.path().join("agent.log"));
    wait_for("agent ready", 20, || cni("STATUS", "", "", &conf("1.1.0", &socket), "").0 == 0).await;
    setup(dir.path(), &socket);
    let p = Podman { node: node.0.clone(), dir: dir.path().to_path_buf() };
    let tar = busybox_tar(dir.path());
    p.ok(&["import", tar.to_str().unwrap(), "localhost/rmbb:latest"]);

    p.ok(&[
        "run",
        "-d",
        "--name",
        "rmwa",
        "localhost/rmbb:latest",
        "sh",
        "-c",
        "echo hello-romana > /tmp/index.html; httpd -f -p 80 -h /tmp",
    ]);
    let a = p.ok(&["inspect", "rmwa", "--format", "{{.NetworkSettings.Networks.romanapod.IPAddress}}"]);
    assert!(a.starts_with("10.20."), "podman reports the address romana-cni gave: {a:?}");
    // A second container fetches from the first through the host's routes.
    let page =
        p.ok(&["run", "--rm", "localhost/rmbb:latest", "wget", "-qO-", &format!("http://{a}/index.html")]);
    assert_eq!(page, "hello-romana");
    // The node reaches the container through its /32 route (our protocol).
    let routes = node.ip("route show proto 77");
    assert!(routes.contains(&format!("{a} dev romana")), "host route for {a}: {routes}");
    // Removing the container runs DEL: the host end and the address go.
    p.ok(&["rm", "-f", "-t", "0", "rmwa"]);
    let links = node.ip("-br link");
    let ends: Vec<&str> =
        links.lines().filter(|l| l.starts_with("romana") && !l.starts_with("romana-gw")).collect();
    assert!(ends.is_empty(), "DEL removed the host ends: {links}");
    assert!(!node.ip("route show proto 77").contains(&a), "DEL removed the route");
}

/// Dual stack through podman: a container of a tenant with an IPv4 and an IPv6 network gets both
/// addresses (podman reads both from romana-cni's result), and a second container fetches from
/// it over IPv6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_dual_stack_containers_get_both_addresses() {
    if !(have("podman") && have("runc") && have("nsenter")) {
        eprintln!("SKIP: podman, runc or nsenter missing (scripts/setup.sh installs them)");
        return;
    }
    let Some(node) = Netns::new(&format!("rmo-{}-node6", std::process::id())) else {
        eprintln!("SKIP: cannot create network namespaces (needs root)");
        return;
    };
    node.ip("link set lo up");
    let dir = TempDir::new("podman-dual");
    let creds = common::romanad_with(dir.path(), common::DUAL).await;
    let socket = dir.path().join("agent.sock");
    let _agent = agent(&creds, "node1", "192.168.77.1", &node.0, &socket, &dir.path().join("agent.log"));
    wait_for("agent ready", 20, || cni("STATUS", "", "", &conf("1.1.0", &socket), "").0 == 0).await;
    setup(dir.path(), &socket);
    let p = Podman { node: node.0.clone(), dir: dir.path().to_path_buf() };
    let tar = busybox_tar(dir.path());
    p.ok(&["import", tar.to_str().unwrap(), "localhost/rmbb:latest"]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "rmwd",
        "localhost/rmbb:latest",
        "sh",
        "-c",
        "echo hello-dual > /tmp/index.html; httpd -f -p 80 -h /tmp",
    ]);
    let net = "{{.NetworkSettings.Networks.romanapod.IPAddress}} {{.NetworkSettings.Networks.romanapod.GlobalIPv6Address}}";
    let both = p.ok(&["inspect", "rmwd", "--format", net]);
    let (v4, v6) = both.split_once(' ').unwrap_or((&both, ""));
    assert!(
        v4.starts_with("10.20.") && v6.starts_with("fd00:20::"),
        "podman reports both addresses: {both:?}"
    );
    let page =
        p.ok(&["run", "--rm", "localhost/rmbb:latest", "wget", "-qO-", &format!("http://[{v6}]/index.html")]);
    assert_eq!(page, "hello-dual");
    p.ok(&["rm", "-f", "-t", "0", "rmwd"]);
    assert!(!node.ip("-6 route show proto 77").contains(v6), "DEL removed the IPv6 route");
}
