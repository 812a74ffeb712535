//! The `splitgate` command: `run`, `check`, `demo`, `drill` and `report`. Argument
//! parsing only; the work is in the library.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use splitgate::clock::unix_ms;
use splitgate::config::{self, Config};
use splitgate::events::history::History;
use splitgate::lifecycle::inherit::{self, Inherited};
use splitgate::server::Server;
use splitgate::workers::Workers;
use splitgate::{demo, preflight, rehearsal, report, signals, telemetry};

/// jemalloc with its background threads hands freed memory back to the system within
/// seconds, whatever the workers do; glibc's malloc kept it for good after a flood of
/// held request heads (`benches/flood.sh`: 275 MB at the peak, 13 MB 30 s after the
/// connections closed, against 246 MB still held with glibc), at the same CPU per
/// request and about 2.5 MB more peak RSS (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "splitgate",
    version,
    about = "Weighted-traffic L7 proxy for active-active and DR sites"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground until SIGTERM/SIGINT (SIGHUP reloads the config).
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file without binding anything; prints `ok` or every error.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run a drill on a running proxy (through its admin API) and print what clients saw.
    Drill {
        /// The admin API address, e.g. 127.0.0.1:9901.
        #[arg(long)]
        admin: SocketAddr,
        #[arg(long)]
        site: String,
        /// How long the site stays out, e.g. 30s.
        #[arg(long = "for", default_value = "30s")]
        duration: String,
        /// The admin bearer token, if one is configured (else --token-file, else
        /// the SPLITGATE_TOKEN environment variable).
        #[arg(long)]
        token: Option<String>,
        /// A file holding the admin bearer token (keeps it out of the process list).
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The longest wait for one admin API answer, e.g. 10s.
        #[arg(long, default_value = "10s")]
        timeout: String,
        /// How long after the drill's time to wait for the site to be back at full
        /// weight before giving up, e.g. 10m.
        #[arg(long, default_value = "10m")]
        wait: String,
        /// Go through the guard rails ([safety] min_serving_sites): recorded as forced.
        #[arg(long)]
        force: bool,
    },
    /// Print availability, failovers, drills and the DR grade from the history file.
    Report {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start built-in demo sites and a proxy in front of them.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// The demo's own control port: kills and revives a demo site's backends.
        #[arg(long, default_value = "127.0.0.1:9902")]
        control: SocketAddr,
        /// Background requests per second through the proxy (0: none).
        #[arg(long, default_value_t = 20)]
        traffic: u32,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => check(&config),
        Command::Run { config: path } => match config::load(&path) {
            Ok(config) => run(config, Some(path), None),
            Err(e) => fail(&e.lines().join("; ")),
        },
        Command::Drill {
            admin,
            site,
            duration,
            token,
            token_file,
            timeout,
            wait,
            force,
        } => drill(admin, &site, &duration, token, token_file, (&timeout, &wait), force),
        Command::Report {
            config: path,
            days,
            json,
        } => report(&path, days, json),
        Command::Demo {
            listen,
            admin,
            control,
            traffic,
        } => {
            telemetry::init_logging(&config::Logging::default());
            let Ok(runtime) = tokio::runtime::Runtime::new() else {
                return fail("cannot start the async runtime");
            };
            let options = demo::DemoOptions {
                listen,
                admin,
                control,
                traffic,
            };
            match runtime.block_on(demo::Demo::start(options)) {
                Ok(demo) => {
                    let banner = demo.instructions();
                    run_on(runtime, demo.config, None, Some(banner), Inherited::default())
                }
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}

fn drill(
    admin: SocketAddr,
    site: &str,
    duration: &str,
    token: Option<String>,
    token_file: Option<PathBuf>,
    (timeout, wait): (&str, &str),
    force: bool,
) -> ExitCode {
    let refuse = |e: &dyn std::fmt::Display| {
        eprintln!("splitgate drill: {e}");
        ExitCode::FAILURE
    };
    let token = match rehearsal::token(token, token_file.as_deref(), std::env::var("SPLITGATE_TOKEN").ok()) {
        Ok(token) => token,
        Err(e) => return refuse(&e),
    };
    let limits = match rehearsal::Limits::parse(timeout, wait) {
        Ok(limits) => limits,
        Err(e) => return refuse(&e),
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return refuse(&"cannot start the async runtime");
    };
    match runtime.block_on(rehearsal::drill(admin, site, duration, token.as_deref(), limits, force)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(rehearsal::RehearsalError::NotBack { report, reason }) => {
            print!("{report}");
            refuse(&reason)
        }
        Err(e) => refuse(&e),
    }
}

fn report(path: &std::path::Path, days: u64, json: bool) -> ExitCode {
    if let Err(e) = report::window(days) {
        eprintln!("splitgate report: {e}");
        return ExitCode::FAILURE;
    }
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("splitgate report: {}", e.lines().join("; "));
            return ExitCode::FAILURE;
        }
    };
    let Some(file) = config.events.history else {
        eprintln!(
            "splitgate report: {} has no [events] history file to read",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    if !file.exists() {
        eprintln!(
            "splitgate report: {}: no history yet (the proxy writes it once it runs)",
            file.display()
        );
        return ExitCode::FAILURE;
    }
    let built = History::open(&file)
        .map_err(report::ReportError::from)
        .and_then(|h| report::build(&h, days, unix_ms()));
    match built {
        Ok(report) if json => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report::render(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("splitgate report: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            let found = preflight::check(&config, path);
            if let Some(problem) = found.problem {
                println!("{}: {problem}", path.display());
                return ExitCode::FAILURE;
            }
            for warning in found.warnings {
                eprintln!("warning: {}: {warning}", path.display());
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                println!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, path: Option<PathBuf>, banner: Option<String>) -> ExitCode {
    telemetry::init_logging(&config.log);
    // Before any thread starts: the sockets of systemd or of the process replaced.
    let inherited = Inherited::from_env();
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => run_on(runtime, config, path, banner, inherited),
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    }
}

/// `runtime` (the main thread's) runs the control plane; `workers` threads (one per
/// core by default) accept and serve client connections, each on a runtime of its own
/// (see `splitgate::workers`).
fn run_on(
    runtime: tokio::runtime::Runtime,
    config: Config,
    path: Option<PathBuf>,
    banner: Option<String>,
    inherited: Inherited,
) -> ExitCode {
    let count = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let workers = match Workers::start(count) {
        Ok(workers) => workers,
        Err(e) => return fail(&format!("cannot start {count} worker threads: {e}")),
    };
    let runtimes = workers.handles().to_vec();
    let code = runtime.block_on(async move {
        let signals = match signals::Signals::install() {
            Ok(signals) => signals,
            Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
        };
        let server = match Server::start_on(config, path, runtimes, inherited).await {
            Ok(server) => server,
            Err(e) => return fail(&e.to_string()),
        };
        inherit::announce_ready();
        if let Some(banner) = banner {
            println!("{banner}");
        }
        signals::run_until_stopped(server, signals).await;
        ExitCode::SUCCESS
    });
    // The drain is over: what is left on the workers is dropped with them.
    drop(workers);
    code
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("splitgate: cannot start: {reason}");
    ExitCode::FAILURE
}
