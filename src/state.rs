//! The state file: what operators decided at run time (weight overrides, drills with
//! their end), sites held for failback, and each backend's last health, with the fleet's last-known decisions in
//! the same file. Written after every change, coalesced (a burst of changes is one
//! write), atomically (write, fsync, rename), and rewritten once a minute so that the
//! health it holds says how fresh it is; read once at start, before any listener
//! accepts. It never decides anything: control and the fleet say what to keep.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::clock::unix_ms;

/// Health read back is trusted only if the file was written this recently.
pub const HEALTH_TRUSTED_FOR: Duration = Duration::from_secs(600);
/// Changes closer together than this are one write.
const COALESCE: Duration = Duration::from_millis(20);
/// The file is rewritten at least this often (its time says the health is fresh).
const REFRESH: Duration = Duration::from_secs(60);
const VERSION: u32 = 1;

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    /// Unix ms of this write.
    #[serde(default)]
    pub written_at: u64,
    /// Run-time weight overrides by site.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Drills in progress by site.
    #[serde(default)]
    pub drills: BTreeMap<String, SavedDrill>,
    /// Sites held by the failback policy.
    #[serde(default)]
    pub holds: BTreeMap<String, SavedHold>,
    /// Each backend's health, by `site/address`.
    #[serde(default)]
    pub health: BTreeMap<String, bool>,
    /// The fleet's last-known decisions (`fleet::Decisions`), with `[fleet]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDrill {
    /// The `drill_started` event's id.
    pub id: u64,
    /// Unix ms.
    pub started: u64,
    pub until: u64,
    /// The drill's own `abort_5xx` (`None`: the config's `[drills] abort_5xx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_5xx: Option<crate::config::Share>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedHold {
    /// Unix ms; `None`: until an operator releases it.
    pub until: Option<u64>,
    #[serde(default)]
    pub flaps: u32,
}

impl Saved {
    /// The key of a backend in `health`.
    pub fn backend_key(site: &str, addr: &str) -> String {
        format!("{site}/{addr}")
    }

    /// Whether the health in this file may be believed at `now` (unix ms).
    pub fn health_is_fresh(&self, now: u64) -> bool {
        now.saturating_sub(self.written_at) < HEALTH_TRUSTED_FOR.as_millis() as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the state file {path} is not valid ({reason}); nothing of it is applied")]
    Corrupt { path: PathBuf, reason: String },
}

/// Reads the file at `path`: `Ok(None)` when there is none yet. A file from before the
/// one state file (the fleet's decisions alone) is read as the fleet's part.
pub fn load(path: &Path) -> Result<Option<Saved>, StateError> {
    let bytes = match crate::config::read_bounded(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if value.get("version").is_none() && value.get("revision").is_some() {
        return Ok(Some(Saved {
            version: VERSION,
            fleet: Some(value),
            ..Saved::default()
        }));
    }
    let saved: Saved = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    if saved.version != VERSION {
        return Err(corrupt(format!("version {} is not {VERSION}", saved.version)));
    }
    Ok(Some(saved))
}

pub use crate::config::check_writable;

/// Writes `saved` atomically: a temporary file beside it, fsynced, renamed over it, and
/// the directory fsynced.
pub fn write(path: &Path, saved: &Saved) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// The writer: told of changes, it gathers what to keep and writes it off the
/// control plane's thread.
pub struct StateFile {
    pub path: PathBuf,
    wake: Notify,
    /// The fleet's part, set by the fleet.
    fleet: Mutex<Option<serde_json::Value>>,
    /// What was written last (without its time), so that an unchanged state is not
    /// written again but for the refresh.
    last: Mutex<Option<Saved>>,
    /// Handed over to a new process (upgrade): this one writes no more, so that its
    /// drain never overwrites what the new one decides.
    retired: std::sync::atomic::AtomicBool,
}

impl StateFile {
    pub fn new(path: PathBuf, fleet: Option<serde_json::Value>) -> Arc<StateFile> {
        Arc::new(StateFile {
            path,
            wake: Notify::new(),
            fleet: Mutex::new(fleet),
            last: Mutex::new(None),
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Something worth keeping changed: a write follows shortly.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    pub fn set_fleet(&self, decisions: serde_json::Value) {
        *self.fleet.lock().unwrap_or_else(|p| p.into_inner()) = Some(decisions);
        self.changed();
    }

    /// Writes now what `gather` says, with the fleet's part (on shutdown, before an
    /// upgrade). Unchanged content is written only when `refresh`.
    pub fn write_now(&self, mut saved: Saved, refresh: bool) -> std::io::Result<()> {
        if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        saved.version = VERSION;
        saved.fleet = self.fleet.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if !refresh && last.as_ref() == Some(&saved) {
            return Ok(());
        }
        let mut stamped = saved.clone();
        stamped.written_at = unix_ms();
        write(&self.path, &stamped)?;
        *last = Some(saved);
        Ok(())
    }

    /// The file belongs to the process that replaced this one from now on.
    pub fn retire(&self) {
        self.retired.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Runs the writer until `gather` says there is nothing more to keep (`None`: the
    /// server is gone).
    pub fn spawn_writer(self: &Arc<Self>, gather: impl Fn() -> Option<Saved> + Send + Sync + 'static) {
        let file = self.clone();
        let gather = Arc::new(gather);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let refresh = tokio::time::timeout(REFRESH, file.wake.notified()).await.is_err();
                tokio::time::sleep(COALESCE).await;
                let Some(saved) = gather() else { return };
                let writer = file.clone();
                let outcome = tokio::task::spawn_blocking(move || writer.write_now(saved, refresh)).await;
                match outcome {
                    Ok(Ok(())) if failing => {
                        failing = false;
                        tracing::info!(path = %file.path.display(), "state file written again");
                    }
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        metrics::counter!("splitgate_state_write_errors_total").increment(1);
                        if !failing {
                            tracing::error!(path = %file.path.display(), error = %e,
                                "cannot write the state file: decisions made now would not survive a restart");
                        }
                        failing = true;
                    }
                    Err(_) => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let file = StateFile::new(path.clone(), Some(serde_json::json!({"revision": 3})));
        let saved = Saved {
            weights: BTreeMap::from([("b".to_string(), 0)]),
            drills: BTreeMap::from([(
                "a".to_string(),
                SavedDrill {
                    id: 4,
                    started: 1,
                    until: 9,
                    abort_5xx: crate::config::Share::parse("5%").ok(),
                },
            )]),
            health: BTreeMap::from([(Saved::backend_key("a", "127.0.0.1:1"), false)]),
            ..Saved::default()
        };
        file.write_now(saved.clone(), false).unwrap();
        let read = load(&path).unwrap().unwrap();
        assert_eq!(read.weights, saved.weights);
        assert_eq!(read.drills, saved.drills);
        assert_eq!(read.health, saved.health);
        assert_eq!(read.fleet, Some(serde_json::json!({"revision": 3})));
        assert!(read.health_is_fresh(unix_ms()));
        assert!(!read.health_is_fresh(unix_ms() + 601_000));
    }

    #[test]
    fn a_corrupt_file_is_an_error_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none")).unwrap().is_none());
        let path = dir.path().join("bad");
        std::fs::write(&path, b"{\"version\": 1, \"weights\": {\"b\": \"zero\"}}").unwrap();
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
        std::fs::write(&path, b"\x00\x01").unwrap();
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
        // The fleet's file from before the one state file.
        std::fs::write(&path, br#"{"revision": 7, "weights": {"b": 0}}"#).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().fleet.unwrap()["revision"], 7);
    }

    #[test]
    fn a_directory_that_cannot_take_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_writable(&dir.path().join("s.state")).is_ok());
        let missing = check_writable(&dir.path().join("no/such/s.state")).unwrap_err();
        assert!(
            matches!(missing, crate::config::NotWritable::NoDirectory(_)),
            "{missing}"
        );
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        let directory = check_writable(dir.path()).unwrap_err();
        assert!(directory.to_string().contains("is a directory"), "{directory}");
    }
}
