//! Counters, lock-free, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use audit::Action;

const LISTENERS: [&str; 3] = ["https", "http", "tunnel"];
const ACTIONS: [(Action, &str); 4] = [
    (Action::Allow, "allow"),
    (Action::Reject, "reject"),
    (Action::Error, "error"),
    (Action::ClientCancel, "client_cancel"),
];

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: [AtomicU64; 3],
    active: AtomicU64,
    exchanges: [[AtomicU64; 4]; 3],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// DNS queries answered, by kind: intercepted, passthrough, static.
    pub dns_answered: [AtomicU64; 3],
    /// DNS packets dropped as malformed.
    pub dns_malformed: AtomicU64,
    /// Policy reloads that succeeded.
    pub reloads_ok: AtomicU64,
    /// Policy reloads refused as invalid.
    pub reloads_failed: AtomicU64,
}

fn listener_index(l: &str) -> usize {
    LISTENERS.iter().position(|x| *x == l).unwrap_or(0)
}

impl Metrics {
    /// A connection was accepted.
    pub fn accepted(&self, listener: &str) {
        self.connections[listener_index(listener)].fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
    }

    /// A connection closed.
    pub fn closed(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// An exchange finished.
    pub fn exchange(&self, listener: &str, action: Action, bytes_in: u64, bytes_out: u64) {
        let a = ACTIONS.iter().position(|(x, _)| *x == action).unwrap_or(0);
        self.exchanges[listener_index(listener)][a].fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }

    /// Total exchanges so far.
    pub fn exchanges_total(&self) -> u64 {
        self.exchanges
            .iter()
            .flatten()
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// Active client connections.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Prometheus text exposition.
    pub fn render(&self, leaves: u64, audit: &audit::Stats) -> String {
        let mut s = String::with_capacity(2048);
        let _ = writeln!(
            s,
            "# HELP centaur_gateway_connections_total Client connections accepted.\n# TYPE centaur_gateway_connections_total counter"
        );
        for (i, l) in LISTENERS.iter().enumerate() {
            let _ = writeln!(
                s,
                "centaur_gateway_connections_total{{listener=\"{l}\"}} {}",
                self.connections[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP centaur_gateway_connections_active Client connections open now.\n# TYPE centaur_gateway_connections_active gauge\ncentaur_gateway_connections_active {}",
            self.active.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP centaur_gateway_requests_total Requests, tunnels and refused connections, by outcome.\n# TYPE centaur_gateway_requests_total counter"
        );
        for (i, l) in LISTENERS.iter().enumerate() {
            for (j, (_, a)) in ACTIONS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "centaur_gateway_requests_total{{listener=\"{l}\",action=\"{a}\"}} {}",
                    self.exchanges[i][j].load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP centaur_gateway_body_bytes_total Body bytes relayed.\n# TYPE centaur_gateway_body_bytes_total counter"
        );
        let _ = writeln!(
            s,
            "centaur_gateway_body_bytes_total{{direction=\"in\"}} {}",
            self.bytes_in.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "centaur_gateway_body_bytes_total{{direction=\"out\"}} {}",
            self.bytes_out.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP centaur_gateway_dns_queries_total DNS questions answered.\n# TYPE centaur_gateway_dns_queries_total counter"
        );
        for (i, k) in ["intercepted", "passthrough", "static"].iter().enumerate() {
            let _ = writeln!(
                s,
                "centaur_gateway_dns_queries_total{{answer=\"{k}\"}} {}",
                self.dns_answered[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP centaur_gateway_dns_malformed_total DNS packets dropped as malformed.\n# TYPE centaur_gateway_dns_malformed_total counter\ncentaur_gateway_dns_malformed_total {}",
            self.dns_malformed.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP centaur_gateway_policy_reloads_total Policy reloads.\n# TYPE centaur_gateway_policy_reloads_total counter"
        );
        let _ = writeln!(
            s,
            "centaur_gateway_policy_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "centaur_gateway_policy_reloads_total{{result=\"invalid\"}} {}",
            self.reloads_failed.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP centaur_gateway_leaf_certificates Leaf certificates cached.\n# TYPE centaur_gateway_leaf_certificates gauge\ncentaur_gateway_leaf_certificates {leaves}"
        );
        for (name, help, v) in [
            ("records_total", "Audit records written.", &audit.written),
            (
                "backpressure_waits_total",
                "Requests that waited for room in the audit queue.",
                &audit.backpressure_waits,
            ),
            (
                "write_errors_total",
                "Audit sink writes or syncs that failed.",
                &audit.write_errors,
            ),
            ("syncs_total", "fsyncs of the audit file.", &audit.syncs),
            (
                "otlp_exported_total",
                "Audit records accepted by the OTLP receiver.",
                &audit.otlp_exported,
            ),
            (
                "otlp_dropped_total",
                "Audit records the OTLP exporter gave up on.",
                &audit.otlp_dropped,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP centaur_gateway_audit_{name} {help}\n# TYPE centaur_gateway_audit_{name} counter\ncentaur_gateway_audit_{name} {}",
                v.load(Relaxed)
            );
        }
        s
    }
}
