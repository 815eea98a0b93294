//! Where sealed records go. The writer hands every sink the same line, in chain order; a sink
//! of the control plane's (phase 2) implements [`Sink`] too.

use std::io::{self, BufWriter, Stdout, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::chain::Hash;

/// A position in the chain: the last record's `seq` and `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Sequence number (0 before the first record).
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
}

/// A destination for sealed records.
pub trait Sink: Send {
    /// Takes one sealed record line (without a newline).
    fn write(&mut self, line: &[u8], link: Link) -> io::Result<()>;
    /// Ends a batch: pass buffered lines on, and with `sync` make them durable.
    fn commit(&mut self, sync: bool) -> io::Result<()>;
    /// Called about once a second and on every sync interval, for time-based work.
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// While the sink is failing, called about once a second to learn whether it works again
    /// (for a file: whatever is still buffered can now be written).
    fn probe(&mut self) -> io::Result<()> {
        self.commit(true)
    }
    /// Whether `commit(true)` puts records on stable storage (strict mode waits for these).
    fn durable(&self) -> bool {
        false
    }
}

/// JSON lines on standard output.
pub struct StdoutSink(BufWriter<Stdout>);

impl StdoutSink {
    /// Standard output, buffered per batch.
    pub fn new() -> Self {
        StdoutSink(BufWriter::with_capacity(64 * 1024, io::stdout()))
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, line: &[u8], _: Link) -> io::Result<()> {
        self.0.write_all(line)?;
        self.0.write_all(b"\n")
    }

    fn commit(&mut self, _: bool) -> io::Result<()> {
        self.0.flush()
    }
}

/// Counters of the audit writer, read by the gateway's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records sealed and handed to the sinks.
    pub written: AtomicU64,
    /// Times a request had to wait for room in the audit queue.
    pub backpressure_waits: AtomicU64,
    /// Sink writes or syncs that failed.
    pub write_errors: AtomicU64,
    /// fsyncs of durable sinks.
    pub syncs: AtomicU64,
    /// Records accepted by the OTLP receiver.
    pub otlp_exported: AtomicU64,
    /// Records the OTLP exporter gave up on (receiver down or too slow); each is logged.
    pub otlp_dropped: AtomicU64,
    /// Records that a sink could not take (a full disk, a closed stdout).
    pub unwritten: AtomicU64,
    /// Times a working sink started failing: one log line each.
    pub incidents: AtomicU64,
    /// A sink is failing now: records are not being written.
    pub failing: AtomicBool,
}

impl Stats {
    /// Whether a sink is failing now (the gateway is then not ready, and may refuse traffic).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}
