//! The abort watch of a running drill: every 250 ms it reads the client answers the
//! proxy counted (`telemetry::ClientAnswers`) and ends the drill at once, as
//! `"aborted"` with the reason, when more than its `abort_5xx` of the answers of the
//! last 5 s were 5xx (with at least 20 answers), or when any request got a proxy error
//! while a site of its split was drilled. It only reads counters; it never touches
//! the request path, and it stops with its drill.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::drills::Ending;
use super::Control;
use crate::config::Share;
use crate::telemetry::{AnswerCounts, ClientAnswers};

/// How often the watch reads the counters.
const TICK: Duration = Duration::from_millis(250);
/// The window the 5xx share is taken over.
const WINDOW: Duration = Duration::from_secs(5);
/// Fewer answers than this in the window say nothing about a share.
const MIN_ANSWERS: u64 = 20;

impl Control {
    /// The answers the proxy counts for the abort watch.
    pub fn answers(&self) -> &Arc<ClientAnswers> {
        &self.answers
    }

    /// Watches drill `id` on `site` until it ends, and aborts it when clients suffer.
    pub(super) fn watch_drill(self: &Arc<Self>, site: String, id: u64) {
        let control = Arc::downgrade(self);
        let watch = self.answers.watch();
        let answers = self.answers.clone();
        tokio::spawn(async move {
            let _counting = watch;
            let start = answers.counts();
            let mut samples: VecDeque<(Instant, AnswerCounts)> = VecDeque::from([(Instant::now(), start)]);
            let mut tick = tokio::time::interval_at(Instant::now() + TICK, TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(control) = control.upgrade() else {
                    return;
                };
                let Some(limit) = control.abort_limit(&site, id) else {
                    return;
                };
                let (now, counts) = (Instant::now(), answers.counts());
                while samples.len() > 1 && now.duration_since(samples[1].0) >= WINDOW {
                    samples.pop_front();
                }
                let window = counts.since(samples[0].1);
                samples.push_back((now, counts));
                if let Some(abort) = judge(window, counts.since(start), limit) {
                    tracing::warn!(site, drill = id, reason = %abort["reason"], "drill aborted: clients suffered from it");
                    let _ = control.finish_drill(&site, Some(id), Ending::Aborted(abort));
                    return;
                }
            }
        });
    }

    /// The abort share of drill `id` on `site` while it runs (its own, else the config's).
    fn abort_limit(&self, site: &str, id: u64) -> Option<Share> {
        let state = self.lock_state();
        let drill = state.drills.get(site).filter(|d| d.id == id)?;
        Some(drill.abort_5xx.unwrap_or(self.current().config.drills.abort_5xx))
    }
}

/// Why a drill must end now, as the `drill_ended` event's fields: `window` is what
/// clients were answered in the last 5 s, `since_start` since the drill began.
fn judge(window: AnswerCounts, since_start: AnswerCounts, limit: Share) -> Option<Map<String, Value>> {
    let reason = if since_start.drill_errors > 0 {
        format!(
            "{} requests got a proxy error (502/504) while the site was drilled",
            since_start.drill_errors
        )
    } else if window.answered >= MIN_ANSWERS && limit.exceeded_by(window.server_errors, window.answered) {
        format!(
            "{} of {} client responses in the last 5 s were 5xx ({:.1}%), more than abort_5xx {limit}",
            window.server_errors,
            window.answered,
            100.0 * window.server_errors as f64 / window.answered as f64
        )
    } else {
        return None;
    };
    let mut detail = Map::new();
    detail.insert("reason".into(), reason.into());
    detail.insert("abort_5xx".into(), limit.to_string().into());
    detail.insert("responses".into(), window.answered.into());
    detail.insert("server_errors".into(), window.server_errors.into());
    detail.insert("proxy_errors".into(), since_start.drill_errors.into());
    Some(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(answered: u64, server_errors: u64, drill_errors: u64) -> AnswerCounts {
        AnswerCounts {
            answered,
            server_errors,
            drill_errors,
        }
    }

    #[test]
    fn a_5xx_share_past_the_limit_aborts_once_enough_answers_are_in() {
        let one = Share::parse("1%").unwrap();
        assert!(
            judge(counts(19, 19, 0), counts(19, 19, 0), one).is_none(),
            "too few to judge"
        );
        let abort = judge(counts(20, 20, 0), counts(20, 20, 0), one).expect("aborted");
        assert!(abort["reason"].as_str().unwrap().contains("20 of 20"), "{abort:?}");
        assert_eq!(abort["abort_5xx"], "1%");
        assert!(
            judge(counts(1000, 10, 0), counts(1000, 10, 0), one).is_none(),
            "exactly 1%"
        );
        assert!(judge(counts(1000, 11, 0), counts(1000, 11, 0), one).is_some());
        assert!(judge(counts(1000, 40, 0), counts(5000, 40, 0), Share::parse("5%").unwrap()).is_none());
    }

    #[test]
    fn one_proxy_error_of_a_drilled_split_aborts() {
        let abort = judge(counts(1, 1, 1), counts(1, 1, 1), Share::parse("100%").unwrap()).expect("aborted");
        assert!(abort["reason"].as_str().unwrap().contains("proxy error"), "{abort:?}");
        assert_eq!(abort["proxy_errors"], 1);
    }
}
