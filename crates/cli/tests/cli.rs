//! The `romana` binary against a romanad served in this process: commands, output formats,
//! exit codes and error messages.
#![allow(clippy::unwrap_used)]

use std::process::Command;

async fn serve() -> String {
    romana_services::serve_loopback("cli-test", None, None).await.expect("romanad services start")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn romana(url: &str, args: &[&str]) -> Out {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let o = Command::new(env!("CARGO_BIN_EXE_romana"))
            .env("ROMANA_ENDPOINT", &url)
            .env("HOME", "/nonexistent")
            .args(&args)
            .output()
            .expect("run romana");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    })
    .await
    .expect("join")
}

fn examples(f: &str) -> String {
    format!("{}/../../examples/topologies/{f}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_against_romanad() {
    let url = serve().await;
    let ok = |o: &Out, what: &str| assert_eq!(o.code, 0, "{what}: {}{}", o.stdout, o.stderr);

    let o = romana(&url, &["topology", "diff", "-f", &examples("multi-zone.json")]).await;
    assert_eq!(o.code, 1, "a diff with changes exits 1");
    assert!(o.stdout.contains("+ group pods /zone-a/zone-a-rack-1 10.111.0.0/19"), "{}", o.stdout);
    ok(&romana(&url, &["topology", "apply", "-f", &examples("multi-zone.json")]).await, "apply");
    let o = romana(&url, &["topology", "diff", "-f", &examples("multi-zone.json")]).await;
    assert_eq!((o.code, o.stdout.trim()), (0, "no change"));
    let o = romana(&url, &["topology", "show"]).await;
    assert!(
        o.stdout.contains("/zone-b/zone-b-rack-2") && o.stdout.contains("10.111.192.0/18"),
        "{}",
        o.stdout
    );

    ok(
        &romana(
            &url,
            &["host", "add", "h1", "192.168.1.1", "--tag", "zone=zone-a", "--tag", "rack=zone-a-rack-1"],
        )
        .await,
        "host add",
    );
    let o = romana(&url, &["host", "list"]).await;
    assert!(
        o.stdout.starts_with("HOST") && o.stdout.contains("pods:/zone-a/zone-a-rack-1 (10.111.0.0/19)"),
        "{}",
        o.stdout
    );
    ok(&romana(&url, &["tenant", "create", "red", "-i", "proj-1", "--label", "team=a"]).await, "tenant");
    ok(&romana(&url, &["segment", "add", "red", "web"]).await, "segment");
    let o = romana(
        &url,
        &["address", "allocate", "p1", "--host", "h1", "--tenant", "red", "--segment", "web", "-o", "json"],
    )
    .await;
    ok(&o, "allocate");
    let a: serde_json::Value = serde_json::from_str(&o.stdout).expect("json output");
    assert_eq!(a["ip"], "10.111.0.0");
    let o = romana(&url, &["address", "list", "-o", "yaml"]).await;
    assert!(o.stdout.contains("ip: \"10.111.0.0\""), "{}", o.stdout);
    let o = romana(&url, &["block", "list"]).await;
    assert!(
        o.stdout.contains("10.111.0.0/29") && o.stdout.contains("red:web") && o.stdout.contains("1/8"),
        "{}",
        o.stdout
    );

    let dir = std::env::temp_dir().join(format!("romana-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pol = dir.join("policies.yaml");
    std::fs::write(
        &pol,
        "securitypolicies:\n  - id: web\n    applied_to: [{tenant: red, segment: web}]\n    ingress: [{peers: [{peer: any}], rules: [{protocol: tcp, ports: [80]}]}]\n  - id: broken\n    applied_to: []\n",
    )
    .expect("write");
    let o = romana(&url, &["policy", "add", pol.to_str().expect("path")]).await;
    assert_eq!(o.code, 1, "one policy refused: {}", o.stderr);
    assert!(
        o.stderr.contains("policy broken: invalid policy") && o.stderr.contains("applied_to: is empty"),
        "{}",
        o.stderr
    );
    assert!(o.stdout.contains("web"), "{}", o.stdout);
    let o = romana(&url, &["policy", "list", "-o", "json"]).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&o.stdout).expect("json").as_array().map(Vec::len),
        Some(1)
    );

    // Kubernetes NetworkPolicies and a Romana policy in one YAML stream; one bad policy is
    // refused with every problem listed, the others apply.
    let np = dir.join("netpols.yaml");
    std::fs::write(
        &np,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: red}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {}}]\n    ports: [{protocol: TCP, port: 80}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: red}\nspec:\n  podSelector: {matchExpressions: [{key: app, operator: Near}]}\n  ingress:\n  - ports: [{protocol: ICMP, port: 80}]\n---\nid: db\napplied_to: [{tenant: red, segment: db}]\ningress: [{peers: [{peer: local}], rules: [{protocol: tcp, ports: [5432]}]}]\n",
    )
    .expect("write");
    let o = romana(&url, &["policy", "apply", "-f", np.to_str().expect("path")]).await;
    assert_eq!(o.code, 1, "one policy refused: {}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("NetworkPolicy bad") && o.stderr.contains("Near") && o.stderr.contains("ICMP"),
        "every problem of the bad policy is listed: {}",
        o.stderr
    );
    assert!(o.stdout.contains("red/web") && o.stdout.contains("db"), "{}", o.stdout);
    let o = romana(&url, &["policy", "k8s-list", "-o", "json"]).await;
    let list: serde_json::Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "only the good NetworkPolicy is stored: {list}");
    ok(&romana(&url, &["policy", "k8s-delete", "red", "web"]).await, "k8s-delete");
    let o = romana(&url, &["policy", "k8s-delete", "red", "web"]).await;
    assert!(o.code == 1 && o.stderr.contains("unknown network policy red/web"), "{}", o.stderr);
    // Tenant isolation modes: set, shown, and a wrong one refused by name.
    let o = romana(&url, &["tenant", "isolate", "red", "segment", "-o", "json"]).await;
    assert!(o.code == 0 && o.stdout.contains("\"isolation\": \"segment\""), "{}{}", o.stdout, o.stderr);
    let o = romana(&url, &["tenant", "isolate", "red", "walls"]).await;
    assert!(
        o.code == 1 && o.stderr.contains("isolation: \"walls\" is not one of none, tenant, segment"),
        "{}",
        o.stderr
    );

    let o = romana(&url, &["host", "show", "nope"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("unknown host nope (404)"), "{}", o.stderr);
    let o = romana(&url, &["address", "allocate", "p2", "--host", "h1", "--tenant", "bad name"]).await;
    assert!(o.code == 1 && o.stderr.contains("tenant: invalid tenant name"), "{}", o.stderr);
    let o = romana("http://127.0.0.1:1", &["services"]).await;
    assert_eq!(o.code, 3, "unreachable romanad exits 3: {}", o.stderr);
    assert!(o.stderr.contains("cannot reach romanad"), "{}", o.stderr);

    // A config file names the endpoint when the environment does not.
    let cfg = dir.join("cli.yaml");
    std::fs::write(&cfg, format!("endpoint: {url}\n")).expect("write");
    let o = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_romana"))
            .env_remove("ROMANA_ENDPOINT")
            .args(["-c", cfg.to_str().expect("path"), "services"])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(String::from_utf8_lossy(&o.stdout).contains("ipam"), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `host add --ipv6`: a dual-stack underlay shows both addresses; a bad IPv6 address is refused
/// with romanad's reason, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_add_with_an_ipv6_underlay() {
    let url = serve().await;
    let o = romana(&url, &["topology", "apply", "-f", &examples("multi-zone.json")]).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let tags = ["--tag", "zone=zone-a", "--tag", "rack=zone-a-rack-1"];
    let add = |name: &'static str, ip: &'static str, v6: &'static str| {
        let mut args = vec!["host", "add", name, ip, "--ipv6", v6];
        args.extend(tags);
        args
    };
    let o = romana(&url, &add("h2", "192.168.1.2", "fd00:1::2")).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let o = romana(&url, &["host", "list"]).await;
    assert!(o.stdout.contains("192.168.1.2 fd00:1::2"), "{}", o.stdout);
    let o = romana(&url, &add("h3", "192.168.1.3", "fe80::3")).await;
    assert_ne!(o.code, 0, "{}", o.stdout);
    assert!(o.stderr.contains("ipv6: fe80::3 is link-local"), "{}", o.stderr);
    assert!(!romana(&url, &["host", "list"]).await.stdout.contains("h3"));
}
