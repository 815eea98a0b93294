//! Reloading changed workflow files: a fingerprint of the folders' `*.py` files (names, sizes,
//! modification times), compared about once a second. When it changes the engine stops
//! claiming, lets the runs it drives reach their next suspend or end (at most
//! [`DRAIN`]), and starts a new worker that loads the files again.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a reload waits for the runs in flight before it restarts the worker anyway
/// (those runs are given back and replayed by the new worker).
pub const DRAIN: Duration = Duration::from_secs(30);

/// A fingerprint of the `*.py` files under `dirs`.
pub fn fingerprint(dirs: &[PathBuf]) -> u64 {
    let mut files = Vec::new();
    for d in dirs {
        collect(d, &mut files, 0);
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>, depth: u32) {
    if depth > 8 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(m) = e.metadata() else {
            continue;
        };
        if m.is_dir() {
            collect(&p, out, depth + 1);
        } else if p.extension().is_some_and(|x| x == "py") {
            out.push((p, m.len(), m.modified().ok()));
        }
    }
}

/// Where a reload is.
#[derive(Debug, Default)]
pub struct Reload {
    /// The fingerprint the running worker loaded.
    pub loaded: Option<u64>,
    /// Since when the files differ from what the worker loaded.
    pub pending: Option<Instant>,
}

impl Reload {
    /// Notes the files' fingerprint now; `true` while a reload waits for the runs in flight.
    pub fn check(&mut self, now: u64) -> bool {
        match self.loaded {
            Some(l) if l != now && self.pending.is_none() => {
                tracing::info!(
                    "workflows: the workflow files changed; reloading once the runs in flight pause"
                );
                self.pending = Some(Instant::now());
            }
            _ => {}
        }
        self.pending.is_some()
    }

    /// Whether to restart the worker now: nothing in flight, or waited long enough.
    pub fn due(&self, idle: bool) -> bool {
        self.pending
            .is_some_and(|since| idle || since.elapsed() >= DRAIN)
    }
}
