//! Telemetry: metric handles and names (`metrics`), the operator log setup
//! (`logging`), rate limits for log lines a remote peer can trigger (`log_limit`), and
//! the client answers a drill's abort watch reads (`answers`).

mod answers;
mod log_limit;
mod logging;
mod metrics;

pub use self::metrics::*;
pub use answers::{AnswerCounts, ClientAnswers, Watch};
pub use log_limit::{LogLimit, FAILURE_LOGS};
pub use logging::init_logging;
