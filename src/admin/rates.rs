//! The status page's memory: every `INTERVAL` the admin side reads the request counters
//! that `/metrics` shows (`splitgate_requests_total`, summed per site) and keeps each
//! site's requests/s and 5xx/s over the last 15 minutes in a ring (`GET /status/rates`).
//! It only reads counters, off the async threads: the request path does nothing for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::control::Control;
use crate::shutdown::fired;
use crate::telemetry;

/// One sample per interval.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept: 15 minutes of them.
pub const CAPACITY: usize = 180;

/// A site's answers over one interval, per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SiteRate {
    /// Requests answered per second (every status class).
    pub rps: f64,
    /// 5xx answers per second, the backends' own and the proxy's.
    pub rps_5xx: f64,
}

/// The interval that ended at `at_ms`.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Every configured site, by name (0 for one that answered nothing).
    pub sites: BTreeMap<String, SiteRate>,
}

/// Requests and 5xx answers counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    all: u64,
    errors: u64,
}

/// The ring, with the reading the next sample is measured from.
#[derive(Default)]
pub struct RateHistory {
    inner: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    samples: VecDeque<Sample>,
    last: Option<(Instant, HashMap<String, Totals>)>,
}

/// `GET /status/rates`: the samples newer than `since` (Unix ms), oldest first.
#[derive(Serialize)]
pub struct RatesDoc {
    pub interval_s: u64,
    pub window_s: u64,
    pub samples: Vec<Sample>,
}

impl RateHistory {
    pub fn doc(&self, since_ms: u64) -> RatesDoc {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        RatesDoc {
            interval_s: INTERVAL.as_secs(),
            window_s: INTERVAL.as_secs() * CAPACITY as u64,
            samples: ring.samples.iter().filter(|s| s.at_ms > since_ms).cloned().collect(),
        }
    }

    /// Folds in a reading of the counters taken at `now` for the sites configured now;
    /// the first reading only sets the baseline.
    fn record(&self, now: Instant, at_ms: u64, sites: &[String], metrics_text: &str) {
        let totals = per_site(metrics_text);
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((then, before)) = ring.last.take() {
            let secs = now.saturating_duration_since(then).as_secs_f64().max(0.001);
            let rate = |name: &String| {
                let (now, then) = (totals.get(name).copied().unwrap_or_default(), before.get(name));
                let then = then.copied().unwrap_or_default();
                // Hundredths: the page shows one decimal, the JSON stays short.
                let per_second = |n: u64| (n as f64 / secs * 100.0).round() / 100.0;
                SiteRate {
                    rps: per_second(now.all.saturating_sub(then.all)),
                    rps_5xx: per_second(now.errors.saturating_sub(then.errors)),
                }
            };
            let sites = sites.iter().map(|name| (name.clone(), rate(name))).collect();
            if ring.samples.len() == CAPACITY {
                ring.samples.pop_front();
            }
            ring.samples.push_back(Sample { at_ms, sites });
        }
        ring.last = Some((now, totals));
    }
}

/// Samples every `INTERVAL` until shutdown. The Prometheus text is rendered and read on
/// a blocking thread, so a large registry never holds up the control plane.
pub fn spawn(history: Arc<RateHistory>, control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = fired(&mut shutdown) => return,
            }
            let sites: Vec<String> = control.current().sites.iter().map(|s| s.name.clone()).collect();
            let history = history.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let text = telemetry::render();
                history.record(Instant::now(), crate::clock::unix_ms(), &sites, &text);
            })
            .await;
        }
    });
}

/// `splitgate_requests_total` summed per `site` label (all backends, methods, classes).
fn per_site(metrics_text: &str) -> HashMap<String, Totals> {
    let mut totals: HashMap<String, Totals> = HashMap::new();
    for line in metrics_text.lines() {
        let Some(rest) = line.strip_prefix("splitgate_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let (Some(site), Ok(value)) = (label(labels, "site"), value.trim().parse::<f64>()) else {
            continue;
        };
        let entry = totals.entry(site.to_string()).or_default();
        let count = value.max(0.0) as u64;
        entry.all += count;
        if label(labels, "class") == Some("5xx") {
            entry.errors += count;
        }
    }
    totals
}

/// The value of `key` in `a="x",b="y"` (site names need no escapes: `[A-Za-z0-9._-]`).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a_ok: u64, a_5xx: u64, b_ok: u64) -> String {
        format!(
            "# TYPE splitgate_requests_total counter\n\
             splitgate_requests_total{{site=\"a\",backend=\"1\",method=\"GET\",class=\"2xx\"}} {a_ok}\n\
             splitgate_requests_total{{site=\"a\",backend=\"none\",method=\"POST\",class=\"5xx\"}} {a_5xx}\n\
             splitgate_requests_total{{site=\"b\",backend=\"2\",method=\"GET\",class=\"2xx\"}} {b_ok}\n\
             splitgate_upstream_connect_errors_total{{site=\"a\"}} 99\n"
        )
    }

    #[test]
    fn a_sample_is_each_sites_answers_per_second_since_the_last_reading() {
        let history = RateHistory::default();
        let sites = ["a".to_string(), "b".to_string(), "quiet".to_string()];
        let start = Instant::now();
        history.record(start, 1_000, &sites, &text(10, 0, 5));
        assert!(history.doc(0).samples.is_empty(), "the first reading is the baseline");
        history.record(start + INTERVAL, 6_000, &sites, &text(60, 10, 30));
        let doc = history.doc(0);
        assert_eq!(doc.samples.len(), 1);
        let sample = &doc.samples[0];
        assert_eq!(sample.at_ms, 6_000);
        assert_eq!(
            sample.sites["a"],
            SiteRate {
                rps: 12.0,
                rps_5xx: 2.0
            }
        );
        assert_eq!(sample.sites["b"], SiteRate { rps: 5.0, rps_5xx: 0.0 });
        assert_eq!(sample.sites["quiet"], SiteRate::default());
        assert!(history.doc(6_000).samples.is_empty(), "since: only newer samples");
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes() {
        let history = RateHistory::default();
        let sites = ["a".to_string()];
        let start = Instant::now();
        for i in 0..(CAPACITY as u64 + 20) {
            history.record(start + INTERVAL * i as u32, i * 5_000, &sites, &text(i * 5, 0, 0));
        }
        let doc = history.doc(0);
        assert_eq!(doc.samples.len(), CAPACITY);
        assert_eq!(doc.window_s, 900);
        assert_eq!(
            doc.samples.last().map(|s| s.at_ms),
            Some((CAPACITY as u64 + 19) * 5_000)
        );
        assert!(doc.samples.iter().all(|s| s.sites["a"].rps == 1.0));
    }
}
