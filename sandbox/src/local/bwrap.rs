//! The command line that starts a sandboxed process, from the outside in:
//!
//! 1. `sh` writes its own pid into the run's cgroups, then `exec`s the rest, so the command
//!    and everything it forks are limited and findable from its first instruction;
//! 2. `ip netns exec` enters the run's network namespace (and remounts `/sys` for it, in a
//!    mount namespace of its own); there `sh` makes every mount private and detaches
//!    `/run/netns`, so no other run's namespace file is seen inside, and another run's
//!    namespace deleted meanwhile cannot vanish under `bwrap` while it remounts the
//!    read-only view (bwrap 0.8 fails the start when a mount it listed is gone);
//! 3. `setpriv` drops to the sandbox user, clears groups and every capability set, and sets
//!    `no_new_privs`;
//! 4. `bwrap`, now unprivileged, makes new user, mount, PID, IPC and UTS namespaces: a
//!    read-only view of the system, private `/tmp`, `/dev` and `/proc`, hidden homes and run
//!    state, the writable workdir, the gateway's CA and resolver, and a clean environment; it
//!    forbids nested user namespaces and installs the seccomp filter (read from fd 9, which
//!    `sh` opens) right before the command.
//!
//! Pure: builds arguments, runs nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// An extra bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host path.
    pub src: PathBuf,
    /// Path inside the sandbox.
    pub dest: PathBuf,
    /// Writable.
    pub rw: bool,
}

/// Everything that shapes the sandboxed process.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The run id (hostname `sandbox-<id>`).
    pub id: String,
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// The seccomp program (raw BPF) to install, if this architecture has one.
    pub seccomp: Option<PathBuf>,
    /// User and group ids the command runs as (never 0).
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The writable working directory (same path inside).
    pub workdir: PathBuf,
    /// Extra mounts, applied after the defaults.
    pub mounts: Vec<Mount>,
    /// The gateway's CA certificate on the host.
    pub ca_file: PathBuf,
    /// Host paths the CA certificate is mounted over (the system bundles that exist).
    pub ca_bundles: Vec<PathBuf>,
    /// The generated `resolv.conf` on the host, and where it is mounted.
    pub resolv: (PathBuf, PathBuf),
    /// The generated `hosts` file on the host, and where it is mounted: the host's own
    /// names must not resolve around the gateway's DNS.
    pub hosts: (PathBuf, PathBuf),
    /// Host directories hidden behind an empty tmpfs.
    pub hidden: Vec<PathBuf>,
    /// The complete environment of the command.
    pub env: Vec<(String, String)>,
}

/// Where the CA certificate appears inside every sandbox; the trust variables point here.
pub const CA_INSIDE: &str = "/run/centaur/ca.crt";

/// The sandbox's home directory (on its private `/tmp`).
pub const HOME: &str = "/tmp/home";

/// The full argv (`argv[0]` is `sh`) that runs `command` in the sandbox.
pub fn argv(l: &Layout, netns: &str, command: &[OsString]) -> Vec<OsString> {
    let joins: Vec<String> = l
        .cgroup_procs
        .iter()
        .map(|p| format!("echo $$ > '{}' && ", p.display()))
        .collect();
    // bwrap reads the seccomp program from an inherited descriptor.
    let seccomp = l
        .seccomp
        .as_ref()
        .map(|p| format!("exec 9< '{}' && ", p.display()))
        .unwrap_or_default();
    let script = format!("{}{seccomp}exec \"$@\"", joins.concat());
    let mut a: Vec<OsString> = ["sh", "-c", &script, "centaur-sandbox"]
        .map(OsString::from)
        .to_vec();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["ip", "netns", "exec", netns]);
    push(&[
        "sh",
        "-c",
        "mount --make-rprivate / && { umount -l /run/netns 2>/dev/null; exec \"$@\"; }",
        "centaur-mounts",
    ]);
    let (uid, gid) = (l.uid.to_string(), l.gid.to_string());
    push(&[
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &gid,
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ]);
    a.extend(bwrap_args(l));
    a.push("--".into());
    a.extend(command.iter().cloned());
    a
}

fn bwrap_args(l: &Layout) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
        a.extend(items.iter().map(|s| s.as_ref().to_os_string()));
    };
    let hostname = format!("sandbox-{}", l.id);
    push(&[
        &"bwrap",
        &"--unshare-user",
        &"--unshare-pid",
        &"--unshare-ipc",
        &"--unshare-uts",
        &"--unshare-cgroup-try",
        &"--disable-userns",
        &"--hostname",
        &hostname,
        &"--die-with-parent",
        &"--ro-bind",
        &"/",
        &"/",
        &"--dev",
        &"/dev",
        &"--proc",
        &"/proc",
        &"--tmpfs",
        &"/tmp",
        &"--dir",
        &HOME,
    ]);
    for h in &l.hidden {
        push(&[&"--tmpfs", h]);
    }
    push(&[&"--ro-bind", &l.ca_file, &CA_INSIDE]);
    for b in &l.ca_bundles {
        push(&[&"--ro-bind", &l.ca_file, b]);
    }
    push(&[&"--ro-bind", &l.resolv.0, &l.resolv.1]);
    push(&[&"--ro-bind", &l.hosts.0, &l.hosts.1]);
    push(&[&"--bind", &l.workdir, &l.workdir]);
    for m in &l.mounts {
        let kind = if m.rw { "--bind" } else { "--ro-bind" };
        push(&[&kind, &m.src, &m.dest]);
    }
    if l.seccomp.is_some() {
        push(&[&"--seccomp", &"9"]);
    }
    push(&[&"--chdir", &l.workdir, &"--cap-drop", &"ALL", &"--clearenv"]);
    for (k, v) in &l.env {
        push(&[&"--setenv", k, v]);
    }
    a
}

/// The trust variables common tools read, all pointing at [`CA_INSIDE`].
pub const CA_VARS: [&str; 10] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
    "DENO_CERT",
    "CODEX_CA_CERTIFICATE",
];

/// System CA bundle paths, mounted over when they exist on the host.
pub const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// Whether `p` would be a usable mount target: absolute, no `..`.
pub fn plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| !matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            id: "ab12cd34".into(),
            cgroup_procs: vec!["/sys/fs/cgroup/pids/centaur/ab12cd34/cgroup.procs".into()],
            seccomp: Some("/run/centaur/sandbox/ab12cd34/seccomp.bpf".into()),
            uid: 1000,
            gid: 1000,
            workdir: "/work/repo".into(),
            mounts: vec![Mount {
                src: "/opt/tools".into(),
                dest: "/opt/tools".into(),
                rw: false,
            }],
            ca_file: "/run/centaur/sandbox/ab12cd34/ca.crt".into(),
            ca_bundles: vec!["/etc/ssl/certs/ca-certificates.crt".into()],
            resolv: (
                "/run/centaur/sandbox/ab12cd34/resolv.conf".into(),
                "/etc/resolv.conf".into(),
            ),
            hosts: (
                "/run/centaur/sandbox/ab12cd34/hosts".into(),
                "/etc/hosts".into(),
            ),
            hidden: vec!["/home".into(), "/run/centaur".into()],
            env: vec![("OPENAI_API_KEY".into(), "PLACEHOLDER".into())],
        }
    }

    fn strings(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn the_process_joins_its_cgroup_before_anything_else_runs() {
        let a = strings(&argv(&layout(), "centaur-ab12cd34", &["true".into()]));
        assert_eq!(a[0], "sh");
        assert_eq!(
            a[2],
            "echo $$ > '/sys/fs/cgroup/pids/centaur/ab12cd34/cgroup.procs' && \
             exec 9< '/run/centaur/sandbox/ab12cd34/seccomp.bpf' && exec \"$@\""
        );
        assert_eq!(after(&a, "--seccomp"), vec!["9"]);
        assert!(a.iter().any(|s| s == "--disable-userns"));
        assert_eq!(&a[4..8], &["ip", "netns", "exec", "centaur-ab12cd34"]);
        // Private mounts and no /run/netns before bwrap lists what it remounts.
        assert_eq!(&a[8..10], &["sh", "-c"]);
        assert!(a[10].starts_with("mount --make-rprivate / && { umount -l /run/netns"));
        assert_eq!(a.last().map(String::as_str), Some("true"));
        assert_eq!(a[a.len() - 2], "--");
    }

    /// Invariant 3: the command's environment is exactly what the caller gave (placeholders,
    /// never the host's environment), and privileges are dropped before bwrap runs.
    #[test]
    fn environment_is_cleared_and_privileges_dropped() {
        let a = strings(&argv(&layout(), "ns", &["env".into()]));
        let setpriv = a.iter().position(|s| s == "setpriv").unwrap();
        let bwrap = a.iter().position(|s| s == "bwrap").unwrap();
        assert!(setpriv < bwrap);
        for flag in ["--clear-groups", "--bounding-set=-all", "--no-new-privs"] {
            assert!(a[setpriv..bwrap].iter().any(|s| s == flag), "{flag}");
        }
        let clear = a.iter().position(|s| s == "--clearenv").unwrap();
        let first_env = a.iter().position(|s| s == "--setenv").unwrap();
        assert!(clear < first_env);
        assert_eq!(after(&a, "--setenv"), vec!["OPENAI_API_KEY"]);
        assert!(a.iter().any(|s| s == "--unshare-user"));
        assert!(a.iter().any(|s| s == "--unshare-pid"));
        assert!(a.iter().any(|s| s == "--die-with-parent"));
    }

    #[test]
    fn mounts_hide_state_and_trust_the_gateway() {
        let a = strings(&argv(&layout(), "ns", &["true".into()]));
        assert_eq!(after(&a, "--ro-bind")[0], "/");
        assert!(after(&a, "--tmpfs").contains(&"/home"));
        assert!(after(&a, "--tmpfs").contains(&"/run/centaur"));
        let ca = "/run/centaur/sandbox/ab12cd34/ca.crt";
        let binds: Vec<(&str, &str)> = a
            .windows(3)
            .filter(|w| w[0] == "--ro-bind" || w[0] == "--bind")
            .map(|w| (w[1].as_str(), w[2].as_str()))
            .collect();
        assert!(binds.contains(&(ca, CA_INSIDE)));
        assert!(binds.contains(&(ca, "/etc/ssl/certs/ca-certificates.crt")));
        assert!(binds.contains(&("/work/repo", "/work/repo")));
        assert!(binds.contains(&("/opt/tools", "/opt/tools")));
        // The hidden run state is mounted before the CA is placed inside it.
        let hide = a.iter().position(|s| s == "/run/centaur").unwrap();
        let ca_at = a.iter().position(|s| s == CA_INSIDE).unwrap();
        assert!(hide < ca_at);
        assert_eq!(after(&a, "--chdir"), vec!["/work/repo"]);
    }

    #[test]
    fn plain_absolute_paths_only() {
        assert!(plain_absolute(Path::new("/opt/x")));
        assert!(!plain_absolute(Path::new("opt/x")));
        assert!(!plain_absolute(Path::new("/opt/../etc")));
    }
}
