//! Backends at run time: each one's runtime object (`backend`: address, pool, metrics,
//! health), the registry that keeps them across reloads (`registry`), and the active
//! prober (`prober`). Passive reports come from the proxy through `Backend`'s
//! `record_*` methods.

mod admission;
mod backend;
mod prober;
mod registry;

pub use admission::{Rejection, Slot};
pub use backend::Backend;
pub use prober::spawn_prober;
pub use registry::HealthRegistry;
