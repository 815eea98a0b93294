//! Test support shared by the workspace's tests (and by `centaur demo`, which needs a local
//! API to call): a real HTTPS origin with its own CA that records every request, the rule for
//! tests that need root, and helpers for reading audit files. Never a dependency of the
//! gateway or of a library's production code.

pub mod origin;

use std::path::{Path, PathBuf};

pub use origin::Origin;

/// Whether a test that needs root (namespaces, nftables, cgroups) can run. Without root it
/// prints `SKIPPED name: why` and returns false; under `CI` a missing root fails the test
/// instead, so CI never skips silently.
pub fn root_or_skip(name: &str, why: &str) -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name}: CI runs as root, so this test must not be skipped there"
        );
        eprintln!("SKIPPED {name}: {why}");
    }
    root
}

/// The audit files in `dir` (`audit.jsonl` and its rotated files), sorted by name.
pub fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("audit.jsonl"))
        })
        .collect();
    v.sort();
    v
}
