//! Thread per core: `workers` threads, each running its own current-thread runtime,
//! as Pingora's no-steal runtime and NGINX's worker processes do. Every worker accepts
//! on its own `SO_REUSEPORT` copy of each listener (the kernel spreads connections), and
//! serves its connections start to end: a request, its HTTP/1.1 upstream connection
//! and its timers stay on the thread, so no task is stolen or moved. (An HTTP/2
//! backend's one shared connection runs on the worker that opened it; the connection
//! limit and the idle-connection sweep are shared across threads.) The control plane
//! (admin API, health probes, reloads, fleet, signals) runs on the main thread's
//! runtime.
//!
//! Each thread knows its `slot` (0 off the workers: the main thread, tests), which
//! upstream pools use to keep one idle list per worker: a connection is registered with
//! the reactor of the runtime that made it and stays on that runtime.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Slots in use in this process: one per worker plus slot 0; set before any pool exists.
static SLOTS: AtomicUsize = AtomicUsize::new(1);

/// This thread's slot: `1..=workers` on a worker, 0 anywhere else.
pub fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// How many slots per-worker state needs (`workers + 1`; 1 without workers).
pub fn slots() -> usize {
    SLOTS.load(Ordering::Relaxed)
}

/// The running worker threads; dropping this stops them (their tasks are dropped).
pub struct Workers {
    handles: Vec<Handle>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` worker threads (at least one), each with a current-thread runtime.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = count.max(1);
        SLOTS.store(count + 1, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("splitgate-worker-{index}"))
                .spawn(move || {
                    SLOT.with(|slot| slot.set(index + 1));
                    runtime.block_on(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    });
                    // Not waiting on blocking work (a name lookup) for ever at exit.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })?;
            threads.push(thread);
        }
        Ok(Workers { handles, stop, threads })
    }

    /// The workers' runtimes, to spawn accept loops on.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
