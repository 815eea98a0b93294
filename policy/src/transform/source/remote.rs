//! Validating sources: the shared `ttl`/`failure_ttl` and empty-field rules, and the sources
//! that reach a service (Vault, 1Password Connect, AWS).

use std::time::Duration;

use crate::error::Errors;
use crate::value::{S, duration};

use super::types::{AwsItem, NamedSource, OpRef, RawSource, Source, VaultToken};

/// Reports an empty required field; true when it is empty.
pub(super) fn empty(path: &str, field: &str, value: &str, errs: &mut Errors) -> bool {
    if value.is_empty() {
        errs.push(format!("{path}.{field}"), (0, 0), "is empty");
    }
    value.is_empty()
}

/// A cached source's `ttl` (none: read once) and `failure_ttl` (default one minute).
pub(super) fn ttls(
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
pub(super) fn vault_source(path: &str, raw: RawSource, errs: &mut Errors) -> Option<NamedSource> {
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

/// An `aws_sm` or `aws_ssm` source.
pub(super) fn aws_source(path: &str, raw: RawSource, errs: &mut Errors) -> Option<NamedSource> {
    let (item, region, endpoint, ttl, failure_ttl, json_key) = match raw {
        RawSource::AwsSm {
            secret_id,
            region,
            endpoint,
            ttl,
            failure_ttl,
            json_key,
        } => {
            if empty(path, "secret_id", &secret_id, errs) {
                return None;
            }
            let item = AwsItem::Secret(secret_id);
            (item, region, endpoint, ttl, failure_ttl, json_key)
        }
        RawSource::AwsSsm {
            name,
            region,
            with_decryption,
            endpoint,
            ttl,
            failure_ttl,
            json_key,
        } => {
            if empty(path, "name", &name, errs) {
                return None;
            }
            let decrypt = with_decryption.unwrap_or(true);
            let item = AwsItem::Parameter { name, decrypt };
            (item, region, endpoint, ttl, failure_ttl, json_key)
        }
        // Only called with an AWS source.
        _ => return None,
    };
    let example =
        "e.g. `https://secretsmanager.eu-west-1.amazonaws.com`; omit it for the region's endpoint";
    http_url(path, "endpoint", endpoint.as_deref(), example, errs);
    let (ttl, failure_ttl) = ttls(path, ttl, failure_ttl, errs);
    let source = Source::Aws {
        item,
        region,
        endpoint,
        ttl,
        failure_ttl,
        json_key,
    };
    Some(NamedSource {
        name: source.to_string(),
        source,
    })
}

/// A `1password_connect` source: `secret_ref` parsed, the Connect host and token from the
/// source or, as in iron-proxy, from `OP_CONNECT_HOST` and `OP_CONNECT_TOKEN`.
pub(super) fn connect_source(path: &str, raw: RawSource, errs: &mut Errors) -> Option<NamedSource> {
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
