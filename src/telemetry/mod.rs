//! Telemetry: metric handles and names (`metrics`), the operator log setup
//! (`logging`) and rate limits for log lines a remote peer can trigger (`log_limit`).

mod log_limit;
mod logging;
mod metrics;

pub use self::metrics::*;
pub use log_limit::{LogLimit, FAILURE_LOGS};
pub use logging::init_logging;
