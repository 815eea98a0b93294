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
        self.render_traffic(&mut s);
        self.render_dns(&mut s);
        family(&mut s, "policy_reloads_total", "counter", "Policy reloads.");
        let reloads = [("ok", &self.reloads_ok), ("invalid", &self.reloads_failed)];
        for (result, n) in reloads {
            let labels = format!("result=\"{result}\"");
            sample(&mut s, "policy_reloads_total", &labels, n.load(Relaxed));
        }
        let help = "Leaf certificates cached.";
        family(&mut s, "leaf_certificates", "gauge", help);
        sample(&mut s, "leaf_certificates", "", leaves);
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
            (
                "unwritten_total",
                "Audit records a sink could not take (full disk, closed stdout).",
                &audit.unwritten,
            ),
            (
                "incidents_total",
                "Times an audit sink started failing.",
                &audit.incidents,
            ),
        ] {
            let name = format!("audit_{name}");
            family(&mut s, &name, "counter", help);
            sample(&mut s, &name, "", v.load(Relaxed));
        }
        let help = "1 while an audit sink is failing (records are not being written).";
        family(&mut s, "audit_failing", "gauge", help);
        sample(&mut s, "audit_failing", "", u64::from(audit.is_failing()));
        s
    }

    /// Connections, exchanges by outcome, body bytes.
    fn render_traffic(&self, s: &mut String) {
        family(
            s,
            "connections_total",
            "counter",
            "Client connections accepted.",
        );
        for (i, l) in LISTENERS.iter().enumerate() {
            let labels = format!("listener=\"{l}\"");
            sample(
                s,
                "connections_total",
                &labels,
                self.connections[i].load(Relaxed),
            );
        }
        family(
            s,
            "connections_active",
            "gauge",
            "Client connections open now.",
        );
        sample(s, "connections_active", "", self.active.load(Relaxed));
        let help = "Requests, tunnels and refused connections, by outcome.";
        family(s, "requests_total", "counter", help);
        for (i, l) in LISTENERS.iter().enumerate() {
            for (j, (_, a)) in ACTIONS.iter().enumerate() {
                let labels = format!("listener=\"{l}\",action=\"{a}\"");
                sample(
                    s,
                    "requests_total",
                    &labels,
                    self.exchanges[i][j].load(Relaxed),
                );
            }
        }
        family(s, "body_bytes_total", "counter", "Body bytes relayed.");
        let bytes = [("in", &self.bytes_in), ("out", &self.bytes_out)];
        for (direction, n) in bytes {
            let labels = format!("direction=\"{direction}\"");
            sample(s, "body_bytes_total", &labels, n.load(Relaxed));
        }
    }

    /// DNS answers by kind, malformed packets.
    fn render_dns(&self, s: &mut String) {
        family(s, "dns_queries_total", "counter", "DNS questions answered.");
        for (i, k) in ["intercepted", "passthrough", "static"].iter().enumerate() {
            let labels = format!("answer=\"{k}\"");
            sample(
                s,
                "dns_queries_total",
                &labels,
                self.dns_answered[i].load(Relaxed),
            );
        }
        let help = "DNS packets dropped as malformed.";
        family(s, "dns_malformed_total", "counter", help);
        sample(
            s,
            "dns_malformed_total",
            "",
            self.dns_malformed.load(Relaxed),
        );
    }
}

/// The `# HELP` and `# TYPE` lines of the metric `centaur_gateway_<name>`.
fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        s,
        "# HELP centaur_gateway_{name} {help}\n# TYPE centaur_gateway_{name} {kind}"
    );
}

/// One sample of `centaur_gateway_<name>`, with its labels (`k="v",…`) if any.
fn sample(s: &mut String, name: &str, labels: &str, value: u64) {
    let _ = if labels.is_empty() {
        writeln!(s, "centaur_gateway_{name} {value}")
    } else {
        writeln!(s, "centaur_gateway_{name}{{{labels}}} {value}")
    };
}
