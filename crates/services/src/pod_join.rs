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

/// Adds to `txn` the index changes of endpoint `name` moving from pod `from` to pod `to` (either
/// may be empty), comparing each index read.
async fn index_change(s: &AppState, name: &str, from: &str, to: &str, txn: &mut Txn) -> ApiResult<()> {
    let mut pods: Vec<&str> = vec![from, to];
    pods.retain(|p| !p.is_empty());
    pods.dedup();
    for pod in pods {
        let Some((ns, pname)) = split_pod(pod) else { continue };
        let key = s.keys.pod_endpoints(ns, pname);
        let (kv, mut names) = read_index(s, &key).await?;
        let changed = if pod == to { names.insert(name.to_owned()) } else { names.remove(name) };
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
    let key = s.keys.endpoint(&e.name);
    for _ in 0..ATTEMPTS {
        let old = s.store.get(&key).await?;
        let old_pod = match &old {
            Some(kv) => decode::<EndpointInfo>("endpoint", kv)?.pod,
            None => String::new(),
        };
        let mut e = e.clone();
        let mut txn = Txn::when(vec![same(&key, old.as_ref())], vec![]);
        if let Some((ns, name)) = split_pod(&e.pod) {
            let pkey = s.keys.pod(ns, name);
            let Some(pkv) = s.store.get(&pkey).await? else {
                return Err(ApiError::new(
                    StatusCode::FAILED_DEPENDENCY,
                    format!(
                        "endpoint {} is pod {ns}/{name}, which has no record yet (romana-k8s writes it \
                         with PUT /pods/{ns}/{name})",
                        e.name
                    ),
                ));
            };
            let pod: PodInfo = decode("pod", &pkv)?;
            if pod.host != e.host {
                return Err(ApiError::conflict(format!(
                    "pod {ns}/{name} is on host {:?}, not on the endpoint's host {}",
                    pod.host, e.host
                )));
            }
            e.labels = pod.labels;
            e.ports = pod.ports;
            txn.compare.push(Compare::unchanged(&pkey, pkv.mod_revision));
        }
        index_change(s, &e.name, &old_pod, &e.pod, &mut txn).await?;
        txn.success.push(Op::put(&key, serde_json::to_vec(&e).expect("serializes")));
        if s.store.txn(txn).await?.succeeded {
            return Ok(e);
        }
    }
    Err(ApiError::conflict(format!("endpoint {} or its pod record kept changing; try again", e.name)))
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
        index_change(s, name, &old.pod, "", &mut txn).await?;
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
