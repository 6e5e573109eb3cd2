//! The consistency check's per-replica state: the reclaim graces and when each suspect was first
//! seen, shared by the reclaim loop (`reclaim.rs`) and `GET /check` (`check_api.rs`) through
//! `AppState`.

use std::sync::Mutex;

use crate::consistency::{self, Graces, Picture, Sightings};

/// This replica's reclaim settings and what it has seen; shared by the loop and `GET /check`.
#[derive(Debug, Default)]
pub struct Tracker {
    pub graces: Graces,
    pub sightings: Mutex<Sightings>,
}

impl Tracker {
    pub fn new(graces: Graces) -> Tracker {
        Tracker { graces, sightings: Mutex::new(Sightings::new()) }
    }

    /// Sightings updated with `p` at `now`.
    pub fn observe(&self, p: &Picture, now: u64) -> Sightings {
        let mut s = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
        *s = consistency::observe(&s, p, now);
        s.clone()
    }
}
