//! The CLI as operators use it, against a romanad served in this process on 127.0.0.1 (no
//! root): shell completions that bash parses and that complete subcommands, `--watch` on the
//! lists that change (hosts, endpoints, routes) printing again on each change, and the message
//! when romanad cannot be reached (which endpoint, where it came from, how to point elsewhere).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, EndpointInfo, HostRequest, TenantRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_test_support::TempDir;

const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

fn romana(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_romana"))
        .env_remove("ROMANA_ENDPOINT")
        .env_remove("ROMANA_CREDENTIALS")
        .env_remove("ROMANA_CONFIG")
        .env("HOME", "/nonexistent")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// Bash's completion of `words` (the last one being completed) with the generated script.
fn bash_complete(script: &std::path::Path, words: &str) -> Vec<String> {
    let n = words.split_whitespace().count() - usize::from(!words.ends_with(' '));
    let program = format!(
        "source {}\nCOMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({words}{}); COMP_CWORD={n}\n_romana romana \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        if words.ends_with(' ') { " ''" } else { "" }
    );
    let o = Command::new("bash").args(["--norc", "-c", &program]).output().unwrap();
    assert!(o.status.success(), "bash: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn completions_parse_and_complete_subcommands() {
    let dir = TempDir::new("cli-completion");
    let (code, bash, err) = romana(&["completion", "bash"], &[]);
    assert_eq!(code, 0, "{err}");
    let script = dir.path().join("romana.bash");
    std::fs::write(&script, &bash).unwrap();
    let o = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(o.status.success(), "bash -n: {}", String::from_utf8_lossy(&o.stderr));
    // (words typed, a completion that must be offered, one that must not)
    for (words, offered, not) in [
        ("romana ho", "host", "tenant"),
        ("romana host l", "list", "add"),
        ("romana policy k8s", "k8s-list", "apply"),
        ("romana completion ", "zsh", "host"),
        ("romana host list --w", "--watch", "--tag"),
    ] {
        let got = bash_complete(&script, words);
        assert!(got.iter().any(|c| c == offered) && !got.iter().any(|c| c == not), "{words:?}: {got:?}");
    }
    for shell in ["zsh", "fish"] {
        let (code, text, err) = romana(&["completion", shell], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(text.contains("romana") && text.contains("endpoint"), "{shell}: {text}");
    }
    let (code, _, err) = romana(&["completion", "tcsh"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

/// Flags, environment, and where the message must say the endpoint came from.
type Case = (&'static [&'static str], &'static [(&'static str, &'static str)], &'static str);

/// A reader that stops early (`romana completion bash | head`) ends the command quietly:
/// no panic, exit 0.
#[test]
fn completion_into_a_closed_pipe_is_no_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_romana"))
        .args(["completion", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{:?}: {err}", out.status);
}

#[test]
fn unreachable_romanad_says_which_endpoint_and_what_to_do() {
    let cases: [Case; 3] = [
        (&["--endpoint", "http://127.0.0.1:1"], &[], "came from --endpoint"),
        (&[], &[("ROMANA_ENDPOINT", "http://127.0.0.1:1")], "came from ROMANA_ENDPOINT"),
        (&[], &[], "came from the default (http://127.0.0.1:9600)"),
    ];
    for (flags, env, source) in cases {
        let mut args = flags.to_vec();
        args.push("services");
        let (code, _, err) = romana(&args, env);
        assert_eq!(code, 3, "{args:?}: {err}");
        let tried =
            if flags.is_empty() && env.is_empty() { "http://127.0.0.1:9600" } else { "http://127.0.0.1:1" };
        for needle in [
            "cannot reach romanad at",
            tried,
            source,
            "--endpoint URL",
            "ROMANA_ENDPOINT=URL",
            "~/.romana.yaml",
            "--credentials FILE",
        ] {
            assert!(err.contains(needle), "{args:?} {env:?}: {needle:?} missing from: {err}");
        }
    }
}

/// Without credentials, romanad's 401 comes with the ways to give some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_say_how_to_give_them() {
    let dir = TempDir::new("cli-401");
    let creds = dir.path().join("admin.credentials");
    let url = romana_services::serve_loopback("cli-401", None, Some(creds.clone())).await.unwrap();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        romana(&["tenant", "list"], &[("ROMANA_ENDPOINT", url.as_str())])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    for needle in ["(401)", "romana login --username USER", "--credentials FILE", "ROMANA_CREDENTIALS"] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

/// `romana ARGS --watch` as a child whose stdout arrives on a channel, killed on drop.
struct Watching(Child, mpsc::Receiver<String>, String);

impl Watching {
    fn start(url: &str, args: &[&str]) -> Watching {
        Watching::start_with(url, args, Stdio::null())
    }

    fn start_with(url: &str, args: &[&str], stderr: Stdio) -> Watching {
        let mut child = Command::new(env!("CARGO_BIN_EXE_romana"))
            .env("ROMANA_ENDPOINT", url)
            .env("HOME", "/nonexistent")
            .env_remove("ROMANA_CREDENTIALS")
            .args(args)
            .arg("--watch")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    break;
                }
            }
        });
        Watching(child, rx, String::new())
    }

    /// Waits until the output since the last call holds `needle`; returns that output.
    async fn until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            while let Ok(chunk) = self.1.try_recv() {
                self.2.push_str(&chunk);
            }
            if let Some(i) = self.2.find(needle) {
                let seen = self.2[..i + needle.len()].to_owned();
                self.2.drain(..i + needle.len());
                return seen;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the output: {:?}", self.2);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host(name: &str, ip: &str) -> HostRequest {
    HostRequest {
        name: name.into(),
        ip: ip.into(),
        ipv6: None,
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_lists_print_again_on_each_change() {
    let topo = serde_json::from_str::<TopologyRequest>(FLAT).unwrap();
    let url = romana_services::serve_loopback("cli-watch", Some(topo), None).await.unwrap();
    let admin = Client::new(vec![url.clone()]);

    let mut hosts = Watching::start(&url, &["host", "list"]);
    let mut routes = Watching::start(&url, &["routes", "ha"]);
    let mut endpoints = Watching::start(&url, &["endpoint", "list"]);
    // A host romanad does not know yet: the watch waits (the 404 shows) until it exists.
    let mut late = Watching::start(&url, &["routes", "hc"]);
    let first = hosts.until("GROUPS").await;
    assert!(!first.contains("192.168.70.1"), "{first}");
    admin.add_host(&host("ha", "192.168.70.1")).await.unwrap();
    hosts.until("192.168.70.1").await;
    admin.add_host(&host("hb", "192.168.70.2")).await.unwrap();
    let again = hosts.until("192.168.70.2").await;
    assert!(again.contains("HOST"), "printed whole, with its header: {again}");

    // hb gets a block: ha's route set gains a route to it through hb.
    routes.until("DESTINATION").await;
    let req = AddressRequest {
        name: "pb".into(),
        host: "hb".into(),
        tenant: "t".into(),
        segment: "".into(),
        ip: None,
    };
    let a = admin.allocate(&req, None).await.unwrap();
    let shown = routes.until(&a.block).await;
    assert!(shown.contains("DESTINATION"), "printed whole, with its header: {shown}");
    routes.until("192.168.70.2").await;
    admin.add_host(&host("hc", "192.168.70.3")).await.unwrap();
    let shown = late.until(&a.block).await;
    assert!(shown.contains("DESTINATION"), "{shown}");

    endpoints.until("LABELS").await;
    let t = TenantRequest {
        name: "t".into(),
        external_id: "".into(),
        labels: Default::default(),
        isolation: "".into(),
    };
    let _ = admin.create_tenant(&t).await;
    let e = EndpointInfo {
        name: "pb".into(),
        ip: a.ip.clone(),
        tenant: "t".into(),
        segment: "".into(),
        host: "hb".into(),
        labels: Default::default(),
        ports: vec![],
        pod: "".into(),
    };
    admin.put_endpoint(&e).await.unwrap();
    endpoints.until(&a.ip).await;
}

/// A tenant user may neither watch nor read the endpoints: `--watch` ends with romanad's answer
/// (once, rather than every 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_may_not_read_the_list_is_told_once() {
    let dir = TempDir::new("cli-poll");
    let creds = dir.path().join("admin.credentials");
    let url = romana_services::serve_loopback("cli-poll", None, Some(creds.clone())).await.unwrap();
    let admin =
        Client::from_credentials(&serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap())
            .await
            .unwrap();
    let t = TenantRequest {
        name: "t".into(),
        external_id: "".into(),
        labels: Default::default(),
        isolation: "".into(),
    };
    admin.create_tenant(&t).await.unwrap();
    let user = romana_api::rest::UserRequest {
        name: "tu".into(),
        password: "tenant-user-password-1".into(),
        roles: vec!["tenant".into()],
        tenants: vec!["t".into()],
        hosts: vec![],
    };
    admin.create_user(&user).await.unwrap();
    let args = ["endpoint", "list", "--watch", "--username", "tu", "--password", "tenant-user-password-1"];
    let (code, _, err) =
        tokio::task::spawn_blocking(move || romana(&args, &[("ROMANA_ENDPOINT", url.as_str())]))
            .await
            .unwrap();
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("may not GET /endpoints").count(), 1, "{err}");
}
