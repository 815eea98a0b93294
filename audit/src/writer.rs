//! The writer task: records travel through a bounded channel to one task that owns the sink,
//! so request tasks never block on disk. When the sink is slow, senders wait (back-pressure);
//! a record is never dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use crate::record::Record;

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines appended to a file.
    File(PathBuf),
}

impl Output {
    /// `stdout` or a path.
    pub fn parse(s: &str) -> Output {
        if s == "stdout" || s == "-" {
            Output::Stdout
        } else {
            Output::File(s.into())
        }
    }
}

enum Msg {
    Record(Box<Record>),
    Flush(oneshot::Sender<()>),
}

/// A handle for emitting audit records; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    labels: Arc<BTreeMap<String, String>>,
}

/// A reserved place in the audit queue. A request takes one when it starts, so that emitting
/// its record later never waits and never fails — even from `Drop`.
#[derive(Debug)]
pub struct Slot {
    permit: mpsc::OwnedPermit<Msg>,
    labels: Arc<BTreeMap<String, String>>,
}

impl Slot {
    /// Emits the record into the reserved place. The writer adds the sandbox labels.
    pub fn emit(self, mut record: Record) {
        if record.sandbox.is_empty() && !self.labels.is_empty() {
            record.sandbox = (*self.labels).clone();
        }
        self.permit.send(Msg::Record(Box::new(record)));
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

/// Records in flight or queued. Slots are allocated lazily, so a large bound costs nothing
/// until it is used; reaching it makes new requests wait (back-pressure).
const CAPACITY: usize = 1 << 16;

impl AuditLog {
    /// Opens the output and starts the writer task. Each record gets `labels` as its `sandbox`.
    pub async fn spawn(
        output: &Output,
        labels: BTreeMap<String, String>,
    ) -> std::io::Result<AuditLog> {
        let sink: Box<dyn AsyncWrite + Send + Unpin> = match output {
            Output::Stdout => Box::new(tokio::io::stdout()),
            Output::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            ),
        };
        let (tx, rx) = mpsc::channel(CAPACITY);
        tokio::spawn(write_loop(BufWriter::new(sink), rx));
        Ok(AuditLog {
            tx,
            labels: Arc::new(labels),
        })
    }

    /// Reserves a place for one record, waiting while the queue is full. `None` only when the
    /// writer has stopped, which the caller must treat as fatal for the request (fail closed).
    pub async fn reserve(&self) -> Option<Slot> {
        let permit = self.tx.clone().reserve_owned().await.ok()?;
        Some(Slot {
            permit,
            labels: self.labels.clone(),
        })
    }

    /// Reserves and emits in one step.
    pub async fn emit(&self, record: Record) {
        match self.reserve().await {
            Some(slot) => slot.emit(record),
            None => tracing::error!("audit writer has stopped; a record could not be written"),
        }
    }

    /// Waits until every record emitted before this call is written and flushed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut out: BufWriter<W>, mut rx: mpsc::Receiver<Msg>) {
    let mut line = Vec::with_capacity(1024);
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Record(r) => {
                line.clear();
                if serde_json::to_writer(&mut line, &r).is_err() {
                    tracing::error!("audit record could not be serialised");
                    continue;
                }
                line.push(b'\n');
                if let Err(e) = out.write_all(&line).await {
                    tracing::error!(error = %e, "audit write failed");
                }
            }
            Msg::Flush(done) => {
                let _ = out.flush().await;
                let _ = done.send(());
                continue;
            }
        }
        // Batch: flush when the queue is momentarily empty.
        if rx.is_empty()
            && let Err(e) = out.flush().await
        {
            tracing::error!(error = %e, "audit flush failed");
        }
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    #[tokio::test]
    async fn writes_one_json_line_per_record_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let labels = [("sandbox_id".to_string(), "s1".to_string())].into();
        let log = AuditLog::spawn(&Output::File(path.clone()), labels)
            .await
            .unwrap();
        for i in 0..5000 {
            let mut r = Record::start("http", "127.0.0.1:1".into());
            r.host = format!("h{i}.test");
            log.emit(r).await;
        }
        log.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5000);
        assert_eq!(lines[0]["sandbox"]["sandbox_id"], "s1");
        assert_eq!(lines[4999]["host"], "h4999.test");
    }
}
