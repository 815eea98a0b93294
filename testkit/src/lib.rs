//! Test support shared by the workspace's tests (and by `centaur demo`, which needs a local
//! API to call): a real HTTPS origin with its own CA that records every request, the rule for
//! tests that need root, helpers for reading audit files, and the fake Kubernetes API server. Never a dependency of the
//! gateway or of a library's production code.

pub mod kube;
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

/// A fresh, empty PostgreSQL database for one test, as a URL: the server comes from
/// `CENTAUR_TEST_DATABASE_URL` or `target/postgres.url` (written by `scripts/postgres`, which
/// `scripts/install-deps` runs), the database is made with the real `psql`. Without a server
/// it prints `SKIPPED name` and returns `None`; under `CI` that fails the test instead.
pub fn postgres_db(name: &str) -> Option<String> {
    let from_file = || {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()?
            .to_path_buf();
        std::fs::read_to_string(root.join("target/postgres.url"))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let server = std::env::var("CENTAUR_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(from_file);
    let Some(server) = server else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name}: CI starts PostgreSQL (scripts/postgres), so this test must not be skipped there"
        );
        eprintln!(
            "SKIPPED {name}: no PostgreSQL (run scripts/postgres, or set CENTAUR_TEST_DATABASE_URL)"
        );
        return None;
    };
    let server = server.trim_end_matches('/').to_string();
    let db = format!(
        "t_{}_{:x}",
        name.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(30)
            .collect::<String>()
            .to_lowercase(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id())
    );
    // Tried a few times: a CREATE DATABASE can fail for a moment while another copies the
    // same template, and a test that cannot even start tells nothing.
    let mut errors = Vec::new();
    for attempt in 0..5 {
        let out = std::process::Command::new("psql")
            .arg(format!("{server}/postgres"))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE {db}"))
            .output();
        match out {
            Ok(o) if o.status.success() => return Some(format!("{server}/{db}")),
            Ok(o) => {
                let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
                eprintln!(
                    "{name}: CREATE DATABASE {db} (attempt {}): {e}",
                    attempt + 1
                );
                errors.push(e);
            }
            Err(e) => panic!("{name}: cannot run psql: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(300 << attempt));
    }
    panic!("{name}: psql could not create a database on {server}: {errors:?}")
}
