//! romana-cni's pure core as data: each case is an environment and a config, and either the
//! tenant/segment/version it resolves to or the CNI error code it must produce.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use romana_api::agent::Attached;
use romana_cni::{Command, parse, render_result, version_answer};
use serde_json::json;

/// Parses `env` ("K=V" with `|` between) and `conf`; checks the outcome: `Ok((tenant, segment))`
/// or `Err(code)`.
fn check(name: &str, env: &str, conf: &str, want: Result<(&str, &str), u32>) {
    let env: BTreeMap<String, String> = env
        .split('|')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let got = parse(&env, conf.as_bytes());
    match (got, want) {
        (Ok(inv), Ok((t, s))) => assert_eq!((inv.tenant.as_str(), inv.segment.as_str()), (t, s), "{name}"),
        (Err(e), Err(code)) => {
            assert_eq!(e.code, code, "{name}: {e:?}");
            assert!(!e.msg.is_empty(), "{name}: an error names its problem");
        }
        (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
    }
}

const ADD: &str = "CNI_COMMAND=ADD|CNI_CONTAINERID=c1|CNI_NETNS=/run/netns/x|CNI_IFNAME=eth0";
const CONF: &str =
    r#"{"cniVersion":"1.0.0","name":"romana","type":"romana-cni","tenant":"t0","segment":"s0"}"#;

#[test]
fn invocations_resolve_tenant_segment_or_fail_with_the_right_code() {
    check("plain runtime: configured defaults", ADD, CONF, Ok(("t0", "s0")));
    check(
        "kubernetes: namespace is the tenant",
        &format!("{ADD}|CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a"),
        CONF,
        Ok(("x", "s0")),
    );
    check(
        "kubernetes: segment from the pod annotation",
        &format!("{ADD}|CNI_ARGS=K8S_POD_NAMESPACE=x"),
        r#"{"cniVersion":"1.0.0","name":"romana","runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"romana.io/segment":"web"}}}"#,
        Ok(("x", "web")),
    );
    check(
        "segment from CNI_ARGS",
        &format!("{ADD}|CNI_ARGS=ROMANA_TENANT=t1;ROMANA_SEGMENT=db"),
        CONF,
        Ok(("t1", "db")),
    );
    check("unknown CNI_ARGS key", &format!("{ADD}|CNI_ARGS=FOO=1"), CONF, Err(4));
    check(
        "unknown key allowed by IgnoreUnknown",
        &format!("{ADD}|CNI_ARGS=IgnoreUnknown=true;FOO=1"),
        CONF,
        Ok(("t0", "s0")),
    );
    check("CNI_ARGS without =", &format!("{ADD}|CNI_ARGS=FOO"), CONF, Err(4));
    check("no command", "CNI_CONTAINERID=c1", CONF, Err(4));
    check("bad command", "CNI_COMMAND=FROB", CONF, Err(4));
    check("no container id", "CNI_COMMAND=ADD|CNI_NETNS=/x|CNI_IFNAME=eth0", CONF, Err(4));
    check("no netns on ADD", "CNI_COMMAND=ADD|CNI_CONTAINERID=c|CNI_IFNAME=eth0", CONF, Err(4));
    check(
        "no netns on DEL is fine",
        "CNI_COMMAND=DEL|CNI_CONTAINERID=c|CNI_IFNAME=eth0",
        CONF,
        Ok(("t0", "s0")),
    );
    check("not JSON", ADD, "{nope", Err(6));
    check("no cniVersion", ADD, r#"{"name":"romana"}"#, Err(6));
    check("no name", ADD, r#"{"cniVersion":"1.0.0","tenant":"t"}"#, Err(7));
    check("version 0.2.0", ADD, r#"{"cniVersion":"0.2.0","name":"romana","tenant":"t"}"#, Err(1));
    check("0.3.1 ADD", ADD, r#"{"cniVersion":"0.3.1","name":"romana","tenant":"t"}"#, Ok(("t", "")));
    check(
        "CHECK needs 0.4.0",
        "CNI_COMMAND=CHECK|CNI_CONTAINERID=c|CNI_NETNS=/x|CNI_IFNAME=eth0",
        r#"{"cniVersion":"0.3.1","name":"r"}"#,
        Err(1),
    );
    check(
        "GC needs 1.1.0",
        "CNI_COMMAND=GC",
        r#"{"cniVersion":"1.0.0","name":"r","cni.dev/valid-attachments":[]}"#,
        Err(1),
    );
    check("GC lists attachments", "CNI_COMMAND=GC", r#"{"cniVersion":"1.1.0","name":"r"}"#, Err(7));
    check(
        "GC",
        "CNI_COMMAND=GC",
        r#"{"cniVersion":"1.1.0","name":"r","cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}"#,
        Ok(("", "")),
    );
    check("STATUS needs 1.1.0", "CNI_COMMAND=STATUS", r#"{"cniVersion":"0.4.0","name":"r"}"#, Err(1));
    check("ADD without any tenant", ADD, r#"{"cniVersion":"1.0.0","name":"romana"}"#, Err(7));
}

/// Kubelet's CNI_ARGS (through containerd's CRI) name the pod; `ROMANA_LABELS`, even empty,
/// says the runtime gives the labels itself, so no pod record is waited for.
#[test]
fn kubelet_arguments_name_the_pod_and_runtime_labels_skip_the_wait() {
    use romana_api::agent::PodRef;
    let pod = |ns: &str, name: &str, uid: &str| {
        Some(PodRef { namespace: ns.into(), name: name.into(), uid: uid.into() })
    };
    let kubelet = "IgnoreUnknown=1;K8S_POD_NAMESPACE=red;K8S_POD_NAME=web-0;\
                   K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=1a2b";
    type Want = (&'static str, Option<PodRef>, bool, &'static str);
    let cases: Vec<(&str, String, &str, Want)> = vec![
        ("kubelet", kubelet.into(), CONF, ("red", pod("red", "web-0", "1a2b"), false, "")),
        (
            "kubelet with labels",
            format!("{kubelet};ROMANA_LABELS=app=web"),
            CONF,
            ("red", pod("red", "web-0", "1a2b"), true, "web"),
        ),
        (
            "empty labels",
            format!("{kubelet};ROMANA_LABELS="),
            CONF,
            ("red", pod("red", "web-0", "1a2b"), true, ""),
        ),
        (
            "no uid",
            "K8S_POD_NAMESPACE=red;K8S_POD_NAME=a".into(),
            CONF,
            ("red", pod("red", "a", ""), false, ""),
        ),
        ("namespace only: no pod", "K8S_POD_NAMESPACE=red".into(), CONF, ("red", None, false, "")),
        ("empty name: no pod", "K8S_POD_NAMESPACE=red;K8S_POD_NAME=".into(), CONF, ("red", None, false, "")),
        ("plain runtime", String::new(), CONF, ("t0", None, false, "")),
        (
            "configuration forces its tenant",
            kubelet.into(),
            r#"{"cniVersion":"1.0.0","name":"romana","tenant":"t0","force_tenant":true}"#,
            ("t0", pod("red", "web-0", "1a2b"), false, ""),
        ),
        (
            "force_tenant without a tenant: the namespace",
            kubelet.into(),
            r#"{"cniVersion":"1.0.0","name":"romana","force_tenant":true}"#,
            ("red", pod("red", "web-0", "1a2b"), false, ""),
        ),
    ];
    for (name, args, conf, (tenant, want_pod, runtime_labels, app)) in cases {
        let mut env: BTreeMap<String, String> = ADD
            .split('|')
            .map(|p| p.split_once('=').unwrap())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.insert("CNI_ARGS".into(), args);
        let inv = parse(&env, conf.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(inv.tenant, tenant, "{name}");
        assert_eq!(inv.pod, want_pod, "{name}");
        assert_eq!(inv.runtime_labels, runtime_labels, "{name}");
        assert_eq!(inv.labels.get("app").map(String::as_str).unwrap_or(""), app, "{name}");
    }
}

#[test]
fn version_answers_with_or_without_a_config() {
    let inv = parse(&BTreeMap::from([("CNI_COMMAND".into(), "VERSION".into())]), b"").unwrap();
    assert_eq!(inv.command, Command::Version);
    assert_eq!(inv.version, "1.1.0");
    let v = version_answer(&inv.version);
    assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
}

#[test]
fn prev_result_gives_the_interface_address() {
    let env = BTreeMap::from([
        ("CNI_COMMAND".into(), "CHECK".into()),
        ("CNI_CONTAINERID".into(), "c".into()),
        ("CNI_NETNS".into(), "/x".into()),
        ("CNI_IFNAME".into(), "eth0".into()),
    ]);
    let conf = r#"{"cniVersion":"1.0.0","name":"r","prevResult":{"interfaces":[{"name":"romanaabc"},{"name":"eth0","sandbox":"/x"}],
        "ips":[{"address":"10.1.2.3/32","interface":1}]}}"#;
    assert_eq!(parse(&env, conf.as_bytes()).unwrap().prev_ip().as_deref(), Some("10.1.2.3"));
}

#[test]
fn results_have_the_shape_of_each_version() {
    let a = Attached {
        host_link: "romana0123abcde".into(),
        host_mac: "02:00:00:00:00:01".into(),
        ifname: "eth0".into(),
        pod_mac: "02:00:00:00:00:02".into(),
        netns: "/run/netns/p".into(),
        ip: "10.1.2.3".into(),
        prefix_len: 32,
        gateway: "169.254.1.1".into(),
        address_name: "cni:romana:c:eth0".into(),
        ips: vec![],
    };
    let golden = |version: &str, ip_version: Option<&str>| {
        let mut ip = json!({"address": "10.1.2.3/32", "gateway": "169.254.1.1", "interface": 1});
        if let Some(v) = ip_version {
            ip["version"] = json!(v);
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "romana0123abcde", "mac": "02:00:00:00:00:01"},
                {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"}
            ],
            "ips": [ip],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            "dns": {}
        })
    };
    for v in ["0.3.0", "0.3.1", "0.4.0"] {
        assert_eq!(render_result(v, &a), golden(v, Some("4")), "{v}");
    }
    for v in ["1.0.0", "1.1.0"] {
        assert_eq!(render_result(v, &a), golden(v, None), "{v}");
    }
}

/// A dual-stack pod: both addresses in `ips` (IPv4 first, each with its gateway and, before
/// 1.0.0, its version) and a default route of each family.
#[test]
fn dual_stack_results_list_both_addresses_and_both_default_routes() {
    use romana_api::agent::AttachedIp;
    let ip = |ip: &str, len: u8, gw: &str| AttachedIp { ip: ip.into(), prefix_len: len, gateway: gw.into() };
    let a = Attached {
        host_link: "romana0123abcde".into(),
        host_mac: "02:00:00:00:00:01".into(),
        ifname: "eth0".into(),
        pod_mac: "02:00:00:00:00:02".into(),
        netns: "/run/netns/p".into(),
        ip: "10.1.2.3".into(),
        prefix_len: 32,
        gateway: "169.254.1.1".into(),
        address_name: "cni:romana:c:eth0".into(),
        ips: vec![ip("10.1.2.3", 32, "169.254.1.1"), ip("fd00::3", 128, "fe80::1")],
    };
    for (v, versions) in [("0.4.0", Some(("4", "6"))), ("1.0.0", None), ("1.1.0", None)] {
        let r = render_result(v, &a);
        let mut want = json!([
            {"address": "10.1.2.3/32", "gateway": "169.254.1.1", "interface": 1},
            {"address": "fd00::3/128", "gateway": "fe80::1", "interface": 1}
        ]);
        if let Some((v4, v6)) = versions {
            want[0]["version"] = json!(v4);
            want[1]["version"] = json!(v6);
        }
        assert_eq!(r["ips"], want, "{v}");
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}]),
            "{v}"
        );
    }
    // An IPv6-only pod: one address, one IPv6 default route.
    let v6 = Attached { ip: "fd00::3".into(), prefix_len: 128, gateway: "fe80::1".into(), ips: vec![], ..a };
    let r = render_result("1.0.0", &v6);
    assert_eq!(r["ips"], json!([{"address": "fd00::3/128", "gateway": "fe80::1", "interface": 1}]));
    assert_eq!(r["routes"], json!([{"dst": "::/0", "gw": "fe80::1"}]));
}

/// CHECK reads every address `prevResult` gave the interface (a dual-stack result has two).
#[test]
fn check_reads_both_addresses_of_a_dual_stack_prev_result() {
    let env = BTreeMap::from([
        ("CNI_COMMAND".into(), "CHECK".into()),
        ("CNI_CONTAINERID".into(), "c1".into()),
        ("CNI_NETNS".into(), "/x".into()),
        ("CNI_IFNAME".into(), "eth0".into()),
    ]);
    let conf = r#"{"cniVersion":"1.0.0","name":"r","prevResult":{"interfaces":[{"name":"romanaabc"},{"name":"eth0","sandbox":"/x"}],
        "ips":[{"address":"10.1.2.3/32","interface":1},{"address":"fd00::3/128","interface":1},{"address":"10.9.9.9/32","interface":0}]}}"#;
    let inv = parse(&env, conf.as_bytes()).unwrap();
    assert_eq!(inv.prev_ips(), ["10.1.2.3", "fd00::3"]);
    assert_eq!(inv.prev_ip().as_deref(), Some("10.1.2.3"));
}

#[test]
fn only_the_cni_variables_are_read_and_non_utf8_is_code_4() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let env = |bad: &'static str| {
        move |k: &str| match k {
            _ if k == bad => Some(OsString::from_vec(b"x\xffy".to_vec())),
            "CNI_COMMAND" => Some(OsString::from("ADD")),
            _ => None,
        }
    };
    // CNI_PATH and everything else are never read: a bad one changes nothing.
    let got = romana_cni::read_env(env("CNI_PATH")).unwrap();
    assert_eq!(got, BTreeMap::from([("CNI_COMMAND".to_owned(), "ADD".to_owned())]));
    for var in romana_cni::CNI_VARS {
        let e = romana_cni::read_env(env(var)).unwrap_err();
        assert_eq!(e.code, 4, "{var}");
        assert_eq!(e.msg, format!("{var} is not valid UTF-8"));
    }
}

#[test]
fn a_panic_becomes_a_cni_error_with_its_message() {
    let p = std::panic::catch_unwind(|| panic!("index {} out of range", 3)).unwrap_err();
    let e = romana_cni::panic_error(&*p);
    assert_eq!((e.code, e.details.as_str()), (999, "index 3 out of range"));
    let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
    assert_eq!(romana_cni::panic_error(&*p).details, "static");
}
