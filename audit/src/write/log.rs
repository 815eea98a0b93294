//! The handle side of the audit log: records travel through a bounded channel to one writer
//! thread (`writer.rs`) that owns the chain and the sinks, so request tasks never wait on disk. When the sinks cannot keep up, senders wait
//! (back-pressure, counted in [`Stats::backpressure_waits`]); a record is never dropped.
//!
//! `batch` durability writes each batch to the OS at once and fsyncs every interval or every
//! N records. `strict` fsyncs every batch before it tells the waiting responses they may go.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use policy::{AuditConfig, Durability};
use tokio::sync::{mpsc, oneshot};

use crate::chain::GENESIS;
use crate::record::Record;
use crate::write::file::FileSink;
use crate::write::sink::{Link, Sink, Stats, StdoutSink};
use crate::write::writer::{Msg, Writer};

/// A handle for emitting audit records; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    /// Swapped by [`AuditLog::relabel`] (a warm sandbox claimed by a thread).
    labels: Arc<ArcSwap<BTreeMap<String, String>>>,
    strict: bool,
    stats: Arc<Stats>,
}

/// A reserved place in the audit queue. A request takes one when it starts, so that emitting
/// its record later never waits and never fails — even from `Drop`.
#[derive(Debug)]
pub struct Slot {
    permit: mpsc::OwnedPermit<Msg>,
    labels: Arc<BTreeMap<String, String>>,
    strict: bool,
    stats: Arc<Stats>,
}

/// Resolves when a record emitted in `strict` mode is on stable storage: `true`, or `false`
/// when writing it failed (the response must then not be released).
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<bool>);

impl Future for Durable {
    type Output = bool;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(false))
    }
}

/// Room for a typical record (about 700 bytes) and the chain members the writer appends
/// (about 170), so that neither side grows the buffer; and under 1 KiB, the smallest of
/// glibc's large chunks, which bypass its per-thread cache and make each allocation sweep
/// the fast bins (at 256 connections, such sweeps were 2% of the gateway's profile).
const LINE_CAPACITY: usize = 1000;

impl Slot {
    /// Emits the record into the reserved place, with the writer's sandbox labels unless it
    /// has its own. It is serialised here, on the request's thread; the writer thread only
    /// chains and writes. In `strict` mode the returned [`Durable`] says when the record is on
    /// disk.
    pub fn emit(self, record: &mut Record) -> Option<Durable> {
        if record.sandbox.is_empty() {
            record.sandbox = self.labels.clone();
        }
        let (tx, rx) = match self.strict {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(Durable(rx)))
            }
            false => (None, None),
        };
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        match record.write_json(&mut line) {
            Ok(()) => {
                self.permit.send(Msg::Record(line, tx));
            }
            Err(e) => {
                tracing::error!(error = %e, "audit record could not be serialised");
                self.stats.write_errors.fetch_add(1, Relaxed);
                if let Some(tx) = tx {
                    let _ = tx.send(false);
                }
            }
        };
        rx
    }
}

/// Records queued. Slots are allocated lazily, so a large bound costs nothing until it is
/// used; reaching it makes new requests wait (back-pressure).
const CAPACITY: usize = 1 << 16;

impl AuditLog {
    /// Opens the configured sinks and starts the writer. Each record gets the configured
    /// labels as its `sandbox`. Must be called within a tokio runtime.
    pub async fn spawn(cfg: &AuditConfig) -> io::Result<AuditLog> {
        let stats = Arc::new(Stats::default());
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        let mut head = Link {
            seq: 0,
            hash: GENESIS,
        };
        if let Some(file) = &cfg.file {
            let (sink, h) = FileSink::open(file, &cfg.sandbox)?;
            head = h;
            sinks.push(Box::new(sink));
        }
        if cfg.stdout {
            sinks.push(Box::new(StdoutSink::new()));
        }
        let env = |k: &str| std::env::var(k).ok();
        if let Some(target) =
            crate::write::otlp::Target::resolve(cfg.otlp.as_ref(), env).map_err(io::Error::other)?
        {
            sinks.push(Box::new(crate::write::otlp::OtlpSink::start(
                target,
                &cfg.sandbox,
                stats.clone(),
            )));
        }
        Self::with_sinks(sinks, head, cfg.durability, cfg.sandbox.clone(), stats)
    }

    /// Starts a writer over the given sinks, continuing the chain from `head`. The seam for
    /// sinks of other components (the control plane's store, phase 2).
    pub fn with_sinks(
        sinks: Vec<Box<dyn Sink>>,
        head: Link,
        durability: Durability,
        labels: BTreeMap<String, String>,
        stats: Arc<Stats>,
    ) -> io::Result<AuditLog> {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let tick = match durability {
            Durability::Batch { interval, .. } => interval.min(Duration::from_secs(1)),
            Durability::Strict => Duration::from_secs(1),
        };
        let weak = tx.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(tx) = weak.upgrade() else { break };
                let _ = tx.try_send(Msg::Tick);
            }
        });
        let writer = Writer::new(sinks, head, durability, stats.clone());
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(AuditLog {
            tx,
            labels: Arc::new(ArcSwap::from_pointee(labels)),
            strict: durability == Durability::Strict,
            stats,
        })
    }

    /// Reserves a place for one record, waiting while the queue is full. `None` only when the
    /// writer has stopped, which the caller must treat as fatal for the request (fail closed).
    pub async fn reserve(&self) -> Option<Slot> {
        let permit = match self.tx.clone().try_reserve_owned() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(tx)) => {
                self.stats.backpressure_waits.fetch_add(1, Relaxed);
                tx.reserve_owned().await.ok()?
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
        };
        Some(Slot {
            permit,
            labels: self.labels.load_full(),
            strict: self.strict,
            stats: self.stats.clone(),
        })
    }

    /// Reserves and emits in one step, waiting for durability in `strict` mode.
    pub async fn emit(&self, mut record: Record) {
        match self.reserve().await {
            Some(slot) => {
                if let Some(d) = slot.emit(&mut record) {
                    d.await;
                }
            }
            None => tracing::error!("audit writer has stopped; a record could not be written"),
        }
    }

    /// Gives the records reserved from now on these sandbox labels (every clone of this
    /// handle included); file headers keep the labels the log was opened with.
    pub fn relabel(&self, labels: BTreeMap<String, String>) {
        self.labels.store(Arc::new(labels));
    }

    /// Waits until every record emitted before this call is written and synced.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use std::sync::atomic::AtomicU64;

    /// A durable sink whose commits wait until the test opens the gate.
    struct Gated(Arc<std::sync::Mutex<()>>, Arc<AtomicU64>);

    impl Sink for Gated {
        fn write(&mut self, _: &[u8], _: Link) -> io::Result<()> {
            Ok(())
        }
        fn commit(&mut self, sync: bool) -> io::Result<()> {
            let _held = self.0.lock();
            if sync {
                self.1.fetch_add(1, Relaxed);
            }
            Ok(())
        }
        fn durable(&self) -> bool {
            true
        }
    }

    // The held lock blocks the writer thread's commit, not this task: that is the point.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn strict_releases_only_after_the_sync_and_batch_never_waits() {
        let gate = Arc::new(std::sync::Mutex::new(()));
        let syncs = Arc::new(AtomicU64::new(0));
        let sink = Gated(gate.clone(), syncs.clone());
        let head = Link {
            seq: 0,
            hash: GENESIS,
        };
        let log = AuditLog::with_sinks(
            vec![Box::new(sink)],
            head,
            Durability::Strict,
            BTreeMap::new(),
            Arc::default(),
        )
        .unwrap();
        let closed = gate.lock().unwrap();
        let slot = log.reserve().await.unwrap();
        let mut durable = slot
            .emit(&mut Record::start("http", "c".into()))
            .expect("strict hands out a Durable");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            futures_poll(&mut durable).is_none(),
            "released before the sync finished"
        );
        drop(closed);
        assert!(durable.await);
        assert_eq!(syncs.load(Relaxed), 1);

        let sink = Gated(gate.clone(), syncs.clone());
        let batch = Durability::Batch {
            interval: Duration::from_secs(60),
            records: 1_000_000,
        };
        let log = AuditLog::with_sinks(
            vec![Box::new(sink)],
            head,
            batch,
            BTreeMap::new(),
            Arc::default(),
        )
        .unwrap();
        let slot = log.reserve().await.unwrap();
        assert!(slot.emit(&mut Record::start("http", "c".into())).is_none());
    }

    fn futures_poll(d: &mut Durable) -> Option<bool> {
        let waker = std::task::Waker::noop();
        match Pin::new(d).poll(&mut Context::from_waker(waker)) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn writes_one_sealed_line_per_record_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let cfg = AuditConfig {
            stdout: false,
            file: Some(policy::AuditFile {
                path: path.to_string_lossy().into(),
                max_bytes: None,
                max_age: None,
                keep: None,
                compress: false,
            }),
            sandbox: [("sandbox_id".to_string(), "s1".to_string())].into(),
            ..AuditConfig::default()
        };
        let log = AuditLog::spawn(&cfg).await.unwrap();
        for i in 0..5000 {
            let mut r = Record::start("http", "127.0.0.1:1".into());
            r.host = format!("h{i}.test");
            log.emit(r).await;
        }
        // A slot reserved before a relabel keeps the labels it was reserved with.
        let early = log.reserve().await.unwrap();
        log.clone()
            .relabel([("thread_key".to_string(), "t1".to_string())].into());
        log.emit(Record::start("http", "127.0.0.1:1".into())).await;
        early.emit(&mut Record::start("http", "127.0.0.1:1".into()));
        log.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5003);
        assert_eq!(lines[5001]["sandbox"]["thread_key"], "t1");
        assert!(lines[5001]["sandbox"].get("sandbox_id").is_none());
        assert_eq!(lines[5002]["sandbox"]["sandbox_id"], "s1");
        assert_eq!(lines[0]["kind"], "header");
        assert_eq!(lines[1]["sandbox"]["sandbox_id"], "s1");
        assert_eq!(lines[1]["seq"], 1);
        assert_eq!(lines[1]["prev_hash"], GENESIS.to_string());
        assert_eq!(lines[2]["prev_hash"], lines[1]["hash"]);
        assert_eq!(lines[5000]["host"], "h4999.test");
        assert_eq!(lines[5000]["seq"], 5000);
    }
}
