//! The figures an event carries, typed: what clients saw of an outage (`detect_ms`,
//! `traffic_moved_ms`, `client_errors`, ...) and how long things took (`down_ms`,
//! `full_weight_ms`, `held_ms`, `duration_ms`). Producers write them into an event's
//! detail and readers take them out through `Measurements`, so a misspelt key is a
//! compile error, never a figure read as zero. The JSON keys are the field names; the
//! detail is a sorted map, so the events, webhooks, history and `/events` are unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The measured figures of one event; `None`: the event does not carry that key.
/// `down_ms` and `full_weight_ms` may be carried as `null` (not known, or not yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurements {
    /// RFC 3339 UTC of the first failure of the outage (a drill's: its start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure_at: Option<String>,
    /// First failure -> the site marked down (0 for a drill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_ms: Option<u64>,
    /// First failure -> the last try sent to the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_moved_ms: Option<u64>,
    /// Requests that failed for clients during the outage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_errors: Option<u64>,
    /// Of those, non-idempotent ones (their effect unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possible_data_loss: Option<u64>,
    /// Requests that failed there and were retried elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<u64>,
    /// How long the site was out (`null`: since before this process knew).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub down_ms: Option<Option<u64>>,
    /// Back -> full weight after slow start (`null`: not yet).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub full_weight_ms: Option<Option<u64>>,
    /// How long a recovered site's traffic was held (failback policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_ms: Option<u64>,
    /// A drill's planned length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// What clients saw of an outage, counted from its backends when the event settles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutageFigures {
    pub traffic_moved_ms: u64,
    pub client_errors: u64,
    pub possible_data_loss: u64,
    pub retried: u64,
}

impl From<OutageFigures> for Measurements {
    fn from(figures: OutageFigures) -> Measurements {
        Measurements {
            traffic_moved_ms: Some(figures.traffic_moved_ms),
            client_errors: Some(figures.client_errors),
            possible_data_loss: Some(figures.possible_data_loss),
            retried: Some(figures.retried),
            ..Measurements::default()
        }
    }
}

impl Measurements {
    /// The figures `detail` carries (its other keys are not figures). A figure of the
    /// wrong type (never written by this proxy) reads as absent, the others kept.
    pub fn of(detail: &Map<String, Value>) -> Measurements {
        serde_json::from_value(Value::Object(detail.clone())).unwrap_or_else(|_| {
            let mut read = Measurements::default();
            for (key, value) in detail {
                let one = Value::Object(Map::from_iter([(key.clone(), value.clone())]));
                if let Ok(figure) = serde_json::from_value::<Measurements>(one) {
                    read.take(figure);
                }
            }
            read
        })
    }

    /// Writes the figures that are set into `detail` (replacing those keys).
    pub fn write(&self, detail: &mut Map<String, Value>) {
        if let Ok(Value::Object(figures)) = serde_json::to_value(self) {
            detail.extend(figures);
        }
    }

    /// Takes every figure `other` has.
    fn take(&mut self, other: Measurements) {
        let Measurements {
            first_failure_at,
            detect_ms,
            traffic_moved_ms,
            client_errors,
            possible_data_loss,
            retried,
            down_ms,
            full_weight_ms,
            held_ms,
            duration_ms,
        } = other;
        self.first_failure_at = first_failure_at.or(self.first_failure_at.take());
        self.detect_ms = detect_ms.or(self.detect_ms);
        self.traffic_moved_ms = traffic_moved_ms.or(self.traffic_moved_ms);
        self.client_errors = client_errors.or(self.client_errors);
        self.possible_data_loss = possible_data_loss.or(self.possible_data_loss);
        self.retried = retried.or(self.retried);
        self.down_ms = down_ms.or(self.down_ms);
        self.full_weight_ms = full_weight_ms.or(self.full_weight_ms);
        self.held_ms = held_ms.or(self.held_ms);
        self.duration_ms = duration_ms.or(self.duration_ms);
    }
}

/// A figure that may be carried as `null`: absent is `None`, `null` is `Some(None)`.
mod nullable {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Option<Option<u64>>, serializer: S) -> Result<S::Ok, S::Error> {
        // Only called for `Some` (absent figures are skipped).
        value.flatten().serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
        Option::<u64>::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap_or_default()
    }

    #[test]
    fn figures_are_written_under_their_keys_and_read_back() {
        let mut written = detail(r#"{"cause": "Connection refused"}"#);
        Measurements {
            first_failure_at: Some("2026-01-01T00:00:00.000Z".into()),
            detect_ms: Some(12),
            ..OutageFigures {
                traffic_moved_ms: 20,
                client_errors: 1,
                possible_data_loss: 0,
                retried: 3,
            }
            .into()
        }
        .write(&mut written);
        let expected = detail(
            r#"{"cause": "Connection refused", "first_failure_at": "2026-01-01T00:00:00.000Z", "detect_ms": 12,
                "traffic_moved_ms": 20, "client_errors": 1, "possible_data_loss": 0, "retried": 3}"#,
        );
        assert_eq!(written, expected);
        let read = Measurements::of(&written);
        assert_eq!((read.detect_ms, read.retried, read.down_ms), (Some(12), Some(3), None));
    }

    #[test]
    fn a_null_figure_is_kept_apart_from_an_absent_one() {
        let mut written = Map::new();
        Measurements {
            down_ms: Some(None),
            full_weight_ms: Some(Some(0)),
            ..Measurements::default()
        }
        .write(&mut written);
        assert_eq!(written, detail(r#"{"down_ms": null, "full_weight_ms": 0}"#));
        let read = Measurements::of(&written);
        assert_eq!(
            (read.down_ms, read.full_weight_ms, read.held_ms),
            (Some(None), Some(Some(0)), None)
        );
    }

    #[test]
    fn a_figure_of_the_wrong_type_hides_no_other() {
        let read = Measurements::of(&detail(r#"{"detect_ms": "soon", "client_errors": 4, "drill": 7}"#));
        assert_eq!((read.detect_ms, read.client_errors), (None, Some(4)));
    }
}
