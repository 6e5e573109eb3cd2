//! Whole CNI ADDs and DELs against fake ports, as data: romanad's scripted answers in, the calls
//! the ports saw and the answer out. The real path is `crates/cni/tests/*.rs` (root); these run
//! every decision without root: success, a pod record that comes late or is another pod's,
//! romanad refusing, DEL twice, rollbacks after a failed enforcement or plumbing.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use romana_api::agent::{AttachRequest, DetachRequest, PodRef, code};
use romana_api::rest::{Address, AddressRequest, EndpointInfo, ErrorBody, HostRoutesInfo, PodInfo, Tenant};
use romana_client::ClientError;
use romana_dataplane::LinkName;
use romana_host::{Attachment, EndpointError, EndpointSpec};
use romana_store::BoxFut;

use super::*;
use crate::machine::cni::{Add, Del, EnforceFailure, Host};
use crate::machine::inputs::Lists;

fn api(status: u16) -> ClientError {
    ClientError::Api {
        status,
        body: ErrorBody {
            status_code: status,
            error: "x".into(),
            message: format!("status {status}"),
            details: vec![],
        },
    }
}

/// What the fakes answer; every call is logged.
#[derive(Default)]
struct Script {
    /// Answers to successive pod lookups (`Err(status)`); the last one repeats.
    pods: Vec<Result<&'static str, u16>>,
    /// Status of a refused allocation.
    alloc_refused: Option<u16>,
    /// The host draws from an IPv6 network too: the allocation gives `fd00::5` as `<name>#v6`.
    dual: bool,
    /// Status of a refused registration of the `#v6` record (alone, or its stack's).
    register_v6_refused: Option<u16>,
    /// romanad has no `PUT /endpoint-stacks` (an older one): 404.
    no_stack_route: bool,
    /// romanad already has the endpoint's record (a repeated ADD), with these labels.
    known: Option<&'static str>,
    register_refused: Option<u16>,
    enforce_fails: bool,
    plumb_fails: bool,
    /// The address is already released (DEL twice).
    released: bool,
    /// Status of a refused deletion of the endpoint's record.
    unregister_refused: Option<u16>,
}

struct Fake {
    script: Script,
    pods: Mutex<VecDeque<Result<&'static str, u16>>>,
    log: Mutex<Vec<String>>,
}

impl Fake {
    fn new(script: Script) -> Fake {
        let pods = Mutex::new(script.pods.iter().copied().collect());
        Fake { script, pods, log: Mutex::default() }
    }
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

fn address(name: &str, ip: &str) -> Address {
    Address {
        name: name.into(),
        ip: ip.into(),
        prefix_len: 32,
        network: "n".into(),
        block: "10.0.0.0/28".into(),
        host: "h1".into(),
        tenant: "red".into(),
        segment: String::new(),
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFut<'a, T> {
    Box::pin(async move { v })
}

impl Romanad for Fake {
    fn heartbeat<'a>(&'a self, _: &'a str) -> BoxFut<'a, Result<(), ClientError>> {
        unimplemented!("not the CNI path's")
    }
    fn routes<'a>(&'a self, _: &'a str) -> BoxFut<'a, Result<HostRoutesInfo, ClientError>> {
        unimplemented!("not the CNI path's")
    }
    fn lists(&self, _: bool) -> BoxFut<'_, Result<Lists, ClientError>> {
        unimplemented!("not the CNI path's")
    }
    fn tenants(&self) -> BoxFut<'_, Result<Vec<Tenant>, ClientError>> {
        unimplemented!("not the CNI path's")
    }
    fn pod<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFut<'a, Result<PodInfo, ClientError>> {
        self.note(format!("pod {namespace}/{name}"));
        let mut q = self.pods.lock().unwrap();
        let a = if q.len() > 1 { q.pop_front() } else { q.front().copied() };
        ready(match a.unwrap_or(Err(404)) {
            Ok(uid) => Ok(PodInfo {
                namespace: namespace.into(),
                name: name.into(),
                uid: uid.into(),
                segment: "front".into(),
                ..Default::default()
            }),
            Err(s) => Err(api(s)),
        })
    }
    fn allocate_stack<'a>(
        &'a self,
        req: &'a AddressRequest,
    ) -> BoxFut<'a, Result<Vec<Address>, ClientError>> {
        self.note(format!("allocate {} segment {:?}", req.name, req.segment));
        ready(match self.script.alloc_refused {
            Some(s) => Err(api(s)),
            None if self.script.dual => {
                Ok(vec![address(&req.name, "10.0.0.5"), address(&format!("{}#v6", req.name), "fd00::5")])
            }
            None => Ok(vec![address(&req.name, "10.0.0.5")]),
        })
    }
    fn release<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Address, ClientError>> {
        self.note(format!("release {name}"));
        ready(if self.script.released { Err(api(404)) } else { Ok(address(name, "10.0.0.5")) })
    }
    fn endpoint<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<EndpointInfo, ClientError>> {
        self.note(format!("read endpoint {name}"));
        ready(match self.script.known {
            Some(labels) => Ok(EndpointInfo {
                name: name.into(),
                ip: "10.0.0.5".into(),
                tenant: "red".into(),
                host: "h1".into(),
                labels: [("app".to_owned(), labels.to_owned())].into(),
                ..Default::default()
            }),
            None => Err(api(404)),
        })
    }
    fn put_endpoint<'a>(&'a self, e: &'a EndpointInfo) -> BoxFut<'a, Result<EndpointInfo, ClientError>> {
        let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.note(format!("register {} {} labels [{}] pod {:?}", e.name, e.ip, labels.join(","), e.pod));
        let refused = if e.name.ends_with("#v6") {
            self.script.register_v6_refused
        } else {
            self.script.register_refused
        };
        ready(match refused {
            Some(s) => Err(api(s)),
            None => Ok(e.clone()),
        })
    }
    fn put_endpoint_stack<'a>(
        &'a self,
        name: &'a str,
        records: &'a [EndpointInfo],
    ) -> BoxFut<'a, Result<Vec<EndpointInfo>, ClientError>> {
        let each: Vec<String> = records.iter().map(|e| format!("{} {}", e.name, e.ip)).collect();
        self.note(format!("register stack {name}: {}", each.join(" and ")));
        let refused = if self.script.no_stack_route {
            Some(404)
        } else {
            self.script.register_refused.or(self.script.register_v6_refused)
        };
        ready(match refused {
            Some(s) => Err(api(s)),
            None => Ok(records.to_vec()),
        })
    }
    fn delete_endpoint<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), ClientError>> {
        self.note(format!("delete endpoint {name}"));
        ready(match self.script.unregister_refused {
            Some(s) => Err(api(s)),
            None => Ok(()),
        })
    }
}

impl Plumbing for Fake {
    fn attach<'a>(&'a self, spec: &'a EndpointSpec) -> BoxFut<'a, Result<Attachment, EndpointError>> {
        let a: Vec<String> = spec.addresses.iter().map(|a| format!("{} via {}", a.ip, a.gateway)).collect();
        self.note(format!("attach {} {}", spec.host_link, a.join(" and ")));
        ready(if self.script.plumb_fails {
            Err(EndpointError::NoPodNamespace { path: "/gone".into() })
        } else {
            Ok(Attachment {
                host_link: spec.host_link.to_string(),
                host_mac: "h".into(),
                ifname: spec.ifname.clone(),
                pod_mac: "p".into(),
                created: true,
                times: Default::default(),
            })
        })
    }
    fn detach<'a>(&'a self, link: &'a LinkName) -> BoxFut<'a, Result<bool, EndpointError>> {
        self.note(format!("detach {link}"));
        ready(Ok(!self.script.released))
    }
}

impl Enforcer for Fake {
    fn enforce<'a>(&'a self, infos: &'a [EndpointInfo]) -> BoxFut<'a, Result<(), EnforceFailure>> {
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        self.note(format!("enforce {}", names.join(" and ")));
        ready(if self.script.enforce_fails {
            Err(EnforceFailure::NotEnforced("nft: busy".into()))
        } else {
            Ok(())
        })
    }
    fn forget<'a>(&'a self, name: &'a str) -> BoxFut<'a, ()> {
        self.note(format!("unenforce {name}"));
        ready(())
    }
}

fn host(policy: bool) -> Host {
    Host {
        name: "h1".into(),
        gateways: vec!["10.0.0.1".parse().unwrap()],
        policy,
        pod_wait: Duration::from_millis(60),
    }
}

fn add_req(pod: Option<&str>) -> AttachRequest {
    AttachRequest {
        network: "net".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        netns: "/run/netns/x".into(),
        tenant: "red".into(),
        segment: String::new(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
        ip: None,
        ips: vec![],
        pod: pod.map(|uid| PodRef { namespace: "red".into(), name: "web-0".into(), uid: uid.into() }),
        runtime_labels: pod.is_none(),
    }
}

const NAME: &str = "cni:net:c1:eth0";

/// Runs an ADD (`pod`: kubelet's uid, for a pod without runtime labels) and compares the calls
/// and the answer's CNI code (`0`: success).
fn check_add(what: &str, script: Script, policy: bool, pod: Option<&str>, calls: &[&str], answer: u32) {
    let fake = Fake::new(script);
    let ports = CniPorts { romanad: &fake, plumbing: &fake, enforcer: policy.then_some(&fake) };
    let mut flow = Add::new(host(policy), add_req(pod));
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (r, _) = rt.block_on(run(&ports, true, |ev| flow.step(ev)));
    let got = match &r {
        Ok(Answer::Added(a)) => {
            assert_eq!(
                (a.ip.as_str(), a.gateway.as_str(), a.address_name.as_str()),
                ("10.0.0.5", "10.0.0.1", NAME)
            );
            0
        }
        Ok(Answer::Deleted) => panic!("{what}: ADD answered as DEL"),
        Err(e) => e.code,
    };
    assert_eq!(fake.log.lock().unwrap().clone(), calls, "{what}: calls");
    assert_eq!(got, answer, "{what}: answer {r:?}");
}

fn check_del(what: &str, script: Script, calls: &[&str], answer: u32) {
    let fake = Fake::new(script);
    let ports = CniPorts { romanad: &fake, plumbing: &fake, enforcer: Some(&fake) };
    let req = DetachRequest {
        network: "net".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        netns: String::new(),
    };
    let mut flow = Del::new(req, true);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (r, _) = rt.block_on(run(&ports, true, |ev| flow.step(ev)));
    assert_eq!(fake.log.lock().unwrap().clone(), calls, "{what}: calls");
    assert_eq!(r.map_or_else(|e| e.code, |_| 0), answer, "{what}");
}

const ALLOC: &str = "allocate cni:net:c1:eth0 segment \"\"";
const READ: &str = "read endpoint cni:net:c1:eth0";
const REGISTER: &str = "register cni:net:c1:eth0 10.0.0.5 labels [app=web] pod \"\"";
const ENFORCE: &str = "enforce cni:net:c1:eth0";
const ATTACH: &str = "attach romana3bfe94942 10.0.0.5 via 10.0.0.1";
const FORGET: [&str; 2] = ["delete endpoint cni:net:c1:eth0", "unenforce cni:net:c1:eth0"];
const FORGET_V6: [&str; 2] = ["delete endpoint cni:net:c1:eth0#v6", "unenforce cni:net:c1:eth0#v6"];
const RELEASE: &str = "release cni:net:c1:eth0";

#[test]
fn add_allocates_registers_enforces_then_plumbs_and_rolls_back_what_it_did() {
    check_add("success", Script::default(), true, None, &[ALLOC, READ, REGISTER, ENFORCE, ATTACH], 0);
    // Without policy nothing is registered or enforced.
    check_add("--no-policy", Script::default(), false, None, &[ALLOC, ATTACH], 0);
    // A repeated ADD keeps the labels a controller set since the first.
    let again = "register cni:net:c1:eth0 10.0.0.5 labels [app=set-by-controller] pod \"\"";
    let s = Script { known: Some("set-by-controller"), ..Script::default() };
    check_add("repeated", s, true, None, &[ALLOC, READ, again, ENFORCE, ATTACH], 0);
    // romanad refusing: nothing allocated, configuration error (4xx) or try again (503).
    check_add("refused", Script { alloc_refused: Some(409), ..Script::default() }, true, None, &[ALLOC], 7);
    check_add("busy", Script { alloc_refused: Some(503), ..Script::default() }, true, None, &[ALLOC], 11);
    // Registration refused: the address goes back.
    let s = Script { register_refused: Some(403), ..Script::default() };
    check_add("register refused", s, true, None, &[ALLOC, READ, REGISTER, RELEASE], 7);
    // Fail closed: rules not in force -> record and rules out, address back, nothing plumbed.
    let s = Script { enforce_fails: true, ..Script::default() };
    check_add(
        "enforce fails",
        s,
        true,
        None,
        &[ALLOC, READ, REGISTER, ENFORCE, FORGET[0], FORGET[1], RELEASE],
        11,
    );
    // Plumbing fails after the rules: everything is undone, with the plumbing's code.
    let s = Script { plumb_fails: true, ..Script::default() };
    let calls = [ALLOC, READ, REGISTER, ENFORCE, ATTACH, FORGET[0], FORGET[1], RELEASE];
    check_add("plumb fails", s, true, None, &calls, code::UNKNOWN_CONTAINER);
}

#[test]
fn add_of_a_kubelet_pod_waits_for_its_record_and_takes_its_segment() {
    let look = "pod red/web-0";
    let alloc = "allocate cni:net:c1:eth0 segment \"front\"";
    let register = "register cni:net:c1:eth0 10.0.0.5 labels [app=web] pod \"red/web-0\"";
    check_add(
        "record there",
        Script { pods: vec![Ok("u1")], ..Script::default() },
        true,
        Some("u1"),
        &[look, alloc, READ, register, ENFORCE, ATTACH],
        0,
    );
    // Late: two misses, then the record.
    let s = Script { pods: vec![Err(404), Err(503), Ok("u1")], ..Script::default() };
    check_add("late", s, true, Some("u1"), &[look, look, look, alloc, READ, register, ENFORCE, ATTACH], 0);
    // Another pod's record (an older uid) is waited past, until the budget: try again later.
    let s = Script { pods: vec![Ok("u0")], ..Script::default() };
    let fake = Fake::new(s);
    let ports = CniPorts { romanad: &fake, plumbing: &fake, enforcer: Some(&fake) };
    let mut flow = Add::new(host(true), add_req(Some("u1")));
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (r, _) = rt.block_on(run(&ports, true, |ev| flow.step(ev)));
    let e = r.unwrap_err();
    assert_eq!(e.code, 11, "{e:?}");
    assert!(e.msg.contains("uid u0, not u1"), "{e:?}");
    let log = fake.log.lock().unwrap().clone();
    assert!(log.len() >= 2 && log.iter().all(|c| c == look), "only lookups, nothing allocated: {log:?}");
    // romanad refusing to show it: no wait, nothing allocated.
    check_add(
        "forbidden",
        Script { pods: vec![Err(403)], ..Script::default() },
        true,
        Some("u1"),
        &[look],
        7,
    );
}

#[test]
fn del_unplumbs_forgets_and_releases_and_is_idempotent() {
    let calls = ["detach romana3bfe94942", FORGET[0], FORGET[1], FORGET_V6[0], FORGET_V6[1], RELEASE];
    check_del("first", Script::default(), &calls, 0);
    // DEL twice: the link and the address are gone already, still success.
    check_del("second", Script { released: true, ..Script::default() }, &calls, 0);
    // romanad cannot delete the record (a replica or etcd member dying): DEL fails with nothing
    // released and the record not taken out of the table, so the runtime's retry finds both.
    let s = Script { unregister_refused: Some(503), ..Script::default() };
    check_del("record kept", s, &["detach romana3bfe94942", FORGET[0]], code::TRY_AGAIN_LATER);
}

/// A dual-stack ADD: one stack allocation, both records registered in one call (one store
/// transaction) and enforced in one call, both addresses plumbed and answered; a refused stack
/// leaves no record, so only the name is released (romanad releases its `#v6` with it), with
/// romanad's code; an older romanad without the stack route gets the records one by one, and
/// a refused second one undoes the first.
#[test]
fn dual_stack_add_registers_enforces_and_plumbs_both_and_undoes_both() {
    let stack = "register stack cni:net:c1:eth0: cni:net:c1:eth0 10.0.0.5 and cni:net:c1:eth0#v6 fd00::5";
    let reg6 = "register cni:net:c1:eth0#v6 fd00::5 labels [app=web] pod \"\"";
    let enforce = "enforce cni:net:c1:eth0 and cni:net:c1:eth0#v6";
    let attach = "attach romana3bfe94942 10.0.0.5 via 10.0.0.1 and fd00::5 via fe80::1";
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    // (what, script, calls, answer's CNI code)
    let cases: Vec<(&str, Script, Vec<&str>, u32)> = vec![
        ("success", Script::default(), vec![ALLOC, READ, stack, enforce, attach], 0),
        (
            "the stack refused: nothing written, the name released",
            Script { register_v6_refused: Some(503), ..Script::default() },
            vec![ALLOC, READ, stack, RELEASE],
            code::TRY_AGAIN_LATER,
        ),
        (
            "the stack refused as invalid",
            Script { register_refused: Some(409), ..Script::default() },
            vec![ALLOC, READ, stack, RELEASE],
            code::INVALID_CONFIG,
        ),
        (
            "plumbing fails: both records forgotten, the name released",
            Script { plumb_fails: true, ..Script::default() },
            vec![
                ALLOC,
                READ,
                stack,
                enforce,
                attach,
                FORGET[0],
                FORGET[1],
                FORGET_V6[0],
                FORGET_V6[1],
                RELEASE,
            ],
            code::UNKNOWN_CONTAINER,
        ),
        (
            "an older romanad: one record after the other",
            Script { no_stack_route: true, ..Script::default() },
            vec![ALLOC, READ, stack, REGISTER, reg6, enforce, attach],
            0,
        ),
        (
            "an older romanad refusing the IPv6 record: the IPv4 one is forgotten",
            Script { no_stack_route: true, register_v6_refused: Some(503), ..Script::default() },
            vec![ALLOC, READ, stack, REGISTER, reg6, FORGET[0], FORGET[1], RELEASE],
            code::TRY_AGAIN_LATER,
        ),
    ];
    for (what, script, calls, answer) in cases {
        let fake = Fake::new(Script { dual: true, ..script });
        let ports = CniPorts { romanad: &fake, plumbing: &fake, enforcer: Some(&fake) };
        let mut flow = Add::new(host(true), add_req(None));
        let (r, _) = rt.block_on(run(&ports, true, |ev| flow.step(ev)));
        assert_eq!(fake.log.lock().unwrap().clone(), calls, "{what}: calls");
        match r {
            Ok(Answer::Added(a)) => {
                assert_eq!(answer, 0, "{what}: answered success");
                let ips: Vec<(&str, &str)> =
                    a.ips.iter().map(|i| (i.ip.as_str(), i.gateway.as_str())).collect();
                assert_eq!(ips, [("10.0.0.5", "10.0.0.1"), ("fd00::5", "fe80::1")], "{what}");
            }
            Ok(Answer::Deleted) => panic!("{what}: ADD answered as DEL"),
            Err(e) => assert_eq!(e.code, answer, "{what}: {e:?}"),
        }
    }
}
