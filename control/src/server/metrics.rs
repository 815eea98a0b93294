//! `/metrics`: executions by state, queue depth, event append → SSE delivery latency, SSE
//! clients, in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the delivery latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The server's own counters (the store is asked for the rest at scrape time).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open event streams.
    pub sse_clients: AtomicI64,
    delivery: [AtomicU64; BUCKETS.len() + 1],
    delivery_sum_us: AtomicU64,
}

impl Metrics {
    /// One event delivered `d` after its append committed.
    pub fn observe_delivery(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.delivery[i].fetch_add(1, Ordering::Relaxed);
        self.delivery_sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The text format; `executions` are `(status, count)` from the store.
    pub fn render(&self, executions: &[(String, i64)]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP centaur_executions Executions by status.");
        let _ = writeln!(s, "# TYPE centaur_executions gauge");
        let mut queued = 0;
        for (status, n) in executions {
            let _ = writeln!(s, "centaur_executions{{status=\"{status}\"}} {n}");
            if status == "queued" {
                queued = *n;
            }
        }
        let _ = writeln!(
            s,
            "# HELP centaur_queue_depth Executions waiting for a worker."
        );
        let _ = writeln!(s, "# TYPE centaur_queue_depth gauge");
        let _ = writeln!(s, "centaur_queue_depth {queued}");
        let _ = writeln!(s, "# HELP centaur_sse_clients Open event streams.");
        let _ = writeln!(s, "# TYPE centaur_sse_clients gauge");
        let _ = writeln!(
            s,
            "centaur_sse_clients {}",
            self.sse_clients.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP centaur_event_delivery_seconds From an event's commit to its SSE frame being written."
        );
        let _ = writeln!(s, "# TYPE centaur_event_delivery_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.delivery[i].load(Ordering::Relaxed);
            let _ = writeln!(
                s,
                "centaur_event_delivery_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.delivery[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "centaur_event_delivery_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.delivery_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "centaur_event_delivery_seconds_sum {sum}");
        let _ = writeln!(s, "centaur_event_delivery_seconds_count {cumulative}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_delivery(Duration::from_micros(300));
        m.observe_delivery(Duration::from_millis(3));
        m.observe_delivery(Duration::from_secs(9));
        let text = m.render(&[("queued".into(), 2), ("running".into(), 1)]);
        assert!(text.contains("centaur_event_delivery_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("centaur_event_delivery_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("centaur_event_delivery_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("centaur_queue_depth 2"));
        assert!(text.contains("centaur_executions{status=\"running\"} 1"));
    }
}
