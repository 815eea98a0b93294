//! `workflows:` in the server's config.
//!
//! ```yaml
//! workflows:
//!   dirs: [./workflows]            # every *.py defining WORKFLOW_NAME and handler is a workflow
//!   policy: workflows-policy.yaml  # the gateway policy of the workflow worker's sandbox
//!   secrets_from: workflows.env    # real values for that policy's env secrets (they stay in its gateway)
//!   python: python3                # the interpreter in the worker's sandbox (default)
//!   memory: 1GiB                   # the worker's sandbox (default)
//!   concurrency: 8                 # runs driven at once (default)
//!   lease: 30s                     # a claim without a heartbeat lasts this long (default)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The section as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsConfig {
    /// Folders of workflow files.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// The gateway policy of the worker's sandbox (default: no host is allowed).
    pub policy: Option<PathBuf>,
    /// `NAME=VALUE` lines: the values of the policy's `env` secrets.
    pub secrets_from: Option<PathBuf>,
    /// The Python interpreter (default `python3`).
    pub python: Option<String>,
    /// Memory of the worker's sandbox (default 1GiB).
    pub memory: Option<String>,
    /// Runs driven at once (default 8).
    pub concurrency: Option<usize>,
    /// How long a claim on a run lasts without a heartbeat (default 30s, at least 3s): how
    /// soon another replica resumes a run whose server died.
    pub lease: Option<String>,
}

/// The section, checked, paths absolute.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// See [`WorkflowsConfig::dirs`].
    pub dirs: Vec<PathBuf>,
    /// See [`WorkflowsConfig::policy`].
    pub policy: Option<PathBuf>,
    /// See [`WorkflowsConfig::secrets_from`].
    pub secrets_from: Option<PathBuf>,
    /// See [`WorkflowsConfig::python`].
    pub python: String,
    /// Bytes of memory.
    pub memory: u64,
    /// See [`WorkflowsConfig::concurrency`].
    pub concurrency: usize,
    /// See [`WorkflowsConfig::lease`].
    pub lease: std::time::Duration,
}

impl WorkflowsConfig {
    /// Checks the section; `base` is the config file's directory. Problems go to `errors`.
    pub fn settle(self, base: &Path, errors: &mut Vec<String>) -> WorkflowSettings {
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let dirs: Vec<PathBuf> = self.dirs.into_iter().map(abs).collect();
        if dirs.is_empty() {
            errors.push("workflows.dirs: name at least one folder of workflows".into());
        }
        for d in &dirs {
            if !d.is_dir() {
                errors.push(format!("workflows.dirs: {} is not a folder", d.display()));
            }
        }
        let policy = self.policy.map(abs);
        let secrets_from = self.secrets_from.map(abs);
        for (what, p) in [("policy", &policy), ("secrets_from", &secrets_from)] {
            if let Some(p) = p.as_ref().filter(|p| !p.is_file()) {
                errors.push(format!("workflows.{what}: {} is not a file", p.display()));
            }
        }
        let memory = match self.memory.as_deref() {
            None => 1 << 30,
            Some(m) => policy::parse_size(m).unwrap_or_else(|e| {
                errors.push(format!("workflows.memory: {e}"));
                1 << 30
            }),
        };
        let concurrency = self.concurrency.unwrap_or(8);
        if !(1..=256).contains(&concurrency) {
            errors.push(format!(
                "workflows.concurrency: {concurrency} is not between 1 and 256"
            ));
        }
        let lease = match self.lease.as_deref().map(policy::parse_duration) {
            None => std::time::Duration::from_secs(30),
            Some(Ok(d)) if d >= std::time::Duration::from_secs(3) => d,
            Some(Ok(_)) => {
                errors.push("workflows.lease: at least 3s".into());
                std::time::Duration::from_secs(30)
            }
            Some(Err(e)) => {
                errors.push(format!("workflows.lease: {e}"));
                std::time::Duration::from_secs(30)
            }
        };
        WorkflowSettings {
            dirs,
            policy,
            secrets_from,
            python: self.python.unwrap_or_else(|| "python3".into()),
            memory,
            concurrency,
            lease,
        }
    }
}
