//! bootstrap.sh's `romana` side against a real romanad: `issue` deletes and creates a service user
//! through `romana` with the new password on standard input, and writes a credentials file. The
//! one stand-in is `kubectl exec`: a script that runs the command after `--` on this machine,
//! where the test's romanad and the admin's credentials are (no API server can run here). Knows
//! nothing of the manifests.

use std::path::{Path, PathBuf};
use std::process::Command;

use romana_test_support::{Romanad, TempDir};
use serde_json::Value;

use super::{built, deploy};

/// Runs `issue NAME FILE ARGS...` from bootstrap.sh (sourced) with `ENDPOINT` = romanad's URL.
fn issue(dir: &Path, romanad: &Romanad, admin: &Path, name: &str, file: &Path, args: &[&str]) {
    let bin_dir = built("romana").parent().expect("target/<profile>").to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!(
        "source {}; ENDPOINT={}; issue \"$@\"",
        deploy("kubernetes/bootstrap.sh").display(),
        romanad.url
    );
    let out = Command::new("bash")
        .args(["-c", &script, "bootstrap"])
        .arg(name)
        .arg(file)
        .args(args)
        .env("PATH", path)
        .env("KUBECTL", dir.join("kubectl-exec"))
        .env("ROMANA_ADMIN_CREDENTIALS", admin)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "issue {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `romana whoami` with a credentials file: the user it logs in as, or the error.
fn whoami(creds: &Path) -> Result<Value, String> {
    let out = Command::new(built("romana"))
        .args(["--credentials"])
        .arg(creds)
        .args(["-o", "json", "whoami"])
        .env_clear()
        .output()
        .expect("romana");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn bootstrap_issues_credentials_that_log_in_and_reissues_them() {
    let dir = TempDir::new("deploy-bootstrap");
    let data = dir.path().join("data");
    let romanad = Romanad::start(&built("romanad"), &["--data-dir".into(), data.display().to_string()])
        .expect("romanad starts");
    let shim = dir.path().join("kubectl-exec");
    std::fs::write(
        &shim,
        "#!/bin/sh\nwhile [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"\n",
    )
    .expect("write");
    let exec = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&shim, exec).expect("chmod");
    let admin = data.join("admin.credentials");
    let file = |n: &str| -> PathBuf { dir.path().join(n) };

    // An agent: bound to its host, with the endpoint the agents use.
    issue(dir.path(), &romanad, &admin, "agent-node-1", &file("a1.json"), &["--host", "node-1"]);
    let me = whoami(&file("a1.json")).expect("the agent's credential logs in");
    assert_eq!(me["name"], "agent-node-1");
    assert_eq!(me["roles"], serde_json::json!(["service"]));
    assert_eq!(me["hosts"], serde_json::json!(["node-1"]));
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(file("a1.json")).expect("read")).expect("JSON");
    assert_eq!(creds["endpoint"], romanad.url.as_str());

    // Issued again (a re-run after a half-finished one, or --reissue): a new password; the old
    // one no longer logs in.
    issue(dir.path(), &romanad, &admin, "agent-node-1", &file("a1-again.json"), &["--host", "node-1"]);
    assert_eq!(whoami(&file("a1-again.json")).expect("the new credential")["name"], "agent-node-1");
    let old = whoami(&file("a1.json"));
    assert!(old.is_err(), "the replaced password still logs in: {old:?}");

    // The controller: a service user bound to no host.
    issue(dir.path(), &romanad, &admin, "romana-k8s", &file("k8s.json"), &[]);
    let me = whoami(&file("k8s.json")).expect("the controller's credential logs in");
    assert_eq!((me["name"].as_str(), me["hosts"].as_array().map(Vec::len)), (Some("romana-k8s"), Some(0)));
}
