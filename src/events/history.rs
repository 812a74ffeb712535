//! The history file (`[events] history`): a SQLite database with every event and every
//! run of the proxy (when it started, when it was last seen alive, which sites it had
//! and their state as it began), so that availability survives restarts and the time
//! nobody recorded counts as unknown, not as downtime. This module is the database
//! only (and one batch of writes); the writer that feeds it off the request path is
//! `recorder`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Event, Kind};

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

/// Why the history file cannot be used or written now. `Display` is what `check`,
/// the log and `/status` say.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{} is read-only", .0.display())]
    ReadOnly(PathBuf),
    #[error("{}: {source}", path.display())]
    Unusable { path: PathBuf, source: rusqlite::Error },
    #[error("{}: {source} (another process holds it)", path.display())]
    Locked { path: PathBuf, source: rusqlite::Error },
    /// Opening or writing failed (a write's whole transaction is rolled back).
    #[error(transparent)]
    Database(#[from] rusqlite::Error),
    /// The blocking task that wrote a batch panicked or was cancelled.
    #[error("the writer stopped: {0}")]
    WriterStopped(#[source] tokio::task::JoinError),
}

/// One stretch of recorded time: [started, seen] is known; the sites served then.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub started_ms: u64,
    pub seen_ms: u64,
    pub sites: Vec<RunSite>,
}

/// A site of a run, with its state when the run began (a run that resumes the record
/// after a gap starts with the sites as they were, not all up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSite {
    pub name: String,
    #[serde(default)]
    pub priority: u32,
    /// Down (from its first failure) since this Unix ms when the run began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drilled: bool,
}

impl RunSite {
    pub fn new(name: &str, priority: u32) -> RunSite {
        RunSite {
            name: name.to_string(),
            priority,
            down_since_ms: None,
            drilled: false,
        }
    }
}

/// Older files list the sites by name only.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredSite {
    Name(String),
    Site(RunSite),
}

fn sites_of(text: &str) -> Vec<RunSite> {
    serde_json::from_str::<Vec<StoredSite>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(|s| match s {
            StoredSite::Name(name) => RunSite::new(&name, 0),
            StoredSite::Site(site) => site,
        })
        .collect()
}

/// The database, for the writer and for `report`.
pub struct History {
    connection: Connection,
}

/// SQLite keeps integers signed; our times and ids are far below `i64::MAX`.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl History {
    /// Opens (creating it if missing) and brings the schema up to date. A lock held by
    /// another process is waited for up to `busy`.
    pub fn open_with(path: &Path, busy: Duration) -> rusqlite::Result<History> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(busy)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.execute_batch(SCHEMA)?;
        let has_run: bool = connection
            .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'run'")?
            .exists([])?;
        if !has_run {
            // The run an event belongs to, so that a clock step cannot move it out.
            connection.execute_batch(
                "ALTER TABLE events ADD COLUMN run INTEGER;
                 CREATE INDEX IF NOT EXISTS events_run ON events (run, id);",
            )?;
        }
        Ok(History { connection })
    }

    pub fn open(path: &Path) -> rusqlite::Result<History> {
        History::open_with(path, Duration::from_secs(5))
    }

    /// What `check` can see without changing anything: an existing file must be a
    /// database this proxy can write now (not locked by another process).
    pub fn probe(path: &Path) -> Result<(), HistoryError> {
        if !path.exists() {
            return Ok(());
        }
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().readonly()) {
            return Err(HistoryError::ReadOnly(path.to_path_buf()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let unusable = |source| HistoryError::Unusable {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open_with_flags(path, flags).map_err(unusable)?;
        // A proxy writing it now holds the lock for milliseconds.
        connection.busy_timeout(Duration::from_millis(500)).map_err(unusable)?;
        connection
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get::<_, i64>(0))
            .map_err(unusable)?;
        connection
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(|source| HistoryError::Locked {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The newest `n` events, oldest first (to refill the ring after a restart).
    pub fn recent(&self, n: usize) -> rusqlite::Result<Vec<Event>> {
        let mut statement = self
            .connection
            .prepare("SELECT id, at_ms, kind, site, detail FROM events ORDER BY id DESC LIMIT ?1")?;
        let mut events: Vec<Event> = statement
            .query_map([int(n as u64)], row_event)?
            .filter_map(|row| row.ok().flatten())
            .collect();
        events.reverse();
        Ok(events)
    }

    /// The highest event id written, 0 for none.
    pub fn max_id(&self) -> rusqlite::Result<u64> {
        let id: Option<i64> = self
            .connection
            .query_row("SELECT max(id) FROM events", [], |row| row.get(0))?;
        Ok(id.map_or(0, uint))
    }

    /// Writes (or, for an amended event, replaces) one event of the run `run`.
    pub fn write_event_in(&self, event: &Event, id: u64, run: u64) -> rusqlite::Result<()> {
        let detail = Value::Object(event.detail.clone()).to_string();
        self.connection.execute(
            "INSERT OR REPLACE INTO events (id, at_ms, kind, site, detail, run) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                int(id),
                int(event.at_ms),
                event.kind.name(),
                event.site,
                detail,
                int(run)
            ],
        )?;
        Ok(())
    }

    /// Writes one event, in the run that contains its time.
    pub fn write_event(&self, event: &Event) -> rusqlite::Result<()> {
        let detail = Value::Object(event.detail.clone()).to_string();
        self.connection.execute(
            "INSERT OR REPLACE INTO events (id, at_ms, kind, site, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![int(event.id), int(event.at_ms), event.kind.name(), event.site, detail],
        )?;
        Ok(())
    }

    /// Records a run's start or its latest sign of life.
    pub fn write_run(&self, run: &Run) -> rusqlite::Result<()> {
        let sites = serde_json::to_string(&run.sites).unwrap_or_else(|_| "[]".into());
        self.connection.execute(
            "INSERT INTO runs (started_ms, seen_ms, sites) VALUES (?1, ?2, ?3)
             ON CONFLICT(started_ms) DO UPDATE SET seen_ms = excluded.seen_ms, sites = excluded.sites",
            params![int(run.started_ms), int(run.seen_ms), sites],
        )?;
        Ok(())
    }

    /// Runs `write` in one transaction: all of it is written, or none.
    pub fn transaction<T>(&mut self, write: impl FnOnce(&History) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        self.connection.execute_batch("BEGIN IMMEDIATE")?;
        match write(self) {
            Ok(value) => {
                if let Err(e) = self.connection.execute_batch("COMMIT") {
                    let _ = self.connection.execute_batch("ROLLBACK");
                    return Err(e);
                }
                Ok(value)
            }
            Err(e) => {
                let _ = self.connection.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Drops what is older than `keep`.
    pub fn prune(&self, now_ms: u64, keep: Duration) -> rusqlite::Result<()> {
        let cutoff = int(now_ms.saturating_sub(keep.as_millis() as u64));
        self.connection
            .execute("DELETE FROM events WHERE at_ms < ?1", [cutoff])?;
        self.connection
            .execute("DELETE FROM runs WHERE seen_ms < ?1", [cutoff])?;
        Ok(())
    }

    /// The runs that overlap [from, now], oldest first.
    pub fn runs(&self, from_ms: u64) -> rusqlite::Result<Vec<Run>> {
        let mut statement = self
            .connection
            .prepare("SELECT started_ms, seen_ms, sites FROM runs WHERE seen_ms >= ?1 ORDER BY started_ms")?;
        let runs = statement
            .query_map([int(from_ms)], |row| {
                let sites: String = row.get(2)?;
                Ok(Run {
                    started_ms: uint(row.get(0)?),
                    seen_ms: uint(row.get(1)?),
                    sites: sites_of(&sites),
                })
            })?
            .filter_map(Result::ok)
            .collect();
        Ok(runs)
    }

    /// Hands each event of `run` to `each` in id order (the order they happened in,
    /// whatever the wall clock said), one row at a time: the history is never held
    /// in memory. Events written before runs were recorded belong by their time.
    pub fn each_event(&self, run: &Run, mut each: impl FnMut(Event)) -> rusqlite::Result<()> {
        let mut statement = self.connection.prepare(
            "SELECT id, at_ms, kind, site, detail FROM events
             WHERE run = ?1 OR (run IS NULL AND at_ms BETWEEN ?1 AND ?2) ORDER BY id",
        )?;
        let mut rows = statement.query(params![int(run.started_ms), int(run.seen_ms)])?;
        while let Some(row) = rows.next()? {
            if let Some(event) = row_event(row)? {
                each(event);
            }
        }
        Ok(())
    }
}

/// One write of the recorder (`recorder`), done on the blocking pool: the runs and
/// events in one transaction, opening the file first when there is no connection.
pub struct Batch {
    pub db: Option<History>,
    pub path: PathBuf,
    pub offset: Option<u64>,
    pub runs: Vec<Run>,
    pub events: Vec<(Arc<Event>, u64)>,
    pub prune: Option<(u64, Duration)>,
}

/// What a `Batch` did: the connection to keep (none after a failure), the offset
/// applied to event ids, or why it failed.
pub struct Written {
    pub db: Option<History>,
    pub result: Result<u64, HistoryError>,
    pub events: usize,
    pub runs: usize,
}

impl Batch {
    pub fn write(self, busy: Duration) -> Written {
        let (events, runs) = (self.events.len(), self.runs.len());
        let mut history = match self.db {
            Some(history) => history,
            None => match History::open_with(&self.path, busy) {
                Ok(history) => history,
                Err(e) => {
                    return Written {
                        db: None,
                        result: Err(e.into()),
                        events,
                        runs,
                    }
                }
            },
        };
        let result = history
            .transaction(|h| {
                let offset = match self.offset {
                    Some(offset) => offset,
                    None => h.max_id()?,
                };
                for run in &self.runs {
                    h.write_run(run)?;
                }
                for (event, run) in &self.events {
                    h.write_event_in(event, event.id.saturating_add(offset), *run)?;
                }
                if let Some((now, keep)) = self.prune {
                    h.prune(now, keep)?;
                }
                Ok(offset)
            })
            .map_err(HistoryError::from);
        Written {
            // A connection that failed is dropped: the next try opens the file again
            // (it may have been replaced or repaired meanwhile).
            db: result.is_ok().then_some(history),
            result,
            events,
            runs,
        }
    }
}

/// An event row; `None` for a kind this version does not know.
fn row_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Event>> {
    let kind: String = row.get(2)?;
    let detail: String = row.get(4)?;
    let Ok(kind) = serde_json::from_value::<Kind>(Value::String(kind)) else {
        return Ok(None);
    };
    Ok(Some(Event {
        id: uint(row.get(0)?),
        kind,
        site: row.get(3)?,
        at_ms: uint(row.get(1)?),
        detail: serde_json::from_str::<Map<String, Value>>(&detail).unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_read_from_old_and_new_rows() {
        let old = sites_of("[\"a\", \"b\"]");
        assert_eq!(old, vec![RunSite::new("a", 0), RunSite::new("b", 0)]);
        let mut b = RunSite::new("b", 1);
        b.down_since_ms = Some(5);
        let text = serde_json::to_string(&[RunSite::new("a", 0), b.clone()]).unwrap_or_default();
        assert_eq!(sites_of(&text), vec![RunSite::new("a", 0), b]);
        assert!(sites_of("not json").is_empty());
    }
}
