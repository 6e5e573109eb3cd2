//! The Kubernetes side of a VIP's outcome: patches a Service's `romana.io/vip-status` annotation
//! and, for type LoadBalancer, its `status.loadBalancer.ingress` (the status subresource), from
//! a `vip_plan::Report`; and the Events that tell `kubectl describe` what happened.

use k8s_openapi::api::core::v1::{Event as K8sEvent, EventSource, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::state::Key;
use crate::svc::VIP_STATUS_ANNOTATION;
use crate::vip_plan::Report;

/// Writes one report: the annotation (removed when `status` is `None`), then the ingress.
pub async fn patch(kube: &kube::Client, r: &Report) -> Result<(), kube::Error> {
    let api = Api::<Service>::namespaced(kube.clone(), &r.key.0);
    let pp = PatchParams::default();
    let ann = json!({ "metadata": { "annotations": { VIP_STATUS_ANNOTATION: r.status } } });
    api.patch(&r.key.1, &pp, &Patch::Merge(&ann)).await?;
    if let Some(ingress) = &r.ingress {
        let list: Vec<_> = ingress.iter().map(|ip| json!({ "ip": ip })).collect();
        let st = json!({ "status": { "loadBalancer": { "ingress": list } } });
        api.patch_status(&r.key.1, &pp, &Patch::Merge(&st)).await?;
    }
    Ok(())
}

/// The object an Event is about.
#[derive(Debug, Clone, Copy)]
pub struct Regarding<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub key: &'a Key,
    pub uid: &'a str,
}

/// Posts an Event (`type_`: `Normal` or `Warning`) on an object, so that `kubectl describe` shows
/// what the controller did or why romanad refused.
pub async fn post_event(
    kube: &kube::Client,
    about: Regarding<'_>,
    type_: &str,
    reason: &str,
    msg: &str,
    identity: &str,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let k = about.key;
    let ev = K8sEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", k.1)),
            namespace: Some(k.0.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(about.api_version.into()),
            kind: Some(about.kind.into()),
            name: Some(k.1.clone()),
            namespace: Some(k.0.clone()),
            uid: (!about.uid.is_empty()).then(|| about.uid.to_owned()),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(msg.chars().take(1000).collect()),
        type_: Some(type_.into()),
        source: Some(EventSource { component: Some("romana-k8s".into()), host: None }),
        reporting_component: Some("romana-k8s".into()),
        reporting_instance: Some(identity.to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        action: Some("Apply".into()),
        count: Some(1),
        ..K8sEvent::default()
    };
    Api::<K8sEvent>::namespaced(kube.clone(), &k.0).create(&PostParams::default(), &ev).await.map(drop)
}
