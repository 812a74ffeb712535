//! The real `splitgate` binary as a child process, for tests that need signals, exit
//! codes or the process's own memory figures.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_splitgate");

/// A port that was free a moment ago (bind 0, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Writes `config(listen, admin)` to a file, starts `splitgate run` on it and waits
    /// until the admin API answers.
    pub fn start(config: impl Fn(SocketAddr, SocketAddr) -> String) -> ProxyProcess {
        Self::start_limited(None, config)
    }

    /// As `start`, under an open-file limit of `open_files` (`ulimit -n`) when given.
    pub fn start_limited(open_files: Option<u32>, config: impl Fn(SocketAddr, SocketAddr) -> String) -> ProxyProcess {
        Self::launch(std::path::Path::new(BINARY), open_files, config)
    }

    /// As `start`, with the binary at `binary` (a copy, for upgrade tests).
    pub fn start_binary(binary: &std::path::Path, config: impl Fn(SocketAddr, SocketAddr) -> String) -> ProxyProcess {
        Self::launch(binary, None, config)
    }

    fn launch(
        binary: &std::path::Path,
        open_files: Option<u32>,
        config: impl Fn(SocketAddr, SocketAddr) -> String,
    ) -> ProxyProcess {
        let dir = tempfile::tempdir().unwrap();
        // Both held while read: two calls of `free_port` may return the same port.
        let (first, second) = (
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let addr = first.local_addr().unwrap();
        let admin = second.local_addr().unwrap();
        drop((first, second));
        let config_path = dir.path().join("splitgate.toml");
        let log_path = dir.path().join("stderr.log");
        let log = std::fs::File::create(&log_path).unwrap();
        std::fs::write(&config_path, config(addr, admin)).unwrap();
        let mut command = match open_files {
            None => Command::new(binary),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\"")])
                    .arg(binary);
                sh
            }
        };
        let child = command
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start splitgate");
        let mut process = ProxyProcess {
            child,
            addr,
            admin,
            config_path,
            log_path,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(admin).is_err() || TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("splitgate exited at start ({status}): {}", process.stderr());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "splitgate did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).unwrap();
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident memory of the process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Everything the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
