//! The audit trail: the record schema, the hash chain, the writer and its sinks (stdout, a
//! rotating file, OTLP), and the reading side behind `centaur audit` (query, tail, stats,
//! verify).
//!
//! Must not depend on gateway internals: the gateway fills a [`Record`] and hands it to an
//! [`AuditLog`].

pub mod chain;
mod expr;
mod file;
pub mod filter;
mod otlp;
mod otlp_encode;
pub mod query;
pub mod read;
mod record;
pub mod row;
mod sink;
pub mod stats;
pub mod tail;
pub mod verify;
mod writer;

pub use file::{Footer, Header, rotated};
pub use otlp::{Protocol, Target};
pub use record::{Action, Annotations, Placed, Record, TlsInfo, Transform, format_ts, now_rfc3339};
pub use sink::{Link, Sink, StdoutSink};
pub use writer::{AuditLog, Durable, Slot, Stats};
