//! The `splitgate` command: `run`, `check` and `demo`. Argument parsing only; the work
//! is in the library.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use splitgate::config::{self, Config};
use splitgate::server::Server;
use splitgate::{demo, signals, telemetry};

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
    /// Start built-in demo sites and a proxy in front of them.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => check(&config),
        Command::Run { config: path } => match config::load(&path) {
            Ok(config) => run(config, Some(path), None),
            Err(e) => fail(&e.lines().join("; ")),
        },
        Command::Demo { listen, admin } => {
            telemetry::init_logging(&config::Logging::default());
            let Ok(runtime) = tokio::runtime::Runtime::new() else {
                return fail("cannot start the async runtime");
            };
            match runtime.block_on(demo::demo_config(listen, admin)) {
                Ok(config) => run_on(runtime, config, None, Some(demo::instructions(listen, admin))),
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(_) => {
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
    // Work-stealing: measured against one current-thread runtime at one worker, with no
    // difference beyond noise (README, "Performance").
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.workers > 0 {
        builder.worker_threads(config.workers);
    }
    match builder.enable_all().build() {
        Ok(runtime) => run_on(runtime, config, path, banner),
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    }
}

fn run_on(runtime: tokio::runtime::Runtime, config: Config, path: Option<PathBuf>, banner: Option<String>) -> ExitCode {
    runtime.block_on(async move {
        let signals = match signals::Signals::install() {
            Ok(signals) => signals,
            Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
        };
        let server = match Server::start(config, path).await {
            Ok(server) => server,
            Err(e) => return fail(&e.to_string()),
        };
        if let Some(banner) = banner {
            println!("{banner}");
        }
        signals::run_until_stopped(server, signals).await;
        ExitCode::SUCCESS
    })
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("splitgate: cannot start: {reason}");
    ExitCode::FAILURE
}
