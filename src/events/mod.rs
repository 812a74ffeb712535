//! Failover events: what changed (a site down or up, a tier failover or failback, a
//! drill), when, and what clients saw, measured to the millisecond. Events are
//! observed by the control plane when it publishes a snapshot (`watch`), finished a
//! moment later by one task (so the last request sent to a lost site is known), then
//! kept in a bounded ring for `GET /events`, logged, counted, and handed to the sinks:
//! the notifiers (`notify`) and the history file (`history`, written by `recorder`).
//! Nothing here runs on the request path; requests only bump the per-backend counters
//! the measurements read.

pub mod history;
mod measurements;
pub mod notify;
pub mod recorder;
mod watch;

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::health::Backend;
use recorder::{HistoryHealth, HistoryStatus};

pub use measurements::{Measurements, OutageFigures};
pub use watch::Observer;

/// Events kept in memory for `GET /events`.
pub const RING: usize = 1024;

/// How long after a site is marked down its event waits, so that requests already on
/// their way to it are counted in `traffic_moved_ms`, `client_errors` and `retried`.
pub const SETTLE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    SiteDown,
    SiteUp,
    Failover,
    Failback,
    DrillStarted,
    DrillEnded,
    /// A site that failed is healthy again and its traffic is held (failback policy).
    SiteRecovered,
    /// An operator's action went through the guard rails with `force`.
    Forced,
    /// A drill program's drill that did not start (`reason`).
    DrillSkipped,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::SiteDown => "site_down",
            Kind::SiteUp => "site_up",
            Kind::Failover => "failover",
            Kind::Failback => "failback",
            Kind::DrillStarted => "drill_started",
            Kind::DrillEnded => "drill_ended",
            Kind::SiteRecovered => "site_recovered",
            Kind::Forced => "forced",
            Kind::DrillSkipped => "drill_skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u64,
    pub kind: Kind,
    pub site: Option<String>,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The kind's measurements (`detect_ms`, `down_ms`, ...).
    pub detail: Map<String, Value>,
}

impl Event {
    /// `{"id", "kind", "site", "at", ...detail}`.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), self.id.into());
        object.insert("kind".into(), self.kind.name().into());
        object.insert("site".into(), self.site.clone().map_or(Value::Null, Value::String));
        object.insert("at".into(), crate::clock::rfc3339(self.at_ms).into());
        object.extend(self.detail.clone());
        Value::Object(object)
    }

    /// The figures it carries (`detect_ms`, `down_ms`, ...).
    pub fn measurements(&self) -> Measurements {
        Measurements::of(&self.detail)
    }
}

/// The figures of an outage, read from the site's backends when the event settles.
pub struct Outage {
    pub backends: Vec<Arc<Backend>>,
    /// Process-clock ms of the first failure (or of the drill's start).
    pub first_failure_ms: u64,
    /// Counter sums at the start, for a drill (whose backends did not fail).
    pub baseline: Option<[u64; 3]>,
}

impl Outage {
    /// (client errors, of which non-idempotent, retried) summed over the backends.
    pub fn counters(backends: &[Arc<Backend>]) -> [u64; 3] {
        use std::sync::atomic::Ordering::Relaxed;
        backends.iter().fold([0; 3], |[e, u, r], b| {
            [
                e + b.outage.client_errors.load(Relaxed),
                u + b.outage.unsafe_errors.load(Relaxed),
                r + b.outage.retried.load(Relaxed),
            ]
        })
    }

    fn settle(&self, detail: &mut Map<String, Value>) {
        use std::sync::atomic::Ordering::Relaxed;
        let last_sent = self
            .backends
            .iter()
            .map(|b| b.outage.last_sent_ms.load(Relaxed))
            .max()
            .unwrap_or(0);
        let [errors, unsafe_errors, retried] = Outage::counters(&self.backends);
        let [e0, u0, r0] = self.baseline.unwrap_or([0; 3]);
        Measurements::from(OutageFigures {
            traffic_moved_ms: last_sent.saturating_sub(self.first_failure_ms),
            client_errors: errors.saturating_sub(e0),
            possible_data_loss: unsafe_errors.saturating_sub(u0),
            retried: retried.saturating_sub(r0),
        })
        .write(detail);
    }
}

/// An event observed but not yet settled.
pub struct Pending {
    pub kind: Kind,
    pub site: Option<String>,
    pub at_ms: u64,
    pub detail: Map<String, Value>,
    pub outage: Option<Outage>,
}

/// Where settled events go besides the ring: a bounded queue per sink.
pub struct Sink {
    pub name: &'static str,
    pub queue: mpsc::Sender<Arc<Event>>,
    /// Amended events (a `site_up` gaining `full_weight_ms`) go here too.
    pub amendments: bool,
    /// Counts the events this sink's queue refused, for a sink that must know.
    pub dropped: Option<Arc<AtomicU64>>,
}

struct Ring {
    next_id: u64,
    events: VecDeque<Arc<Event>>,
    /// Amendments to events still settling, applied when they are published.
    late: Vec<(u64, Measurements)>,
}

pub struct Events {
    ring: Mutex<Ring>,
    settling: mpsc::Sender<(tokio::time::Instant, Event, Option<Outage>)>,
    sinks: Mutex<Vec<Sink>>,
    /// The history file's writer, with `[events] history`.
    history: Option<Arc<HistoryHealth>>,
}

impl Events {
    /// Starts the settling task; the ring starts with `earlier` (from the history) and
    /// ids continue after them.
    pub fn start(earlier: Vec<Event>, history: Option<Arc<HistoryHealth>>) -> Arc<Events> {
        let (settling, mut queue) = mpsc::channel::<(tokio::time::Instant, Event, Option<Outage>)>(4096);
        let next_id = earlier.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        let mut ring: VecDeque<Arc<Event>> = earlier.into_iter().map(Arc::new).collect();
        while ring.len() > RING {
            ring.pop_front();
        }
        let events = Arc::new(Events {
            ring: Mutex::new(Ring {
                next_id,
                events: ring,
                late: Vec::new(),
            }),
            settling,
            sinks: Mutex::new(Vec::new()),
            history,
        });
        let weak = Arc::downgrade(&events);
        tokio::spawn(async move {
            while let Some((due, mut event, outage)) = queue.recv().await {
                tokio::time::sleep_until(due).await;
                if let Some(outage) = outage {
                    outage.settle(&mut event.detail);
                }
                match weak.upgrade() {
                    Some(events) => events.publish(event),
                    None => return,
                }
            }
        });
        events
    }

    /// Takes an observed event: it gets its id now and is published after `SETTLE`.
    pub fn observe(&self, pending: Pending) -> u64 {
        let id = {
            let mut ring = self.lock_ring();
            ring.next_id += 1;
            ring.next_id - 1
        };
        let event = Event {
            id,
            kind: pending.kind,
            site: pending.site,
            at_ms: pending.at_ms,
            detail: pending.detail,
        };
        let due = tokio::time::Instant::now()
            + if pending.outage.is_some() {
                SETTLE
            } else {
                Duration::ZERO
            };
        if self.settling.try_send((due, event, pending.outage)).is_err() {
            metrics::counter!("splitgate_events_dropped_total", "sink" => "settling").increment(1);
        }
        id
    }

    /// Events newer than `since`, oldest first.
    pub fn since(&self, since: u64) -> Vec<Arc<Event>> {
        let ring = self.lock_ring();
        ring.events.iter().filter(|e| e.id > since).cloned().collect()
    }

    /// Adds measurements to a published event (in the ring and the history).
    pub fn amend(&self, id: u64, figures: Measurements) {
        let amended = {
            let mut ring = self.lock_ring();
            let Some(slot) = ring.events.iter_mut().find(|e| e.id == id) else {
                if id >= ring.next_id.saturating_sub(RING as u64) && ring.late.len() < RING {
                    ring.late.push((id, figures));
                }
                return;
            };
            let mut event = (**slot).clone();
            figures.write(&mut event.detail);
            *slot = Arc::new(event);
            slot.clone()
        };
        tracing::info!(event = %amended.to_json(), "failover event updated");
        self.deliver(&amended, true);
    }

    /// How the history file is doing, with `[events] history` (for `/status`).
    pub fn history(&self) -> Option<HistoryStatus> {
        self.history.as_ref().map(|h| h.status())
    }

    /// Replaces the sinks of one name (notifiers after a reload).
    pub fn set_sinks(&self, name: &'static str, sinks: Vec<Sink>) {
        let mut all = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|s| s.name != name);
        all.extend(sinks);
    }

    fn lock_ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, mut event: Event) {
        {
            let mut ring = self.lock_ring();
            ring.late.retain(|(id, figures)| {
                if *id == event.id {
                    figures.write(&mut event.detail);
                }
                *id != event.id
            });
        }
        record_metrics(&event);
        let event = Arc::new(event);
        tracing::warn!(event = %event.to_json(), "failover event");
        {
            let mut ring = self.lock_ring();
            if ring.events.len() == RING {
                ring.events.pop_front();
            }
            ring.events.push_back(event.clone());
        }
        self.deliver(&event, false);
    }

    fn deliver(&self, event: &Arc<Event>, amendment: bool) {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        for sink in sinks.iter().filter(|s| !amendment || s.amendments) {
            if sink.queue.try_send(event.clone()).is_err() {
                if let Some(dropped) = &sink.dropped {
                    dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                metrics::counter!("splitgate_events_dropped_total", "sink" => sink.name).increment(1);
            }
        }
    }
}

fn record_metrics(event: &Event) {
    let site = event.site.clone().unwrap_or_default();
    let to = match event.kind {
        Kind::SiteDown | Kind::DrillStarted => "down",
        Kind::SiteUp | Kind::DrillEnded => "up",
        Kind::Failover | Kind::Failback | Kind::SiteRecovered | Kind::Forced | Kind::DrillSkipped => return,
    };
    metrics::counter!("splitgate_site_transitions_total", "site" => site, "to" => to).increment(1);
    if event.kind == Kind::SiteDown {
        let figures = event.measurements();
        if let Some(ms) = figures.detect_ms {
            metrics::histogram!("splitgate_failover_detect_seconds").record(ms as f64 / 1000.0);
        }
        if let Some(ms) = figures.traffic_moved_ms {
            metrics::histogram!("splitgate_failover_traffic_moved_seconds").record(ms as f64 / 1000.0);
        }
    }
}
