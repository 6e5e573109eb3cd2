//! The manifests' shell scripts run for real, with their container paths moved under a temporary
//! directory: the CNI installer leaves the plugin (executable, the same bytes) and the conflist
//! (the ConfigMap's text) and nothing else, also when run again over an older copy; the
//! credential pod leaves the credential with mode 0600. Knows nothing of the binaries' flags.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use romana_test_support::TempDir;

use super::manifest::{containers, find, pod_spec, s};
use super::{built, deploy, manifest};

/// Runs `script` with each (container path, host path) prefix replaced.
fn run(script: &str, moves: &[(&str, &Path)]) {
    let mut text = script.to_owned();
    for (from, to) in moves {
        text = text.replace(from, &to.display().to_string());
    }
    let out = Command::new("/bin/sh").args(["-ec", &text]).output().expect("sh");
    assert!(out.status.success(), "the script fails:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_cni_installer_and_the_credential_pod_leave_exactly_their_files() {
    let docs = manifest();
    let ds = find(&docs, "DaemonSet", "romana-agent");
    let init = containers(pod_spec(ds).expect("a pod template"))
        .into_iter()
        .find(|c| s(c, "/name") == "install-cni")
        .expect("the installer");
    let script = s(init, "/command/2");
    let conflist = s(find(&docs, "ConfigMap", "romana-cni"), "/data/10-romana.conflist");

    let dir = TempDir::new("deploy-scripts");
    let (bin, net, conf) = (dir.path().join("bin"), dir.path().join("net.d"), dir.path().join("conf"));
    for d in [&bin, &net, &conf] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(conf.join("10-romana.conflist"), conflist).expect("write");
    // An older plugin and configuration are there already (an upgrade), read-only as installed.
    std::fs::write(bin.join("romana-cni"), "old").expect("write");
    std::fs::write(net.join("10-romana.conflist"), "{}").expect("write");
    let plugin = built("romana-cni");
    let moves: [(&str, &Path); 4] = [
        ("/usr/local/bin/romana-cni", &plugin),
        ("/host/opt/cni/bin", &bin),
        ("/host/etc/cni/net.d", &net),
        ("/etc/romana/cni", &conf),
    ];
    for _ in 0..2 {
        run(script, &moves);
        assert_eq!(names(&bin), ["romana-cni"], "what the installer leaves in /opt/cni/bin");
        assert_eq!(names(&net), ["10-romana.conflist"], "what it leaves in /etc/cni/net.d");
        assert_eq!(
            std::fs::read(bin.join("romana-cni")).expect("read"),
            std::fs::read(&plugin).expect("read")
        );
        let mode = std::fs::metadata(bin.join("romana-cni")).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        assert_eq!(std::fs::read_to_string(net.join("10-romana.conflist")).expect("read"), conflist);
    }

    // The per-node credential pod.
    let pod = &manifest::load(&deploy("kubernetes/agent-credentials-pod.yaml"))[0];
    let script = s(containers(pod_spec(pod).expect("a spec"))[0], "/command/2");
    let (secret, etc) = (dir.path().join("secret"), dir.path().join("etc-romana"));
    std::fs::create_dir_all(&secret).expect("mkdir");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::write(secret.join("credentials.json"), "{\"username\": \"agent-node-1\"}").expect("write");
    for _ in 0..2 {
        run(
            script,
            &[
                ("/credentials/credentials.json", &secret.join("credentials.json")),
                ("/host/etc/romana", &etc),
            ],
        );
        assert_eq!(names(&etc), ["agent.credentials"]);
        let file = etc.join("agent.credentials");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "{\"username\": \"agent-node-1\"}");
        assert_eq!(std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777, 0o600);
    }
}
