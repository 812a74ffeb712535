//! Turns the file types into the checked model, collecting every problem (with its key
//! path and what would be valid) instead of stopping at the first.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::file::{AccessLogFile, DnsFile, FileConfig, LimitsFile, LogFile};
use super::model::{
    AccessLog, Admin, Config, Dns, Failback, HealthCheck, Limits, Listener, LogFormat, LogTarget, Logging, Retry, Site,
    Timeouts,
};
use super::problems::{Problem, Problems};
use super::sites::{health_check, overprovision, validate_site, DEFAULT_OVERPROVISION};
use super::{drills, events, failback, fleet, routes, tls};

/// Checks a parsed file; returns the model or every problem found. Relative TLS file
/// paths are resolved against `base` (the config file's directory).
pub fn validate(file: &FileConfig, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    let workers = problems.count("workers", file.workers, 0, (0, 1024)) as usize;

    if file.listener.is_empty() {
        problems.add("listener", "at least one [[listener]] with a bind address is required");
    }
    let mut listeners = Vec::new();
    for (i, listener) in file.listener.iter().enumerate() {
        let key = format!("listener[{i}].bind");
        if let Some(bind) = problems.socket_addr(&key, &listener.bind) {
            if listeners.iter().any(|l: &Listener| l.bind == bind) {
                problems.add(key, format!("{bind} is bound by an earlier listener"));
            } else {
                let tls = listener.tls.as_ref().and_then(|t| {
                    tls::listener_tls(t, base)
                        .map_err(|list| {
                            list.into_iter()
                                .for_each(|(k, r)| problems.add(format!("listener[{i}].{k}"), r))
                        })
                        .ok()
                });
                listeners.push(Listener {
                    bind,
                    tls,
                    proxy_protocol: listener.proxy_protocol,
                });
            }
        }
    }

    let admin = file.admin.as_ref().and_then(|admin| {
        let bind = problems.socket_addr("admin.bind", &admin.bind)?;
        if bind.port() != 0 && listeners.iter().any(|l| l.bind == bind) {
            problems.add("admin.bind", format!("{bind} is already a proxy listener"));
        }
        if admin.token.as_deref() == Some("") {
            problems.add(
                "admin.token",
                "must not be empty; remove the key to run without a token",
            );
        }
        Some(Admin {
            bind,
            token: admin.token.clone(),
            max_connections: problems.count(
                "admin.max_connections",
                admin.max_connections,
                Admin::DEFAULT_MAX_CONNECTIONS,
                (1, 10_000),
            ) as usize,
        })
    });

    let timeouts = validate_timeouts(file, &mut problems);
    let retry = validate_retry(file, &mut problems);
    let limits = validate_limits(&file.limits, &mut problems);
    let health = health_check(&file.health, &HealthCheck::default(), "health", &mut problems);
    let overprovision = overprovision(&file.health, DEFAULT_OVERPROVISION, "health", &mut problems);
    let failback = match &file.failback {
        Some(own) => failback::failback(own, &Failback::default(), "failback", &mut problems),
        None => Failback::default(),
    };

    if file.site.is_empty() {
        problems.add("site", "at least one [[site]] is required");
    }
    let mut sites: Vec<Site> = Vec::new();
    // Sets, not scans: a config with 100 000 sites checks in linear time.
    let mut names: HashSet<String> = HashSet::new();
    for (i, site) in file.site.iter().enumerate() {
        if let Some(site) = validate_site(i, site, (&health, overprovision, &failback), base, &mut problems) {
            if !names.insert(site.name.clone()) {
                problems.add(
                    format!("site[{i}].name"),
                    format!(
                        "\"{}\" is already the name of another site; names must be unique",
                        site.name
                    ),
                );
            }
            sites.push(site);
        }
    }

    let access_log = file
        .access_log
        .as_ref()
        .map(|a| validate_access_log(a, base, &mut problems));
    let log = validate_log(file.log.as_ref(), &mut problems);
    let affinity = file
        .affinity
        .as_ref()
        .and_then(|a| routes::affinity("affinity", a, &mut problems));
    let routes = routes::validate_routes(&file.route, &sites, &mut problems);
    let events = events::validate_events(file.events.as_ref(), base, &mut problems);
    let notify = events::validate_notify(&file.notify, base, &mut problems);
    let fleet = file
        .fleet
        .as_ref()
        .map(|f| fleet::validate_fleet(f, base, &mut problems));
    let safety = failback::safety(file.safety.as_ref(), file.site.len(), &mut problems);
    let mut trusted_forwarders = Vec::new();
    for (i, text) in file.client_ip.iter().flat_map(|c| c.trusted.iter()).enumerate() {
        match text.parse::<super::model::Cidr>() {
            Ok(cidr) => trusted_forwarders.push(cidr),
            Err(reason) => problems.add(format!("client_ip.trusted[{i}]"), reason),
        }
    }
    let state_path = match file.state.as_ref().and_then(|s| s.path.as_deref()) {
        Some("") => {
            problems.add("state.path", "must name a file");
            None
        }
        Some(path) => Some(base.join(path)),
        None => fleet.as_ref().and_then(|f| f.state.clone()),
    };
    if let Some(path) = &state_path {
        if let Err(reason) = super::check_writable(path) {
            let key = if file.state.is_some() {
                "state.path"
            } else {
                "fleet.state"
            };
            problems.add(key, reason.to_string());
        }
    }

    let drills = drills::validate_drills(file.drills.as_ref(), &file.drill, &names, &mut problems);
    let dns = validate_dns(file.dns.as_ref(), &mut problems);

    if problems.0.is_empty() {
        Ok(Config {
            workers,
            listeners,
            admin,
            timeouts,
            retry,
            limits,
            sites,
            access_log,
            log,
            affinity,
            routes,
            events,
            notify,
            fleet,
            state_path,
            safety,
            trusted_forwarders,
            drills,
            dns,
        })
    } else {
        Err(problems.0)
    }
}

fn validate_dns(file: Option<&DnsFile>, problems: &mut Problems) -> Dns {
    let d = Dns::default();
    let Some(file) = file else {
        return d;
    };
    // Bounded: a name server is asked for each name at most ten times a second.
    let refresh = problems.duration("dns.refresh", file.refresh.as_ref(), d.refresh);
    if refresh < Duration::from_millis(100) {
        problems.add("dns.refresh", format!("{refresh:?} is too short; use at least 100ms"));
    }
    let servers = file
        .servers
        .iter()
        .enumerate()
        .filter_map(|(i, text)| problems.socket_addr(&format!("dns.servers[{i}]"), text))
        .collect();
    Dns { refresh, servers }
}

fn log_format(key: &str, text: Option<&str>, problems: &mut Problems) -> LogFormat {
    match text {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            problems.add(key, format!("\"{other}\" is not a format; use \"text\" or \"json\""));
            LogFormat::Text
        }
    }
}

fn validate_access_log(file: &AccessLogFile, base: &Path, problems: &mut Problems) -> AccessLog {
    let target = match file.path.as_str() {
        "-" | "stdout" => LogTarget::Stdout,
        "" => {
            problems.add("access_log.path", "must name a file, or \"-\" for stdout");
            LogTarget::Stdout
        }
        path => {
            let path = base.join(path);
            match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                    problems.add("access_log.path", format!("directory {} does not exist", dir.display()));
                }
                _ if path.is_dir() => {
                    problems.add(
                        "access_log.path",
                        format!("{} is a directory; name a file in it", path.display()),
                    );
                }
                _ if std::fs::metadata(&path).is_ok_and(|m| m.permissions().readonly()) => {
                    problems.add("access_log.path", format!("{} is read-only", path.display()));
                }
                _ => {}
            }
            LogTarget::File(path)
        }
    };
    AccessLog {
        target,
        format: log_format("access_log.format", file.format.as_deref(), problems),
        queue: problems.count("access_log.queue", file.queue, 65_536, (1, 1_000_000)) as usize,
    }
}

fn validate_log(file: Option<&LogFile>, problems: &mut Problems) -> Logging {
    let Some(file) = file else {
        return Logging::default();
    };
    let level = file.level.clone().unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        problems.add(
            "log.level",
            format!("\"{level}\" is not a level or filter; use error, warn, info, debug or trace"),
        );
    }
    Logging {
        level,
        format: log_format("log.format", file.format.as_deref(), problems),
    }
}

fn validate_timeouts(file: &FileConfig, problems: &mut Problems) -> Timeouts {
    let t = &file.timeouts;
    let d = Timeouts::default();
    let timeouts = Timeouts {
        connect: problems.duration("timeouts.connect", t.connect.as_ref(), d.connect),
        response: problems.duration("timeouts.response", t.response.as_ref(), d.response),
        client_header: problems.duration("timeouts.client_header", t.client_header.as_ref(), d.client_header),
        idle: problems.duration("timeouts.idle", t.idle.as_ref(), d.idle),
        drain: problems.duration("timeouts.drain", t.drain.as_ref(), d.drain),
        stop_delay: problems.duration("timeouts.stop_delay", t.stop_delay.as_ref(), d.stop_delay),
    };
    for (key, value) in [
        ("timeouts.connect", timeouts.connect),
        ("timeouts.response", timeouts.response),
        ("timeouts.client_header", timeouts.client_header),
        ("timeouts.idle", timeouts.idle),
    ] {
        if value.is_zero() {
            problems.add(key, "must be greater than zero");
        }
    }
    // A connect is part of a try, so it never outlasts the response timeout.
    let connect = timeouts.connect.min(timeouts.response);
    Timeouts { connect, ..timeouts }
}

fn validate_limits(file: &LimitsFile, problems: &mut Problems) -> Limits {
    let d = Limits::default();
    let body = match file.max_body_bytes {
        None => d.max_body_bytes,
        Some(v) if v >= 0 => v as u64,
        Some(v) => {
            problems.add(
                "limits.max_body_bytes",
                format!("{v} is out of range; use 0 (unlimited) or more"),
            );
            d.max_body_bytes
        }
    };
    Limits {
        max_connections: problems.count(
            "limits.max_connections",
            file.max_connections,
            d.max_connections as u32,
            (1, 1_000_000),
        ) as usize,
        // hyper reads at least 8 KiB at a time: a smaller head limit cannot be kept.
        max_header_bytes: problems.count(
            "limits.max_header_bytes",
            file.max_header_bytes,
            d.max_header_bytes as u32,
            (8_192, 1_048_576),
        ) as usize,
        max_headers: problems.count("limits.max_headers", file.max_headers, d.max_headers as u32, (1, 1_000)) as usize,
        max_body_bytes: body,
        h2_max_streams: problems.count(
            "limits.h2_max_streams",
            file.h2_max_streams,
            d.h2_max_streams,
            (1, 10_000),
        ),
    }
}

fn validate_retry(file: &FileConfig, problems: &mut Problems) -> Retry {
    let r = &file.retry;
    let d = Retry::default();
    let budget = match r.budget {
        Some(b) if !(0.0..=1.0).contains(&b) => {
            problems.add(
                "retry.budget",
                format!("{b} is out of range; use a fraction from 0.0 to 1.0"),
            );
            d.budget
        }
        Some(b) => b,
        None => d.budget,
    };
    Retry {
        attempts: problems.count("retry.attempts", r.attempts, d.attempts, (1, 10)),
        budget,
        min_per_second: problems.count("retry.min_per_second", r.min_per_second, d.min_per_second, (0, 100_000)),
    }
}
