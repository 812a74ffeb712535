use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::health::HealthRegistry;

pub(super) fn config(sites: &[(&str, u32, u32, usize)]) -> Arc<Config> {
    config_with(sites, "")
}

/// Sites as (name, weight, priority, backends), plus more config text after them.
pub(super) fn config_with(sites: &[(&str, u32, u32, usize)], extra: &str) -> Arc<Config> {
    let mut text = String::from("[[listener]]\nbind = \"127.0.0.1:1\"\n");
    let mut port = 10_000;
    for (name, weight, priority, backends) in sites {
        let addrs: Vec<String> = (0..*backends)
            .map(|_| {
                port += 1;
                format!("\"127.0.0.1:{port}\"")
            })
            .collect();
        text.push_str(&format!(
            "[[site]]\nname = \"{name}\"\nweight = {weight}\npriority = {priority}\nbackends = [{}]\n",
            addrs.join(",")
        ));
    }
    text.push_str(extra);
    Arc::new(crate::config::parse(Path::new("t"), &text).unwrap())
}

pub(super) fn routing(config: Arc<Config>, registry: &HealthRegistry) -> Routing {
    Routing::standalone(config, registry)
}

fn tally(r: &Routing, n: usize) -> Vec<usize> {
    let mut counts = vec![0; r.sites.len()];
    for _ in 0..n {
        counts[r.pick(&[]).unwrap().site] += 1;
    }
    counts
}

#[test]
fn first_tries_follow_the_weights_exactly() {
    let r = routing(
        config(&[("a", 50, 0, 1), ("b", 30, 0, 1), ("c", 20, 0, 1)]),
        &HealthRegistry::new(),
    );
    assert_eq!(tally(&r, 1000), vec![500, 300, 200]);
}

#[test]
fn drained_and_standby_sites_get_nothing() {
    let r = routing(
        config(&[("a", 1, 0, 1), ("drained", 0, 0, 1), ("standby", 5, 1, 1)]),
        &HealthRegistry::new(),
    );
    assert_eq!(tally(&r, 100), vec![100, 0, 0]);
    assert_eq!(r.mode, Mode::Normal { priority: 0 });
}

#[test]
fn backends_within_a_site_take_turns() {
    let r = routing(config(&[("a", 1, 0, 3)]), &HealthRegistry::new());
    let mut per_backend = [0; 3];
    for _ in 0..30 {
        per_backend[r.pick(&[]).unwrap().backend] += 1;
    }
    assert_eq!(per_backend, [10, 10, 10]);
}

#[test]
fn a_dead_tier_fails_over_to_the_standby_tier() {
    let registry = HealthRegistry::new();
    let cfg = config(&[("a", 1, 0, 1), ("b", 1, 0, 1), ("dr", 1, 1, 1)]);
    let first = routing(cfg.clone(), &registry);
    for site in &first.sites[..2] {
        site.backends[0].record_connect_failure(&"refused");
    }
    let r = routing(cfg, &registry);
    assert_eq!(r.mode, Mode::Normal { priority: 1 });
    assert_eq!(tally(&r, 10), vec![0, 0, 10]);
}

#[test]
fn with_nothing_healthy_the_lowest_tier_is_tried_anyway() {
    let registry = HealthRegistry::new();
    let cfg = config(&[("a", 1, 0, 1), ("dr", 1, 1, 1)]);
    for site in &routing(cfg.clone(), &registry).sites {
        site.backends[0].record_connect_failure(&"refused");
    }
    let r = routing(cfg, &registry);
    assert_eq!(r.mode, Mode::Panic { priority: 0 });
    assert_eq!(tally(&r, 4), vec![4, 0]);
}

#[test]
fn all_sites_drained_means_no_route() {
    let r = routing(config(&[("a", 0, 0, 1)]), &HealthRegistry::new());
    assert_eq!(r.mode, Mode::NoRoute);
    assert_eq!(r.pick(&[]), None);
}

#[test]
fn retries_avoid_backends_already_tried() {
    let r = routing(
        config(&[("a", 9, 0, 2), ("b", 1, 0, 1), ("dr", 1, 1, 1)]),
        &HealthRegistry::new(),
    );
    let mut tried = vec![];
    while let Some(pick) = r.pick(&tried) {
        assert!(!tried.contains(&pick));
        tried.push(pick);
    }
    assert_eq!(tried.len(), 4, "every backend once, the standby last");
    assert_eq!(tried[3].site, 2);
}

#[test]
fn many_threads_picking_at_once_keep_the_split_exact() {
    let r = Arc::new(routing(
        config(&[("a", 7, 0, 1), ("b", 3, 0, 1)]),
        &HealthRegistry::new(),
    ));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || tally(&r, 10_000))
        })
        .collect();
    let mut total = [0; 2];
    for t in threads {
        let counts = t.join().unwrap();
        total[0] += counts[0];
        total[1] += counts[1];
    }
    assert_eq!(total, [56_000, 24_000]);
}

#[test]
fn a_recovered_site_ramps_up_during_slow_start() {
    let registry = HealthRegistry::new();
    let cfg = config(&[("a", 100, 0, 1), ("b", 100, 0, 1)]);
    let b = routing(cfg.clone(), &registry).sites[1].backends[0].clone();
    b.record_connect_failure("refused");
    b.record_probe(true, "ok");
    b.record_probe(true, "ok");
    assert!(b.is_healthy());
    let r = routing(cfg, &registry);
    assert!(r.sites[1].ramping);
    assert!(
        r.sites[1].effective_weight < 10,
        "just back: {}",
        r.sites[1].effective_weight
    );
    assert_eq!(r.sites[0].effective_weight, 100);
}

#[test]
fn a_site_with_more_backends_than_a_u16_counts_uses_every_one() {
    let n: usize = 65_540;
    let addrs: Vec<String> = (0..n)
        .map(|i| format!("\"127.{}.{}.{}:80\"", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:1\"\n[[site]]\nname = \"big\"\nweight = 1\nbackends = [{}]\n",
        addrs.join(",")
    );
    let config = Arc::new(crate::config::parse(Path::new("t"), &text).unwrap());
    let r = routing(config, &HealthRegistry::new());
    assert_eq!(r.sites[0].usable.len(), n);
    let last = (0..n).filter_map(|_| r.pick(&[])).map(|p| p.backend).max();
    assert_eq!(last, Some(n - 1), "the last backend gets its turn");
}
