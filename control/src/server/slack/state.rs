//! The Slack side of a running server: its settings, its Web API client, wake-ups for the
//! inbox and the courier, and its counters.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::server::slack::settings::SlackSettings;
use crate::server::slack::web::Web;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events stored for processing.
    pub accepted: AtomicU64,
    /// Deliveries of an event already stored.
    pub duplicates: AtomicU64,
    /// Requests refused (bad signature, stale, malformed).
    pub refused: AtomicU64,
    /// Answers (all their parts) delivered.
    pub delivered: AtomicU64,
    /// Deliveries dead-lettered.
    pub dead: AtomicU64,
    /// Web API calls retried (429, 5xx, network).
    pub retried: AtomicU64,
    /// Parts found already posted when a retry looked (not posted again).
    pub recovered: AtomicU64,
}

/// Slack, configured.
#[derive(Debug)]
pub struct Slack {
    /// The checked section.
    pub settings: SlackSettings,
    /// The Web API, through the control plane's gateway.
    pub web: Web,
    /// Wakes the inbox processor.
    pub inbox: Notify,
    /// Wakes the courier.
    pub courier: Notify,
    /// Counters.
    pub counters: Counters,
}

impl Slack {
    /// Slack's part of `/metrics`; `deliveries` are `(state, count)` from the store.
    pub fn render(&self, deliveries: &[(String, i64)]) -> String {
        let c = &self.counters;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP centaur_slack_events_total Slack events by outcome (accepted, duplicate, refused)."
        );
        let _ = writeln!(s, "# TYPE centaur_slack_events_total counter");
        for (k, v) in [
            ("accepted", &c.accepted),
            ("duplicate", &c.duplicates),
            ("refused", &c.refused),
        ] {
            let _ = writeln!(
                s,
                "centaur_slack_events_total{{outcome=\"{k}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP centaur_slack_delivery_total Outbox outcomes since start (delivered, dead, retried, recovered)."
        );
        let _ = writeln!(s, "# TYPE centaur_slack_delivery_total counter");
        for (k, v) in [
            ("delivered", &c.delivered),
            ("dead", &c.dead),
            ("retried", &c.retried),
            ("recovered", &c.recovered),
        ] {
            let _ = writeln!(
                s,
                "centaur_slack_delivery_total{{outcome=\"{k}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP centaur_slack_deliveries Outbox rows by state (active, delivered, dead)."
        );
        let _ = writeln!(s, "# TYPE centaur_slack_deliveries gauge");
        for (state, n) in deliveries {
            let _ = writeln!(s, "centaur_slack_deliveries{{state=\"{state}\"}} {n}");
        }
        s
    }
}
