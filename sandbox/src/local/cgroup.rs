//! Resource limits for a run: a cgroup named by the run id, on cgroup v2 where the unified
//! hierarchy is mounted at `/sys/fs/cgroup`, else in the v1 `pids`, `memory` and `cpu`
//! hierarchies. Every process of the run is in it, so it is also how teardown finds them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::host::Error;

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];

/// Limits for one run; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Bytes of memory (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub memory: Option<u64>,
    /// Processes and threads (`pids.max`).
    pub pids: Option<u64>,
    /// CPUs' worth of time per period (`cpu.cfs_quota_us` / `cpu.max`).
    pub cpus: Option<f64>,
}

/// Which cgroup version this machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// The version in use, or `None` when `/sys/fs/cgroup` has neither.
pub fn version() -> Option<Version> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Some(Version::V2)
    } else if Path::new(ROOT).join("pids").is_dir() {
        Some(Version::V1)
    } else {
        None
    }
}

/// The directories of run `id`: one on v2, one per controller present on v1.
pub fn dirs(id: &str) -> Vec<PathBuf> {
    match version() {
        Some(Version::V2) => vec![Path::new(ROOT).join("centaur").join(id)],
        Some(Version::V1) => V1_CONTROLLERS
            .iter()
            .map(|c| Path::new(ROOT).join(c).join("centaur").join(id))
            .filter(|d| d.parent().and_then(Path::parent).is_some_and(Path::is_dir))
            .collect(),
        None => Vec::new(),
    }
}

/// Creates run `id`'s cgroup with `limits`; returns the `cgroup.procs` files a process must
/// join.
pub fn create(id: &str, limits: &Limits) -> Result<Vec<PathBuf>, Error> {
    let version = version().ok_or(Error::NoCgroups)?;
    if version == Version::V2 {
        // Controllers must be enabled on every level above the run's group.
        let parent = Path::new(ROOT).join("centaur");
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        for dir in [Path::new(ROOT), parent.as_path()] {
            let f = dir.join("cgroup.subtree_control");
            fs::write(&f, "+pids +memory +cpu").map_err(|e| Error::io(&f, e))?;
        }
    }
    let dirs = dirs(id);
    for d in &dirs {
        fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    for (file, value) in settings(version, limits) {
        if let Some(d) = dirs.iter().find(|d| controller_of(version, d, file)) {
            let f = d.join(file);
            fs::write(&f, &value).map_err(|e| Error::io(&f, e))?;
        }
    }
    Ok(dirs.iter().map(|d| d.join("cgroup.procs")).collect())
}

/// The files and values that set `limits`.
fn settings(version: Version, limits: &Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(p) = limits.pids {
        out.push(("pids.max", p.to_string()));
    }
    let period = 100_000u64;
    let quota = limits.cpus.map(|c| ((c * period as f64) as u64).max(1000));
    match version {
        Version::V1 => {
            if let Some(m) = limits.memory {
                out.push(("memory.limit_in_bytes", m.to_string()));
            }
            if let Some(q) = quota {
                out.push(("cpu.cfs_period_us", period.to_string()));
                out.push(("cpu.cfs_quota_us", q.to_string()));
            }
        }
        Version::V2 => {
            if let Some(m) = limits.memory {
                out.push(("memory.max", m.to_string()));
            }
            if let Some(q) = quota {
                out.push(("cpu.max", format!("{q} {period}")));
            }
        }
    }
    out
}

fn controller_of(version: Version, dir: &Path, file: &str) -> bool {
    match version {
        Version::V2 => true,
        Version::V1 => {
            let controller = file.split('.').next().unwrap_or_default();
            dir.ancestors().nth(2).and_then(Path::file_name) == Some(controller.as_ref())
        }
    }
}

/// The processes in run `id`'s cgroup.
pub fn pids(id: &str) -> Vec<i32> {
    let Some(d) = dirs(id).into_iter().next() else {
        return Vec::new();
    };
    fs::read_to_string(d.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Sends `sig` to every process of run `id` but `except`.
pub fn signal(id: &str, sig: Signal, except: Option<u32>) {
    for pid in pids(id) {
        if u32::try_from(pid).ok() == except {
            continue;
        }
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = kill_process(pid, sig);
        }
    }
}

/// Kills every process of run `id` (new ones forked meanwhile included) and removes its
/// cgroup directories. Returns what it removed.
pub fn remove(id: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids(id).is_empty() && Instant::now() < deadline {
        signal(id, Signal::KILL, None);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut removed = Vec::new();
    for d in dirs(id) {
        // rmdir fails while the kernel still counts an exiting task; retry briefly.
        while d.exists() {
            match fs::remove_dir(&d) {
                Ok(()) => removed.push(format!("cgroup {}", d.display())),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break,
            }
        }
    }
    removed
}

/// Run ids that own a cgroup, live or not.
pub fn leftovers() -> Vec<String> {
    let mut ids = Vec::new();
    let parents = match version() {
        Some(Version::V2) => vec![Path::new(ROOT).join("centaur")],
        Some(Version::V1) => V1_CONTROLLERS
            .iter()
            .map(|c| Path::new(ROOT).join(c).join("centaur"))
            .collect(),
        None => Vec::new(),
    };
    for p in parents {
        if let Ok(entries) = fs::read_dir(p) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    ids.extend(e.file_name().to_str().map(String::from));
                }
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_to_each_version_files() {
        let l = Limits {
            memory: Some(1 << 30),
            pids: Some(256),
            cpus: Some(1.5),
        };
        assert_eq!(
            settings(Version::V1, &l),
            vec![
                ("pids.max", "256".to_string()),
                ("memory.limit_in_bytes", "1073741824".to_string()),
                ("cpu.cfs_period_us", "100000".to_string()),
                ("cpu.cfs_quota_us", "150000".to_string()),
            ]
        );
        assert_eq!(
            settings(Version::V2, &l),
            vec![
                ("pids.max", "256".to_string()),
                ("memory.max", "1073741824".to_string()),
                ("cpu.max", "150000 100000".to_string()),
            ]
        );
        assert!(settings(Version::V2, &Limits::default()).is_empty());
    }

    #[test]
    fn v1_files_go_to_their_controller() {
        let d = Path::new("/sys/fs/cgroup/memory/centaur/ab12cd34");
        assert!(controller_of(Version::V1, d, "memory.limit_in_bytes"));
        assert!(!controller_of(Version::V1, d, "pids.max"));
        let c = Path::new("/sys/fs/cgroup/cpu/centaur/ab12cd34");
        assert!(controller_of(Version::V1, c, "cpu.cfs_quota_us"));
    }
}
