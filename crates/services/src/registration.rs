//! Registration with Root: every service of this instance under one store lease, kept alive,
//! and registered again after the store lost the lease (a restart of etcd, a long pause). Knows
//! nothing of HTTP; `root.rs` answers what is registered.

use std::sync::Arc;
use std::time::Duration;

use romana_api::rest::ServiceInstance;
use romana_store::{Op, Store, Txn};

use crate::keys::Keys;

/// Seconds a registration lives without a heartbeat.
pub const REGISTRATION_TTL: i64 = 10;

/// Registers every service of this instance under one lease and keeps it alive; re-registers
/// after the store lost the lease (a restart of etcd, a long pause).
pub fn spawn_registration(
    store: Arc<dyn Store>,
    keys: Keys,
    services: Vec<String>,
    instance: String,
    url: String,
) {
    tokio::spawn(async move {
        loop {
            let lease = match store.lease_grant(REGISTRATION_TTL).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register with Root; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let ops = services
                .iter()
                .map(|s| {
                    let rec = ServiceInstance {
                        name: s.clone(),
                        url: url.clone(),
                        capabilities: vec![],
                        instance: instance.clone(),
                    };
                    Op::Put {
                        key: keys.service(s, &instance),
                        value: serde_json::to_vec(&rec).expect("serializes"),
                        lease,
                    }
                })
                .collect();
            if let Err(e) = store.txn(Txn::when(vec![], ops)).await {
                tracing::warn!(error = %e, "cannot register with Root; retrying");
                continue;
            }
            loop {
                tokio::time::sleep(Duration::from_secs((REGISTRATION_TTL / 3).max(1) as u64)).await;
                if store.lease_keepalive(lease).await.is_err() {
                    break;
                }
            }
        }
    });
}
