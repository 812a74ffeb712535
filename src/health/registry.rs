//! Every backend's live state, keyed by (site, address), kept across config snapshots:
//! a reload reuses the state of backends that stay and retires the ones that go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::uri::Authority;
use tokio::sync::Notify;

use super::state::BackendState;
use crate::config::Config;

type Key = (String, String);

#[derive(Default)]
pub struct HealthRegistry {
    /// Written only by config applies (serialised by `Control`), never by requests.
    states: Mutex<HashMap<Key, Arc<BackendState>>>,
    /// Notified on every health flip; the publisher waits on it.
    pub changes: Arc<Notify>,
}

/// States for a new config, aligned with `config.sites[i].backends[j]`.
pub struct Synced {
    pub states: Vec<Vec<Arc<BackendState>>>,
    /// Backends the registry had not seen: they need a prober.
    pub added: Vec<(Arc<BackendState>, Authority)>,
}

impl HealthRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Matches the config's backends with live state: kept ones get the new probe
    /// settings, new ones start healthy, removed ones are retired (their probers stop).
    pub fn sync(&self, config: &Config) -> Synced {
        let mut map = self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next: HashMap<Key, Arc<BackendState>> = HashMap::new();
        let mut added = Vec::new();
        let states = config
            .sites
            .iter()
            .map(|site| {
                site.backends
                    .iter()
                    .map(|backend| {
                        let key = (site.name.clone(), backend.addr().to_string());
                        let state = match map.remove(&key) {
                            Some(state) => {
                                state.check.store(Arc::new(site.health.clone()));
                                state
                            }
                            None => {
                                let state = Arc::new(BackendState::new(
                                    &site.name,
                                    backend.addr(),
                                    site.health.clone(),
                                    self.changes.clone(),
                                ));
                                added.push((state.clone(), backend.authority.clone()));
                                state
                            }
                        };
                        next.insert(key, state.clone());
                        state
                    })
                    .collect()
            })
            .collect();
        for gone in map.values() {
            gone.retire();
        }
        *map = next;
        Synced { states, added }
    }

    /// Stops every prober (the process or an in-process server is going away).
    pub fn retire_all(&self) {
        let map = self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for state in map.values() {
            state.retire();
        }
    }
}
