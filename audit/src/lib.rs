//! The audit trail: the record schema, the hash chain, the writer and its sinks (stdout, a
//! rotating file, OTLP), and the reading side behind `centaur audit` (query, tail, stats,
//! verify).
//!
//! Must not depend on gateway internals: the gateway fills a [`Record`] and hands it to an
//! [`AuditLog`].

pub mod chain;
pub mod read;
mod record;
pub mod write;

pub use record::{
    Action, Annotations, McpMessage, Placed, Record, TlsInfo, Transform, format_ts, now_rfc3339,
};
pub use write::file::{Footer, Header, rotated};
pub use write::log::{AuditLog, Durable, Slot};
pub use write::otlp::{Protocol, Target};
pub use write::sink::{Link, Sink, Stats, StdoutSink};
