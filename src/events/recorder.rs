//! The history's writer: one task, off the request path, that keeps every event it is
//! handed in a bounded queue until the file has it. A file that cannot be opened or
//! written (not a database, locked, full disk) never stops the proxy: the writer says
//! so (log, metrics, `/status`) and retries with back-off. Events beyond the queue are
//! lost, and the time they cover is then left out of the record (unknown time), so the
//! report never claims availability nobody recorded. It must not block a caller.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::history::{Batch, History, HistoryError, Run, RunSite, Written};
use super::{Event, Kind, Sink};
use crate::clock::unix_ms;

/// Events kept while the file cannot be written (about 1 KB each).
pub const QUEUE: usize = 10_000;
/// How long one try waits for a lock held by another process.
const BUSY: Duration = Duration::from_secs(1);
/// How often a running proxy stamps its run as still alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Events written in one transaction.
const BATCH: usize = 1000;
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Settings {
    pub path: PathBuf,
    /// History older than this is pruned (at start and about daily).
    pub keep: Duration,
    pub sites: Vec<RunSite>,
    /// Events read back at start for the ring.
    pub recent: usize,
    /// Events kept while the file cannot be written.
    pub queue: usize,
}

/// The history as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryStatus {
    pub path: String,
    /// The last write (or open) succeeded.
    pub ok: bool,
    pub error: Option<String>,
    /// Events waiting to be written.
    pub pending: u64,
    /// Events that could not be kept since the start (their time is unknown time).
    pub lost: u64,
}

/// Shared with `/status`: written by the recorder only.
pub struct HistoryHealth {
    status: Mutex<HistoryStatus>,
}

impl HistoryHealth {
    pub fn status(&self) -> HistoryStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, status: HistoryStatus) {
        crate::telemetry::record_history(status.ok, status.pending);
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }
}

/// What a starting proxy takes from its history.
pub struct Opened {
    /// Where new events go.
    pub sink: Sink,
    /// The newest events written before, oldest first, for the ring (empty when the
    /// file could not be read at start).
    pub recent: Vec<Event>,
    pub health: Arc<HistoryHealth>,
}

/// Opens the history for a starting proxy (one try, at most about a second), records
/// the new run and starts the writer. Never fails: a file that cannot be used now is
/// retried in the background while the proxy serves.
pub fn start(settings: Settings) -> Opened {
    let started_ms = unix_ms();
    let run = Run {
        started_ms,
        seen_ms: started_ms,
        sites: settings.sites.clone(),
    };
    let first = History::open_with(&settings.path, BUSY).and_then(|history| {
        let recent = history.recent(settings.recent)?;
        history.write_run(&run)?;
        history.prune(started_ms, settings.keep)?;
        Ok((history, recent))
    });
    let path = settings.path.display().to_string();
    let mut status = HistoryStatus {
        path: path.clone(),
        ok: true,
        error: None,
        pending: 0,
        lost: 0,
    };
    let (db, recent, offset) = match first {
        Ok((history, recent)) => (Some(history), recent, Some(0)),
        Err(e) => {
            tracing::error!(path, error = %e, "cannot open the event history; serving without it and retrying");
            crate::telemetry::record_history_error();
            status.ok = false;
            status.error = Some(e.to_string());
            (None, Vec::new(), None)
        }
    };
    let health = Arc::new(HistoryHealth {
        status: Mutex::new(status.clone()),
    });
    health.set(status);
    let dropped = Arc::new(AtomicU64::new(0));
    let (queue, events) = mpsc::channel(4096);
    let sites = settings.sites.iter().map(|s| (s.name.clone(), s.clone())).collect();
    let recorder = Recorder {
        health: health.clone(),
        keep: settings.keep,
        path: settings.path,
        db,
        offset,
        pending: VecDeque::new(),
        capacity: settings.queue.max(1),
        run,
        closing: None,
        lost: 0,
        lost_from: None,
        sites,
        dropped: dropped.clone(),
        dropped_seen: 0,
        last_ms: started_ms,
        prune: false,
    };
    tokio::spawn(recorder.work(events));
    Opened {
        sink: Sink {
            name: "history",
            queue,
            amendments: true,
            dropped: Some(dropped),
        },
        recent,
        health,
    }
}

struct Recorder {
    health: Arc<HistoryHealth>,
    keep: Duration,
    path: PathBuf,
    /// The open file; `None` until opened, and after a failed write (reopened next try).
    db: Option<History>,
    /// Added to this process's event ids in the file. `None` until the file was read:
    /// a proxy that started without it numbered its events from 1, and they go after
    /// the ones already there.
    offset: Option<u64>,
    /// Events (and amendments) not yet written, with the run they belong to.
    pending: VecDeque<(Arc<Event>, u64)>,
    capacity: usize,
    run: Run,
    /// A run cut short by lost events, to be written with its end.
    closing: Option<Run>,
    lost: u64,
    /// Unix ms of the earliest event lost in the current gap.
    lost_from: Option<u64>,
    /// Each site's state from every event seen, kept or lost: how a run that resumes
    /// the record after a gap begins.
    sites: BTreeMap<String, RunSite>,
    /// Events the sink's channel refused (counted by `Events::deliver`).
    dropped: Arc<AtomicU64>,
    dropped_seen: u64,
    /// Unix ms of the last event or tick handled.
    last_ms: u64,
    prune: bool,
}

impl Recorder {
    async fn work(mut self, mut events: mpsc::Receiver<Arc<Event>>) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u64 = 0;
        let mut job: Option<tokio::task::JoinHandle<Written>> = None;
        let mut retry: Option<Instant> = None;
        let mut pause = RETRY_FIRST;
        let mut due = true;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.take(event),
                    None => break,
                },
                _ = heartbeat.tick() => {
                    beats += 1;
                    self.prune |= beats % 17_280 == 0; // about daily
                    due = true;
                }
                done = async { job.as_mut().expect("guarded").await }, if job.is_some() => {
                    job = None;
                    if self.finish(done) {
                        pause = RETRY_FIRST;
                    } else {
                        retry = Some(Instant::now() + pause);
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                }
                _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => {
                    retry = None;
                }
            }
            self.notice_drops();
            // The run is alive as long as the proxy is; a clock stepped back does not
            // shorten what was already recorded.
            self.run.seen_ms = self.run.seen_ms.max(unix_ms());
            // A gap ends at the next write that succeeds with room in the queue.
            let wanted = due || !self.pending.is_empty() || self.lost_from.is_some();
            if job.is_none() && retry.is_none() && wanted {
                job = Some(tokio::task::spawn_blocking({
                    let batch = self.batch();
                    move || batch.write(BUSY)
                }));
                due = false;
            }
            self.report();
        }
        // The proxy stops: one last try for what is still waiting.
        if let Some(running) = job.take() {
            self.finish(running.await);
        }
        if !self.pending.is_empty() || due {
            let done = tokio::task::spawn_blocking({
                let batch = self.batch();
                move || batch.write(BUSY)
            })
            .await;
            self.finish(done);
        }
        if !self.pending.is_empty() {
            tracing::error!(path = %self.path.display(), events = self.pending.len(), "the proxy stops with events the history could not take");
        }
    }

    /// An event handed over: kept if there is room, else lost (and its time with it).
    fn take(&mut self, event: Arc<Event>) {
        self.last_ms = unix_ms();
        self.follow(&event);
        if self.pending.len() < self.capacity && self.lost_from.is_none() {
            self.pending.push_back((event, self.run.started_ms));
            return;
        }
        self.lose(1, event.at_ms);
    }

    fn lose(&mut self, count: u64, at_ms: u64) {
        if self.lost_from.is_none() {
            tracing::error!(path = %self.path.display(), queue = self.capacity, "the event history is full: events are lost, their time becomes unknown time");
        }
        self.lost += count;
        crate::telemetry::record_history_lost(count);
        self.lost_from = Some(self.lost_from.map_or(at_ms, |from| from.min(at_ms)));
    }

    /// Events the sink's channel refused, which this task never saw.
    fn notice_drops(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_seen {
            let last = self.last_ms;
            self.lose(dropped - self.dropped_seen, last);
            self.dropped_seen = dropped;
        }
        self.last_ms = unix_ms();
    }

    /// Keeps each site's state as the events say.
    fn follow(&mut self, event: &Event) {
        let Some(site) = event.site.as_ref().and_then(|name| self.sites.get_mut(name)) else {
            return;
        };
        match event.kind {
            Kind::SiteDown => {
                let detect = event.measurements().detect_ms;
                site.down_since_ms = Some(event.at_ms.saturating_sub(detect.unwrap_or(0)));
            }
            Kind::SiteUp => site.down_since_ms = None,
            Kind::DrillStarted => site.drilled = true,
            Kind::DrillEnded => site.drilled = false,
            Kind::Failover | Kind::Failback | Kind::SiteRecovered | Kind::Forced | Kind::DrillSkipped => {}
        }
    }

    fn batch(&mut self) -> Batch {
        let mut current = self.run.clone();
        if let Some(from) = self.lost_from {
            current.seen_ms = current.seen_ms.min(from).max(current.started_ms);
        }
        Batch {
            db: self.db.take(),
            path: self.path.clone(),
            offset: self.offset,
            runs: self.closing.iter().cloned().chain([current]).collect(),
            events: self.pending.iter().take(BATCH).cloned().collect(),
            prune: std::mem::take(&mut self.prune).then_some((self.run.seen_ms, self.keep)),
        }
    }

    /// Takes a write's outcome; true when it succeeded.
    fn finish(&mut self, done: Result<Written, tokio::task::JoinError>) -> bool {
        let done = match done {
            Ok(done) => done,
            Err(e) => Written {
                db: None,
                result: Err(HistoryError::WriterStopped(e)),
                events: 0,
                runs: 0,
            },
        };
        self.db = done.db;
        let was_ok = self.health.status().ok;
        match done.result {
            Ok(offset) => {
                self.offset = Some(offset);
                self.pending.drain(..done.events.min(self.pending.len()));
                if done.runs > 1 {
                    self.closing = None;
                }
                if !was_ok {
                    tracing::warn!(path = %self.path.display(), pending = self.pending.len(), lost = self.lost, "the event history is written again");
                }
                self.set_status(None);
                self.resume();
                true
            }
            Err(e) => {
                let text = e.to_string();
                crate::telemetry::record_history_error();
                if was_ok || self.health.status().error.as_deref() != Some(text.as_str()) {
                    tracing::error!(path = %self.path.display(), error = %text, pending = self.pending.len(), "cannot write the event history; events are kept and retried");
                }
                self.set_status(Some(text));
                false
            }
        }
    }

    /// After a gap of lost events, once there is room again: the run that lost them
    /// ends where the loss began, and a new one starts now with the sites' state.
    fn resume(&mut self) {
        let Some(from) = self.lost_from else {
            return;
        };
        if self.pending.len() >= self.capacity || self.closing.is_some() {
            return;
        }
        let mut closed = self.run.clone();
        closed.seen_ms = closed.seen_ms.min(from).max(closed.started_ms);
        let started_ms = unix_ms().max(closed.seen_ms).max(closed.started_ms) + 1;
        self.run = Run {
            started_ms,
            seen_ms: started_ms,
            sites: self.sites.values().cloned().collect(),
        };
        tracing::warn!(path = %self.path.display(), lost = self.lost, gap_ms = started_ms - closed.seen_ms, "the event history resumes after a gap: unknown time");
        self.closing = Some(closed);
        self.lost_from = None;
    }

    fn set_status(&self, error: Option<String>) {
        self.health.set(HistoryStatus {
            path: self.path.display().to_string(),
            ok: error.is_none(),
            error,
            pending: self.pending.len() as u64,
            lost: self.lost,
        });
    }

    /// Keeps `pending` in `/status` current between writes.
    fn report(&self) {
        let status = self.health.status();
        if status.pending != self.pending.len() as u64 || status.lost != self.lost {
            self.set_status(status.error);
        }
    }
}
