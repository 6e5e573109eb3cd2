//! The endpoint <-> pod join: an endpoint registered for a Kubernetes pod (`EndpointInfo::pod`)
//! takes its labels and named ports from the pod's record, and a change of the record reaches
//! the pod's endpoints. Each side is one store transaction that compares every key it read (the
//! pod record, the pod's endpoint index, the endpoints), so a record written while an endpoint
//! registers is either seen by the registration or finds the endpoint in the index: neither
//! misses the other. Knows nothing of HTTP beyond the errors it answers.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use romana_api::rest::{EndpointInfo, PodInfo};
use romana_store::{Compare, KeyValue, Op, Txn};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How often a transaction that lost a race is computed again before the caller is told to retry.
const ATTEMPTS: usize = 8;

fn decode<T: serde::de::DeserializeOwned>(what: &str, kv: &KeyValue) -> ApiResult<T> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored {what} {} is unreadable: {e}", kv.key)))
}

/// The comparison that holds while `key` is as it was read (`None`: absent).
fn same(key: &str, kv: Option<&KeyValue>) -> Compare {
    match kv {
        Some(kv) => Compare::unchanged(key, kv.mod_revision),
        None => Compare::absent(key),
    }
}

/// `namespace/name` split in two; `None` unless both halves are non-empty and there is one `/`.
pub fn split_pod(pod: &str) -> Option<(&str, &str)> {
    let (ns, name) = pod.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then_some((ns, name))
}

/// The endpoint names of a pod's index (empty when absent).
async fn read_index(s: &AppState, key: &str) -> ApiResult<(Option<KeyValue>, BTreeSet<String>)> {
    let kv = s.store.get(key).await?;
    let names = match &kv {
        Some(kv) => decode("pod endpoint index", kv)?,
        None => BTreeSet::new(),
    };
    Ok((kv, names))
}

/// Adds to `txn` the index changes of endpoints moving between pods, `(name, from, to)` (either
/// pod may be empty), reading and comparing each pod's index once however many move.
async fn index_change(s: &AppState, moves: &[(&str, &str, &str)], txn: &mut Txn) -> ApiResult<()> {
    let mut pods: Vec<&str> = moves.iter().flat_map(|(_, from, to)| [*from, *to]).collect();
    pods.retain(|p| !p.is_empty());
    pods.sort_unstable();
    pods.dedup();
    for pod in pods {
        let Some((ns, pname)) = split_pod(pod) else { continue };
        let key = s.keys.pod_endpoints(ns, pname);
        let (kv, mut names) = read_index(s, &key).await?;
        let mut changed = false;
        for (name, from, to) in moves {
            if *to == pod {
                changed |= names.insert((*name).to_owned());
            } else if *from == pod {
                changed |= names.remove(*name);
            }
        }
        txn.compare.push(same(&key, kv.as_ref()));
        if changed {
            txn.success.push(if names.is_empty() {
                Op::delete(&key)
            } else {
                Op::put(&key, serde_json::to_vec(&names).expect("serializes"))
            });
        }
    }
    Ok(())
}

/// Stores endpoint `e` (validated, and checked against IPAM by the caller). With `e.pod` set,
/// its labels and ports are the pod record's; a missing record is 424 (the controller has not
/// written it: register without `pod`, or wait for it), a record of another host 409.
pub async fn put_endpoint(s: &AppState, e: EndpointInfo) -> ApiResult<EndpointInfo> {
    let mut stored = put_endpoints(s, vec![e]).await?;
    stored.pop().ok_or_else(|| ApiError::internal("no endpoint stored"))
}

/// Stores endpoints `es` (distinct names, each checked by the caller) as `put_endpoint` does
/// one, all in one transaction: every one is written, or none.
pub async fn put_endpoints(s: &AppState, es: Vec<EndpointInfo>) -> ApiResult<Vec<EndpointInfo>> {
    for _ in 0..ATTEMPTS {
        let mut txn = Txn::when(vec![], vec![]);
        let mut stored = Vec::with_capacity(es.len());
        let mut old_pods = Vec::with_capacity(es.len());
        // Pod records read, each once (a dual-stack pod's two endpoints share theirs).
        let mut pods: Vec<(String, PodInfo)> = Vec::new();
        for e in &es {
            let key = s.keys.endpoint(&e.name);
            let old = s.store.get(&key).await?;
            old_pods.push(match &old {
                Some(kv) => decode::<EndpointInfo>("endpoint", kv)?.pod,
                None => String::new(),
            });
            txn.compare.push(same(&key, old.as_ref()));
            let mut e = e.clone();
            if let Some((ns, name)) = split_pod(&e.pod) {
                let pkey = s.keys.pod(ns, name);
                if !pods.iter().any(|(k, _)| *k == pkey) {
                    let Some(pkv) = s.store.get(&pkey).await? else {
                        return Err(ApiError::new(
                            StatusCode::FAILED_DEPENDENCY,
                            format!(
                                "endpoint {} is pod {ns}/{name}, which has no record yet (romana-k8s \
                                 writes it with PUT /pods/{ns}/{name})",
                                e.name
                            ),
                        ));
                    };
                    txn.compare.push(Compare::unchanged(&pkey, pkv.mod_revision));
                    pods.push((pkey.clone(), decode("pod", &pkv)?));
                }
                let pod = pods.iter().find(|(k, _)| *k == pkey).map(|(_, p)| p).expect("read above");
                if pod.host != e.host {
                    return Err(ApiError::conflict(format!(
                        "pod {ns}/{name} is on host {:?}, not on the endpoint's host {}",
                        pod.host, e.host
                    )));
                }
                e.labels.clone_from(&pod.labels);
                e.ports.clone_from(&pod.ports);
            }
            stored.push(e);
        }
        let moves: Vec<(&str, &str, &str)> = stored
            .iter()
            .zip(&old_pods)
            .map(|(e, old)| (e.name.as_str(), old.as_str(), e.pod.as_str()))
            .collect();
        index_change(s, &moves, &mut txn).await?;
        for e in &stored {
            txn.success.push(Op::put(s.keys.endpoint(&e.name), serde_json::to_vec(e).expect("serializes")));
        }
        if s.store.txn(txn).await?.succeeded {
            return Ok(stored);
        }
    }
    let names: Vec<&str> = es.iter().map(|e| e.name.as_str()).collect();
    Err(ApiError::conflict(format!(
        "endpoint {} or its pod record kept changing; try again",
        names.join(", ")
    )))
}

/// Deletes endpoint `name` and its place in its pod's index. `check` sees the stored record
/// first (an agent's host check); absent is success.
pub async fn delete_endpoint(
    s: &AppState,
    name: &str,
    check: impl Fn(&EndpointInfo) -> ApiResult<()>,
) -> ApiResult<bool> {
    let key = s.keys.endpoint(name);
    for _ in 0..ATTEMPTS {
        let Some(kv) = s.store.get(&key).await? else { return Ok(false) };
        let old: EndpointInfo = decode("endpoint", &kv)?;
        check(&old)?;
        let mut txn = Txn::when(vec![Compare::unchanged(&key, kv.mod_revision)], vec![Op::delete(&key)]);
        index_change(s, &[(name, &old.pod, "")], &mut txn).await?;
        if s.store.txn(txn).await?.succeeded {
            return Ok(true);
        }
    }
    Err(ApiError::conflict(format!("endpoint {name} kept changing; try again")))
}

/// Stores pod record `p` (validated) and gives its labels and ports to every endpoint
/// registered for it, in one transaction. `true` when the record is new.
pub async fn put_pod(s: &AppState, p: &PodInfo) -> ApiResult<bool> {
    let pkey = s.keys.pod(&p.namespace, &p.name);
    let ikey = s.keys.pod_endpoints(&p.namespace, &p.name);
    let pod = format!("{}/{}", p.namespace, p.name);
    for _ in 0..ATTEMPTS {
        let old = s.store.get(&pkey).await?;
        let (ikv, names) = read_index(s, &ikey).await?;
        let mut txn = Txn::when(
            vec![same(&pkey, old.as_ref()), same(&ikey, ikv.as_ref())],
            vec![Op::put(&pkey, serde_json::to_vec(p).expect("serializes"))],
        );
        for name in &names {
            let ekey = s.keys.endpoint(name);
            let ekv = s.store.get(&ekey).await?;
            txn.compare.push(same(&ekey, ekv.as_ref()));
            let Some(ekv) = ekv else { continue };
            let mut e: EndpointInfo = decode("endpoint", &ekv)?;
            if e.pod != pod || (e.labels == p.labels && e.ports == p.ports) {
                continue;
            }
            e.labels = p.labels.clone();
            e.ports = p.ports.clone();
            txn.success.push(Op::put(&ekey, serde_json::to_vec(&e).expect("serializes")));
        }
        if s.store.txn(txn).await?.succeeded {
            return Ok(old.is_none());
        }
    }
    Err(ApiError::conflict(format!("pod {pod} or its endpoints kept changing; try again")))
}
