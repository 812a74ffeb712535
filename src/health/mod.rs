//! Backend health: live per-backend state (`state`), the registry that keeps it across
//! reloads (`registry`), and the active prober (`prober`). Passive reports come from the
//! proxy through `BackendState`'s `record_*` methods.

mod prober;
mod registry;
mod state;

pub use prober::spawn_prober;
pub use registry::{HealthRegistry, Synced};
pub use state::{now_ms, BackendState};
