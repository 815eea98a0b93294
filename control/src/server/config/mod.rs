//! The server's config file (YAML, strict): the harnesses, the sandbox policy and secrets,
//! and limits. Relative paths are relative to the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::server::backend::Backend;
use crate::server::slack::settings::{EgressConfig, SlackConfig, SlackSettings};
use crate::tools::config::{ToolSettings, ToolsConfig};
use crate::workflows::config::{WorkflowSettings, WorkflowsConfig};

mod values;

pub use values::{duration, idle_timeout};
use values::{duration_or, mounts, size, user};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the API listens (default 127.0.0.1:8700).
    pub listen: Option<String>,
    /// The data directory (default ./centaur-data).
    pub data_dir: Option<PathBuf>,
    /// A `postgres://` URL; without it, SQLite in the data directory.
    pub database_url: Option<String>,
    /// Every thread's sandbox.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// Harnesses by name.
    #[serde(default)]
    pub harnesses: BTreeMap<String, HarnessConfig>,
    /// The harness a thread gets when none is asked for.
    pub default_harness: Option<String>,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Slack: the Events API (and Socket Mode) in, progress and answers out.
    pub slack: Option<SlackConfig>,
    /// The control plane's own outbound calls.
    #[serde(default)]
    pub egress: EgressConfig,
    /// Tool plugins (`crate::tools`).
    pub tools: Option<ToolsConfig>,
    /// Durable workflows (`crate::workflows`).
    pub workflows: Option<WorkflowsConfig>,
}

/// `sandbox:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Where sandboxes run: `local` (the default) or `kubernetes`.
    #[serde(default)]
    pub backend: crate::server::backend::BackendKind,
    /// The Kubernetes backend (`backend: kubernetes`).
    pub kubernetes: Option<crate::server::backend::KubernetesConfig>,
    /// Every sandbox's gateway policy (the gateway's own format). Without it every request
    /// is denied.
    pub policy: Option<PathBuf>,
    /// `NAME=VALUE` lines: the real values the policy may put on the wire.
    pub secrets_from: Option<PathBuf>,
    /// `UID[:GID]` the harness runs as (default 65534, nobody). Never 0.
    pub user: Option<String>,
    /// Memory limit per sandbox (`2GiB`; default 4GiB).
    pub memory: Option<String>,
    /// Read-only bind mounts, `SRC[:DEST]`.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Extra environment for every harness (placeholders only, never secrets).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A thread's sandbox unused this long is stopped (suspended; the next turn starts a new
    /// one and resumes the session): a duration, or `none` (default 30m).
    pub idle_timeout: Option<String>,
    /// The most sandboxes running at once; a cold start beyond it first stops the least
    /// recently used idle one (default: no limit).
    pub max_running: Option<usize>,
    /// Sandboxes kept ready, with a neutral policy, for new threads to claim (default 0:
    /// every thread's first turn waits for a cold start).
    pub warm_pool: Option<usize>,
}

/// One harness.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HarnessConfig {
    /// `claude-code`, `codex`, `pi` or `stream-json` (the default): how the CLI is started,
    /// fed and read (`crate::harness`).
    pub kind: Option<String>,
    /// The binary and any leading arguments (default: the kind's binary on PATH; required
    /// for `stream-json`, whose command reads one turn per stdin line and prints
    /// stream-json, ending each turn with a `"type":"result"` line).
    pub command: Option<Vec<String>>,
    /// Extra arguments, appended to the kind's own.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for this harness (placeholders only, never a secret).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Files copied into the sandbox's home at every start: path under the home → file on
    /// this machine (relative to the config file).
    #[serde(default)]
    pub home_files: BTreeMap<String, PathBuf>,
}

impl HarnessConfig {
    /// The kind, defaulted.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("stream-json")
    }
}

/// `limits:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest request body (default 1 MiB).
    pub max_body: Option<String>,
    /// A turn that prints nothing this long fails (default 600s).
    pub silence_timeout: Option<String>,
    /// A turn that runs this long fails (default 3600s).
    pub hard_timeout: Option<String>,
    /// Turns that run at once (default 8).
    pub concurrency: Option<usize>,
    /// A worker's lease on an execution (default 30s); renewed every third of it.
    pub lease: Option<String>,
}

/// The config, checked, with defaults filled in and paths made absolute.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the API listens.
    pub listen: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The database URL, if not SQLite.
    pub database_url: Option<String>,
    /// Where sandboxes run.
    pub backend: crate::server::backend::Backend,
    /// The sandbox policy.
    pub policy: Option<PathBuf>,
    /// The secrets file.
    pub secrets_from: Option<PathBuf>,
    /// The harness's user.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Memory per sandbox.
    pub memory: Option<u64>,
    /// Read-only mounts.
    pub mounts: Vec<(PathBuf, PathBuf)>,
    /// Environment for every harness.
    pub env: BTreeMap<String, String>,
    /// See [`SandboxConfig::idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// See [`SandboxConfig::max_running`].
    pub max_running: Option<usize>,
    /// See [`SandboxConfig::warm_pool`].
    pub warm_pool: usize,
    /// Harnesses.
    pub harnesses: BTreeMap<String, HarnessConfig>,
    /// The default harness.
    pub default_harness: String,
    /// Limits.
    pub max_body: usize,
    /// See [`LimitsConfig`].
    pub silence: Duration,
    /// See [`LimitsConfig`].
    pub hard: Duration,
    /// See [`LimitsConfig`].
    pub concurrency: usize,
    /// See [`LimitsConfig`].
    pub lease: Duration,
    /// Slack, if configured.
    pub slack: Option<SlackSettings>,
    /// The control plane's own gateway policy.
    pub egress_policy: Option<PathBuf>,
    /// Tool plugins, if configured.
    pub tools: Option<ToolSettings>,
    /// Workflows, if configured.
    pub workflows: Option<WorkflowSettings>,
}

/// The built-in scripted agent (a stand-in for an agent CLI; there is no model API here).
pub const SCRIPTED_AGENT: &str = include_str!("../agents/scripted.py");

/// Where the built-in agent appears inside every sandbox.
pub const AGENTS_INSIDE: &str = "/run/centaur/agents";

impl ServerConfig {
    /// The config without a file: the built-in scripted agent (written to `DATA/agents/`
    /// and mounted read-only at [`AGENTS_INSIDE`]), no policy (every request denied).
    pub fn builtin(data_dir: &Path) -> Result<ServerConfig, String> {
        let dir = data_dir.join("agents");
        crate::server::paths::private_dir(data_dir, 0o711)?;
        crate::server::paths::private_dir(&dir, 0o755)?;
        let file = dir.join("scripted.py");
        std::fs::write(&file, SCRIPTED_AGENT).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut c = ServerConfig::default();
        c.sandbox
            .mounts
            .push(format!("{}:{AGENTS_INSIDE}", dir.display()));
        c.harnesses.insert(
            "scripted".into(),
            HarnessConfig {
                command: Some(vec![
                    "python3".into(),
                    format!("{AGENTS_INSIDE}/scripted.py"),
                ]),
                ..HarnessConfig::default()
            },
        );
        c.default_harness = Some("scripted".into());
        Ok(c)
    }
}

/// Reads a config file. Errors name the file and say where (line:column) and what.
pub fn load(path: &Path) -> Result<ServerConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses config text.
pub fn parse(text: &str) -> Result<ServerConfig, String> {
    if text.trim().is_empty() {
        return Ok(ServerConfig::default());
    }
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

impl ServerConfig {
    /// Checks the config and fills in defaults; `base` is the config file's directory.
    /// Every problem is reported at once.
    pub fn settle(self, base: &Path) -> Result<Settings, String> {
        let mut errors = Vec::new();
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let (uid, gid) = user(self.sandbox.user.as_deref(), &mut errors);
        let memory = match self.sandbox.memory.as_deref() {
            Some("none") => None,
            m => Some(size(m, "sandbox.memory", 4 << 30, &mut errors)),
        };
        let mounts = mounts(&self.sandbox.mounts, base, &mut errors);
        let backend = crate::server::backend::settle(
            self.sandbox.backend,
            self.sandbox.kubernetes.clone(),
            base,
            &mut errors,
        );
        let default_harness = self.default_harness(&mut errors);
        let harnesses = harnesses(self.harnesses, base, &mut errors);
        let l = &self.limits;
        let silence = duration_or(&l.silence_timeout, "silence_timeout", 600, &mut errors);
        let hard = duration_or(&l.hard_timeout, "hard_timeout", 3600, &mut errors);
        let lease = duration_or(&l.lease, "lease", 30, &mut errors);
        let idle_timeout = idle_timeout(self.sandbox.idle_timeout.as_deref(), &mut errors);
        capacity(&self.sandbox, &backend, &mut errors);
        let max_body = size(
            l.max_body.as_deref(),
            "limits.max_body",
            1 << 20,
            &mut errors,
        );
        if lease < Duration::from_secs(3) {
            errors.push("limits.lease: at least 3s".into());
        }
        let slack = self.slack.and_then(|s| s.settle(base, &mut errors));
        let egress_policy = self.egress.policy.map(abs);
        let tools = self.tools.map(|t| t.settle(base, &mut errors));
        let workflows = self.workflows.map(|w| w.settle(base, &mut errors));
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        Ok(Settings {
            listen: self.listen.unwrap_or_else(|| "127.0.0.1:8700".into()),
            data_dir: abs(self.data_dir.unwrap_or_else(|| "centaur-data".into())),
            database_url: self.database_url,
            backend,
            policy: self.sandbox.policy.map(abs),
            secrets_from: self.sandbox.secrets_from.map(abs),
            uid,
            gid,
            memory,
            mounts,
            env: self.sandbox.env,
            idle_timeout,
            max_running: self.sandbox.max_running,
            warm_pool: self.sandbox.warm_pool.unwrap_or(0),
            harnesses,
            default_harness,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            silence,
            hard,
            concurrency: self.limits.concurrency.unwrap_or(8).max(1),
            lease,
            slack,
            egress_policy,
            tools,
            workflows,
        })
    }

    fn default_harness(&self, errors: &mut Vec<String>) -> String {
        match (&self.default_harness, self.harnesses.len()) {
            (Some(d), _) if self.harnesses.contains_key(d) => d.clone(),
            (Some(d), _) => {
                let names: Vec<&str> = self.harnesses.keys().map(String::as_str).collect();
                errors.push(format!(
                    "default_harness {d:?} is not in harnesses ({})",
                    names.join(", ")
                ));
                d.clone()
            }
            (None, 1) => self.harnesses.keys().next().cloned().unwrap_or_default(),
            (None, 0) => {
                errors.push(
                    "harnesses: none configured (name at least one, with its command)".into(),
                );
                String::new()
            }
            (None, _) => {
                errors.push(
                    "default_harness: several harnesses are configured; name the default".into(),
                );
                String::new()
            }
        }
    }
}

/// Checks each harness: a known kind, a command where the kind needs one, home files that
/// stay in the home and exist; their sources made absolute.
fn harnesses(
    list: BTreeMap<String, HarnessConfig>,
    base: &Path,
    errors: &mut Vec<String>,
) -> BTreeMap<String, HarnessConfig> {
    let mut out = BTreeMap::new();
    for (name, mut h) in list {
        match h.kind() {
            "amp" => errors.push(format!(
                "harnesses.{name}.kind: amp is not supported (its CLI needs Amp's own service, which cannot be tested here)"
            )),
            k if crate::harness::adapter(k).is_none() => errors.push(format!(
                "harnesses.{name}.kind: unknown kind {k:?} (one of {})",
                crate::harness::KINDS.join(", ")
            )),
            _ => {}
        }
        let empty = h.command.as_ref().is_some_and(Vec::is_empty);
        if empty || (h.command.is_none() && h.kind() == "stream-json") {
            errors.push(format!(
                "harnesses.{name}.command is empty (a stream-json harness names its command)"
            ));
        }
        for (inside, src) in &mut h.home_files {
            let p = Path::new(inside);
            if inside.is_empty()
                || p.is_absolute()
                || p.components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                errors.push(format!(
                    "harnesses.{name}.home_files: {inside:?} must be a plain path under the home"
                ));
            }
            *src = base.join(&*src);
            if !src.is_file() {
                errors.push(format!(
                    "harnesses.{name}.home_files.{inside}: {} is not a file",
                    src.display()
                ));
            }
        }
        out.insert(name, h);
    }
    out
}

/// `sandbox.max_running` and `sandbox.warm_pool`, with each other and the backend.
fn capacity(s: &SandboxConfig, backend: &Backend, errors: &mut Vec<String>) {
    if s.max_running == Some(0) {
        errors.push("sandbox.max_running: at least 1".into());
    }
    if let (Some(w), Some(m)) = (s.warm_pool, s.max_running)
        && w >= m
    {
        errors.push(format!(
            "sandbox.warm_pool ({w}) must be below sandbox.max_running ({m}): warm sandboxes count as running"
        ));
    }
    // A warm pod is made before its thread is known: it cannot mount the thread's claim.
    if let Backend::Kubernetes(k) = backend
        && k.workspace.is_some()
        && s.warm_pool.is_some_and(|w| w > 0)
    {
        errors.push(
            "sandbox.warm_pool: not with sandbox.kubernetes.workspace_storage (a warm pod is made before its thread is known, so it cannot mount the thread's workspace claim); leave one of them out"
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_config_of_the_docs_parses() {
        let c = parse(
            "sandbox:\n  policy: policy.yaml\n  secrets_from: secrets.env\nharnesses:\n  scripted:\n    command: [\"python3\", \"/opt/agents/scripted.py\"]\ndefault_harness: scripted\n",
        )
        .unwrap();
        let s = c.settle(Path::new("/etc/centaur")).unwrap();
        assert_eq!(s.policy.unwrap(), Path::new("/etc/centaur/policy.yaml"));
        assert_eq!(s.default_harness, "scripted");
        assert_eq!(
            s.harnesses["scripted"].command.as_ref().unwrap()[0],
            "python3"
        );
        assert_eq!(s.silence, Duration::from_secs(600));
    }

    #[test]
    fn the_harness_config_of_the_docs_works_as_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pi-models.json"), "{}").unwrap();
        let c = parse(&format!(
            r#"harnesses:
  claude:
    kind: claude-code
    command: ["/opt/agents/node_modules/.bin/claude"]   # default: the kind's binary on PATH
    args: []                                             # extra arguments, appended
    env: {{ANTHROPIC_BASE_URL: "https://model.test"}}      # extra environment; never a real secret
    home_files: {{".pi/agent/models.json": "{}/pi-models.json"}}   # copied into the sandbox's home
"#,
            dir.path().display()
        ))
        .unwrap();
        let s = c.settle(Path::new("/etc/centaur")).unwrap();
        let h = &s.harnesses["claude"];
        assert_eq!(h.kind(), "claude-code");
        assert_eq!(h.env["ANTHROPIC_BASE_URL"], "https://model.test");
        assert_eq!(s.default_harness, "claude");
        let e = parse(
            "harnesses:\n  a: {kind: amp}\n  b: {kind: cursor}\n  c: {home_files: {'../x': y}}\n",
        )
        .unwrap()
        .settle(Path::new("/"))
        .unwrap_err();
        for want in [
            "amp is not supported",
            "unknown kind \"cursor\"",
            "plain path under the home",
            "c.command is empty",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_with_where_it_is() {
        let e = parse("harnesses:\n  x:\n    command: [a]\n    comand: [b]\n").unwrap_err();
        assert!(e.contains("comand"), "{e}");
        assert!(e.contains("4:5") || e.contains("line 4"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = parse(
            "sandbox: {user: '0'}\nharnesses: {a: {command: []}}\ndefault_harness: b\nlimits: {silence_timeout: 5 parsecs}\n",
        )
        .unwrap();
        let e = c.settle(Path::new("/")).unwrap_err();
        for want in [
            "root",
            "command is empty",
            "\"b\" is not in harnesses",
            "silence_timeout",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
