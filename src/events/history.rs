//! The history file (`[events] history`): a SQLite database with every event and every
//! run of the proxy (when it started, when it was last seen alive, which sites it
//! had), so that availability survives restarts and the time the proxy was not running
//! counts as unknown, not as downtime. One writer, off the request path: events reach
//! it through a bounded queue and are written on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{Event, Kind, Sink};
use crate::clock::unix_ms;

/// How often a running proxy stamps its run as still alive.
const HEARTBEAT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    site TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
CREATE TABLE IF NOT EXISTS runs (
    started_ms INTEGER PRIMARY KEY,
    seen_ms INTEGER NOT NULL,
    sites TEXT NOT NULL
);
";

/// One run of the proxy: [started, seen] is known time; the sites it served.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub started_ms: u64,
    pub seen_ms: u64,
    pub sites: Vec<String>,
}

/// The database, for the writer and for `report`.
pub struct History {
    connection: Connection,
}

impl History {
    pub fn open(path: &Path) -> rusqlite::Result<History> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.execute_batch(SCHEMA)?;
        Ok(History { connection })
    }

    /// The newest `n` events, oldest first (to refill the ring after a restart).
    pub fn recent(&self, n: usize) -> rusqlite::Result<Vec<Event>> {
        let from: Option<i64> = self
            .connection
            .query_row(
                "SELECT at_ms FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1",
                [n.saturating_sub(1) as i64],
                |row| row.get(0),
            )
            .optional()?;
        Ok(self.read(from.unwrap_or(0).max(0) as u64)?.0)
    }

    /// Writes (or, for an amended event, replaces) one event.
    pub fn write_event(&self, event: &Event) -> rusqlite::Result<()> {
        let detail = Value::Object(event.detail.clone()).to_string();
        self.connection.execute(
            "INSERT OR REPLACE INTO events (id, at_ms, kind, site, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                event.id as i64,
                event.at_ms as i64,
                event.kind.name(),
                event.site,
                detail
            ],
        )?;
        Ok(())
    }

    /// Records a run's start or its latest sign of life.
    pub fn write_run(&self, run: &Run) -> rusqlite::Result<()> {
        let sites = serde_json::to_string(&run.sites).unwrap_or_else(|_| "[]".into());
        self.connection.execute(
            "INSERT INTO runs (started_ms, seen_ms, sites) VALUES (?1, ?2, ?3)
             ON CONFLICT(started_ms) DO UPDATE SET seen_ms = excluded.seen_ms, sites = excluded.sites",
            params![run.started_ms as i64, run.seen_ms as i64, sites],
        )?;
        Ok(())
    }

    /// Drops what is older than `keep`.
    pub fn prune(&self, now_ms: u64, keep: Duration) -> rusqlite::Result<()> {
        let cutoff = now_ms.saturating_sub(keep.as_millis() as u64) as i64;
        self.connection
            .execute("DELETE FROM events WHERE at_ms < ?1", [cutoff])?;
        self.connection
            .execute("DELETE FROM runs WHERE seen_ms < ?1", [cutoff])?;
        Ok(())
    }

    /// Events and runs that overlap [from, now], oldest first.
    pub fn read(&self, from_ms: u64) -> rusqlite::Result<(Vec<Event>, Vec<Run>)> {
        let mut statement = self
            .connection
            .prepare("SELECT id, at_ms, kind, site, detail FROM events WHERE at_ms >= ?1 ORDER BY id")?;
        let events = statement
            .query_map([from_ms as i64], |row| {
                let kind: String = row.get(2)?;
                let detail: String = row.get(4)?;
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    kind,
                    row.get::<_, Option<String>>(3)?,
                    detail,
                ))
            })?
            .filter_map(Result::ok)
            .filter_map(|(id, at, kind, site, detail)| {
                Some(Event {
                    id: id as u64,
                    kind: serde_json::from_value::<Kind>(Value::String(kind)).ok()?,
                    site,
                    at_ms: at as u64,
                    detail: serde_json::from_str::<Map<String, Value>>(&detail).unwrap_or_default(),
                })
            })
            .collect();
        let mut statement = self
            .connection
            .prepare("SELECT started_ms, seen_ms, sites FROM runs WHERE seen_ms >= ?1 ORDER BY started_ms")?;
        let runs = statement
            .query_map([from_ms as i64], |row| {
                let sites: String = row.get(2)?;
                Ok(Run {
                    started_ms: row.get::<_, i64>(0)? as u64,
                    seen_ms: row.get::<_, i64>(1)? as u64,
                    sites: serde_json::from_str(&sites).unwrap_or_default(),
                })
            })?
            .filter_map(Result::ok)
            .collect();
        Ok((events, runs))
    }
}

/// What a starting proxy takes from its history.
pub struct Opened {
    /// Where new events go.
    pub sink: Sink,
    /// The newest events written before, oldest first, for the ring.
    pub recent: Vec<Event>,
}

/// Opens the history for a starting proxy: records the new run, prunes, and starts the
/// writer.
pub fn start(path: &Path, keep: Duration, sites: Vec<String>, recent: usize) -> Result<Opened, String> {
    let fail = |e: rusqlite::Error| format!("events.history {}: {e}", path.display());
    let history = History::open(path).map_err(fail)?;
    let recent = history.recent(recent).map_err(fail)?;
    let started_ms = unix_ms();
    let run = Run {
        started_ms,
        seen_ms: started_ms,
        sites,
    };
    history.write_run(&run).map_err(fail)?;
    history.prune(started_ms, keep).map_err(fail)?;
    let (queue, events) = mpsc::channel(4096);
    tokio::spawn(write_all(
        Arc::new(Mutex::new(history)),
        events,
        run,
        keep,
        path.to_path_buf(),
    ));
    Ok(Opened {
        sink: Sink {
            name: "history",
            queue,
            amendments: true,
        },
        recent,
    })
}

async fn write_all(
    history: Arc<Mutex<History>>,
    mut events: mpsc::Receiver<Arc<Event>>,
    mut run: Run,
    keep: Duration,
    path: PathBuf,
) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut beats: u64 = 0;
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => return,
            },
            _ = heartbeat.tick() => None,
        };
        run.seen_ms = unix_ms();
        beats += 1;
        let (history, run) = (history.clone(), run.clone());
        let prune = beats % 17_280 == 0; // about daily
        let written = tokio::task::spawn_blocking(move || {
            let history = history.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(event) = &event {
                history.write_event(event)?;
            }
            history.write_run(&run)?;
            if prune {
                history.prune(run.seen_ms, keep)?;
            }
            Ok::<_, rusqlite::Error>(())
        })
        .await;
        if let Ok(Err(e)) = written {
            metrics::counter!("splitgate_history_errors_total").increment(1);
            tracing::warn!(path = %path.display(), error = %e, "cannot write the event history");
        }
    }
}
