//! Checks `[events]` (the history file and how long it keeps) and `[[notify]]`
//! (webhooks and commands told of every failover event).

use std::path::Path;
use std::time::Duration;

use super::file::{EventsFile, NotifyFile, SiteTlsFile};
use super::model::{EventsConfig, Notify, NotifyTarget};
use super::problems::Problems;
use super::tls;

pub(super) fn validate_events(file: Option<&EventsFile>, base: &Path, problems: &mut Problems) -> EventsConfig {
    let default = EventsConfig::default();
    let Some(file) = file else {
        return default;
    };
    let history = file.history.as_deref().and_then(|path| {
        let path = base.join(path);
        match path.parent() {
            _ if path.is_dir() => {
                problems.add(
                    "events.history",
                    format!("{} is a directory; name a file in it", path.display()),
                );
                None
            }
            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                problems.add("events.history", format!("directory {} does not exist", dir.display()));
                None
            }
            _ => Some(path),
        }
    });
    EventsConfig {
        history,
        keep: problems.duration_within(
            "events.keep",
            file.keep.as_ref(),
            default.keep,
            Duration::from_secs(10 * 366 * 86_400),
        ),
    }
}

pub(super) fn validate_notify(files: &[NotifyFile], base: &Path, problems: &mut Problems) -> Vec<Notify> {
    let mut notify = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let key = format!("notify[{i}]");
        let target = match (&file.url, &file.command) {
            (Some(url), None) => webhook(&format!("{key}.url"), url, file.ca.as_deref(), base, problems),
            (None, Some(command)) if !command.is_empty() && !command[0].is_empty() => {
                Some(NotifyTarget::Command(command.clone()))
            }
            (None, Some(_)) => {
                problems.add(
                    format!("{key}.command"),
                    "needs a program: [\"/path/to/program\", \"arg\", ...]",
                );
                None
            }
            _ => {
                problems.add(
                    key.clone(),
                    "needs exactly one of url = \"http://...\" or command = [...]",
                );
                None
            }
        };
        if file.token.as_deref() == Some("") {
            problems.add(format!("{key}.token"), "must not be empty; remove the key to send none");
        }
        let timeout = problems.duration_within(
            &format!("{key}.timeout"),
            file.timeout.as_ref(),
            Duration::from_secs(2),
            Duration::from_secs(300),
        );
        let queue = problems.count(&format!("{key}.queue"), file.queue, 1024, (1, 100_000)) as usize;
        if let Some(target) = target {
            notify.push(Notify {
                target,
                token: file.token.clone(),
                timeout,
                queue,
            });
        }
    }
    notify
}

fn webhook(key: &str, text: &str, ca: Option<&str>, base: &Path, problems: &mut Problems) -> Option<NotifyTarget> {
    let uri = match text.parse::<http::Uri>() {
        Ok(uri) if uri.authority().is_some_and(|a| a.port_u16() != Some(0)) => uri,
        _ => {
            problems.add(
                key,
                format!("\"{text}\" is not an http:// or https:// URL, e.g. \"http://127.0.0.1:9000/hooks\""),
            );
            return None;
        }
    };
    match uri.scheme_str() {
        Some("http") => Some(NotifyTarget::Webhook(uri, None)),
        Some("https") => {
            let file = SiteTlsFile {
                ca: ca.map(str::to_string),
                server_name: None,
                client_cert: None,
                client_key: None,
                protocol: None,
            };
            match tls::site_tls(&file, base) {
                Ok(settings) => Some(NotifyTarget::Webhook(uri, Some(settings))),
                Err(list) => {
                    let prefix = key.trim_end_matches(".url");
                    list.into_iter()
                        .for_each(|(k, r)| problems.add(format!("{prefix}.{}", k.trim_start_matches("tls.")), r));
                    None
                }
            }
        }
        _ => {
            problems.add(key, format!("\"{text}\" must start with http:// or https://"));
            None
        }
    }
}
