//! A real etcd (Debian's `etcd-server`) on ephemeral loopback ports with a temporary
//! data directory, for the fleet tests: started, killed, paused, emptied, and read or
//! written with the real `etcdctl`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::process::free_port;
use super::{config, site, TestProxy};

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// A key as etcd holds it: its name, the revision it was last written at, its value.
pub type Written = (String, i64, String);

pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// HTTPS with client certificates: (CA, server and client certificate, its key).
    tls: Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)>,
}

impl Etcd {
    /// A fresh single-node etcd, or `None` (skip) where it is not installed outside CI.
    pub fn start() -> Option<Etcd> {
        Self::start_with(None)
    }

    pub fn start_with(tls: Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)>) -> Option<Etcd> {
        if !std::path::Path::new(ETCD).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install etcd-server (.ci/run)"
            );
            eprintln!("skipped: etcd not installed (apt-get install etcd-server etcd-client)");
            return None;
        }
        let mut etcd = Etcd {
            child: None,
            dir: data_dir(),
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        etcd.run();
        Some(etcd)
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn tls_args(&self, server: bool) -> Vec<String> {
        let Some((ca, cert, key)) = &self.tls else {
            return Vec::new();
        };
        let (ca, cert, key) = (ca.display(), cert.display(), key.display());
        if server {
            vec![
                format!("--trusted-ca-file={ca}"),
                format!("--cert-file={cert}"),
                format!("--key-file={key}"),
                "--client-cert-auth".into(),
            ]
        } else {
            vec![
                format!("--cacert={ca}"),
                format!("--cert={cert}"),
                format!("--key={key}"),
            ]
        }
    }

    pub fn run(&mut self) {
        let (client, peer) = (self.endpoint(), format!("http://127.0.0.1:{}", self.peer_port));
        // Kept (appended across restarts) so that a failed start says why.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let child = Command::new(ETCD)
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(self.tls_args(true))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let start = Instant::now();
        while !self.ctl(&["put", "/ready", "1"]) {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "etcd did not start ({exited:?} after {:?}; {}); its log ends with:\n{}",
                    start.elapsed(),
                    disk_free(self.dir.path()),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let from = log.len().saturating_sub(3000);
        log.get(from..).unwrap_or(&log).to_owned()
    }

    /// etcdctl against this etcd with `args`.
    fn etcdctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ETCDCTL);
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "--dial-timeout", "1s"])
            .args(self.tls_args(false))
            .args(args);
        command
    }

    /// etcdctl's JSON answer to `args` (given `-w json`); `None` when etcd does not answer.
    fn etcdctl_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = self.etcdctl(args).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn ctl(&self, args: &[&str]) -> bool {
        self.etcdctl(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Etcd {
    /// The value of `key`, as etcdctl prints it; `None` when absent or unreadable.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", "--print-value-only", key]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// etcd's current revision, read from etcd itself (every write anyone made bumps
    /// it); `None` when etcd does not answer.
    pub fn revision(&self) -> Option<i64> {
        let answer = self.etcdctl_json(&["get", "-w", "json", "--keys-only", "--limit", "1", "/"])?;
        answer["header"]["revision"].as_i64()
    }

    /// etcd's revision and the keys under `prefix`, each with the revision it was last
    /// written at and its value; `None` when etcd does not answer.
    pub fn read_prefix(&self, prefix: &str) -> Option<(i64, Vec<Written>)> {
        use base64::Engine as _;
        let answer = self.etcdctl_json(&["get", "-w", "json", "--prefix", prefix])?;
        let decode = |v: &serde_json::Value| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let kvs = answer["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let written = kv["mod_revision"].as_i64().unwrap_or(0);
                (decode(&kv["key"]), written, decode(&kv["value"]))
            })
            .collect();
        Some((answer["header"]["revision"].as_i64()?, kvs))
    }

    /// The keys under `prefix` last written after `revision`, with their values (to say
    /// what a write that should not have happened was).
    pub fn written_since(&self, prefix: &str, revision: i64) -> Vec<String> {
        let (_, kvs) = self.read_prefix(prefix).unwrap_or_default();
        kvs.into_iter()
            .filter(|(_, written, _)| *written > revision)
            .map(|(key, written, value)| format!("{key} @{written}: {value}"))
            .collect()
    }

    /// Kills etcd and throws its data away: it comes back empty, revisions from 1.
    pub fn kill_and_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): etcd hangs with its sockets open.
    pub fn pause(&self, stop: bool) {
        let Some(child) = &self.child else { return };
        let signal = if stop { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} etcd");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.pause(false);
        self.kill();
    }
}

/// What `df` says is free on the file system holding `dir`, in MiB.
fn free_mib(dir: &std::path::Path) -> Option<u64> {
    let out = Command::new("df")
        .args(["-B", "1M", "--output=avail"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn disk_free(dir: &std::path::Path) -> String {
    match free_mib(dir) {
        Some(mib) => format!("{mib} MiB free there"),
        None => "free space unknown".into(),
    }
}

/// etcd preallocates 64 MiB of write-ahead log per member: its data goes to memory
/// (`/dev/shm`) where that has room, so a full (or slow) disk cannot stop it.
fn data_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if free_mib(shm).is_some_and(|mib| mib >= 1024) {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temporary directory")
}

// Fleet members in-process, and what tests ask of them.

pub fn fleet_section(etcd: &Etcd, name: &str, prefix: &str) -> String {
    format!(
        "[fleet]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nname = \"{name}\"\n",
        etcd.endpoint()
    )
}

pub async fn members(etcd: &Etcd, prefix: &str, a: &Backend, b: &Backend) -> Vec<TestProxy> {
    let mut all = Vec::new();
    for n in 1..=3 {
        let text = config(
            &fleet_section(etcd, &format!("edge-{n}"), prefix),
            &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
        );
        all.push(TestProxy::start(&text).await);
    }
    for member in &all {
        wait(Duration::from_secs(10), || connected(member))
            .await
            .expect("member connects to etcd");
    }
    all
}

pub fn connected(member: &TestProxy) -> bool {
    member.server.fleet_status().is_some_and(|s| s["connected"] == true)
}

pub fn weight_override(member: &TestProxy, site: &str) -> Option<u32> {
    member
        .server
        .sites()
        .iter()
        .find(|s| s.name == site)
        .and_then(|s| s.weight_override)
}

pub async fn wait(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
