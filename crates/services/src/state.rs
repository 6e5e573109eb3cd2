//! `AppState`: what every handler gets: the store, the key layout, the IPAM replica, metrics and
//! who this instance is.

use std::sync::Arc;

use romana_store::{Compare, KeyValue, Op, Store, Txn};

use crate::auth_state::AuthState;
use crate::ipam_sync::IpamHandle;
use crate::keys::Keys;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub ipam: IpamHandle,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<AuthState>,
    pub liveness: Arc<std::sync::RwLock<crate::liveness::Liveness>>,
    /// Services this instance serves.
    pub services: Arc<Vec<String>>,
    /// This instance's id and URL, as registered with Root.
    pub instance: Arc<String>,
    pub url: Arc<String>,
    /// The consistency check's graces and sightings (`reclaim.rs`).
    pub check: Arc<crate::check_tracker::Tracker>,
    /// The one store watch every `GET /watch` stream of this instance shares.
    pub watch_hub: Arc<crate::watch_hub::Hub>,
}

impl AppState {
    /// Deletes `key` in one transaction and returns what it held (`None`: it was not there).
    pub async fn take(&self, key: &str) -> crate::service_error::ServiceResult<Option<KeyValue>> {
        let r = self
            .store
            .txn(Txn {
                compare: vec![Compare::CreateRevision(key.to_owned(), romana_store::Cmp::Greater, 0)],
                success: vec![Op::Get { key: key.to_owned() }, Op::delete(key)],
                failure: vec![],
            })
            .await?;
        Ok(if r.succeeded { r.reads.into_iter().next().and_then(|v| v.into_iter().next()) } else { None })
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("instance", &self.instance)
            .field("store", &self.store.backend())
            .finish()
    }
}
