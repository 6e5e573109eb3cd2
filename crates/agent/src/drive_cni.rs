//! The runner of a CNI ADD or DEL: performs the flow's actions (`machine::cni`) through the
//! ports (romanad, plumbing, the firewall) and feeds each outcome back, until the flow answers.
//! Generic over the ports, so that tests run whole ADDs and DELs against fakes, without root.

use std::time::{Duration, Instant};

use romana_api::agent::{AgentError, stack_base};
use romana_api::rest::EndpointInfo;

use crate::machine::cni::{Answer, CniAction, CniEvent, PlumbFailure, Refused};
use crate::ports::{Enforcer, Plumbing, Romanad};

/// The ports a CNI request goes through (`enforcer` is `None` with `--no-policy`).
#[derive(Debug)]
pub struct CniPorts<'a, R, P, E> {
    pub romanad: &'a R,
    pub plumbing: &'a P,
    pub enforcer: Option<&'a E>,
}

/// How long each answered step took, for the request's log line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Timings {
    pub steps: Vec<(&'static str, Duration)>,
}

impl Timings {
    pub fn ms(&self, what: &str) -> f64 {
        self.steps.iter().filter(|(w, _)| *w == what).map(|(_, d)| d.as_secs_f64() * 1e3).sum()
    }
}

/// Runs a flow from `Start` to its answer. `step` is the flow's (`Add::step`, `Del::step`).
pub async fn run<R: Romanad, P: Plumbing, E: Enforcer>(
    ports: &CniPorts<'_, R, P, E>,
    netns_exists: bool,
    mut step: impl FnMut(CniEvent) -> Vec<CniAction>,
) -> (Result<Answer, AgentError>, Timings) {
    let mut timings = Timings::default();
    let mut waiting_since: Option<Instant> = None;
    let mut next = step(CniEvent::Start { netns_exists });
    loop {
        let mut event = None;
        for action in std::mem::take(&mut next) {
            let t = Instant::now();
            let (what, ev) = match action {
                CniAction::Answer(a) => return (a, timings),
                CniAction::Forget(name) => {
                    forget(ports, &name).await;
                    continue;
                }
                CniAction::ReleaseQuietly(name) => {
                    if let Err(e) = ports.romanad.release(&name).await {
                        tracing::warn!(address = %name, error = %e, "could not release the address of a failed ADD");
                    }
                    continue;
                }
                CniAction::LookUpPod { pod, after } => {
                    tokio::time::sleep(after).await;
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    let record =
                        ports.romanad.pod(&pod.namespace, &pod.name).await.map_err(|e| Refused::from(&e));
                    ("pod", CniEvent::PodLooked { record, waited: since.elapsed() })
                }
                CniAction::Allocate(req) => {
                    let r = ports.romanad.allocate_stack(&req).await.map_err(|e| Refused::from(&e));
                    ("alloc", CniEvent::Allocated(r))
                }
                CniAction::ReadEndpoint(name) => {
                    let r = ports.romanad.endpoint(&name).await.map_err(|e| Refused::from(&e));
                    ("register", CniEvent::EndpointRead(r))
                }
                CniAction::Register(infos) => {
                    ("register", CniEvent::Registered(register(ports, &infos).await))
                }
                CniAction::Enforce(infos) => {
                    let r = match ports.enforcer {
                        Some(e) => e.enforce(&infos).await,
                        None => Ok(()),
                    };
                    ("policy", CniEvent::Enforced(r))
                }
                CniAction::Plumb(spec) => {
                    let r = ports.plumbing.attach(&spec).await.map_err(|e| PlumbFailure::from(&e));
                    ("plumb", CniEvent::Plumbed(r))
                }
                CniAction::Unplumb(link) => {
                    let r = ports.plumbing.detach(&link).await.map_err(|e| PlumbFailure::from(&e));
                    ("plumb", CniEvent::Unplumbed(r))
                }
                CniAction::Unregister(names) => {
                    let mut r = Ok(());
                    for name in &names {
                        r = ports.romanad.delete_endpoint(name).await.map_err(|e| Refused::from(&e));
                        match (&r, ports.enforcer) {
                            (Ok(()), Some(enforcer)) => enforcer.forget(name).await,
                            (Ok(()), None) => {}
                            (Err(_), _) => break,
                        }
                    }
                    ("unregister", CniEvent::Unregistered(r))
                }
                CniAction::Release(name) => {
                    let r = ports.romanad.release(&name).await.map(|_| ()).map_err(|e| Refused::from(&e));
                    ("release", CniEvent::Released(r))
                }
            };
            timings.steps.push((what, t.elapsed()));
            event = Some(ev);
        }
        match event {
            Some(ev) => next = step(ev),
            // A flow always ends with an answer; one that stops without is a bug of the flow,
            // answered rather than hung on.
            None => {
                let e = crate::machine::cni::fail(romana_api::agent::code::OTHER, "the CNI flow stopped", "");
                return (Err(e), timings);
            }
        }
    }
}

/// Writes an endpoint's records, each one's outcome in order: a dual-stack endpoint's two in one
/// call and one store transaction (`PUT /endpoint-stacks`: both or neither, so a refusal leaves
/// nothing to undo), one record by itself. A romanad without the stack route (404 or 405: one
/// older than this agent) gets the records one by one, stopping at the first refused.
async fn register<R: Romanad, P: Plumbing, E: Enforcer>(
    ports: &CniPorts<'_, R, P, E>,
    infos: &[EndpointInfo],
) -> Vec<Result<EndpointInfo, Refused>> {
    if let [first, _, ..] = infos {
        match ports.romanad.put_endpoint_stack(stack_base(&first.name), infos).await {
            Ok(stored) => return stored.into_iter().map(Ok).collect(),
            Err(e) if !matches!(e.status(), Some(404 | 405)) => {
                let r = Refused::from(&e);
                return infos.iter().map(|_| Err(r.clone())).collect();
            }
            Err(_) => {}
        }
    }
    let mut done = Vec::with_capacity(infos.len());
    for info in infos {
        let r = ports.romanad.put_endpoint(info).await.map_err(|e| Refused::from(&e));
        let refused = r.is_err();
        done.push(r);
        if refused {
            break;
        }
    }
    done
}

/// Deletes the endpoint's record and takes it out of the table (best effort: DEL and failed
/// ADDs).
pub async fn forget<R: Romanad, P: Plumbing, E: Enforcer>(ports: &CniPorts<'_, R, P, E>, name: &str) {
    let Some(enforcer) = ports.enforcer else { return };
    if let Err(e) = ports.romanad.delete_endpoint(name).await {
        tracing::warn!(endpoint = %name, error = %e, "could not delete the endpoint record");
    }
    enforcer.forget(name).await;
}

#[cfg(test)]
mod tests;
