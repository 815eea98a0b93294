//! Credential sources (`env`, `file`, `vault`, `1password`, …): where a transform's real
//! values come from. Each distinct source is read once and shared by the transforms naming it.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::value::{S, duration};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub(crate) enum RawSource {
    #[serde(rename = "env")]
    Env {
        var: String,
        json_key: Option<String>,
    },
    #[serde(rename = "file")]
    File {
        path: String,
        ttl: Option<S>,
        failure_ttl: Option<S>,
        json_key: Option<String>,
    },
    #[serde(rename = "vault")]
    Vault {
        address: Option<String>,
        mount: Option<String>,
        path: String,
        field: String,
        token_env: Option<String>,
        token_file: Option<String>,
        ttl: Option<S>,
        failure_ttl: Option<S>,
        json_key: Option<String>,
    },
}

/// Where a source sits in [`crate::Policy::sources`]; every transform refers to its
/// credentials by this index, so one source used twice is fetched and cached once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(pub usize);

/// A source and its display name (the variable, file or secret path; never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSource {
    /// Where the value comes from.
    pub source: Source,
    /// Display name for audit records and logs.
    pub name: String,
}

/// A secret source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An environment variable of the gateway process, read once.
    Env {
        /// Variable name.
        var: String,
        /// Extract this top-level string field of a JSON object.
        json_key: Option<String>,
    },
    /// A file, re-read when `ttl` expires and on reload.
    File {
        /// Path.
        path: String,
        /// How long a value is fresh; `None` = until reload.
        ttl: Option<Duration>,
        /// How long a failure is remembered before retrying.
        failure_ttl: Duration,
        /// Extract this top-level string field of a JSON object.
        json_key: Option<String>,
    },
    /// A HashiCorp Vault KV version 2 secret: `GET {address}/v1/{mount}/data/{path}`.
    Vault {
        /// Vault's base URL; `None` = the gateway's `VAULT_ADDR`.
        address: Option<String>,
        /// The KV v2 mount (`secret`).
        mount: String,
        /// The secret's path under the mount.
        path: String,
        /// Which field of the secret's data holds the value.
        field: String,
        /// Where the Vault token is read from.
        token: VaultToken,
        /// How long a value is fresh; `None` = until reload.
        ttl: Option<Duration>,
        /// How long a failure is remembered before retrying.
        failure_ttl: Duration,
        /// Extract this top-level string field of a JSON object.
        json_key: Option<String>,
    },
}

impl Source {
    /// (`ttl`, `failure_ttl`): how long a value and a failure are cached.
    pub fn ttls(&self) -> (Option<Duration>, Duration) {
        match self {
            Source::Env { .. } => (None, Duration::from_secs(60)),
            Source::File {
                ttl, failure_ttl, ..
            }
            | Source::Vault {
                ttl, failure_ttl, ..
            } => (*ttl, *failure_ttl),
        }
    }

    /// The `json_key` to extract, if any.
    pub fn json_key(&self) -> Option<&str> {
        match self {
            Source::Env { json_key, .. }
            | Source::File { json_key, .. }
            | Source::Vault { json_key, .. } => json_key.as_deref(),
        }
    }
}

/// Where the gateway reads its Vault token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultToken {
    /// An environment variable (default `VAULT_TOKEN`).
    Env(String),
    /// A file (e.g. a mounted Kubernetes secret), re-read with the secret.
    File(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env { var, .. } => write!(f, "env:{var}"),
            Source::File { path, .. } => write!(f, "file:{path}"),
            Source::Vault {
                mount, path, field, ..
            } => write!(f, "vault:{mount}/{path}#{field}"),
        }
    }
}

/// Validates a source and registers it (once, however often it is used).
pub(crate) fn source(
    path: &str,
    raw: RawSource,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<SourceId> {
    let named = match raw {
        RawSource::Env { var, json_key } => {
            if empty(path, "var", &var, errs) {
                return None;
            }
            NamedSource {
                name: var.clone(),
                source: Source::Env { var, json_key },
            }
        }
        RawSource::File {
            path: file,
            ttl,
            failure_ttl,
            json_key,
        } => {
            if empty(path, "path", &file, errs) {
                return None;
            }
            let (ttl, failure_ttl) = ttls(path, ttl, failure_ttl, errs);
            NamedSource {
                name: file.clone(),
                source: Source::File {
                    path: file,
                    ttl,
                    failure_ttl,
                    json_key,
                },
            }
        }
        vault @ RawSource::Vault { .. } => vault_source(path, vault, errs)?,
    };
    let at = match sources.iter().position(|s| *s == named) {
        Some(i) => i,
        None => {
            sources.push(named);
            sources.len() - 1
        }
    };
    Some(SourceId(at))
}

/// Reports an empty required field; true when it is empty.
fn empty(path: &str, field: &str, value: &str, errs: &mut Errors) -> bool {
    if value.is_empty() {
        errs.push(format!("{path}.{field}"), (0, 0), "is empty");
    }
    value.is_empty()
}

/// A cached source's `ttl` (none: read once) and `failure_ttl` (default one minute).
fn ttls(
    path: &str,
    ttl: Option<S>,
    failure_ttl: Option<S>,
    errs: &mut Errors,
) -> (Option<Duration>, Duration) {
    let ttl = ttl.map(|t| duration(Some(t), Duration::ZERO, &format!("{path}.ttl"), errs));
    let failure_ttl = duration(
        failure_ttl,
        Duration::from_secs(60),
        &format!("{path}.failure_ttl"),
        errs,
    );
    (ttl, failure_ttl)
}

/// A `vault` source: a KV field, its token from an environment variable or a file.
fn vault_source(path: &str, raw: RawSource, errs: &mut Errors) -> Option<NamedSource> {
    let RawSource::Vault {
        address,
        mount,
        path: secret,
        field,
        token_env,
        token_file,
        ttl,
        failure_ttl,
        json_key,
    } = raw
    else {
        // Only called with a Vault source.
        return None;
    };
    if empty(path, "path", &secret, errs) | empty(path, "field", &field, errs) {
        return None;
    }
    if let Some(a) = &address
        && !(a.starts_with("https://") || a.starts_with("http://"))
    {
        errs.hint(
            format!("{path}.address"),
            (0, 0),
            format!("`{a}` is not an http(s) URL"),
            "e.g. `https://vault.internal:8200`; omit it to use VAULT_ADDR",
        );
    }
    let token = match (token_env, token_file) {
        (None, Some(f)) => VaultToken::File(f),
        (e, None) => VaultToken::Env(e.unwrap_or_else(|| "VAULT_TOKEN".into())),
        (Some(_), Some(_)) => {
            errs.push(
                path,
                (0, 0),
                "give the Vault token by `token_env` or `token_file`, not both",
            );
            return None;
        }
    };
    let (ttl, failure_ttl) = ttls(path, ttl, failure_ttl, errs);
    let mount = mount.unwrap_or_else(|| "secret".into());
    Some(NamedSource {
        name: format!("vault:{mount}/{secret}#{field}"),
        source: Source::Vault {
            address,
            mount,
            path: secret,
            field,
            token,
            ttl,
            failure_ttl,
            json_key,
        },
    })
}
