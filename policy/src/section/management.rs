//! `management`, `metrics` and `log`: the management API's listener and token, the metrics
//! listener, and the log level.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::value::{Listen, S, nullable, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManagement {
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub listen: Listen,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub listen: Listen,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: Option<S>,
}

/// Management API settings.
#[derive(Debug, Clone)]
pub struct ManagementConfig {
    /// Address, `None` when off.
    pub listen: Option<SocketAddr>,
    /// Name of the environment variable holding the bearer token.
    pub api_key_env: String,
    /// A file holding the bearer token (e.g. a mounted Kubernetes secret); wins over the variable.
    pub api_key_file: Option<String>,
}

pub(crate) fn log_level(raw: Option<S>, errs: &mut Errors) -> String {
    let Some(s) = raw else { return "info".into() };
    let level = s.value.to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        errs.hint(
            "log.level",
            pos(&s),
            format!("unknown level `{}`", s.value),
            "use error, warn, info or debug",
        );
    }
    level
}
