//! How keys and traffic spread: affinity by weighted rendezvous, degraded sites and
//! spill to the standby tier, and per-route splits (the targets of issue 14).

use super::tests::{config, config_with, routing};
use super::*;
use crate::health::HealthRegistry;

const KEYS: u64 = 100_000;

fn key(n: u64) -> u64 {
    affinity::hash(format!("user-{n}").as_bytes())
}

/// Where each of `KEYS` keys goes in the default split.
fn placement(r: &Routing) -> Vec<Pick> {
    (0..KEYS).map(|n| r.default.by_key(key(n), &r.sites).unwrap()).collect()
}

fn shares(picks: &[Pick], sites: usize) -> Vec<f64> {
    let mut counts = vec![0usize; sites];
    picks.iter().for_each(|p| counts[p.site] += 1);
    counts.iter().map(|&c| 100.0 * c as f64 / picks.len() as f64).collect()
}

fn assert_near(actual: &[f64], expected: &[f64], points: f64) {
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() <= points,
            "shares {actual:?}, expected {expected:?} within {points}"
        );
    }
}

fn kill(backend: &Backend) {
    backend.record_connect_failure("refused");
    assert!(!backend.is_healthy());
}

fn revive(backend: &Backend) {
    backend.record_probe(true, "ok");
    backend.record_probe(true, "ok");
    assert!(backend.is_healthy());
}

/// First tries of the default split, counted per site.
fn traffic(r: &Routing, n: usize) -> Vec<f64> {
    let mut counts = vec![0usize; r.sites.len()];
    for _ in 0..n {
        counts[r.pick(&[]).unwrap().site] += 1;
    }
    counts.iter().map(|&c| 100.0 * c as f64 / n as f64).collect()
}

#[test]
fn keys_spread_by_the_weights_within_one_point() {
    let r = routing(config(&[("a", 70, 0, 1), ("b", 30, 0, 1)]), &HealthRegistry::new());
    assert_near(&shares(&placement(&r), 2), &[70.0, 30.0], 1.0);
    let r = routing(
        config(&[("a", 50, 0, 1), ("b", 30, 0, 1), ("c", 20, 0, 1)]),
        &HealthRegistry::new(),
    );
    assert_near(&shares(&placement(&r), 3), &[50.0, 30.0, 20.0], 1.0);
}

#[test]
fn a_weight_change_moves_only_the_keys_it_requires_towards_the_gainer() {
    let registry = HealthRegistry::new();
    let before = placement(&routing(config(&[("a", 50, 0, 1), ("b", 50, 0, 1)]), &registry));
    let after = placement(&routing(config(&[("a", 60, 0, 1), ("b", 40, 0, 1)]), &registry));
    let moved: Vec<(Pick, Pick)> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| (*b, *a))
        .collect();
    let percent = 100.0 * moved.len() as f64 / KEYS as f64;
    assert!(percent <= 11.0, "{percent}% of keys moved for a 10-point shift");
    assert!(
        moved.iter().all(|(from, to)| from.site == 1 && to.site == 0),
        "a key moved away from the gainer"
    );
}

#[test]
fn a_site_down_moves_only_its_keys_and_they_all_come_back() {
    let registry = HealthRegistry::new();
    let cfg = config_with(
        &[("a", 40, 0, 2), ("b", 30, 0, 2), ("c", 30, 0, 2)],
        "[health]\nslow_start = \"0s\"\n",
    );
    let healthy = routing(cfg.clone(), &registry);
    let before = placement(&healthy);
    for backend in &healthy.sites[2].backends {
        kill(backend);
    }
    let down = placement(&routing(cfg.clone(), &registry));
    for (b, d) in before.iter().zip(&down) {
        if b.site == 2 {
            assert_ne!(d.site, 2);
        } else {
            assert_eq!(b, d, "a key of a healthy site moved");
        }
    }
    for backend in &healthy.sites[2].backends {
        revive(backend);
    }
    assert_eq!(
        placement(&routing(cfg, &registry)),
        before,
        "every key is back on its site and backend"
    );
}

#[test]
fn a_key_keeps_its_site_and_backend_across_threads_and_reloads() {
    let registry = HealthRegistry::new();
    let cfg = config(&[("a", 50, 0, 3), ("b", 50, 0, 3)]);
    let first = Arc::new(routing(cfg.clone(), &registry));
    let expected: Vec<Pick> = (0..1000)
        .map(|n| first.default.by_key(key(n), &first.sites).unwrap())
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let r = first.clone();
            std::thread::spawn(move || {
                (0..1000)
                    .map(|n| r.default.by_key(key(n), &r.sites).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), expected);
    }
    // A reload that changes only a timeout.
    let same = routing(
        config_with(&[("a", 50, 0, 3), ("b", 50, 0, 3)], "[timeouts]\nresponse = \"5s\"\n"),
        &registry,
    );
    let again: Vec<Pick> = (0..1000)
        .map(|n| same.default.by_key(key(n), &same.sites).unwrap())
        .collect();
    assert_eq!(again, expected);
}

#[test]
fn a_degraded_site_gets_its_health_scaled_share() {
    let registry = HealthRegistry::new();
    let cfg = config(&[("a", 50, 0, 4), ("b", 50, 0, 1)]);
    let healthy = routing(cfg.clone(), &registry);
    for backend in &healthy.sites[0].backends[..3] {
        kill(backend);
    }
    let r = routing(cfg, &registry);
    // 50 x 1.4 x 0.25 = 17.5 against 50: 25.9%.
    assert_near(&traffic(&r, 10_000), &[25.9, 74.1], 0.5);
    assert_near(&shares(&placement(&r), 2), &[25.9, 74.1], 1.0);
    assert_eq!(r.sites[0].healthy_fraction, 0.25);
    assert_eq!((r.sites[0].effective_weight, r.sites[1].effective_weight), (18, 50));
}

#[test]
fn a_degraded_tier_spills_to_the_standby_and_takes_it_back() {
    let registry = HealthRegistry::new();
    let cfg = config_with(
        &[("a", 50, 0, 2), ("b", 50, 0, 2), ("dr", 100, 1, 1)],
        "[health]\nslow_start = \"0s\"\n",
    );
    let healthy = routing(cfg.clone(), &registry);
    assert_near(&traffic(&healthy, 10_000), &[50.0, 50.0, 0.0], 0.0);
    kill(&healthy.sites[0].backends[0]);
    kill(&healthy.sites[1].backends[1]);
    let degraded = routing(cfg.clone(), &registry);
    // Each active site carries 1.4 x 1/2 = 70%: the standby takes the other 30%.
    assert_near(&traffic(&degraded, 10_000), &[35.0, 35.0, 30.0], 0.5);
    assert_eq!(degraded.mode, Mode::Normal { priority: 0 });
    revive(&healthy.sites[0].backends[0]);
    revive(&healthy.sites[1].backends[1]);
    assert_near(&traffic(&routing(cfg, &registry), 10_000), &[50.0, 50.0, 0.0], 0.0);
}

#[test]
fn a_site_down_altogether_gives_its_share_to_its_peers_not_the_standby() {
    let registry = HealthRegistry::new();
    let cfg = config(&[("a", 50, 0, 1), ("b", 50, 0, 1), ("dr", 100, 1, 1)]);
    let healthy = routing(cfg.clone(), &registry);
    kill(&healthy.sites[0].backends[0]);
    assert_near(&traffic(&routing(cfg, &registry), 1000), &[0.0, 100.0, 0.0], 0.0);
}

#[test]
fn overprovision_is_per_site_and_one_means_strictly_proportional() {
    let registry = HealthRegistry::new();
    let strict = "[[site]]\nname = \"c\"\nweight = 50\nhealth = { overprovision = 1.0 }\n\
        backends = [\"127.0.0.1:91\", \"127.0.0.1:92\", \"127.0.0.1:93\", \"127.0.0.1:94\"]\n";
    let cfg = config_with(&[("a", 50, 0, 4)], strict);
    let healthy = routing(cfg.clone(), &registry);
    kill(&healthy.sites[0].backends[0]);
    kill(&healthy.sites[1].backends[0]);
    // a: 1.4 x 3/4 >= 1, full weight 50; c: 1.0 x 3/4, 37.5.
    let r = routing(cfg, &registry);
    assert_eq!((r.sites[0].capacity, r.sites[1].capacity), (1.0, 0.75));
    assert_near(&traffic(&r, 7000), &[57.14, 42.86], 0.1);
}

const ROUTES: &str = r#"
[[route]]
name = "batch"
path_prefix = "/batch"
weights = { a = 0, b = 100 }
[[route]]
name = "admin-host"
host = "*.admin.example"
weights = { a = 1, b = 1 }
affinity = { key = "header:x-user" }
"#;

fn plan_of(r: &Routing, host: &str, uri: &str, user: Option<&str>) -> Plan {
    let mut builder = http::Request::get(uri).header(http::header::HOST, host);
    if let Some(user) = user {
        builder = builder.header("x-user", user);
    }
    let (parts, _) = builder.body(()).unwrap().into_parts();
    r.plan(&parts, [127, 0, 0, 1].into())
}

#[test]
fn routes_match_by_path_segment_and_host_pattern_in_order() {
    let r = routing(
        config_with(&[("a", 70, 0, 1), ("b", 30, 0, 1)], ROUTES),
        &HealthRegistry::new(),
    );
    let name = |host, uri| r.route_name(&plan_of(&r, host, uri, None)).map(str::to_string);
    assert_eq!(name("x", "/batch"), Some("batch".into()));
    assert_eq!(name("x", "/batch/jobs?id=1"), Some("batch".into()));
    assert_eq!(name("x", "/batchx"), None);
    assert_eq!(name("eu.ADMIN.example:8443", "/"), Some("admin-host".into()));
    assert_eq!(
        name("admin.example", "/"),
        None,
        "*.domain does not take the bare domain"
    );
    assert_eq!(
        name("eu.admin.example", "/batch"),
        Some("batch".into()),
        "first match wins"
    );
}

#[test]
fn each_route_splits_by_its_own_weights_and_a_drain_reaches_every_route() {
    let registry = HealthRegistry::new();
    let cfg = config_with(&[("a", 70, 0, 1), ("b", 30, 0, 1)], ROUTES);
    let r = routing(cfg.clone(), &registry);
    let batch = plan_of(&r, "x", "/batch", None);
    assert!((0..100).all(|_| r.pick_for(&batch, &[]).unwrap().site == 1));
    let mut to_a = 0;
    for _ in 0..100 {
        to_a += usize::from(r.pick_for(&Plan::default(), &[]).unwrap().site == 0);
    }
    assert_eq!(to_a, 70);
    // A raised override changes the default split only; a drain empties b everywhere.
    let build = |overrides: &[(&str, u32)]| {
        Routing::build(Inputs {
            generation: 2,
            config: cfg.clone(),
            backends: r.backends(),
            decisions: &Decisions {
                weights: overrides.iter().map(|(s, w)| (s.to_string(), *w)).collect(),
                ..Decisions::default()
            },
            now_ms: 0,
        })
    };
    let raised = build(&[("a", 100)]);
    assert_eq!(raised.routes[0].weights, vec![0, 100]);
    let drained = build(&[("b", 0)]);
    assert_eq!(drained.routes[0].weights, vec![0, 0]);
    assert_eq!(drained.pick_for(&batch, &[]), None, "the batch route has nowhere to go");
    assert_eq!(drained.pick_for(&Plan::default(), &[]).unwrap().site, 0);
}

#[test]
fn a_route_with_affinity_keeps_a_user_on_one_backend() {
    let r = routing(
        config_with(&[("a", 50, 0, 3), ("b", 50, 0, 3)], ROUTES),
        &HealthRegistry::new(),
    );
    let plan = plan_of(&r, "eu.admin.example", "/", Some("alice"));
    assert!(plan.key().is_some());
    let first = r.pick_for(&plan, &[]).unwrap();
    assert!((0..50).all(|_| r.pick_for(&plan, &[]) == Some(first)));
    // Without the key, the route's round-robin: both sites in turn.
    let anonymous = plan_of(&r, "eu.admin.example", "/", None);
    let sites: std::collections::HashSet<usize> = (0..4).map(|_| r.pick_for(&anonymous, &[]).unwrap().site).collect();
    assert_eq!(sites.len(), 2);
}
