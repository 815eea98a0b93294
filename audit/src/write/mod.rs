//! The write side: the audit log the gateway emits into (a bounded queue, one writer thread
//! that links, hashes and writes), and its sinks: stdout, a rotating file with the hash chain
//! carried across files, and OTLP.

pub mod file;
pub mod log;
pub mod otlp;
mod otlp_encode;
pub mod sink;
mod writer;
