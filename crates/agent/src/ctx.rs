//! What every part of the agent's binary shares and nothing else owns: the host's name, the
//! romanad client (replaced when the token expires), the metrics, and the core's state (one
//! lock: `step` runs under it, actions are performed outside it).

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use romana_agent::machine::{Action, Event, State, step};
use romana_client::Client;

use crate::metrics::Metrics;

#[derive(Debug)]
pub struct Ctx {
    pub host: String,
    pub client: RwLock<Arc<Client>>,
    pub metrics: Metrics,
    pub core: Mutex<State>,
    /// The VIPs this host announces (`vip.rs` writes, `bird.rs` renders).
    pub vips: Mutex<Vec<romana_fabric::HostVip>>,
}

impl Ctx {
    pub fn client(&self) -> Arc<Client> {
        self.client.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn core(&self) -> MutexGuard<'_, State> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One step of the core; what it says was left out is logged here.
    pub fn step(&self, ev: Event) -> Vec<Action> {
        let actions = step(&mut self.core(), ev);
        actions
            .into_iter()
            .filter(|a| match a {
                Action::Problems(ps) => {
                    for p in ps {
                        tracing::warn!(problem = %p, "left out of the firewall");
                    }
                    false
                }
                _ => true,
            })
            .collect()
    }
}
