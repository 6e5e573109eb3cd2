//! The Kubernetes side: one kube-rs watcher per kind (list, then watch; relist after a gap such
//! as 410 Gone), each object mapped by `map` and sent to the loop as an `Event`.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::map::{self, MapError};
use crate::metrics::{KindLabels, Metrics};
use crate::state::{Kind, Obj, ObjKey};

/// What the watchers tell the loop: the one closed event enum it matches.
#[derive(Debug)]
pub enum Event {
    Applied(Obj, Instant),
    Deleted(ObjKey, Instant),
    /// A (re)list of the kind starts: items follow, then `RelistDone`.
    RelistBegin(Kind),
    RelistItem(Obj),
    RelistDone(Kind, Instant),
}

/// Starts the watchers, one per kind.
pub fn spawn_all(client: &Client, rack_label: String, tx: mpsc::Sender<Event>, metrics: Arc<Metrics>) {
    let m = metrics.clone();
    tokio::spawn(follow(
        Api::<Namespace>::all(client.clone()),
        Kind::Namespace,
        |n| map::tenant(n).map(|t| Some(Obj::Tenant(t))),
        |n| n.metadata.name.clone().map(ObjKey::Namespace),
        tx.clone(),
        m,
    ));
    tokio::spawn(follow(
        Api::<Pod>::all(client.clone()),
        Kind::Pod,
        |p| map::pod(p).map(|p| p.map(Obj::Pod)),
        |p| Some(ObjKey::Pod((p.metadata.namespace.clone()?, p.metadata.name.clone()?))),
        tx.clone(),
        metrics.clone(),
    ));
    tokio::spawn(follow(
        Api::<Node>::all(client.clone()),
        Kind::Node,
        move |n| map::host(n, &rack_label).map(|h| Some(Obj::Host(h))),
        |n| n.metadata.name.clone().map(ObjKey::Node),
        tx.clone(),
        metrics.clone(),
    ));
    tokio::spawn(follow(
        Api::<NetworkPolicy>::all(client.clone()),
        Kind::NetworkPolicy,
        |n| {
            map::netpol(n).map(|d| {
                let k = (d.policy.metadata.namespace.clone(), d.policy.metadata.name.clone());
                Some(Obj::Netpol(k, d))
            })
        },
        |n| Some(ObjKey::NetworkPolicy((n.metadata.namespace.clone()?, n.metadata.name.clone()?))),
        tx.clone(),
        metrics.clone(),
    ));
    tokio::spawn(follow(
        Api::<Service>::all(client.clone()),
        Kind::Service,
        |s| crate::svc::service(s).map(|s| s.map(Obj::Service)),
        |s| Some(ObjKey::Service((s.metadata.namespace.clone()?, s.metadata.name.clone()?))),
        tx,
        metrics,
    ));
}

async fn follow<K, F, G>(
    api: Api<K>,
    kind: Kind,
    map: F,
    key: G,
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(&K) -> Result<Option<Obj>, MapError> + Send,
    G: Fn(&K) -> Option<ObjKey> + Send,
{
    let events = metrics.events.get_or_create(&KindLabels { kind: kind.as_str().into() }).clone();
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        let now = Instant::now();
        let out = match ev {
            Ok(watcher::Event::Init) => Some(Event::RelistBegin(kind)),
            Ok(watcher::Event::InitApply(o)) => mapped(&map, &o).map(Event::RelistItem),
            Ok(watcher::Event::InitDone) => Some(Event::RelistDone(kind, now)),
            Ok(watcher::Event::Apply(o)) => {
                events.inc();
                match map(&o) {
                    Ok(Some(obj)) => Some(Event::Applied(obj, now)),
                    // Out of our scope now (a host-network pod): as if deleted.
                    Ok(None) => key(&o).map(|k| Event::Deleted(k, now)),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an object that cannot be mapped");
                        metrics.error("map");
                        None
                    }
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                events.inc();
                key(&o).map(|k| Event::Deleted(k, now))
            }
            Err(e) => {
                // The watcher relists by itself after a gap (410 Gone) and backs off on errors.
                tracing::warn!(kind = kind.as_str(), error = %e, "watch error");
                metrics.error("watch");
                None
            }
        };
        if let Some(out) = out
            && tx.send(out).await.is_err()
        {
            return;
        }
    }
}

fn mapped<K>(map: &impl Fn(&K) -> Result<Option<Obj>, MapError>, o: &K) -> Option<Obj> {
    match map(o) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "skipping an object that cannot be mapped");
            None
        }
    }
}
