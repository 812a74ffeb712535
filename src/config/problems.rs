//! Collecting what is wrong with a config: each problem with its key path and what
//! would be valid, and the parsing helpers that add one when a value is out of range.
//! Shared by every part of validation.

use std::net::SocketAddr;
use std::time::Duration;

use super::duration::parse_duration;

/// Longest duration accepted anywhere (timeouts, intervals, slow start).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

pub use super::weight::MAX_WEIGHT;

/// One thing wrong in a config: where (`site[1].weight`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn duration_within(
        &mut self,
        key: &str,
        text: Option<&String>,
        default: Duration,
        most: Duration,
    ) -> Duration {
        match text.map(|t| parse_duration(t)) {
            None => default,
            Some(Ok(d)) if d.is_zero() || d > most => {
                self.add(
                    key,
                    format!("{d:?} is out of range; use more than 0 and at most {most:?}"),
                );
                default
            }
            Some(Ok(d)) => d,
            Some(Err(reason)) => {
                self.add(key, reason);
                default
            }
        }
    }

    pub(super) fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn duration(&mut self, key: &str, text: Option<&String>, default: Duration) -> Duration {
        match text.map(|t| parse_duration(t)) {
            None => default,
            Some(Ok(d)) if d > MAX_DURATION => {
                self.add(key, format!("{d:?} is too long; the most is 24h"));
                default
            }
            Some(Ok(d)) => d,
            Some(Err(reason)) => {
                self.add(key, reason);
                default
            }
        }
    }

    pub(super) fn count(&mut self, key: &str, value: Option<i64>, default: u32, range: (i64, i64)) -> u32 {
        match value {
            None => default,
            Some(v) if v >= range.0 && v <= range.1 => v as u32,
            Some(v) => {
                self.add(key, format!("{v} is out of range; use {} to {}", range.0, range.1));
                default
            }
        }
    }

    pub(super) fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.add(
                    key,
                    format!("\"{text}\" is not an ip:port address, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
                );
                None
            }
        }
    }
}
