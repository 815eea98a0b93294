//! `centaur server`: flags and config file → [`control::server::serve`].

use std::path::PathBuf;

use clap::Args;
use control::server::config::{self, ServerConfig};

/// `centaur server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The config file (YAML): harnesses, the sandbox policy and secrets, limits, Slack
    /// (docs/slack.md), the control plane's own egress policy. Without it: the built-in
    /// scripted agent and no policy (every sandbox request is denied).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the API listens [config: listen; default 127.0.0.1:8700].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The data directory: the SQLite store, sandboxes' spools, audit logs
    /// [config: data_dir; default ./centaur-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL URL (postgres://…); without it, SQLite in the data directory.
    #[arg(
        long,
        env = "CENTAUR_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,
    /// Check the config (every problem at once) and exit: 0 when it is valid. Nothing is
    /// started, created or connected to.
    #[arg(long)]
    pub check: bool,
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(a: ServerArgs) -> anyhow::Result<u8> {
    if a.check && a.config.is_none() {
        anyhow::bail!("--check checks a config file: give it with --config FILE");
    }
    let cwd = std::env::current_dir()?;
    let (mut cfg, base) = match &a.config {
        Some(p) => {
            let c = config::load(p).map_err(anyhow::Error::msg)?;
            let base = p.parent().map_or(cwd.clone(), |d| cwd.join(d));
            (c, base)
        }
        None => {
            let data = cwd.join(a.data_dir.clone().unwrap_or_else(|| "centaur-data".into()));
            (
                ServerConfig::builtin(&data).map_err(anyhow::Error::msg)?,
                cwd.clone(),
            )
        }
    };
    if let Some(l) = a.listen {
        cfg.listen = Some(l);
    }
    if let Some(d) = a.data_dir {
        cfg.data_dir = Some(cwd.join(d));
    }
    if let Some(u) = a.database_url.filter(|u| !u.is_empty()) {
        cfg.database_url = Some(u);
    }
    let settings = cfg
        .settle(&base)
        .map_err(|e| anyhow::anyhow!("the config is invalid:\n{e}"))?;
    if a.check {
        let backend = describe_backend(&settings.backend);
        println!(
            "the config is valid: listen {}, data {}, store {}, sandboxes {backend}, harnesses {} (default {})",
            settings.listen,
            settings.data_dir.display(),
            if settings.database_url.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            settings
                .harnesses
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            settings.default_harness,
        );
        return Ok(0);
    }
    let data = settings.data_dir.clone();
    let harness = settings.default_harness.clone();
    control::server::serve(settings, |addr| {
        eprintln!(
            "centaur server: listening on http://{addr} (data {}, default harness {harness})",
            data.display()
        );
    })
    .await?;
    Ok(0)
}

/// `--check`'s words for where sandboxes run.
fn describe_backend(b: &config::Backend) -> String {
    match b {
        config::Backend::Local => "local".to_string(),
        config::Backend::Kubernetes(k) => format!(
            "kubernetes (namespace {}, image {}, gateway image {}, centaur.internal {}, workspaces {})",
            k.namespace.as_deref().unwrap_or("of the server's pod"),
            k.image,
            k.gateway_image,
            k.api
                .as_deref()
                .map_or("off (no sandbox.kubernetes.api)".into(), |a| format!(
                    "via {a}"
                )),
            k.workspace
                .as_ref()
                .map_or("in the pod".into(), |w| format!(
                    "on a {} claim per thread",
                    w.size
                )),
        ),
    }
}
