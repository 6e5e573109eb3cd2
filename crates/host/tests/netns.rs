//! The netlink adapter against a real kernel, inside a network namespace this test creates (no
//! link leaves it) and deletes even when the test fails: observe, apply, converge, leave foreign
//! links and routes alone, refuse to overwrite a foreign route, and recover from tampering.

use std::sync::atomic::{AtomicU32, Ordering};

use romana_dataplane::{HostView, LinkName, LocalEndpoint, PeerRoute, Step, compile, diff, reachable};
use romana_host::{HostError, Kernel, in_netns};
use romana_test_support::Netns;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace named `rmt-<pid>-<n>`, deleted on drop.
fn netns() -> Option<Netns> {
    Netns::new(&format!("rmt-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn link(s: &str) -> LinkName {
    LinkName::new(s).expect("marked")
}

fn view(endpoints: &[(&str, &str)], routes: &[(&str, Option<&str>)]) -> HostView {
    HostView {
        gateway: link("romana-gw"),
        gateway_addresses: vec!["10.0.0.1".parse().expect("literal")],
        endpoints: endpoints
            .iter()
            .map(|(l, ip)| LocalEndpoint {
                name: format!("pod-{l}"),
                ip: ip.parse().expect("literal"),
                link: link(l),
            })
            .collect(),
        routes: routes
            .iter()
            .map(|(d, v)| PeerRoute {
                dest: d.parse().expect("literal"),
                via: v.map(|v| v.parse().expect("literal")),
            })
            .collect(),
    }
}

/// Observes, diffs and applies inside `ns`; answers the plan applied, then the plan a second pass
/// would apply (empty when converged), or the apply error.
fn reconcile(ns: &Netns, v: &HostView) -> Result<(Vec<Step>, Vec<Step>), String> {
    let desired = compile(v).expect("view compiles");
    in_netns(&ns.0, move || async move {
        let mut k = Kernel::connect().map_err(|e| e.to_string())?;
        let observed = k.observe().await.map_err(|e| e.to_string())?;
        let plan = diff(&observed, &desired);
        k.apply(&plan).await.map_err(|e: HostError| e.to_string())?;
        let after = k.observe().await.map_err(|e| e.to_string())?;
        assert_eq!(after, reachable(&observed, &desired), "the kernel holds what the plan promised");
        println!("gateway flavor: {:?}", k.gateway_flavor);
        Ok((plan.steps, diff(&after, &desired).steps))
    })
    .expect("namespace thread")
}

#[test]
fn converges_in_a_namespace_and_touches_nothing_else() {
    let Some(ns) = netns() else {
        eprintln!("SKIP: cannot create a network namespace (needs root and iproute2)");
        return;
    };
    // The host's uplink (not ours), a foreign route, and one endpoint link the CNI made.
    ns.ip("link add up0 type veth peer name up1");
    ns.ip("addr add 192.168.77.1/24 dev up0");
    ns.ip("link set up0 up");
    ns.ip("link set up1 up");
    ns.ip("route add 10.99.0.0/16 via 192.168.77.3");
    ns.ip("link add romana-ep1 type veth peer name pod1");
    ns.ip("link set romana-ep1 up");

    let v = view(
        &[("romana-ep1", "10.1.0.5"), ("romana-ep2", "10.1.0.6")],
        &[("10.2.0.0/16", Some("192.168.77.2")), ("10.3.0.0/16", None)],
    );
    let (applied, again) = reconcile(&ns, &v).expect("first reconcile");
    let shown: Vec<String> = applied.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "endpoint link romana-ep2 is missing; its routes wait",
            "add link romana-gw (Gateway)",
            "add address 10.0.0.1/32 dev romana-gw",
            "add route 10.1.0.5/32 dev romana-ep1",
            "add route 10.2.0.0/16 via 192.168.77.2",
            "add route 10.3.0.0/16 throw",
        ]
    );
    assert_eq!(again.len(), 1, "only the missing endpoint is left: {again:?}");
    let routes = ns.ip("route show");
    assert!(routes.contains("10.1.0.5 dev romana-ep1 proto 77 scope link"), "{routes}");
    assert!(routes.contains("10.2.0.0/16 via 192.168.77.2 dev up0 proto 77"), "{routes}");
    assert!(routes.contains("10.99.0.0/16 via 192.168.77.3 dev up0"), "{routes}");
    assert!(ns.ip("-o addr show dev romana-gw").contains("10.0.0.1/32"));

    // The CNI makes the second endpoint; the next pass routes it and changes nothing else.
    ns.ip("link add romana-ep2 type veth peer name pod2");
    ns.ip("link set romana-ep2 up");
    let (applied, again) = reconcile(&ns, &v).expect("second reconcile");
    assert_eq!(
        applied.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["add route 10.1.0.6/32 dev romana-ep2"]
    );
    assert!(again.is_empty());

    // Someone changes our route: it is replaced in place, not withdrawn.
    ns.ip("route replace 10.2.0.0/16 via 192.168.77.9 proto 77");
    let (applied, _) = reconcile(&ns, &v).expect("repair");
    assert_eq!(
        applied.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["replace route 10.2.0.0/16 via 192.168.77.9 -> via 192.168.77.2"]
    );

    // An endpoint's address changes: the new /32 is routed before the old one goes (scope link
    // routes are deleted too, not only the universe-scope ones).
    let moved = view(
        &[("romana-ep1", "10.1.0.7"), ("romana-ep2", "10.1.0.6")],
        &[("10.2.0.0/16", Some("192.168.77.2")), ("10.3.0.0/16", None)],
    );
    let (applied, again) = reconcile(&ns, &moved).expect("move");
    assert_eq!(
        applied.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["add route 10.1.0.7/32 dev romana-ep1", "delete route 10.1.0.5/32"]
    );
    assert!(again.is_empty());
    let routes = ns.ip("route show");
    assert!(routes.contains("10.1.0.7 dev romana-ep1") && !routes.contains("10.1.0.5 "), "{routes}");

    // A route manager that asks for a prefix someone else routes gets an error, and the
    // foreign route stays.
    let clash = view(
        &[("romana-ep1", "10.1.0.5"), ("romana-ep2", "10.1.0.6")],
        &[("10.99.0.0/16", Some("192.168.77.2"))],
    );
    let err = reconcile(&ns, &clash).expect_err("a foreign route is not overwritten");
    assert!(err.contains("not Romana's"), "{err}");
    assert!(ns.ip("route show").contains("10.99.0.0/16 via 192.168.77.3 dev up0"));

    // Everything Romana made goes when it is no longer wanted; foreign links and routes stay.
    let empty = view(&[], &[]);
    reconcile(&ns, &empty).expect("clean up");
    let links = ns.ip("-o link show");
    assert!(!links.contains("romana-ep1") && !links.contains("romana-ep2"), "{links}");
    assert!(links.contains("up0") && links.contains("romana-gw"), "{links}");
    let routes = ns.ip("route show");
    assert!(!routes.contains("proto 77"), "{routes}");
    assert!(routes.contains("10.99.0.0/16 via 192.168.77.3 dev up0"), "{routes}");
}
