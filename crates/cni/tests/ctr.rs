//! A real caller: containerd (Debian's 1.6) `ctr run --cni`, through go-cni, starts a container on
//! romana-cni. containerd runs inside a test namespace (the "node", programmed by an agent) with
//! its state in a temporary directory. go-cni reads fixed paths (/etc/cni/net.d, /opt/cni/bin):
//! the test adds its conflist first in order and the /opt/cni/bin link only when nothing is there,
//! and a guard removes both.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{agent, busybox_tar, cni, conf, have, wait_for};
use romana_test_support::{Netns, TempDir};

/// The files placed in go-cni's fixed directories; removed on drop.
struct FixedPaths {
    conflist: PathBuf,
    bin_link: Option<PathBuf>,
    /// go-cni's lock file in /etc/cni/net.d, when it was not there before.
    lock: Option<PathBuf>,
}

impl Drop for FixedPaths {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.conflist);
        if let Some(l) = &self.lock {
            let _ = std::fs::remove_file(l);
        }
        if let Some(l) = &self.bin_link {
            let _ = std::fs::remove_file(l);
            let _ = std::fs::remove_dir("/opt/cni");
        }
    }
}

/// containerd in the node's namespace, killed on drop.
struct Containerd(Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ctr(node: &str, sock: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .arg("ctr")
        .arg("-a")
        .arg(sock)
        .args(["-n", "romana-test"])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_run_with_cni_puts_a_container_on_romana() {
    if !(have("containerd") && have("ctr") && have("podman") && have("runc")) {
        eprintln!("SKIP: containerd, ctr, podman or runc missing (scripts/setup.sh installs them)");
        return;
    }
    // podman and go-cni leave a lock file in /etc/cni/net.d; it goes if it was not there before.
    let lock = PathBuf::from("/etc/cni/net.d/cni.lock");
    let lock_is_ours = !lock.exists();
    // /opt/cni/bin is go-cni's fixed plugin directory: only a link of ours may be replaced.
    let bin_link = PathBuf::from("/opt/cni/bin");
    if let Ok(target) = std::fs::read_link(&bin_link) {
        if !target.to_string_lossy().contains("romana-") {
            eprintln!("SKIP: /opt/cni/bin links to {} (not ours); not touching it", target.display());
            return;
        }
        std::fs::remove_file(&bin_link).unwrap();
    } else if bin_link.exists() {
        eprintln!("SKIP: /opt/cni/bin exists on this machine; not touching it");
        return;
    }
    let Some(node) = Netns::new(&format!("rmd-{}-node", std::process::id())) else {
        eprintln!("SKIP: cannot create network namespaces (needs root)");
        return;
    };
    node.ip("link set lo up");
    let dir = TempDir::new("ctr");
    let creds = common::romanad(dir.path()).await;
    let socket = dir.path().join("agent.sock");
    let _agent = agent(&creds, "node1", "192.168.77.1", &node.0, &socket, &dir.path().join("agent.log"));
    wait_for("agent ready", 20, || cni("STATUS", "", "", &conf("1.1.0", &socket), "").0 == 0).await;

    // The image: busybox imported with podman (temporary storage) and saved as an OCI archive.
    let tar = busybox_tar(dir.path());
    let image = dir.path().join("image.tar");
    let podman = |args: &[&str]| {
        let d = dir.path().display();
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
    podman(&["import", tar.to_str().unwrap(), "localhost/rmbb:latest"]);
    podman(&["save", "--format", "oci-archive", "-o", image.to_str().unwrap(), "localhost/rmbb:latest"]);

    let plugins = dir.path().join("cni-bin");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_romana-cni"), plugins.join("romana-cni")).unwrap();
    std::fs::create_dir_all("/opt/cni").unwrap();
    std::fs::create_dir_all("/etc/cni/net.d").unwrap();
    let fixed = FixedPaths {
        conflist: PathBuf::from(format!("/etc/cni/net.d/00-romana-test-{}.conflist", std::process::id())),
        bin_link: Some(bin_link.clone()),
        lock: lock_is_ours.then_some(lock),
    };
    std::os::unix::fs::symlink(&plugins, &bin_link).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": "romanactr",
        "plugins": [{"type": "romana-cni", "agent_socket": socket, "tenant": "acme", "segment": "db"}]
    });
    std::fs::write(&fixed.conflist, conflist.to_string()).unwrap();

    let sock = dir.path().join("containerd.sock");
    let config = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n[grpc]\n  address = \"{s}\"\n",
        d = dir.path().display(),
        s = sock.display()
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
    let start = Instant::now();
    while !(sock.exists() && ctr(&node.0, &sock, &["version"]).status.success()) {
        assert!(start.elapsed() < Duration::from_secs(30), "containerd did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = ctr(&node.0, &sock, &["images", "import", image.to_str().unwrap()]);
    assert!(out.status.success(), "ctr images import: {}", String::from_utf8_lossy(&out.stderr));

    // The container sees its romana address and reaches the host's gateway through it.
    let out = ctr(
        &node.0,
        &sock,
        &[
            "run",
            "--rm",
            "--cni",
            "localhost/rmbb:latest",
            "rmctr1",
            "sh",
            "-c",
            "ip -4 -o addr show eth0; ping -c1 -W2 169.254.1.1 >/dev/null && echo gw-ok",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ctr run: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("inet 10.20."), "the container has a romana address: {stdout}");
    assert!(stdout.contains("gw-ok"), "the container reaches its gateway: {stdout}");
    // --rm ran DEL: no endpoint is left on the node.
    let links = node.ip("-br link");
    assert!(
        !links.lines().any(|l| l.starts_with("romana") && !l.starts_with("romana-gw")),
        "DEL removed the host end: {links}"
    );
    drop(fixed);
}
