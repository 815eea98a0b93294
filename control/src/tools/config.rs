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
    /// Which tools threads' sandboxes may call: the first rule whose `threads` matches a
    /// thread's key applies (every tool when none does).
    #[serde(default)]
    pub threads: Vec<ThreadRule>,
}

/// The tools some threads may call from their sandboxes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThreadRule {
    /// A thread key, or a prefix ending in `*` (`slack:*`).
    pub threads: String,
    /// Only these tools (default: all).
    pub allow: Option<Vec<String>>,
    /// Never these.
    #[serde(default)]
    pub block: Vec<String>,
}

/// The scopes of a thread's sandbox token under these rules: `tools:NAME` per allowed tool
/// (`tools:*` for all) and `-tools:NAME` per blocked one.
pub fn thread_scopes(rules: &[ThreadRule], thread_key: &str) -> Vec<String> {
    let rule = rules.iter().find(|r| match r.threads.strip_suffix('*') {
        Some(prefix) => thread_key.starts_with(prefix),
        None => thread_key == r.threads,
    });
    let Some(rule) = rule else {
        return vec!["tools:*".into()];
    };
    let mut scopes: Vec<String> = match &rule.allow {
        Some(list) => list.iter().map(|t| format!("tools:{t}")).collect(),
        None => vec!["tools:*".into()],
    };
    scopes.extend(rule.block.iter().map(|t| format!("-tools:{t}")));
    if scopes.is_empty() {
        // `allow: []`: no tool; a scope no tool name matches keeps the key well formed.
        scopes.push("tools:!none".into());
    }
    scopes
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
    /// See [`ToolsConfig::threads`].
    pub threads: Vec<ThreadRule>,
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
            threads: self.threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_gives_a_threads_tools() {
        let rules = vec![
            ThreadRule {
                threads: "slack:*".into(),
                allow: Some(vec!["github".into()]),
                block: vec![],
            },
            ThreadRule {
                threads: "api:ops".into(),
                allow: None,
                block: vec!["http_fetch".into()],
            },
        ];
        assert_eq!(thread_scopes(&rules, "slack:T1:C1:1.2"), ["tools:github"]);
        assert_eq!(
            thread_scopes(&rules, "api:ops"),
            ["tools:*", "-tools:http_fetch"]
        );
        assert_eq!(thread_scopes(&rules, "api:other"), ["tools:*"]);
        let scopes = thread_scopes(&rules, "api:ops");
        assert!(crate::store::Scope::tool_allowed(&scopes, "github"));
        assert!(!crate::store::Scope::tool_allowed(&scopes, "http_fetch"));
    }
}
