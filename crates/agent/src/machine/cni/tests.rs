//! The ADD and DEL flows' decisions as data: events in, actions out (the CNI code of an answer
//! stands for it). No I/O; the runner with fake ports is tested in `drive_cni`.
#![allow(clippy::unwrap_used)]

use super::*;

fn host() -> Host {
    Host {
        name: "h1".into(),
        gateways: vec!["10.0.0.1".parse().unwrap()],
        policy: true,
        pod_wait: Duration::from_secs(1),
    }
}

fn req(container: &str) -> AttachRequest {
    AttachRequest {
        network: "net".into(),
        container_id: container.into(),
        ifname: "eth0".into(),
        netns: "/run/netns/x".into(),
        tenant: "red".into(),
        segment: String::new(),
        labels: Default::default(),
        ip: None,
        pod: None,
        runtime_labels: true,
    }
}

fn address(ip: &str) -> Address {
    Address {
        name: "cni:net:c1:eth0".into(),
        ip: ip.into(),
        prefix_len: 32,
        network: "n".into(),
        block: "b".into(),
        host: "h1".into(),
        tenant: "red".into(),
        segment: String::new(),
    }
}

/// An action as a short word (answers as `ok` or their CNI code), so cases read as data.
fn word(a: &CniAction) -> String {
    match a {
        CniAction::LookUpPod { after, .. } => format!("look-up-pod {}ms", after.as_millis()),
        CniAction::Allocate(_) => "allocate".into(),
        CniAction::ReadEndpoint(_) => "read-endpoint".into(),
        CniAction::Register(_) => "register".into(),
        CniAction::Enforce(_) => "enforce".into(),
        CniAction::Plumb(_) => "plumb".into(),
        CniAction::Unplumb(_) => "unplumb".into(),
        CniAction::Forget(_) => "forget".into(),
        CniAction::Unregister(_) => "unregister".into(),
        CniAction::ReleaseQuietly(_) => "release-quietly".into(),
        CniAction::Release(_) => "release".into(),
        CniAction::Answer(Ok(_)) => "ok".into(),
        CniAction::Answer(Err(e)) => format!("fail {}", e.code),
    }
}

/// Feeds `events` to a fresh ADD of container `container` and compares each step's actions.
fn check(container: &str, events: Vec<CniEvent>, expect: &[&str]) {
    let mut flow = Add::new(host(), req(container));
    let got: Vec<String> =
        events.into_iter().map(|e| flow.step(e).iter().map(word).collect::<Vec<_>>().join(", ")).collect();
    assert_eq!(got, expect, "{container}");
}

fn refused(status: u16) -> Refused {
    Refused::Status(status, format!("status {status}"))
}

fn info() -> EndpointInfo {
    EndpointInfo { name: "cni:net:c1:eth0".into(), ip: "10.0.0.5".into(), ..Default::default() }
}

#[test]
fn add_decisions() {
    let start = || CniEvent::Start { netns_exists: true };
    // Bad names and a missing namespace are answered before anything is asked of romanad.
    check("-c1", vec![start()], &["fail 4"]);
    let mut flow = Add::new(host(), req("c1"));
    assert_eq!(
        flow.step(CniEvent::Start { netns_exists: false }).iter().map(word).collect::<Vec<_>>(),
        ["fail 3"]
    );
    // The happy path, step by step.
    check(
        "c1",
        vec![
            start(),
            CniEvent::Allocated(Ok(address("10.0.0.5"))),
            CniEvent::EndpointRead(Err(refused(404))),
            CniEvent::Registered(Ok(info())),
            CniEvent::Enforced(Ok(())),
        ],
        &["allocate", "read-endpoint", "register", "enforce", "plumb"],
    );
    // An address romanad cannot have meant, or of a family the host has no gateway for: the
    // address goes back, nothing was registered.
    check(
        "c1",
        vec![start(), CniEvent::Allocated(Ok(address("ten")))],
        &["allocate", "release-quietly, fail 999"],
    );
    let mut v6_only = Add::new(Host { gateways: vec!["fd00::1".parse().unwrap()], ..host() }, req("c1"));
    v6_only.step(start());
    let got: Vec<String> =
        v6_only.step(CniEvent::Allocated(Ok(address("10.0.0.5")))).iter().map(word).collect();
    assert_eq!(got, ["release-quietly", "fail 7"]);
    // IPv6 needs no --gateway-ip: its gateway is the link-local fe80::1 on the pod's veth.
    let mut v6 = Add::new(host(), req("c1"));
    v6.step(start());
    v6.step(CniEvent::Allocated(Ok(address("fd00::5"))));
    v6.step(CniEvent::EndpointRead(Err(refused(404))));
    v6.step(CniEvent::Registered(Ok(info())));
    match v6.step(CniEvent::Enforced(Ok(()))).as_slice() {
        [CniAction::Plumb(spec)] => assert_eq!(
            spec.addresses,
            [PodAddress { ip: "fd00::5".parse().unwrap(), gateway: IpAddr::V6(IPV6_GATEWAY) }]
        ),
        other => panic!("want one plumb, got {other:?}"),
    }
    // Reading the record fails (not a 404): undo the allocation, try again later.
    check(
        "c1",
        vec![
            start(),
            CniEvent::Allocated(Ok(address("10.0.0.5"))),
            CniEvent::EndpointRead(Err(refused(503))),
        ],
        &["allocate", "read-endpoint", "release-quietly, fail 11"],
    );
    // Registered, then the rules cannot be loaded: the record goes too.
    check(
        "c1",
        vec![
            start(),
            CniEvent::Allocated(Ok(address("10.0.0.5"))),
            CniEvent::EndpointRead(Err(refused(404))),
            CniEvent::Registered(Ok(info())),
            CniEvent::Enforced(Err(EnforceFailure::NotLoaded("romanad unreachable".into()))),
        ],
        &["allocate", "read-endpoint", "register", "enforce", "forget, release-quietly, fail 11"],
    );
}

#[test]
fn romanad_errors_map_to_cni_codes() {
    for (r, code) in [
        (Refused::Unreachable("x".into()), code::TRY_AGAIN_LATER),
        (refused(503), code::TRY_AGAIN_LATER),
        (refused(429), code::TRY_AGAIN_LATER),
        (refused(404), code::INVALID_CONFIG),
        (refused(409), code::INVALID_CONFIG),
        (refused(500), code::OTHER),
        (Refused::Other("bad json".into()), code::OTHER),
    ] {
        let e = r.answer("allocating an address");
        assert_eq!(e.code, code, "{r:?}");
        assert!(e.msg.starts_with("allocating an address: romanad "), "{e:?}");
    }
}

#[test]
fn del_decisions() {
    let req = DetachRequest {
        network: "net".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        netns: "".into(),
    };
    let words = |flow: &mut Del, ev| flow.step(ev).iter().map(word).collect::<Vec<_>>().join(", ");
    let mut flow = Del::new(req.clone(), true);
    assert_eq!(words(&mut flow, CniEvent::Start { netns_exists: true }), "unplumb");
    assert_eq!(words(&mut flow, CniEvent::Unplumbed(Ok(false))), "unregister");
    // The record is gone (or was already): the address goes. romanad refused or unreachable:
    // DEL fails, so the runtime repeats it (found by `romana chaos`: a DEL that answered success
    // while its record stayed, with a replica or an etcd member being killed).
    assert_eq!(words(&mut flow, CniEvent::Unregistered(Ok(()))), "release");
    assert_eq!(words(&mut flow, CniEvent::Unregistered(Err(refused(404)))), "release");
    assert_eq!(words(&mut flow, CniEvent::Unregistered(Err(refused(503)))), "fail 11");
    // Released, or already released (DEL twice): success; anything else is an error.
    assert_eq!(words(&mut flow, CniEvent::Released(Err(refused(404)))), "ok");
    assert_eq!(words(&mut flow, CniEvent::Released(Ok(()))), "ok");
    assert_eq!(words(&mut flow, CniEvent::Released(Err(refused(503)))), "fail 11");
    // Without policy there is nothing to forget; a link that cannot be removed is the answer.
    let mut flow = Del::new(req.clone(), false);
    assert_eq!(words(&mut flow, CniEvent::Unplumbed(Ok(true))), "release");
    let failed = PlumbFailure { code: code::IO_FAILURE, text: "netlink".into() };
    assert_eq!(words(&mut flow, CniEvent::Unplumbed(Err(failed))), "fail 5");
    let mut flow = Del::new(DetachRequest { container_id: "a/b".into(), ..req }, true);
    assert_eq!(words(&mut flow, CniEvent::Start { netns_exists: true }), "fail 4");
}
