//! The source types: what a policy file says (`RawSource`), what it means (`Source`), and the
//! references and ids transforms hold.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::value::S;

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
    #[serde(rename = "aws_sm")]
    AwsSm {
        secret_id: String,
        region: Option<String>,
        endpoint: Option<String>,
        ttl: Option<S>,
        failure_ttl: Option<S>,
        json_key: Option<String>,
    },
    #[serde(rename = "aws_ssm")]
    AwsSsm {
        name: String,
        region: Option<String>,
        with_decryption: Option<bool>,
        endpoint: Option<String>,
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
    /// A secret in AWS Secrets Manager or Parameter Store, read with the gateway's own AWS
    /// credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    Aws {
        /// The secret or parameter.
        item: AwsItem,
        /// The region; `None` = `AWS_REGION` or `AWS_DEFAULT_REGION`.
        region: Option<String>,
        /// The service's base URL; `None` = the SDKs' `AWS_ENDPOINT_URL_*` variables, else
        /// the region's public endpoint.
        endpoint: Option<String>,
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

/// What an AWS source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsItem {
    /// A Secrets Manager secret's `SecretString` (`GetSecretValue`).
    Secret(String),
    /// A Parameter Store parameter's value (`GetParameter`).
    Parameter {
        /// The parameter's name.
        name: String,
        /// Decrypt a `SecureString` (default true).
        decrypt: bool,
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
            }
            | Source::Aws {
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
            | Source::OnePasswordConnect { json_key, .. }
            | Source::Aws { json_key, .. } => json_key.as_deref(),
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
            Source::Aws { item, .. } => match item {
                AwsItem::Secret(id) => write!(f, "aws_sm:{id}"),
                AwsItem::Parameter { name, .. } => write!(f, "aws_ssm:{name}"),
            },
        }
    }
}
