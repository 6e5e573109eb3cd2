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
        ips: vec![],
        pod: None,
        runtime_labels: true,
    }
}

fn address(ip: &str) -> Address {
    named("cni:net:c1:eth0", ip)
}

fn named(name: &str, ip: &str) -> Address {
    Address {
        name: name.into(),
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
            CniEvent::Allocated(Ok(vec![address("10.0.0.5")])),
            CniEvent::EndpointRead(Err(refused(404))),
            CniEvent::Registered(vec![Ok(info())]),
            CniEvent::Enforced(Ok(())),
        ],
        &["allocate", "read-endpoint", "register", "enforce", "plumb"],
    );
    // An address romanad cannot have meant, or of a family the host has no gateway for: the
    // address goes back, nothing was registered.
    check(
        "c1",
        vec![start(), CniEvent::Allocated(Ok(vec![address("ten")]))],
        &["allocate", "release-quietly, fail 999"],
    );
    let mut v6_only = Add::new(Host { gateways: vec!["fd00::1".parse().unwrap()], ..host() }, req("c1"));
    v6_only.step(start());
    let got: Vec<String> =
        v6_only.step(CniEvent::Allocated(Ok(vec![address("10.0.0.5")]))).iter().map(word).collect();
    assert_eq!(got, ["release-quietly", "fail 7"]);
    // IPv6 needs no --gateway-ip: its gateway is the link-local fe80::1 on the pod's veth.
    let mut v6 = Add::new(host(), req("c1"));
    v6.step(start());
    v6.step(CniEvent::Allocated(Ok(vec![address("fd00::5")])));
    v6.step(CniEvent::EndpointRead(Err(refused(404))));
    v6.step(CniEvent::Registered(vec![Ok(info())]));
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
            CniEvent::Allocated(Ok(vec![address("10.0.0.5")])),
            CniEvent::EndpointRead(Err(refused(503))),
        ],
        &["allocate", "read-endpoint", "release-quietly, fail 11"],
    );
    // Registered, then the rules cannot be loaded: the record goes too.
    check(
        "c1",
        vec![
            start(),
            CniEvent::Allocated(Ok(vec![address("10.0.0.5")])),
            CniEvent::EndpointRead(Err(refused(404))),
            CniEvent::Registered(vec![Ok(info())]),
            CniEvent::Enforced(Err(EnforceFailure::NotLoaded("romanad unreachable".into()))),
        ],
        &["allocate", "read-endpoint", "register", "enforce", "forget, release-quietly, fail 11"],
    );
}

/// A dual-stack ADD: both addresses plumbed with their gateways, two records registered and
/// enforced together, both in the answer (IPv4 first); a failure after registration forgets both
/// records and releases the name (romanad releases its `#v6` with it).
#[test]
fn dual_stack_add_decisions() {
    let start = || CniEvent::Start { netns_exists: true };
    let dual = || vec![named("cni:net:c1:eth0", "10.0.0.5"), named("cni:net:c1:eth0#v6", "fd00::5")];
    let v6_info =
        EndpointInfo { name: "cni:net:c1:eth0#v6".into(), ip: "fd00::5".into(), ..Default::default() };
    let mut flow = Add::new(host(), req("c1"));
    flow.step(start());
    flow.step(CniEvent::Allocated(Ok(dual())));
    let known = EndpointInfo {
        labels: [("app".to_owned(), "set-later".to_owned())].into(),
        ip: "10.0.0.5".into(),
        host: "h1".into(),
        tenant: "red".into(),
        ..info()
    };
    let infos = match flow.step(CniEvent::EndpointRead(Ok(known))).as_slice() {
        [CniAction::Register(infos)] => infos.clone(),
        other => panic!("want one register, got {other:?}"),
    };
    let got: Vec<(&str, &str, Option<&String>)> =
        infos.iter().map(|i| (i.name.as_str(), i.ip.as_str(), i.labels.get("app"))).collect();
    let later = "set-later".to_owned();
    assert_eq!(
        got,
        [("cni:net:c1:eth0", "10.0.0.5", Some(&later)), ("cni:net:c1:eth0#v6", "fd00::5", Some(&later))]
    );
    let regs = vec![Ok(info()), Ok(v6_info.clone())];
    assert!(
        matches!(flow.step(CniEvent::Registered(regs)).as_slice(), [CniAction::Enforce(i)] if i.len() == 2)
    );
    let spec = match flow.step(CniEvent::Enforced(Ok(()))).as_slice() {
        [CniAction::Plumb(spec)] => spec.clone(),
        other => panic!("want one plumb, got {other:?}"),
    };
    let gw4: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(
        spec.addresses,
        [
            PodAddress { ip: "10.0.0.5".parse().unwrap(), gateway: gw4 },
            PodAddress { ip: "fd00::5".parse().unwrap(), gateway: IpAddr::V6(IPV6_GATEWAY) }
        ]
    );
    let a = Attachment {
        host_link: "h".into(),
        host_mac: "m".into(),
        ifname: "eth0".into(),
        pod_mac: "p".into(),
        created: true,
        times: Default::default(),
    };
    match flow.step(CniEvent::Plumbed(Ok(a))).as_slice() {
        [CniAction::Answer(Ok(Answer::Added(at)))] => {
            let ips: Vec<(&str, u8, &str)> =
                at.ips.iter().map(|i| (i.ip.as_str(), i.prefix_len, i.gateway.as_str())).collect();
            assert_eq!(ips, [("10.0.0.5", 32, "10.0.0.1"), ("fd00::5", 32, "fe80::1")]);
            assert_eq!((at.ip.as_str(), at.gateway.as_str()), ("10.0.0.5", "10.0.0.1"));
        }
        other => panic!("want the answer, got {other:?}"),
    }
    // The second record refused: the first is forgotten, the addresses go back.
    let words = |flow: &mut Add, ev| flow.step(ev).iter().map(word).collect::<Vec<_>>().join(", ");
    let mut flow = Add::new(host(), req("c1"));
    flow.step(start());
    flow.step(CniEvent::Allocated(Ok(dual())));
    flow.step(CniEvent::EndpointRead(Err(refused(404))));
    assert_eq!(
        words(&mut flow, CniEvent::Registered(vec![Ok(info()), Err(refused(503))])),
        "forget, release-quietly, fail 11"
    );
    // The first refused while the second was written (they go at once): the second is forgotten.
    let mut flow = Add::new(host(), req("c1"));
    flow.step(start());
    flow.step(CniEvent::Allocated(Ok(dual())));
    flow.step(CniEvent::EndpointRead(Err(refused(404))));
    let got = flow.step(CniEvent::Registered(vec![Err(refused(409)), Ok(v6_info.clone())]));
    assert_eq!(got.iter().map(word).collect::<Vec<_>>(), ["forget", "release-quietly", "fail 7"]);
    assert!(matches!(&got[0], CniAction::Forget(n) if n == "cni:net:c1:eth0#v6"), "{got:?}");
    // Enforcement fails after both records: both are forgotten.
    let mut flow = Add::new(host(), req("c1"));
    flow.step(start());
    flow.step(CniEvent::Allocated(Ok(dual())));
    flow.step(CniEvent::EndpointRead(Err(refused(404))));
    flow.step(CniEvent::Registered(vec![Ok(info()), Ok(v6_info)]));
    let got = flow.step(CniEvent::Enforced(Err(EnforceFailure::NotEnforced("busy".into()))));
    let forgotten: Vec<&str> = got
        .iter()
        .filter_map(|a| if let CniAction::Forget(n) = a { Some(n.as_str()) } else { None })
        .collect();
    assert_eq!(forgotten, ["cni:net:c1:eth0", "cni:net:c1:eth0#v6"]);
    // Two addresses of one family, or one of another endpoint: released, nothing registered.
    for bad in [
        vec![named("cni:net:c1:eth0", "10.0.0.5"), named("cni:net:c1:eth0#v6", "10.0.0.6")],
        vec![named("cni:net:c1:eth0", "10.0.0.5"), named("cni:net:c2:eth0#v6", "fd00::5")],
    ] {
        let mut flow = Add::new(host(), req("c1"));
        flow.step(start());
        assert_eq!(
            words(&mut flow, CniEvent::Allocated(Ok(bad.clone()))),
            "release-quietly, fail 999",
            "{bad:?}"
        );
    }
    // IPv6-only: one address under the endpoint's own name.
    let mut flow = Add::new(host(), req("c1"));
    flow.step(start());
    flow.step(CniEvent::Allocated(Ok(vec![address("fd00::7")])));
    match flow.step(CniEvent::EndpointRead(Err(refused(404)))).as_slice() {
        [CniAction::Register(infos)] => {
            assert_eq!(
                infos.iter().map(|i| (i.name.as_str(), i.ip.as_str())).collect::<Vec<_>>(),
                [("cni:net:c1:eth0", "fd00::7")]
            );
        }
        other => panic!("want one register, got {other:?}"),
    }
}

/// CHECK's comparison of `prevResult` with IPAM, as data: (ip, ips, held, differs).
#[test]
fn check_compares_every_address_of_the_previous_result() {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    for (ip, ips, held, differs) in [
        (None, &[][..], &["10.0.0.5"][..], false),
        (Some("10.0.0.5"), &[][..], &["10.0.0.5", "fd00::5"][..], false),
        (Some("10.0.0.6"), &[][..], &["10.0.0.5"][..], true),
        (Some("10.0.0.5"), &["10.0.0.5", "fd00:0::5"][..], &["10.0.0.5", "fd00::5"][..], false),
        (Some("10.0.0.5"), &["10.0.0.5"][..], &["10.0.0.5", "fd00::5"][..], true),
        (Some("10.0.0.5"), &["10.0.0.5", "fd00::6"][..], &["10.0.0.5", "fd00::5"][..], true),
        (Some("fd00::5"), &["fd00::5"][..], &["fd00::5"][..], false),
    ] {
        let r = AttachRequest { ip: ip.map(str::to_owned), ips: s(ips), ..req("c1") };
        let got = prev_differs(&r, &s(held));
        assert_eq!(got.is_some(), differs, "{ip:?} {ips:?} {held:?}: {got:?}");
    }
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
    match flow.step(CniEvent::Unplumbed(Ok(false))).as_slice() {
        // Both records of a dual-stack endpoint (the `#v6` one absent is deleted too).
        [CniAction::Unregister(names)] => assert_eq!(names, &["cni:net:c1:eth0", "cni:net:c1:eth0#v6"]),
        other => panic!("want unregister, got {other:?}"),
    }
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
