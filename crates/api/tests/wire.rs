//! Golden and round-trip tests of the typed wire: route kinds, `/fabric`'s groups and the watch's
//! lines serialize to the very JSON clients saw when these were strings and `json!` values, and
//! read back to the same values.

use romana_api::rest::{
    FabricGroup, HostRoutesInfo, RouteInfo, RouteKind, RouteSetNotice, WatchEvent, WatchKind,
};
use romana_api::watch::Watched;

/// `value` serializes to exactly `json` and `json` reads back to `value`.
fn check<T>(value: &T, json: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(value).expect("serializes"), json);
    assert_eq!(&serde_json::from_str::<T>(json).expect("reads back"), value, "{json}");
}

fn route(dest: &str, kind: RouteKind) -> RouteInfo {
    RouteInfo { dest: dest.into(), kind }
}

#[test]
fn route_kinds_keep_their_json() {
    let cases = [
        (
            route("10.0.0.0/28", RouteKind::Host { via: "h1".into(), via_ip: "192.168.0.1".into() }),
            r#"{"dest":"10.0.0.0/28","kind":"host","via":"h1","via_ip":"192.168.0.1"}"#,
        ),
        (
            route("10.0.0.0/17", RouteKind::Group { via: "/rack-1".into() }),
            r#"{"dest":"10.0.0.0/17","kind":"group","via":"/rack-1"}"#,
        ),
        (route("10.2.0.0/16", RouteKind::Throw), r#"{"dest":"10.2.0.0/16","kind":"throw"}"#),
    ];
    for (value, json) in &cases {
        check(value, json);
        assert!(json.contains(&format!("\"kind\":\"{}\"", value.kind.name())));
    }
    let set = HostRoutesInfo {
        host: "h2".into(),
        revision: 9,
        routes: cases.iter().map(|(r, _)| r.clone()).collect(),
        per_block: Some(3),
        per_endpoint: Some(40),
        stamp: Some("00ab12cd34ef5678".into()),
    };
    check(
        &set,
        &format!(
            r#"{{"host":"h2","revision":9,"routes":[{}],"per_block":3,"per_endpoint":40,"stamp":"00ab12cd34ef5678"}}"#,
            cases.iter().map(|(_, j)| *j).collect::<Vec<_>>().join(",")
        ),
    );
}

#[test]
fn an_unknown_route_kind_is_refused_by_name() {
    let e = serde_json::from_str::<RouteInfo>(r#"{"dest":"10.0.0.0/8","kind":"tunnel"}"#)
        .expect_err("no such kind");
    assert!(e.to_string().contains("tunnel"), "{e}");
    let e = serde_json::from_str::<RouteInfo>(r#"{"dest":"10.0.0.0/8"}"#).expect_err("a kind is needed");
    assert!(e.to_string().contains("kind"), "{e}");
}

#[test]
fn fabric_groups_keep_their_json() {
    let g = FabricGroup {
        announce: Some("10.0.0.0/17".into()),
        cidr: "10.0.0.0/17".into(),
        group: "/rack-1".into(),
        hosts: vec!["h1".into(), "h2".into()],
        network: "pods".into(),
        routes: vec![route(
            "10.0.0.0/28",
            RouteKind::Host { via: "h1".into(), via_ip: "192.168.1.1".into() },
        )],
        vips: vec![],
    };
    check(
        &g,
        r#"{"announce":"10.0.0.0/17","cidr":"10.0.0.0/17","group":"/rack-1","hosts":["h1","h2"],"network":"pods","routes":[{"dest":"10.0.0.0/28","kind":"host","via":"h1","via_ip":"192.168.1.1"}]}"#,
    );
    // A group holding no host announces nothing: `null`, as `json!` wrote it.
    let empty = FabricGroup { announce: None, hosts: vec![], routes: vec![], ..g };
    check(
        &empty,
        r#"{"announce":null,"cidr":"10.0.0.0/17","group":"/rack-1","hosts":[],"network":"pods","routes":[]}"#,
    );
    // A VIP's route, only when there is one.
    let vip = FabricGroup {
        vips: vec![route(
            "198.51.100.5/32",
            RouteKind::Host { via: "h1".into(), via_ip: "192.168.1.1".into() },
        )],
        ..empty
    };
    check(
        &vip,
        r#"{"announce":null,"cidr":"10.0.0.0/17","group":"/rack-1","hosts":[],"network":"pods","routes":[],"vips":[{"dest":"198.51.100.5/32","kind":"host","via":"h1","via_ip":"192.168.1.1"}]}"#,
    );
}

fn event(kind: WatchKind, key: &str, value: Option<serde_json::Value>) -> WatchEvent {
    WatchEvent::with_value(5, kind, key.into(), value.as_ref())
}

#[test]
fn watch_lines_keep_their_json() {
    let cases = [
        (
            event(WatchKind::Put, "tenants/t1", Some(serde_json::json!({"name": "t1"}))),
            r#"{"revision":5,"kind":"put","key":"tenants/t1","value":{"name":"t1"}}"#,
        ),
        (
            event(WatchKind::Delete, "tenants/t1", None),
            r#"{"revision":5,"kind":"delete","key":"tenants/t1"}"#,
        ),
        (event(WatchKind::Synced, "", None), r#"{"revision":5,"kind":"synced","key":""}"#),
        (
            event(WatchKind::Error, "", Some("store unavailable".into())),
            r#"{"revision":5,"kind":"error","key":"","value":"store unavailable"}"#,
        ),
    ];
    for (value, json) in &cases {
        check(value, json);
    }
}

#[test]
fn watch_values_are_typed_by_their_key() {
    let endpoint = serde_json::json!({"name": "pod-a", "ip": "10.0.0.5", "tenant": "t", "host": "h1"});
    let routes = serde_json::json!({"host": "h1", "stamp": "00000000000000ab"});
    let typed = |kind, key: &str, value: Option<serde_json::Value>| event(kind, key, value).watched();
    match typed(WatchKind::Put, "endpoints/pod-a", Some(endpoint.clone())) {
        Ok(Watched::Endpoint { name, value: Some(e) }) => {
            assert_eq!((name.as_str(), e.ip.as_str()), ("pod-a", "10.0.0.5"))
        }
        other => panic!("an endpoint: {other:?}"),
    }
    let cases: Vec<(WatchKind, &str, Option<serde_json::Value>, Watched)> = vec![
        (WatchKind::Delete, "endpoints/pod-a", None, Watched::Endpoint { name: "pod-a".into(), value: None }),
        (WatchKind::Put, "endpoints/pod-a", None, Watched::Endpoint { name: "pod-a".into(), value: None }),
        (WatchKind::Delete, "policies/p1", None, Watched::Policy { id: "p1".into(), value: None }),
        (
            WatchKind::Delete,
            "netpols/ns/np",
            None,
            Watched::NetworkPolicy { key: "ns/np".into(), value: None },
        ),
        (
            WatchKind::Put,
            "routes/h1",
            Some(routes),
            Watched::Routes {
                host: "h1".into(),
                value: Some(RouteSetNotice { host: "h1".into(), stamp: "00000000000000ab".into() }),
            },
        ),
        (
            WatchKind::Put,
            "tenants/t1",
            Some(serde_json::json!({})),
            Watched::Other { key: "tenants/t1".into() },
        ),
        (WatchKind::Synced, "", None, Watched::Other { key: String::new() }),
    ];
    for (kind, key, value, want) in cases {
        assert_eq!(typed(kind, key, value).expect("typed"), want, "{key}");
    }
    let bad = typed(WatchKind::Put, "policies/p2", Some(serde_json::json!({"ingress": 7})))
        .expect_err("unreadable");
    assert_eq!(bad.resource, "policy");
    assert!(bad.to_string().starts_with("unreadable policy policies/p2 on the watch: "), "{bad}");
}

#[test]
fn credentials_never_print_their_password() {
    let c = romana_api::rest::Credentials {
        endpoint: "http://127.0.0.1:9600".into(),
        username: "agent-h1".into(),
        password: "s3cret-pw".into(),
        ca: None,
    };
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(shown.contains("agent-h1"), "{shown}");
}
