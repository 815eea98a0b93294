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
    #[serde(rename = "1password_connect")]
    OnePasswordConnect {
        secret_ref: S,
        connect_host: Option<String>,
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
    /// A field of a 1Password item, read from a 1Password Connect server's REST API.
    OnePasswordConnect {
        /// The reference parsed from `op://vault/item/[section/]field`.
        reference: OpRef,
        /// Connect's base URL; `None` = the gateway's `OP_CONNECT_HOST`.
        host: Option<String>,
        /// Where the Connect token is read from (default `OP_CONNECT_TOKEN`).
        token: VaultToken,
        /// How long a value is fresh; `None` = until reload.
        ttl: Option<Duration>,
        /// How long a failure is remembered before retrying.
        failure_ttl: Duration,
        /// Extract this top-level string field of a JSON object.
        json_key: Option<String>,
    },
}

/// A 1Password secret reference, `op://vault/item/[section/]field`: each part a title or an
/// id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRef {
    /// Vault title or id.
    pub vault: String,
    /// Item title or id.
    pub item: String,
    /// Section label or id, if the reference names one.
    pub section: Option<String>,
    /// Field label or id.
    pub field: String,
}

impl std::str::FromStr for OpRef {
    type Err = String;

    fn from_str(s: &str) -> Result<OpRef, String> {
        let rest = s
            .strip_prefix("op://")
            .ok_or_else(|| format!("`{s}` does not start with op://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("`{s}` has an empty part"));
        }
        match parts.as_slice() {
            [v, i, f] => Ok(OpRef {
                vault: (*v).into(),
                item: (*i).into(),
                section: None,
                field: (*f).into(),
            }),
            [v, i, sec, f] => Ok(OpRef {
                vault: (*v).into(),
                item: (*i).into(),
                section: Some((*sec).into()),
                field: (*f).into(),
            }),
            _ => Err(format!(
                "`{s}` is not op://vault/item/field or op://vault/item/section/field"
            )),
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.section {
            Some(s) => write!(f, "op://{}/{}/{s}/{}", self.vault, self.item, self.field),
            None => write!(f, "op://{}/{}/{}", self.vault, self.item, self.field),
        }
    }
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
            }
            | Source::OnePasswordConnect {
                ttl, failure_ttl, ..
            } => (*ttl, *failure_ttl),
        }
    }

    /// The `json_key` to extract, if any.
    pub fn json_key(&self) -> Option<&str> {
        match self {
            Source::Env { json_key, .. }
            | Source::File { json_key, .. }
            | Source::Vault { json_key, .. }
            | Source::OnePasswordConnect { json_key, .. } => json_key.as_deref(),
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
            Source::OnePasswordConnect { reference, .. } => write!(f, "{reference}"),
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
        op @ RawSource::OnePasswordConnect { .. } => connect_source(path, op, errs)?,
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

/// Reports a base URL that is not http(s).
fn http_url(path: &str, key: &str, url: Option<&str>, example: &str, errs: &mut Errors) {
    if let Some(u) = url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        errs.hint(
            format!("{path}.{key}"),
            (0, 0),
            format!("`{u}` is not an http(s) URL"),
            example,
        );
    }
}

/// Where a service's token is read: `token_env` (default `env_default`) or `token_file`.
fn token(
    path: &str,
    service: &str,
    env_default: &str,
    token_env: Option<String>,
    token_file: Option<String>,
    errs: &mut Errors,
) -> Option<VaultToken> {
    match (token_env, token_file) {
        (None, Some(f)) => Some(VaultToken::File(f)),
        (e, None) => Some(VaultToken::Env(e.unwrap_or_else(|| env_default.into()))),
        (Some(_), Some(_)) => {
            errs.push(
                path,
                (0, 0),
                format!("give the {service} token by `token_env` or `token_file`, not both"),
            );
            None
        }
    }
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
    let example = "e.g. `https://vault.internal:8200`; omit it to use VAULT_ADDR";
    http_url(path, "address", address.as_deref(), example, errs);
    let token = token(path, "Vault", "VAULT_TOKEN", token_env, token_file, errs)?;
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

/// A `1password_connect` source: `secret_ref` parsed, the Connect host and token from the
/// source or, as in iron-proxy, from `OP_CONNECT_HOST` and `OP_CONNECT_TOKEN`.
fn connect_source(path: &str, raw: RawSource, errs: &mut Errors) -> Option<NamedSource> {
    let RawSource::OnePasswordConnect {
        secret_ref,
        connect_host,
        token_env,
        token_file,
        ttl,
        failure_ttl,
        json_key,
    } = raw
    else {
        // Only called with a Connect source.
        return None;
    };
    let reference: OpRef = match secret_ref.value.parse() {
        Ok(r) => r,
        Err(e) => {
            errs.hint(
                format!("{path}.secret_ref"),
                crate::value::pos(&secret_ref),
                e,
                "e.g. op://ai-agents/openai/credential (titles or ids)",
            );
            return None;
        }
    };
    let example = "e.g. `http://op-connect:8080`; omit it to use OP_CONNECT_HOST";
    http_url(path, "connect_host", connect_host.as_deref(), example, errs);
    let token = token(
        path,
        "Connect",
        "OP_CONNECT_TOKEN",
        token_env,
        token_file,
        errs,
    )?;
    let (ttl, failure_ttl) = ttls(path, ttl, failure_ttl, errs);
    Some(NamedSource {
        name: reference.to_string(),
        source: Source::OnePasswordConnect {
            reference,
            host: connect_host,
            token,
            ttl,
            failure_ttl,
            json_key,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::OpRef;

    #[test]
    fn op_references_parse_with_and_without_a_section() {
        let r: OpRef = "op://ai-agents/openai/credential".parse().unwrap();
        assert_eq!(
            (r.vault.as_str(), r.item.as_str(), r.field.as_str()),
            ("ai-agents", "openai", "credential")
        );
        assert_eq!(r.section, None);
        let r: OpRef = "op://v/i/s/f".parse().unwrap();
        assert_eq!(r.section.as_deref(), Some("s"));
        assert_eq!(r.to_string(), "op://v/i/s/f");
        for bad in [
            "ai-agents/openai/credential",
            "op://v/i",
            "op://v//f",
            "op://a/b/c/d/e",
        ] {
            assert!(bad.parse::<OpRef>().is_err(), "{bad}");
        }
    }
}
