//! The local backend: one Linux machine, no Kubernetes. A run gets an id; every resource it
//! creates is named by that id (run directory, address slot, network namespace, veth, nftables
//! table, cgroup), so teardown and `gc` find them by name whatever state a crash left.
//!
//! Needs root (or `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`): [`preflight`] says so before anything
//! is created, rather than running a weaker sandbox.

pub mod bwrap;
pub mod cgroup;
mod host;
pub mod net;
pub mod seccomp;

use host::find;
pub use host::{Error, RUNS};

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use bwrap::{Layout, Mount};
pub use cgroup::Limits;
pub use net::Addrs;
pub use rustix::process::Signal;

/// The programs the backend drives, with their Debian packages.
pub const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("bwrap", "bubblewrap"),
    ("setpriv", "util-linux"),
    ("sh", "dash"),
];

/// Checks privileges, tools and cgroups before anything is created.
pub fn preflight() -> Result<(), Error> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    for (tool, package) in TOOLS {
        if find(tool).is_none() {
            return Err(Error::MissingTool { tool, package });
        }
    }
    cgroup::version().ok_or(Error::NoCgroups)?;
    Ok(())
}

/// Whether `s` is a run id: eight lower-case hex digits.
pub fn is_run_id(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A created sandbox: namespace, link, rules and cgroup exist; nothing runs in it yet.
#[derive(Debug)]
pub struct Sandbox {
    /// The run id.
    pub id: String,
    /// Its link's addresses.
    pub addrs: Addrs,
    /// Its directory on the host (0711, root): CA, resolver file.
    pub dir: PathBuf,
    procs: Vec<PathBuf>,
    seccomp: Option<PathBuf>,
    model: netpol::Model,
}

impl Sandbox {
    /// Creates a sandbox whose gateway will listen on `ports` of [`Addrs::gateway`]. On any
    /// error, what was created is removed again.
    pub fn create(limits: &Limits, ports: netpol::Ports) -> Result<Sandbox, Error> {
        preflight()?;
        let (id, dir) = new_run_dir()?;
        let model = netpol::Model::new(&id, ports)?;
        let made = (|| {
            let slot = net::claim_slot(&id)?;
            let addrs = Addrs::of_slot(slot);
            let local = netpol::Local {
                host_iface: net::host_iface(&id),
                gateway: addrs.gateway,
                redirect: true,
            };
            let rules = netpol::nftables(&model, &local)?;
            net::create(&id, addrs, &rules)?;
            let procs = cgroup::create(&id, limits)?;
            let seccomp = match seccomp::program() {
                Some(bpf) => {
                    let path = dir.join("seccomp.bpf");
                    fs::write(&path, bpf).map_err(|e| Error::io(&path, e))?;
                    Some(path)
                }
                None => None,
            };
            Ok((addrs, procs, seccomp))
        })();
        match made {
            Ok((addrs, procs, seccomp)) => Ok(Sandbox {
                id,
                addrs,
                dir,
                procs,
                seccomp,
                model,
            }),
            Err(e) => {
                remove(&id);
                Err(e)
            }
        }
    }

    /// The network namespace's name.
    pub fn netns(&self) -> String {
        net::netns(&self.id)
    }

    /// The netpol model the rules were rendered from.
    pub fn model(&self) -> &netpol::Model {
        &self.model
    }

    /// The command that runs `command` inside, shaped by `layout` (whose `id`,
    /// `cgroup_procs` and `seccomp` are filled in here).
    pub fn command(&self, mut layout: Layout, command: &[OsString]) -> Command {
        layout.id.clone_from(&self.id);
        layout.cgroup_procs.clone_from(&self.procs);
        layout.seccomp.clone_from(&self.seccomp);
        let argv = bwrap::argv(&layout, &self.netns(), command);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            c.env("PATH", path);
        }
        c
    }

    /// Sends `sig` to every process in the sandbox but `except` (the outer `bwrap`, which
    /// would take the command down with `SIGKILL` instead of letting it handle `sig`).
    pub fn signal(&self, sig: Signal, except: Option<u32>) {
        cgroup::signal(&self.id, sig, except);
    }

    /// Kills what still runs and removes every resource of the run.
    pub fn remove(self) -> Vec<String> {
        remove(&self.id)
    }
}

/// Creates `RUNS/<id>` atomically with its owner file, so `gc` never sees a run without one.
/// Directories are 0711: the unprivileged `bwrap` may reach the files it mounts by their
/// path (the CA certificate, the resolver file, both 0644) but list nothing; the CA key is
/// 0600.
fn new_run_dir() -> Result<(String, PathBuf), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let runs = Path::new(RUNS);
    fs::create_dir_all(runs).map_err(|e| Error::io(runs, e))?;
    fs::set_permissions(runs, fs::Permissions::from_mode(0o711)).map_err(|e| Error::io(runs, e))?;
    loop {
        let id = format!("{:08x}", rand::random::<u32>());
        let tmp = runs.join(format!(".{id}.new"));
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let owner = tmp.join("owner");
        fs::write(&owner, owner_line(std::process::id())).map_err(|e| Error::io(&owner, e))?;
        let dir = runs.join(&id);
        match fs::rename(&tmp, &dir) {
            Ok(()) => return Ok((id, dir)),
            // rename onto a non-empty directory fails: that id is taken, draw again.
            Err(_) if dir.exists() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
}

/// `pid starttime`: the pid alone could be reused after a crash.
fn owner_line(pid: u32) -> String {
    format!("{pid} {}\n", start_time(pid).unwrap_or_default())
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether the process that created run `id` still runs.
fn alive(id: &str) -> bool {
    owner_alive(&Path::new(RUNS).join(id))
}

/// Whether the process named in `dir/owner` still runs (same pid, same start time).
fn owner_alive(dir: &Path) -> bool {
    let Ok(line) = fs::read_to_string(dir.join("owner")) else {
        return false;
    };
    let pid = line.split_whitespace().next().and_then(|p| p.parse().ok());
    pid.is_some_and(|pid: u32| owner_line(pid) == line)
}

/// Removes every resource of run `id` that exists; returns what it removed.
pub fn remove(id: &str) -> Vec<String> {
    let mut removed = cgroup::remove(id);
    let table = netpol::Model::new(id, netpol::Ports::default())
        .map(|m| m.table())
        .unwrap_or_default();
    removed.extend(net::remove(id, &table));
    let dir = Path::new(RUNS).join(id);
    if fs::remove_dir_all(&dir).is_ok() {
        removed.push(format!("run directory {}", dir.display()));
    }
    removed
}

/// A run found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The id.
    pub id: String,
    /// Whether its owner still runs.
    pub alive: bool,
}

/// Every run with a resource on this machine.
pub fn runs() -> Vec<Run> {
    let mut ids: Vec<String> = fs::read_dir(RUNS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .chain(net::leftovers())
        .chain(cgroup::leftovers())
        .filter(|id| is_run_id(id))
        .collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .map(|id| Run {
            alive: alive(&id),
            id,
        })
        .collect()
}

/// Removes the resources of every run whose owner is gone (a crashed or killed `centaur`).
/// Returns, per run, what was removed.
pub fn gc() -> Result<Vec<(String, Vec<String>)>, Error> {
    preflight()?;
    // A run directory still being made (`.<id>.new`) whose maker is gone. One without its
    // owner file yet may be being made right now (the file is written just after the
    // directory): it is left for a minute. Removing it at once made another process's new
    // sandbox fail with "owner: No such file or directory" (seen in CI).
    for e in fs::read_dir(RUNS).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let settled = path.join("owner").exists()
            || e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
        if name.starts_with('.') && name.ends_with(".new") && settled && !owner_alive(&path) {
            let _ = fs::remove_dir_all(&path);
        }
    }
    Ok(runs()
        .into_iter()
        .filter(|r| !r.alive)
        .map(|r| {
            let removed = remove(&r.id);
            (r.id, removed)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_eight_hex_digits() {
        assert!(is_run_id("0a1b2c3d"));
        assert!(!is_run_id("0A1B2C3D"));
        assert!(!is_run_id("0a1b2c3"));
        assert!(!is_run_id("eth0xxxx"));
    }

    #[test]
    fn owner_line_pins_the_process_start() {
        let me = std::process::id();
        let line = owner_line(me);
        let mut it = line.split_whitespace();
        assert_eq!(it.next(), Some(me.to_string().as_str()));
        assert!(it.next().unwrap().parse::<u64>().unwrap() > 0);
    }
}
