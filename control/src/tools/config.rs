//! `tools:` in the server's config.
//!
//! ```yaml
//! tools:
//!   dirs: [./tools]               # every folder with a [tool.centaur] table is a tool
//!   secrets_from: tools.env       # real values of the tools' declared secrets
//!   base_policy: tools-base.yaml  # optional policy every tool's policy extends
//!   python: python3               # the interpreter in the tools' sandboxes (default)
//!   memory: 1GiB                  # per tool sandbox (default)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The section as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Folders to discover tools in (`tools/<name>/` and `tools/<group>/<name>/`); a tool
    /// in a later folder replaces one of the same name in an earlier one.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// `NAME=VALUE` lines: the values of the tools' secrets (they stay in the tools'
    /// gateways).
    pub secrets_from: Option<PathBuf>,
    /// A gateway policy every tool's generated policy extends.
    pub base_policy: Option<PathBuf>,
    /// The Python interpreter the workers run (default `python3`).
    pub python: Option<String>,
    /// Memory per tool sandbox (default 1GiB).
    pub memory: Option<String>,
}

/// The section, checked, paths absolute.
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// See [`ToolsConfig::dirs`].
    pub dirs: Vec<PathBuf>,
    /// See [`ToolsConfig::secrets_from`].
    pub secrets_from: Option<PathBuf>,
    /// See [`ToolsConfig::base_policy`].
    pub base_policy: Option<PathBuf>,
    /// See [`ToolsConfig::python`].
    pub python: String,
    /// Bytes of memory per tool sandbox.
    pub memory: u64,
}

impl ToolsConfig {
    /// Checks the section; `base` is the config file's directory. Problems go to `errors`.
    pub fn settle(self, base: &Path, errors: &mut Vec<String>) -> ToolSettings {
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let dirs: Vec<PathBuf> = self.dirs.into_iter().map(abs).collect();
        if dirs.is_empty() {
            errors.push("tools.dirs: name at least one folder of tools".into());
        }
        for d in &dirs {
            if !d.is_dir() {
                errors.push(format!("tools.dirs: {} is not a folder", d.display()));
            }
        }
        let secrets_from = self.secrets_from.map(abs);
        let base_policy = self.base_policy.map(abs);
        for (what, p) in [
            ("secrets_from", &secrets_from),
            ("base_policy", &base_policy),
        ] {
            if let Some(p) = p.as_ref().filter(|p| !p.is_file()) {
                errors.push(format!("tools.{what}: {} is not a file", p.display()));
            }
        }
        let memory = match self.memory.as_deref() {
            None => 1 << 30,
            Some(m) => policy::parse_size(m).unwrap_or_else(|e| {
                errors.push(format!("tools.memory: {e}"));
                1 << 30
            }),
        };
        ToolSettings {
            dirs,
            secrets_from,
            base_policy,
            python: self.python.unwrap_or_else(|| "python3".into()),
            memory,
        }
    }
}
