//! romanad as the manifest runs it, with the certificate bootstrap.sh issues: the command line of
//! the StatefulSet's container, its TLS Secret's files where the pod mounts them, started for
//! real on 127.0.0.1. It answers HTTPS to a client trusting only bootstrap's CA (the probes'
//! paths, `romana` with the admin's credentials) and gives a plain-HTTP client no answer.
//! `served` is shared with bootstrap.rs, which checks the credentials handed out.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use romana_test_support::Romanad;
use serde_json::Value;

use super::manifest::{arr, containers, find, pod_spec, s};
use super::{built, deploy, flag, manifest};

/// What bootstrap.sh defines, sourced, with `script` run after it (arguments `$1`...).
pub fn bootstrap(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let bin_dir = built("romana").parent().expect("target/<profile>").to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let text = format!("source {}; {script}", deploy("kubernetes/bootstrap.sh").display());
    let out = Command::new("bash")
        .args(["-c", &text, "bootstrap"])
        .args(args)
        .env("PATH", path)
        .env("ROMANAD", built("romanad"))
        .envs(env.iter().copied())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "bootstrap.sh: {script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// bootstrap.sh's certificate for a Service at `cluster_ip`, issued into `dir` (ca.pem, ca.key,
/// server.pem, server.key) by its own `issue_cert`; returns the names it is for.
pub fn issue(dir: &Path, cluster_ip: &str) -> Vec<String> {
    let names = bootstrap("tls_names \"$1\"", &[cluster_ip], &[]);
    bootstrap("issue_cert \"$1\" \"$2\"", &[&dir.display().to_string(), &names], &[]);
    names.split(',').map(str::to_owned).collect()
}

/// The files of the Secret romanad-tls as bootstrap.sh makes it: `--from-file=KEY="$dir/FILE"`
/// on its `create secret generic romanad-tls` command.
fn secret_files() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("kubernetes/bootstrap.sh")).expect("bootstrap.sh");
    let at =
        text.find("create secret generic romanad-tls").expect("bootstrap.sh makes the Secret romanad-tls");
    let command = &text[at..at + text[at..].find("k apply").expect("applied")];
    command
        .split("--from-file=")
        .skip(1)
        .map(|f| {
            let (key, file) = f.split_once('=').expect("KEY=FILE");
            let file = file.trim_start_matches('"').split('"').next().expect("a quoted file");
            (key.to_owned(), file.trim_start_matches("$dir/").to_owned())
        })
        .collect()
}

/// A romanad started from the manifest's command line.
pub struct Served {
    pub romanad: Romanad,
    /// The CA bootstrap.sh issued (what clients are given).
    pub ca: PathBuf,
    /// The admin's credentials romanad wrote.
    pub admin: PathBuf,
}

/// The manifest's romanad with the certificate in `tls` (as `issue` left it) mounted where the
/// pod mounts its Secret, its data and topology under `dir`. Its `--listen` and
/// `--advertise-url` are the only flags replaced: it listens on 127.0.0.1 with a port chosen now,
/// and advertises that address (the Service's name does not resolve here).
pub fn served(dir: &Path, tls: &Path) -> Served {
    let docs = manifest();
    let sts = find(&docs, "StatefulSet", "romanad");
    let spec = pod_spec(sts).expect("a pod template");
    let c = containers(spec).into_iter().find(|c| s(c, "/name") == "romanad").expect("the romanad container");
    let line = manifest::command_line(c);
    // Where each volume is mounted, and what it holds here.
    let mount = |volume: &str| -> String {
        let m = arr(c, "/volumeMounts").iter().find(|m| s(m, "/name") == volume);
        s(m.unwrap_or_else(|| panic!("romanad mounts no volume {volume}")), "/mountPath").to_owned()
    };
    let tls_volume = arr(spec, "/volumes")
        .iter()
        .find(|v| s(v, "/secret/secretName") == "romanad-tls")
        .expect("romanad mounts the Secret romanad-tls");
    let secret = dir.join("secret");
    std::fs::create_dir_all(&secret).expect("mkdir");
    for (key, file) in secret_files() {
        std::fs::copy(tls.join(&file), secret.join(&key)).unwrap_or_else(|e| panic!("{file} -> {key}: {e}"));
    }
    let topology = dir.join("topology");
    std::fs::create_dir_all(&topology).expect("mkdir");
    let topo_cm = find(&docs, "ConfigMap", "romanad-topology");
    std::fs::write(topology.join("topology.json"), s(topo_cm, "/data/topology.json")).expect("write");
    let moves = [
        (mount(s(tls_volume, "/name")), secret.clone()),
        (mount("topology"), topology),
        (mount("data"), dir.join("volume")),
    ];
    let mut args = Vec::new();
    let mut words = line[1..].iter();
    while let Some(w) = words.next() {
        if w == "--listen" || w == "--advertise-url" {
            words.next();
            continue;
        }
        let mut w = w.clone();
        for (from, to) in &moves {
            if let Some(rest) = w.strip_prefix(from.as_str()) {
                w = format!("{}{rest}", to.display());
            }
        }
        args.push(w);
    }
    let romanad = Romanad::start(&built("romanad"), &args).expect("the manifest's romanad starts");
    let data = flag(&args, "--data-dir");
    let ca_key = secret_files().into_iter().find(|(_, f)| f == "ca.pem").expect("the Secret holds the CA").0;
    Served { romanad, ca: secret.join(ca_key), admin: Path::new(&data).join("admin.credentials") }
}

/// What a plain-HTTP request gets back before the server closes the connection (bounded, so a
/// server that never closes fails the test rather than hanging it).
fn plain_http(addr: &str, path: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The status of `GET path` from a client that trusts only `ca_pem` (romana's client), or why
/// there is none.
pub fn https_get(url: &str, ca_pem: &str, path: &str) -> Result<u16, String> {
    let tls = romana_client::Tls { ca_pem: Some(ca_pem.to_owned()), ..Default::default() };
    let c = romana_client::Client::with_tls(vec![url.to_owned()], Some(&tls)).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(c.send(reqwest::Method::GET, path, None))
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// `romana -o json whoami` with a credentials file (and `extra` flags): the user or the error.
pub fn whoami(creds: &Path, extra: &[&str]) -> Result<Value, String> {
    let out = Command::new(built("romana"))
        .arg("--credentials")
        .arg(creds)
        .args(extra)
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
fn the_manifests_romanad_serves_https_only_with_the_bootstrap_certificate() {
    let dir = romana_test_support::TempDir::new("deploy-tls");
    let tls = dir.path().join("tls");
    let names = issue(&tls, "10.96.0.10");
    for want in [
        "romanad",
        "romanad.romana-system",
        "romanad.romana-system.svc",
        "romanad.romana-system.svc.cluster.local",
        "127.0.0.1",
        "10.96.0.10",
    ] {
        assert!(names.iter().any(|n| n == want), "the certificate is not for {want}: {names:?}");
    }
    let served = served(dir.path(), &tls);
    let url = &served.romanad.url;
    let addr = url.strip_prefix("https://").unwrap_or_else(|| panic!("romanad serves {url}, not HTTPS"));

    // Plain HTTP: no HTTP answer at all (not even a redirect or an error page).
    let answer = plain_http(addr, "/healthz");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "romanad answered plain HTTP: {}",
        String::from_utf8_lossy(&answer)
    );

    // The admin's credentials carry the CA (--tls-ca) and log in over HTTPS, checked.
    let me = whoami(&served.admin, &[]).expect("the admin's credentials log in over HTTPS");
    assert_eq!(me["name"], "admin");
    let admin: Value =
        serde_json::from_str(&std::fs::read_to_string(&served.admin).expect("read")).expect("JSON");
    let ca = std::fs::read_to_string(&served.ca).expect("the CA");
    assert_eq!(admin["ca"].as_str(), Some(ca.as_str()), "admin.credentials holds bootstrap's CA");

    // The probes: HTTPS, on the port romanad listens on, paths it answers.
    let docs = manifest();
    let c = containers(pod_spec(find(&docs, "StatefulSet", "romanad")).expect("spec"))
        .into_iter()
        .find(|c| s(c, "/name") == "romanad")
        .expect("romanad");
    let listen = flag(&manifest::command_line(c), "--listen");
    for probe in ["readinessProbe", "livenessProbe"] {
        let p = c.get(probe).unwrap_or_else(|| panic!("romanad has no {probe}"));
        assert_eq!(s(p, "/httpGet/scheme"), "HTTPS", "{probe}: kubelet would speak plain HTTP");
        let port = p.pointer("/httpGet/port").map(ToString::to_string).unwrap_or_default();
        assert!(listen.ends_with(&format!(":{port}")), "{probe}: port {port}, romanad listens on {listen}");
        let path = s(p, "/httpGet/path");
        assert_eq!(https_get(url, &ca, path), Ok(200), "{probe} {path}");
    }
}

/// The systemd path (docs/systemd.md): a certificate from `romanad --tls-issue` in
/// /etc/romana/tls, romanad.service's ExecStart with systemd's credentials directory holding what
/// its `LoadCredential=` lines name, and an agent's credential made with `romana user create
/// --credentials-out` by the admin: it carries the CA, and logs in checking the certificate.
#[test]
fn the_systemd_unit_serves_https_and_hands_out_the_ca() {
    let dir = romana_test_support::TempDir::new("deploy-tls-systemd");
    let etc_tls = dir.path().join("etc-romana-tls");
    let issued = Command::new(built("romanad"))
        .arg("--tls-issue")
        .arg(&etc_tls)
        .args(["--tls-name", "localhost,127.0.0.1,romanad.example.net"])
        .env_clear()
        .output()
        .expect("romanad --tls-issue");
    assert!(issued.status.success(), "romanad --tls-issue: {}", String::from_utf8_lossy(&issued.stderr));
    let unit = super::units::Unit::load(&deploy("systemd/romanad.service"));
    let creds_dir = dir.path().join("credentials");
    std::fs::create_dir_all(&creds_dir).expect("mkdir");
    let mut loaded = Vec::new();
    for line in unit.service("LoadCredential") {
        let (id, from) = line.split_once(':').expect("ID:PATH");
        let from = from
            .strip_prefix("/etc/romana/tls/")
            .unwrap_or_else(|| panic!("{from} is not in /etc/romana/tls"));
        assert_ne!(from, "ca.key", "romanad.service is given the CA's key");
        std::fs::copy(etc_tls.join(from), creds_dir.join(id)).unwrap_or_else(|e| panic!("{from}: {e}"));
        loaded.push(id.to_owned());
    }
    let mut vars = super::units::systemd_vars(&unit, "romanad.service");
    vars.insert("CREDENTIALS_DIRECTORY".into(), creds_dir.display().to_string());
    vars.insert("STATE_DIRECTORY".into(), dir.path().join("state").display().to_string());
    let exec = unit.service("ExecStart");
    let words = super::units::exec_words(exec[0], &vars);
    let romanad = Romanad::start(&built("romanad"), &words[1..]).expect("romanad.service's romanad starts");
    assert!(romanad.url.starts_with("https://"), "romanad.service serves {}", romanad.url);
    let admin = dir.path().join("state").join("admin.credentials");

    let agent = dir.path().join("agent.credentials");
    let out = Command::new(built("romana"))
        .arg("--credentials")
        .arg(&admin)
        .args([
            "user",
            "create",
            "agent-compute-1",
            "--role",
            "service",
            "--host",
            "compute-1",
            "--credentials-out",
        ])
        .arg(&agent)
        .env_clear()
        .output()
        .expect("romana user create");
    assert!(out.status.success(), "romana user create: {}", String::from_utf8_lossy(&out.stderr));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&agent).expect("read")).expect("JSON");
    let ca = std::fs::read_to_string(etc_tls.join("ca.pem")).expect("ca.pem");
    assert_eq!(file["ca"].as_str(), Some(ca.as_str()), "the handed-out credential lacks the CA");
    assert_eq!(whoami(&agent, &[]).expect("the agent's credential logs in")["name"], "agent-compute-1");
    assert!(loaded.len() == 3, "certificate, key and CA: {loaded:?}");
}
