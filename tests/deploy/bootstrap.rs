//! bootstrap.sh's `romana` side against a real romanad, the manifest's, serving HTTPS with the
//! certificate bootstrap.sh issued (tls.rs): `issue` deletes and creates a service user through
//! `romana` with the new password on standard input, and writes a credentials file holding the
//! endpoint and the CA. Those files let every client log in checking romanad's certificate and
//! name: `romana`, the agent (`romana-agent`) and the controller (`romana-k8s`), each run as the
//! manifest runs it up to where it would need a node or an API server; with another CA, or
//! against a certificate not for the endpoint's name, each is refused. The one stand-in is
//! `kubectl exec`: a script that runs the command after `--` on this machine, where the test's
//! romanad and the admin's credentials are (no API server can run here).

use std::path::{Path, PathBuf};
use std::process::Command;

use romana_test_support::{Romanad, TempDir};
use serde_json::Value;

use super::built;
use super::tls::{bootstrap, issue, served, whoami};

/// Runs `issue NAME FILE ARGS...` from bootstrap.sh with `ENDPOINT` = romanad's URL, the CA it
/// hands out in `ca`, and the admin's `romana` reaching romanad at its URL with that CA.
fn issue_user(
    dir: &Path,
    romanad: &Romanad,
    admin: &Path,
    ca: &Path,
    name: &str,
    file: &Path,
    args: &[&str],
) {
    let mut all = vec![name.to_owned(), file.display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let kubectl = dir.join("kubectl-exec").display().to_string();
    let (admin, ca) = (admin.display().to_string(), ca.display().to_string());
    bootstrap(
        "ENDPOINT=$ROMANA_ENDPOINT; CA_FILE=$ROMANA_ADMIN_CA; issue \"$@\"",
        &all,
        &[
            ("KUBECTL", &kubectl),
            ("ROMANA_ENDPOINT", &romanad.url),
            ("ROMANA_ADMIN_CREDENTIALS", &admin),
            ("ROMANA_ADMIN_ENDPOINT", &romanad.url),
            ("ROMANA_ADMIN_CA", &ca),
        ],
    );
}

/// Runs one of our daemons with `args` (nothing else in its environment): its exit's stderr.
fn refused_or_stopped(bin: &str, args: &[&str]) -> String {
    let out = Command::new(built(bin)).args(args).env_clear().output().expect("run");
    assert!(!out.status.success(), "{bin} {args:?} ran on; it should have stopped");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The agent as the DaemonSet starts it, for node-1: it logs in, then stops where it would need
/// romana-k8s to have registered the node (nothing on this machine is touched).
fn agent(creds: &Path) -> String {
    refused_or_stopped("romana-agent", &["--host", "node-1", "--credentials", &creds.display().to_string()])
}

/// The controller as the Deployment starts it: it logs in to romanad, then stops at a kubeconfig
/// that does not exist (no API server here).
fn controller(creds: &Path, dir: &Path) -> String {
    let none = dir.join("no-kubeconfig").display().to_string();
    refused_or_stopped("romana-k8s", &["--credentials", &creds.display().to_string(), "--kubeconfig", &none])
}

/// A copy of credentials file `from` at `to`, with `ca` (PEM) as its CA.
fn with_ca(from: &Path, to: &Path, ca: &str) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(from).expect("read")).expect("JSON");
    v["ca"] = Value::String(ca.to_owned());
    std::fs::write(to, v.to_string()).expect("write");
}

/// Does an error say the server's certificate is not signed by the CA the client trusts?
fn certificate_refused(err: &str) -> bool {
    err.contains("invalid peer certificate: UnknownIssuer")
}

/// Does an error say the server's certificate is not for the name the client asked for?
fn wrong_name(err: &str) -> bool {
    err.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\"")
}

#[test]
fn bootstrap_issues_credentials_that_log_in_and_reissues_them() {
    let dir = TempDir::new("deploy-bootstrap");
    let tls = dir.path().join("tls");
    issue(&tls, "10.96.0.10");
    let d = served(dir.path(), &tls);
    let romanad = &d.romanad;
    let shim = dir.path().join("kubectl-exec");
    std::fs::write(
        &shim,
        "#!/bin/sh\nwhile [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"\n",
    )
    .expect("write");
    let exec = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&shim, exec).expect("chmod");
    let file = |n: &str| -> PathBuf { dir.path().join(n) };
    let user = |name: &str, out: &str, args: &[&str]| {
        issue_user(dir.path(), romanad, &d.admin, &d.ca, name, &file(out), args);
    };

    // An agent: bound to its host, with the endpoint the agents use and the CA.
    user("agent-node-1", "a1.json", &["--host", "node-1"]);
    let me = whoami(&file("a1.json"), &[]).expect("the agent's credential logs in");
    assert_eq!(me["name"], "agent-node-1");
    assert_eq!(me["roles"], serde_json::json!(["service"]));
    assert_eq!(me["hosts"], serde_json::json!(["node-1"]));
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(file("a1.json")).expect("read")).expect("JSON");
    assert_eq!(creds["endpoint"], romanad.url.as_str());
    let ca = std::fs::read_to_string(&d.ca).expect("the CA");
    assert_eq!(creds["ca"].as_str(), Some(ca.as_str()), "the credential carries bootstrap's CA");
    let said = agent(&file("a1.json"));
    assert!(
        said.contains("romanad does not know host \"node-1\""),
        "the agent did not get past its login to the host lookup:\n{said}"
    );

    // Issued again (a re-run after a half-finished one, or --reissue): a new password; the old
    // one no longer logs in.
    user("agent-node-1", "a1-again.json", &["--host", "node-1"]);
    assert_eq!(whoami(&file("a1-again.json"), &[]).expect("the new credential")["name"], "agent-node-1");
    let old = whoami(&file("a1.json"), &[]);
    assert!(old.is_err(), "the replaced password still logs in: {old:?}");

    // The controller: a service user bound to no host.
    user("romana-k8s", "k8s.json", &[]);
    let me = whoami(&file("k8s.json"), &[]).expect("the controller's credential logs in");
    assert_eq!((me["name"].as_str(), me["hosts"].as_array().map(Vec::len)), (Some("romana-k8s"), Some(0)));
    let said = controller(&file("k8s.json"), dir.path());
    assert!(
        said.contains("reading kubeconfig") && !said.contains("logging in"),
        "the controller did not get past its login to the kubeconfig:\n{said}"
    );

    // Another CA (a second bootstrap's): every client refuses romanad's certificate.
    let other = dir.path().join("other-ca");
    issue(&other, "10.96.0.10");
    let other_ca = std::fs::read_to_string(other.join("ca.pem")).expect("the other CA");
    with_ca(&file("a1-again.json"), &file("a1-other.json"), &other_ca);
    with_ca(&file("k8s.json"), &file("k8s-other.json"), &other_ca);
    let err = whoami(&file("a1-other.json"), &[]).expect_err("romana trusted a certificate of another CA");
    assert!(certificate_refused(&err), "romana failed, but not on the certificate:\n{err}");
    let said = agent(&file("a1-other.json"));
    assert!(said.contains("logging in") && certificate_refused(&said), "the agent, another CA:\n{said}");
    let said = controller(&file("k8s-other.json"), dir.path());
    assert!(said.contains("logging in") && certificate_refused(&said), "the controller, another CA:\n{said}");

    // The right CA, but a certificate that is not for the name clients use (127.0.0.1 here, the
    // ClusterIP in a cluster): refused too, so the name is checked, not only the signature.
    let wrong = dir.path().join("wrong-name");
    std::fs::create_dir_all(&wrong).expect("mkdir");
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(tls.join(f), wrong.join(f)).expect("copy");
    }
    bootstrap("issue_cert \"$1\" romanad.romana-system.svc", &[&wrong.display().to_string()], &[]);
    let elsewhere = served(&dir.path().join("elsewhere"), &wrong);
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(file("a1-again.json")).expect("read")).expect("JSON");
    v["endpoint"] = Value::String(elsewhere.romanad.url.clone());
    std::fs::write(file("a1-elsewhere.json"), v.to_string()).expect("write");
    let err =
        whoami(&file("a1-elsewhere.json"), &[]).expect_err("romana accepted a certificate for another name");
    assert!(wrong_name(&err), "romana failed, but not on the name:\n{err}");
    let said = agent(&file("a1-elsewhere.json"));
    assert!(wrong_name(&said), "the agent, a certificate for another name:\n{said}");
}
