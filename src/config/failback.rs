//! Checks `[failback]` (and each site's `failback = {...}` over it): when a site that
//! failed gets its traffic back, and how flapping is damped; and `[safety]`, the
//! guard rail on operators' actions.

use std::time::Duration;

use super::file::{FailbackFile, SafetyFile};
use super::model::{Failback, Safety};
use super::problems::Problems;

/// `file` over `base` (the defaults, or `[failback]` for a site's own).
pub(super) fn failback(file: &FailbackFile, base: &Failback, prefix: &str, problems: &mut Problems) -> Failback {
    let manual = match file.mode.as_deref() {
        None => base.manual,
        Some("auto") => false,
        Some("manual") => true,
        Some(other) => {
            problems.add(
                format!("{prefix}.mode"),
                format!("\"{other}\" is not a mode; use \"auto\" or \"manual\""),
            );
            base.manual
        }
    };
    let mut duration = |key: &str, text: &Option<String>, default: Duration| {
        problems.duration(&format!("{prefix}.{key}"), text.as_ref(), default)
    };
    let checked = Failback {
        manual,
        hold: duration("hold", &file.hold, base.hold),
        flap_window: duration("flap_window", &file.flap_window, base.flap_window),
        flap_hold: duration("flap_hold", &file.flap_hold, base.flap_hold),
        max_hold: duration("max_hold", &file.max_hold, base.max_hold),
    };
    if checked.max_hold < checked.flap_hold {
        problems.add(
            format!("{prefix}.max_hold"),
            format!(
                "{:?} is shorter than flap_hold ({:?}); a flapping site's hold grows from flap_hold up to max_hold",
                checked.max_hold, checked.flap_hold
            ),
        );
    }
    checked
}

pub(super) fn safety(file: Option<&SafetyFile>, sites: usize, problems: &mut Problems) -> Safety {
    let min = problems.count(
        "safety.min_serving_sites",
        file.and_then(|f| f.min_serving_sites),
        1,
        (0, 10_000),
    ) as usize;
    if min > sites && sites > 0 {
        problems.add(
            "safety.min_serving_sites",
            format!("{min} is more than the {sites} sites configured; no operator action could ever pass"),
        );
    }
    Safety { min_serving_sites: min }
}
