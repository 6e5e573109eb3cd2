//! `AppState`: what every handler gets: the store, the key layout, the IPAM replica, metrics and
//! who this instance is.

use std::sync::Arc;

use romana_store::Store;

use crate::auth::AuthState;
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
    pub liveness: Arc<std::sync::RwLock<crate::route_manager::Liveness>>,
    /// Services this instance serves.
    pub services: Arc<Vec<String>>,
    /// This instance's id and URL, as registered with Root.
    pub instance: Arc<String>,
    pub url: Arc<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("instance", &self.instance)
            .field("store", &self.store.backend())
            .finish()
    }
}
