//! What to run in a sandbox, as a typed value: the command, the policy its gateway enforces,
//! the real values that policy may put on the wire, who runs it, what it sees and what it may
//! use. Loading a policy or a secrets file is here too, so every front end reads them alike.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use gateway::credential::store::{SecretEnv, SecretValue};
use policy::Config;
use sandbox::local::{Limits, Mount};

use crate::runner::gateway_config;

/// A sandbox to start.
#[derive(Debug)]
pub struct SandboxSpec {
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// The policy as written; the runner places it (listeners, resolver, CA, audit file).
    pub policy: Config,
    /// Where the policy came from, for messages.
    pub policy_name: String,
    /// Values for the policy's `env` sources; they stay in the gateway.
    pub secrets: SecretEnv,
    /// The user and group the command runs as (never 0).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// The writable working directory, mounted at the same path.
    pub workdir: PathBuf,
    /// Extra bind mounts.
    pub mounts: Vec<Mount>,
    /// Extra environment for the command (not for secrets).
    pub env: Vec<(String, String)>,
    /// cgroup limits.
    pub limits: Limits,
    /// The audit log, unless the policy names one; `None`: the runner's default.
    pub audit: Option<PathBuf>,
    /// Identity labels written into every audit record.
    pub labels: BTreeMap<String, String>,
    /// Whether the command's stdin and stdout are this process's or handed to the caller.
    pub stdio: Stdio,
}

/// Where the command's stdin and stdout go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// This process's own (a terminal, a pipe).
    Inherit,
    /// Pipes the caller holds ([`crate::runner::Running::stdin`] and `stdout`).
    Piped,
}

/// A policy or secrets file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// `policy` or `secrets file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The policy is invalid: every error, with line:column.
    #[error("the policy {path} is invalid:\n{errors}")]
    Policy {
        /// The file.
        path: PathBuf,
        /// Every problem.
        errors: policy::ConfigErrors,
    },
    /// The secrets file is not `NAME=VALUE` lines.
    #[error("{path}: {message}")]
    Secrets {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a value).
        message: String,
    },
}

/// Reads and validates a policy file; with no file, the empty policy (every request denied).
/// Returns the policy and a name for messages.
pub fn load_policy(path: Option<&Path>) -> Result<(Config, String), SpecError> {
    let Some(p) = path else {
        let empty = Config::parse_placed("{}").map_err(|errors| SpecError::Policy {
            path: PathBuf::from("(none)"),
            errors,
        })?;
        return Ok((empty, "none (every request is denied)".to_string()));
    };
    let text = std::fs::read_to_string(p).map_err(|source| SpecError::Read {
        what: "policy",
        path: p.to_owned(),
        source,
    })?;
    let config = Config::parse_placed(&text).map_err(|errors| SpecError::Policy {
        path: p.to_owned(),
        errors,
    })?;
    Ok((config, p.display().to_string()))
}

/// Reads a `.env` file of real values (`NAME=VALUE` lines); none without a file.
pub fn load_secrets(path: Option<&Path>) -> Result<SecretEnv, SpecError> {
    load_secret_map(path).map(SecretEnv::new)
}

/// [`load_secrets`], as a map the caller may add to.
pub fn load_secret_map(path: Option<&Path>) -> Result<HashMap<String, SecretValue>, SpecError> {
    let Some(p) = path else {
        return Ok(HashMap::new());
    };
    let text = std::fs::read_to_string(p).map_err(|source| SpecError::Read {
        what: "secrets file",
        path: p.to_owned(),
        source,
    })?;
    gateway_config::parse_dotenv(&text).map_err(|message| SpecError::Secrets {
        path: p.to_owned(),
        message,
    })
}

impl SandboxSpec {
    /// What the user should know before the command starts: policy settings the runner
    /// replaces, variables the policy reads that have no value anywhere, and a workdir the
    /// command cannot write.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = gateway_config::overridden(&self.policy);
        if !writable_by(&self.workdir, self.uid, self.gid) {
            out.push(format!(
                "the workdir {} is not writable by uid {}: pass --user, or --workdir a directory it owns",
                self.workdir.display(),
                self.uid
            ));
        }
        for v in gateway_config::env_vars(&self.policy) {
            let in_file = self.secrets.get(&v).is_some_and(|s| !s.expose().is_empty());
            let in_env = std::env::var_os(&v).is_some_and(|s| !s.is_empty());
            if !in_file && !in_env {
                out.push(format!(
                    "{v} has no value (not in --secrets-from, not in the environment): requests that need it are refused"
                ));
            }
        }
        out
    }
}

/// Whether the mode bits let `uid`/`gid` write `dir` (ACLs aside).
fn writable_by(dir: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).is_ok_and(|m| {
        let mode = m.mode();
        (m.uid() == uid && mode & 0o200 != 0)
            || (m.gid() == gid && mode & 0o020 != 0)
            || mode & 0o002 != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_by_follows_the_mode_bits() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(d.path()).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(writable_by(d.path(), uid, gid));
        assert!(!writable_by(d.path(), uid + 1, gid + 1));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(writable_by(d.path(), uid + 1, gid + 1));
    }

    #[test]
    fn a_bad_policy_or_secrets_file_is_named_with_where_it_is_wrong() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("policy.yaml");
        std::fs::write(&p, "proxy: {max_headers: nope}\n").unwrap();
        let e = load_policy(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("policy.yaml is invalid"), "{e}");
        assert!(e.contains("1:22") && e.contains("whole number"), "{e}");
        let missing = load_secrets(Some(&d.path().join("nope.env"))).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read the secrets file")
        );
    }
}
