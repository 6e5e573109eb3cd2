//! `romana doctor`'s judgement as data: a healthy host's facts, one change, the problems expected
//! (`kind: what`).

use romana_api::diagnose::FindingInfo;
use serde_json::json;

use super::*;

fn route(dest: &str, via: Option<&str>) -> RouteInfo {
    let kind = match via {
        Some(v) => RouteKind::Host { via: "h2".into(), via_ip: v.into() },
        None => RouteKind::Throw,
    };
    RouteInfo { dest: dest.into(), kind }
}

fn healthy() -> Facts {
    Facts {
        host: "h1".into(),
        forwarding: Ok("1\n".into()),
        route_set: Ok(vec![route("10.1.0.0/24", Some("192.168.1.12")), route("10.0.0.0/8", None)]),
        kernel_routes: Ok(vec![
            KernelRoute { dest: "10.1.0.0/24".into(), via: Some("192.168.1.12".into()) },
            KernelRoute { dest: "10.0.0.0/8".into(), via: None },
        ]),
        gateway: Ok(Some(Link { up: true })),
        table: Some(Ok(true)),
        agent: Ok(Diagnosis {
            host: "h1".into(),
            findings: vec![],
            counts: BTreeMap::new(),
            routes_revision: 3,
            at_ms: 0,
        }),
        bird: None,
        alive: Some(true),
        skew_ms: Some(400),
        credentials: Some(Ok(900)),
        certificates: vec![],
        now_unix: 1_780_000_000,
    }
}

fn check_case(change: impl FnOnce(&mut Facts), expect: &[&str]) {
    let mut f = healthy();
    change(&mut f);
    let got: Vec<String> = check(&f).iter().map(|p| format!("{}: {}", p.kind, p.what)).collect();
    assert_eq!(got, expect);
}

fn bgp(name: &str, state: &str, info: &str) -> Protocol {
    Protocol { name: name.into(), proto: "BGP".into(), state: state.into(), info: info.into() }
}

fn finding(kind: &str, what: &str) -> FindingInfo {
    FindingInfo { kind: kind.into(), what: what.into(), fix: "x".into() }
}

#[test]
fn a_healthy_host_has_no_problems() {
    check_case(|_| {}, &[]);
    check_case(|f| f.bird = Some(Ok(vec![bgp("romana_r1", "up", "Established")])), &[]);
}

#[test]
fn each_broken_part_is_named() {
    check_case(
        |f| f.forwarding = Ok("0".into()),
        &["forwarding-off: net.ipv4.ip_forward is 0 on h1: pods cannot reach other hosts"],
    );
    check_case(
        |f| {
            let k = f.kernel_routes.as_mut().unwrap();
            k[0].via = Some("192.168.1.99".into());
            k.remove(1);
            k.push(KernelRoute { dest: "10.9.0.0/24".into(), via: Some("192.168.1.13".into()) });
        },
        &[
            "route-extra: route 10.9.0.0/24 via 192.168.1.13 (protocol 77) is not in the route manager's set",
            "route-missing: route 10.0.0.0/8 throw is missing",
            "route-wrong: route 10.1.0.0/24 is via 192.168.1.99, the route manager says via 192.168.1.12",
        ],
    );
    check_case(
        |f| f.gateway = Ok(Some(Link { up: false })),
        &["gateway: link romana-gw is down: pods lose their gateway"],
    );
    check_case(|f| f.gateway = Ok(None), &["gateway: link romana-gw is missing"]);
    check_case(
        |f| {
            f.agent.as_mut().unwrap().findings =
                vec![finding("table-differs", "chain forward has 1 rules"), finding("route-missing", "dup")]
        },
        &["table-differs: chain forward has 1 rules"],
    );
    check_case(
        |f| {
            f.agent = Err("no answer".into());
            f.table = Some(Ok(false));
            f.alive = Some(false);
        },
        &[
            "agent-down: the agent does not answer: no answer",
            "host-dead: romanad has no heartbeat from h1: other hosts no longer route to its pods",
            "table-missing: table inet romana is missing: nothing enforces tenant isolation or policies",
        ],
    );
    check_case(
        |f| f.bird = Some(Ok(vec![bgp("romana_r1", "start", "Active Socket: Connection refused")])),
        &["bird: BGP session romana_r1 is start (Active Socket: Connection refused)"],
    );
    check_case(
        |f| f.bird = Some(Err("connection refused".into())),
        &["bird: BIRD does not answer: connection refused"],
    );
    check_case(|f| f.skew_ms = Some(-4_000), &["clock-skew: romanad's clock is 4.0 s behind h1's"]);
    check_case(
        |f| f.credentials = Some(Err("romanad refuses h1".into())),
        &["credentials: the agent's credentials do not log in: romanad refuses h1"],
    );
}

#[test]
fn certificates_expired_are_errors_and_near_their_end_warnings() {
    let src = |name: &str, not_after: i64| CertSource {
        name: name.into(),
        certs: Ok(vec![Ok(doctor_certs::Validity { subject: Some("romanad".into()), not_after })]),
    };
    let now = healthy().now_unix;
    let mut f = healthy();
    f.certificates = vec![
        src("ok.pem", now + 90 * 86_400),
        src("old.pem", now - 1),
        src("soon.pem", now + 86_400),
        CertSource { name: "gone.pem".into(), certs: Err("No such file".into()) },
    ];
    let got: Vec<(Severity, String)> = check(&f).into_iter().map(|p| (p.severity, p.what)).collect();
    assert_eq!(
        got,
        vec![
            (
                Severity::Error,
                r#"certificate "romanad" in old.pem expired on 2026-05-28 20:26:39 UTC"#.into()
            ),
            (
                Severity::Warning,
                r#"certificate "romanad" in soon.pem expires on 2026-05-29 20:26:40 UTC (in 1 days)"#.into()
            ),
            (Severity::Error, "cannot read certificates from gone.pem: No such file".into()),
        ]
    );
}

#[test]
fn kernel_routes_are_those_with_a_gateway_and_throws() {
    let v = json!([
        {"dst": "10.1.0.0/24", "gateway": "192.168.1.12", "dev": "eth0", "protocol": "77"},
        {"type": "throw", "dst": "10.0.0.0/8", "protocol": "77"},
        {"dst": "10.1.1.5", "dev": "romana1234", "scope": "link", "protocol": "77"},
        {"dst": "10.2.0.1", "gateway": "192.168.1.13"},
        {"dst": "fd00:10::40", "gateway": "fd72:6d73:1::12"}
    ]);
    assert_eq!(
        kernel_routes(&v),
        vec![
            KernelRoute { dest: "10.1.0.0/24".into(), via: Some("192.168.1.12".into()) },
            KernelRoute { dest: "10.0.0.0/8".into(), via: None },
            KernelRoute { dest: "10.2.0.1/32".into(), via: Some("192.168.1.13".into()) },
            KernelRoute { dest: "fd00:10::40/128".into(), via: Some("fd72:6d73:1::12".into()) },
        ]
    );
}
