//! The audit record and its writer: one JSON object per line, off the request path.
//!
//! Owns the record schema (iron-proxy's field names plus ours) and the sinks. Must not depend
//! on gateway internals: the gateway fills a [`Record`] and hands it to an [`AuditLog`].

mod record;
mod writer;

pub use record::{Action, Record, TlsInfo, Transform, now_rfc3339};
pub use writer::{AuditLog, Output, Slot};
