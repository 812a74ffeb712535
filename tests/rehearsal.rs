//! `splitgate drill` against admin APIs that misbehave and sites that do not come
//! back: every call has a time limit, the wait has one, progress is shown while it
//! lasts, and the token can come from the environment or a file.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{black_hole, config, eventually, site, Backend, TestProxy};

const HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 1\nslow_start = \"0s\"\n";

/// `splitgate drill ARGS` with `env`, killed if it runs past 60 s.
async fn drill(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(common::process::BINARY);
    command
        .arg("drill")
        .args(args)
        .env_remove("SPLITGATE_TOKEN")
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("splitgate drill ends by itself")
        .unwrap()
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitgate_drill_gives_up_on_an_admin_that_never_answers() {
    let (addr, _hole) = black_hole().await;
    let admin = addr.to_string();
    let started = std::time::Instant::now();
    let output = drill(
        &["--admin", &admin, "--site", "b", "--for", "1s", "--timeout", "1s"],
        &[],
    )
    .await;
    let (out, err) = texts(&output);
    println!("after {:?}: {out}{err}", started.elapsed());
    assert!(!output.status.success());
    assert!(err.contains("did not answer") && err.contains(&admin), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitgate_drill_shows_progress_and_gives_up_on_a_site_that_never_comes_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    b.kill();
    let down = eventually(Duration::from_secs(5), || {
        proxy.server.site("b").is_some_and(|s| !s.healthy)
    })
    .await;
    assert!(down.is_some(), "b is down");
    let admin = proxy.server.admin_addr().unwrap().to_string();
    let output = drill(
        &["--admin", &admin, "--site", "b", "--for", "300ms", "--wait", "2s"],
        &[],
    )
    .await;
    let (out, err) = texts(&output);
    println!("{out}{err}");
    assert!(!output.status.success(), "{out}{err}");
    assert!(
        out.contains("drill on b") && out.contains("out for"),
        "what clients saw is printed: {out}"
    );
    assert!(err.contains("ended; waiting for b to be back at full weight"), "{err}");
    assert!(err.contains("healthy: false"), "{err}");
    assert!(err.contains("b was not back at full weight"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitgate_drill_takes_the_token_from_the_environment_or_a_file() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n{HEALTH}{}{}",
        site("a", 50, 0, &[a.addr]),
        site("b", 50, 0, &[b.addr])
    ))
    .await;
    let admin = proxy.server.admin_addr().unwrap().to_string();
    let args = ["--admin", admin.as_str(), "--site", "b", "--for", "200ms"];
    let refused = drill(&args, &[]).await;
    assert!(!refused.status.success());
    assert!(texts(&refused).1.contains("401"), "{:?}", texts(&refused));

    let from_env = drill(&args, &[("SPLITGATE_TOKEN", "s3cret")]).await;
    assert!(from_env.status.success(), "{:?}", texts(&from_env));
    assert!(texts(&from_env).0.contains("drill on b"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret\n").unwrap();
    let path = file.display().to_string();
    let from_file = drill(&[&args[..], &["--token-file", &path]].concat(), &[]).await;
    assert!(from_file.status.success(), "{:?}", texts(&from_file));
    assert!(texts(&from_file).0.contains("drill on b"));
}
