//! What the fleet's quorum changes here (`[fleet] failover = "quorum"`): the sites
//! the fleet sees down, which decide the tier in use, and the signal the fleet's view
//! of this member's health follows.

use std::collections::HashSet;

use super::Control;

impl Control {
    /// Sets the sites the fleet sees down (`None`: each member decides alone); one
    /// snapshot when it changes.
    pub fn set_fleet_down(&self, down: Option<HashSet<String>>) {
        let mut state = self.lock_state();
        if state.decisions.fleet_down == down {
            return;
        }
        tracing::info!(fleet_down = ?down, "the fleet's view of the sites changed");
        state.decisions.fleet_down = down;
        self.publish(&mut state);
    }

    /// Changes whenever a snapshot is published (health flips included).
    pub fn published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }
}
