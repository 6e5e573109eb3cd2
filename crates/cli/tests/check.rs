//! `romana check` against romanad's services in this process (no root): exit 0 and an empty
//! table when everything agrees; a leak in the table and in `-o json`, and exit 1, when an
//! address is allocated with no endpoint; the trusted CA near its end (a warning) and expired (exit 1).
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn romana(url: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_romana"))
        .env("ROMANA_ENDPOINT", url)
        .env("HOME", "/nonexistent")
        .args(args)
        .output()
        .expect("run romana");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_disagreements_and_fails_on_them() {
    let url = romana_services::serve_loopback("cli-check", None, None).await.unwrap();
    let run = |args: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || romana(&url, args))
    };
    let topo = format!("{}/../../examples/topologies/flat.json", env!("CARGO_MANIFEST_DIR"));
    let url2 = url.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || romana(&url2, &["topology", "apply", "-f", &topo]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(run(&["host", "add", "h1", "192.168.1.1"]).await.unwrap().0, 0);

    let (code, out, err) = run(&["check", "--leak-grace", "0"]).await.unwrap();
    assert_eq!((code, out.trim()), (0, "KIND  SUBJECT  IP  HOST  DETAIL  WHAT TO DO"), "{err}");
    assert!(err.contains("0 disagreement(s)"), "{err}");

    let (code, out, err) =
        run(&["address", "allocate", "lost", "--host", "h1", "--tenant", "t"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&["check"]).await.unwrap();
    assert_eq!(code, 0, "within romanad's leak grace nothing disagrees: {out}");
    let (code, out, _) = run(&["check", "--leak-grace", "0"]).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("leak  lost"), "{out}");
    assert!(out.contains("romana address release lost"), "{out}");
    let (code, out, _) = run(&["check", "--leak-grace", "0", "-o", "json"]).await.unwrap();
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["consistent"].as_bool(), v["counts"]["leak"].as_u64()), (Some(false), Some(1)), "{v}");
}

/// A self-signed CA named "romana CA", valid until `not_after`, as PEM.
fn ca(not_after: time::OffsetDateTime) -> String {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "romana CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.not_before = not_after - time::Duration::days(365);
    p.not_after = not_after;
    p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
}

/// The CA the CLI trusts (--ca-file here) is judged: near its end a warning and exit 0 when
/// everything agrees; expired an error and exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_judges_the_trusted_cas_expiry() {
    let url = romana_services::serve_loopback("cli-check-ca", None, None).await.unwrap();
    let dir = romana_test_support::TempDir::new("cli-check-ca");
    let now = time::OffsetDateTime::now_utc();
    let cases = [
        ("far.pem", now + time::Duration::days(400), 0, ""),
        (
            "near.pem",
            now + time::Duration::days(20),
            0,
            "warning: cert-expiring: certificate \"romana CA\" in ",
        ),
        ("old.pem", now - time::Duration::days(2), 1, "error: cert-expired: certificate \"romana CA\" in "),
    ];
    for (name, end, code, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, ca(end)).unwrap();
        let (u, p) = (url.clone(), path.display().to_string());
        let (got, _, err) =
            tokio::task::spawn_blocking(move || romana(&u, &["check", "--ca-file", &p])).await.unwrap();
        assert_eq!(got, code, "{name}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("cert-")).collect();
        if want.is_empty() {
            assert!(lines.is_empty(), "{name}: {err}");
        } else {
            assert_eq!(lines.len(), 1, "{name}: {err}");
            assert!(lines[0].starts_with(&format!("{want}{}", path.display())), "{name}: {err}");
        }
    }
}
