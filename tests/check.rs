//! `splitgate check` accepts every shipped example and names the key of every problem.

mod common;

use std::process::Command;

use common::process::BINARY;

fn check(path: &std::path::Path) -> (bool, String) {
    let output = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn every_shipped_example_config_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (ok, text) = check(&path);
            assert!(ok, "{}: {text}", path.display());
            // The examples' backend names (`dr-app.internal`) do not resolve here: a
            // warning, not a problem.
            let rest: Vec<&str> = text
                .lines()
                .filter(|l| !(l.starts_with("warning:") && l.contains("does not resolve")))
                .collect();
            assert_eq!(rest, ["ok"], "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 2, "the examples are missing");
}

#[test]
fn a_broken_config_fails_with_every_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"
[[listener]]
bind = "127.0.0.1:80800"
[health]
interval = "fast"
[[site]]
name = "a"
weight = -5
backends = ["http://10.0.0.1/"]
[[site]]
name = "a"
weight = 1
backends = ["10.0.0.2:80"]
"#,
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(!ok);
    for key in [
        "listener[0].bind",
        "health.interval",
        "site[0].weight",
        "site[0].backends[0]",
        "site[1].name",
    ] {
        assert!(
            text.contains(&format!("broken.toml: {key}: ")),
            "{key} not reported:\n{text}"
        );
    }
}

#[test]
fn unknown_keys_syntax_errors_and_missing_files_fail() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[[listener]]\nbind = \"127.0.0.1:1\"\nbindd = \"x\"\n").unwrap();
    let (ok, text) = check(&unknown);
    assert!(!ok && text.contains("bindd"), "{text}");

    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "[[site]\nname = ").unwrap();
    assert!(!check(&syntax).0);

    let (ok, text) = check(&dir.path().join("missing.toml"));
    assert!(!ok && text.contains("cannot read"), "{text}");
}

/// Unknown keys and values of the wrong type are all reported, each by its key and line,
/// together with the problems of meaning, not only the first one the parser meets.
#[test]
fn every_unknown_key_and_wrong_type_is_named_with_the_other_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shapes.toml");
    let text = "workers = \"two\"\n\
        [[listener]]\nbind = 5\ncolour = \"red\"\n\
        [[listener]]\nbind = \"127.0.0.1:99999\"\n\
        [[site]]\nname = \"a\"\nweight = \"x\"\nbackends = [\"127.0.0.1:2\", 7, 8]\npriority = -1\n\
        health = { path = \"/h\", intervall = \"1s\" }\n\
        [[site]]\nname = 5\nweight = 3\nbackends = [\"127.0.0.1:3\"]\nhealth = 1979-05-27\n\
        [nonsense]\na = 1\n";
    std::fs::write(&path, text).unwrap();
    let (ok, report) = check(&path);
    assert!(!ok, "{report}");
    for (key, reason) in [
        ("workers", "invalid type"),
        ("listener[0].bind", "invalid type"),
        ("listener[0].colour", "unknown key (line 4)"),
        ("listener[1].bind", "is not an ip:port"),
        ("site[0].weight", "invalid type"),
        ("site[0].backends[1]", "invalid type"),
        ("site[0].backends[2]", "invalid type"),
        ("site[0].priority", "out of range"),
        ("site[0].health.intervall", "unknown key (line 12)"),
        ("site[1].name", "invalid type"),
        ("site[1].health", "date-time"),
        ("nonsense", "unknown key (line 18)"),
    ] {
        let line = report.lines().find(|l| l.contains(&format!(": {key}: ")));
        assert!(
            line.is_some_and(|l| l.contains(reason)),
            "{key}: {reason} missing in:\n{report}"
        );
    }
    for key in ["site[1].name", "listener[0].bind"] {
        let named = report.lines().filter(|l| l.contains(&format!(": {key}: "))).count();
        assert_eq!(named, 1, "{key} is reported once:\n{report}");
    }
    assert!(!report.contains("missing field"), "no key was missing:\n{report}");
}

/// `check` with a deadline: a FIFO or an endless file must not block it or eat memory.
fn check_within(path: &std::path::Path, limit: std::time::Duration) -> (bool, String) {
    let mut child = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("check of {} still running after {limit:?}", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn endless_files_and_fifos_are_refused_not_read() {
    let limit = std::time::Duration::from_secs(20);
    let (ok, text) = check_within(std::path::Path::new("/dev/zero"), limit);
    assert!(!ok);
    assert!(text.contains("not a regular file"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let (ok, text) = check_within(&fifo, limit);
    assert!(!ok);
    assert!(text.contains("not a regular file"), "{text}");
    let big = dir.path().join("big.toml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(17 * 1024 * 1024).unwrap();
    let (ok, text) = check_within(&big, limit);
    assert!(!ok);
    assert!(text.contains("larger than 16 MiB"), "{text}");
}

#[test]
fn an_access_log_path_that_cannot_be_written_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let readonly = dir.path().join("readonly.log");
    std::fs::write(&readonly, "").unwrap();
    let mut permissions = std::fs::metadata(&readonly).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&readonly, permissions).unwrap();
    for (target, reason) in [
        (dir.path().to_path_buf(), "is a directory"),
        (dir.path().join("missing/access.log"), "does not exist"),
        (readonly, "is read-only"),
    ] {
        let config = dir.path().join("splitgate.toml");
        std::fs::write(
            &config,
            format!(
                "[[listener]]\nbind = \"127.0.0.1:8080\"\n[access_log]\npath = \"{}\"\n[[site]]\nname = \"a\"\nweight = 1\nbackends = [\"127.0.0.1:9001\"]\n",
                target.display()
            ),
        )
        .unwrap();
        let (ok, text) = check(&config);
        assert!(!ok, "{}: {text}", target.display());
        assert!(text.contains("access_log.path") && text.contains(reason), "{text}");
    }
}

#[test]
fn bad_routes_and_affinity_keys_are_named_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        r#"
[[listener]]
bind = "127.0.0.1:8080"
[affinity]
key = "session"
[[site]]
name = "a"
weight = 1
backends = ["127.0.0.1:9001"]
health = { overprovision = 0.5 }
[[route]]
name = "api"
path_prefix = "/api"
weights = { a = 1, nowhere = 2 }
[[route]]
name = "api"
host = "x.example"
[[route]]
name = "everything"
[[route]]
name = "hidden"
host = "*.example.com"
path_prefix = "/z"
affinity = { key = "cookie:" }
"#,
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(!ok);
    for (key, reason) in [
        ("affinity.key", "not an affinity key"),
        ("site[0].health.overprovision", "out of range"),
        ("route[0].weights.nowhere", "no site is named"),
        ("route[1].name", "already the name"),
        ("route[3]", "can never match: route \"everything\""),
        ("route[3].affinity.key", "not a cookie name"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!(": {key}: ")) && l.contains(reason)),
            "{key} ({reason}) missing in:\n{text}"
        );
    }
}

#[test]
fn bad_fleet_events_and_notify_settings_are_named_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        r#"
[[listener]]
bind = "127.0.0.1:8080"
[[site]]
name = "a"
weight = 1
backends = ["127.0.0.1:9001"]
[fleet]
etcd = ["https://127.0.0.1:2379", "etcd:2379"]
prefix = "nope"
username = "u"
[events]
history = "missing-dir/h.db"
keep = "0s"
[[notify]]
url = "ftp://example"
[[notify]]
timeout = "1s"
"#,
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(!ok);
    for key in [
        "fleet.etcd[0]",
        "fleet.etcd[1]",
        "fleet.prefix",
        "fleet.username",
        "events.history",
        "events.keep",
        "notify[0].url",
        "notify[1]",
    ] {
        assert!(text.contains(&format!(": {key}: ")), "{key} missing in:\n{text}");
    }
}

#[test]
fn a_syntax_error_names_the_key_being_read_but_never_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    let text = "[[listener]]\nbind = \"127.0.0.1:8080\"\n[admin]\nbind = \"127.0.0.1:9901\"\n\
                [[site]]\nname = \"a\"\nbackends = [\"127.0.0.1:9001\"]\n\
                [[site]]\nname = \"b\"\nweight = s3cr3t\nbackends = [\"127.0.0.1:9002\"]\n";
    std::fs::write(&path, text).unwrap();
    let (ok, text) = check(&path);
    assert!(!ok);
    assert!(text.contains("site[1].weight (line 10, column 10)"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
}
