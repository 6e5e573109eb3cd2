//! The real `romana-cni` binary under hostile invocations: random and hostile `CNI_*` variables
//! (non-UTF-8 included) and stdin (malformed, huge, deeply nested, wrong types, wrong versions).
//! Every run must end within its timeout, without a panic, with one JSON document on stdout: a
//! CNI error (`cniVersion`, `code`, `msg`) and exit status 1, or VERSION's answer and status 0.
//! No agent runs: every config names a socket that does not exist, so nothing is ever plumbed.
#![allow(clippy::unwrap_used)]

use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use romana_test_support::TempDir;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_romana-cni");
/// Far above a run's few milliseconds; a run reaching it is a hang.
const TIMEOUT: Duration = Duration::from_secs(20);

/// What one run of the plugin gave.
#[derive(Debug)]
struct Run {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    timed_out: bool,
}

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`, killed after `TIMEOUT`.
fn run(env: &[(OsString, OsString)], stdin: Vec<u8>) -> Run {
    let mut child = Command::new(BIN)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("romana-cni starts");
    let mut input = child.stdin.take().unwrap();
    // Separate threads: a huge stdin or stdout must not block the other side.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break (s.code(), false);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = writer.join();
    Run { status, stdout: out.join().unwrap(), stderr: err.join().unwrap(), timed_out }
}

/// `Ok(())` when the run answered as a runtime needs; else what was wrong.
fn judge(r: &Run) -> Result<(), String> {
    if r.timed_out {
        return Err(format!("no answer within {TIMEOUT:?}"));
    }
    let stderr = String::from_utf8_lossy(&r.stderr);
    if stderr.contains("panicked") {
        return Err(format!("panicked: {stderr}"));
    }
    let doc: Value = serde_json::from_slice(&r.stdout).map_err(|e| {
        format!("stdout is not one JSON document ({e}): {:?}", String::from_utf8_lossy(&r.stdout))
    })?;
    match r.status {
        Some(0) if doc.get("supportedVersions").is_some_and(Value::is_array) => Ok(()),
        Some(0) => Err(format!("exit 0 with {doc} (only VERSION can succeed without an agent)")),
        Some(1) => {
            let version = doc.get("cniVersion").and_then(Value::as_str);
            let code = doc.get("code").and_then(Value::as_u64);
            let msg = doc.get("msg").and_then(Value::as_str);
            match (version, code, msg) {
                (Some(v), Some(_), Some(m)) if is_version(v) && !m.is_empty() => Ok(()),
                _ => Err(format!("exit 1 without a CNI error document: {doc}")),
            }
        }
        other => Err(format!("exit status {other:?} with {doc}")),
    }
}

/// `MAJOR.MINOR.PATCH`: what a runtime can read an error document in.
fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn env(pairs: &[(&str, &[u8])]) -> Vec<(OsString, OsString)> {
    pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from_vec(v.to_vec()))).collect()
}

#[test]
fn a_non_utf8_variable_gets_a_cni_error_not_a_panic() {
    let conf = br#"{"cniVersion":"1.0.0","name":"romana","agent_socket":"/nonexistent/romana.sock"}"#;
    // A variable the plugin does not read: ignored, VERSION answers.
    let r = run(&env(&[("CNI_COMMAND", b"VERSION"), ("LANG", b"\xff\xfe")]), Vec::new());
    assert_eq!(judge(&r), Ok(()), "{r:?}");
    assert_eq!(r.status, Some(0), "{r:?}");
    // A CNI variable: the spec's code 4, naming it.
    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
        let mut vars = vec![
            ("CNI_COMMAND", &b"ADD"[..]),
            ("CNI_CONTAINERID", b"c1"),
            ("CNI_NETNS", b"/run/netns/x"),
            ("CNI_IFNAME", b"eth0"),
        ];
        vars.retain(|(k, _)| *k != var);
        vars.push((var, b"bad\xff\xfevalue"));
        let r = run(&env(&vars), conf.to_vec());
        assert_eq!(judge(&r), Ok(()), "{var}: {r:?}");
        let doc: Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(r.status, Some(1), "{var}: {doc}");
        assert_eq!(doc["code"], 4, "{var}: {doc}");
        assert_eq!(doc["cniVersion"], "1.0.0", "{var}: {doc}");
        assert!(doc["msg"].as_str().unwrap().contains(var), "{var}: the message names it: {doc}");
    }
}

/// Text that breaks naive parsers: separators, quotes, paths, control characters, unicode.
fn hostile_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"".to_vec()),
        Just(b"ADD".to_vec()),
        Just(b"VERSION".to_vec()),
        Just(b"../../etc/passwd".to_vec()),
        Just(b"/proc/self/ns/net".to_vec()),
        Just(b";;;==;".to_vec()),
        Just(b"IgnoreUnknown=1;K8S_POD_NAMESPACE=".to_vec()),
        Just(b"ROMANA_LABELS=,=,a".to_vec()),
        Just("\u{202e}\u{fffd}p\u{f6}d\u{1f600}".as_bytes().to_vec()),
        Just(vec![b'x'; 100_000]),
        Just(b"\xff\xfe\xc0\x80".to_vec()),
        proptest::collection::vec(1u8..=255, 0..64),
        "[ -~]{0,40}".prop_map(String::into_bytes),
    ]
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => hostile_text(),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,16}".prop_map(Value::from),
        proptest::sample::select(vec!["1.0.0", "0.3.1", "0.4.0", "1.1.0", "0.1.0", "9.9.9", "", "1.0"])
            .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "cniVersion",
        "name",
        "type",
        "tenant",
        "segment",
        "segment_annotation",
        "runtimeConfig",
        "prevResult",
        "cni.dev/valid-attachments",
        "containerID",
        "ifname",
        "ips",
        "interfaces",
        "address",
        "io.kubernetes.cri.pod-annotations",
        "romana.io/segment",
    ];
    scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// A config with the plugin's own fields randomised (so validation is reached, not only JSON).
fn config() -> impl Strategy<Value = Value> {
    (value(), scalar(), scalar(), prop::option::of(value()), prop::option::of(value())).prop_map(
        |(base, version, name, runtime, prev)| {
            let mut c = match base {
                Value::Object(m) => Value::Object(m),
                _ => json!({}),
            };
            c["cniVersion"] = version;
            c["name"] = name;
            if let Some(r) = runtime {
                c["runtimeConfig"] = r;
            }
            if let Some(p) = prev {
                c["prevResult"] = p;
            }
            c
        },
    )
}

/// Stdin: a config, or malformed, huge, deeply nested or random bytes.
fn stdin() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => config().prop_map(|c| c.to_string().into_bytes()),
        1 => value().prop_map(|v| v.to_string().into_bytes()),
        1 => config().prop_map(|c| {
            let t = c.to_string();
            t.as_bytes()[..t.len() / 2].to_vec()
        }),
        1 => (1usize..200_000).prop_map(|n| {
            let mut b = "[".repeat(n).into_bytes();
            b.extend("]".repeat(n).into_bytes());
            b
        }),
        1 => (1usize..4_000_000).prop_map(|n| {
            format!(r#"{{"cniVersion":"1.0.0","name":"{}"}}"#, "n".repeat(n)).into_bytes()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        1 => Just(Vec::new()),
    ]
}

/// Points every config at a socket that does not exist (unless the field is deliberately of a
/// wrong type), so no run can reach an agent this machine might have.
fn no_agent(stdin: Vec<u8>, dead: &Path) -> Vec<u8> {
    match serde_json::from_slice::<Value>(&stdin) {
        Ok(Value::Object(mut m)) => {
            if m.get("agent_socket").is_none_or(Value::is_string) {
                m.insert("agent_socket".into(), Value::from(dead.display().to_string()));
            }
            Value::Object(m).to_string().into_bytes()
        }
        _ => stdin,
    }
}

#[test]
fn hostile_invocations_always_get_a_cni_answer() {
    let dir = TempDir::new("cni-fuzz");
    let dead: PathBuf = dir.path().join("no-agent.sock");
    let vars = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH");
    let set = |s: BoxedStrategy<Vec<u8>>| prop::option::weighted(0.8, s);
    let strategy = (
        set(command().boxed()),
        set(hostile_text().boxed()),
        set(hostile_text().boxed()),
        set(hostile_text().boxed()),
        set(hostile_text().boxed()),
        set(hostile_text().boxed()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 1..16)),
        stdin(),
    );
    let (tried, handled, failures) = (Cell::new(0u32), Cell::new(0u32), RefCell::new(Vec::new()));
    let cases = 400;
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(cmd, id, netns, ifname, args, path, junk, input)| {
            let mut env = Vec::new();
            for (name, v) in [
                (vars.0, cmd),
                (vars.1, id),
                (vars.2, netns),
                (vars.3, ifname),
                (vars.4, args),
                (vars.5, path),
                ("ROMANA_JUNK", junk),
            ] {
                // The kernel's environment cannot carry NUL bytes.
                if let Some(mut v) = v {
                    v.retain(|b| *b != 0);
                    env.push((OsString::from(name), OsString::from_vec(v)));
                }
            }
            let r = run(&env, no_agent(input, &dead));
            tried.set(tried.get() + 1);
            match judge(&r) {
                Ok(()) => handled.set(handled.get() + 1),
                Err(e) => {
                    failures.borrow_mut().push(format!("{e:.2000}\n  env: {:.600}", format!("{env:?}")))
                }
            }
            Ok(())
        })
        .unwrap();
    let (tried, handled, failures) = (tried.get(), handled.get(), failures.into_inner());
    println!("romana-cni fuzz: tried {tried}, handled {handled}, failures {}", failures.len());
    assert_eq!(tried, cases);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
