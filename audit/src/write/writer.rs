//! The writer thread: it owns the hash chain and the sinks, writes each batch of records the
//! handles queued, commits (and in `strict` mode fsyncs) it before telling the waiting
//! responses, and treats a failing sink as one incident: logged when it starts and when it
//! ends, probed about once a second meanwhile.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use policy::Durability;
use tokio::sync::{mpsc, oneshot};

use crate::chain;
use crate::write::sink::{Link, Sink, Stats};

/// Most records written between two commits.
const MAX_BATCH: usize = 4096;

/// Batch mode: after a batch smaller than `LINGER_BELOW`, wait this long for more.
const LINGER: Duration = Duration::from_millis(2);
const LINGER_BELOW: usize = 256;

pub(crate) enum Msg {
    /// A record serialised by the request that made it, without the chain members.
    Record(Vec<u8>, Option<oneshot::Sender<bool>>),
    Flush(oneshot::Sender<()>),
    Tick,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

pub(crate) struct Writer {
    sinks: Vec<Box<dyn Sink>>,
    head: Link,
    durability: Durability,
    stats: Arc<Stats>,
    /// A sink has been failing since then; `unwritten` counted at its start.
    incident: Option<(Instant, u64)>,
    /// A sink failed during the batch being written.
    batch_failed: bool,
}

impl Writer {
    pub(crate) fn new(
        sinks: Vec<Box<dyn Sink>>,
        head: Link,
        durability: Durability,
        stats: Arc<Stats>,
    ) -> Writer {
        Writer {
            sinks,
            head,
            durability,
            stats,
            incident: None,
            batch_failed: false,
        }
    }

    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let (interval, every) = match self.durability {
            Durability::Batch { interval, records } => (interval, records),
            Durability::Strict => (Duration::ZERO, 1),
        };
        let mut waiters = Vec::new();
        let mut flushes = Vec::new();
        let (mut unsynced, mut last_sync) = (0usize, Instant::now());
        while let Some(first) = rx.blocking_recv() {
            let (mut next, mut n, mut tick, mut ok) = (Some(first), 0, false, true);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(line, waiter) => {
                        ok &= self.write(line);
                        waiters.extend(waiter);
                        n += 1;
                        unsynced += 1;
                    }
                    Msg::Flush(done) => flushes.push(done),
                    Msg::Tick => tick = true,
                }
                if n < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let sync = !waiters.is_empty()
                || !flushes.is_empty()
                || unsynced >= every
                || (unsynced > 0 && last_sync.elapsed() >= interval);
            ok &= self.commit(sync);
            if sync {
                unsynced = 0;
                last_sync = Instant::now();
            }
            for w in waiters.drain(..) {
                let _ = w.send(ok);
            }
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            if tick {
                self.tick();
            }
            self.settle(n > 0 || tick);
            // Batch mode lingers a moment after a small batch so that the next one is larger:
            // one wakeup and one write(2) per batch instead of per record. No response waits
            // on these records; a flush waits at most the linger longer.
            if self.durability != Durability::Strict && n < LINGER_BELOW && rx.is_empty() {
                std::thread::sleep(LINGER.min(interval));
            }
        }
        self.commit(true);
    }

    /// Seals one serialised record onto the chain and hands it to every sink. A record a
    /// durable sink (the file) could not take is taken off the chain again, so the file's
    /// chain stays whole across a full disk: the records lost are counted and logged instead.
    fn write(&mut self, mut line: Vec<u8>) -> bool {
        let prev = self.head;
        let seq = prev.seq + 1;
        chain::link(&mut line, seq, &prev.hash);
        let hash = chain::seal(&mut line, &prev.hash);
        self.head = Link { seq, hash };
        let (mut ok, mut taken) = (true, true);
        for i in 0..self.sinks.len() {
            if let Err(e) = self.sinks[i].write(&line, self.head) {
                ok &= !self.sinks[i].durable();
                taken = false;
                self.failed("write", &e);
            }
        }
        if !ok {
            self.head = prev;
        }
        match taken {
            true => self.stats.written.fetch_add(1, Relaxed),
            false => self.stats.unwritten.fetch_add(1, Relaxed),
        };
        ok
    }

    /// Time-based work of the sinks; while a sink is failing, a probe of whether it works
    /// again (records may have stopped coming: a gateway that refuses traffic makes none).
    fn tick(&mut self) {
        for i in 0..self.sinks.len() {
            if let Err(e) = self.sinks[i].tick() {
                self.failed("rotate", &e);
            }
        }
        if self.incident.is_some() && !self.batch_failed {
            for i in 0..self.sinks.len() {
                if let Err(e) = self.sinks[i].probe() {
                    self.failed("probe", &e);
                }
            }
        }
    }

    /// After a batch that did some work: a failing sink that took all of it has recovered.
    fn settle(&mut self, worked: bool) {
        let failed = std::mem::take(&mut self.batch_failed);
        if !worked || failed {
            return;
        }
        if let Some((since, unwritten)) = self.incident.take() {
            self.stats.failing.store(false, Relaxed);
            let lost = self.stats.unwritten.load(Relaxed) - unwritten;
            tracing::warn!(
                unwritten = lost,
                seconds = since.elapsed().as_secs(),
                "audit: the sinks write again; records made while they failed are not in the trail"
            );
        }
    }

    fn commit(&mut self, sync: bool) -> bool {
        let mut ok = true;
        for i in 0..self.sinks.len() {
            match self.sinks[i].commit(sync) {
                Ok(()) if sync && self.sinks[i].durable() => {
                    self.stats.syncs.fetch_add(1, Relaxed);
                }
                Ok(()) => {}
                Err(e) => {
                    ok &= !self.sinks[i].durable();
                    self.failed("commit", &e);
                }
            }
        }
        ok
    }

    /// Counts a sink failure. The first of an incident is logged (one line per incident,
    /// however many records it costs); the end of the incident is logged by `settle`.
    fn failed(&mut self, what: &str, e: &io::Error) {
        self.stats.write_errors.fetch_add(1, Relaxed);
        self.batch_failed = true;
        if self.incident.is_some() {
            tracing::debug!(error = %e, "audit {what} failed");
            return;
        }
        self.incident = Some((Instant::now(), self.stats.unwritten.load(Relaxed)));
        self.stats.incidents.fetch_add(1, Relaxed);
        self.stats.failing.store(true, Relaxed);
        tracing::error!(
            error = %e,
            "audit {what} failed: records are not being written until the sink recovers \
             (the gateway is not ready meanwhile)"
        );
    }
}
