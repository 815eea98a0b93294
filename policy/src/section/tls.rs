//! `tls`: the certificate authority that signs intercepted connections' leaves.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::value::{S, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub mode: Option<S>,
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub cert_cache_size: Option<u64>,
    pub leaf_cert_expiry_hours: Option<u64>,
    pub leaf_issue_rate: Option<u32>,
    pub leaf_issue_burst: Option<u32>,
}

/// Certificate authority settings.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `tls.mode: sni-only`: HTTPS passes through untouched, judged by its server name; no
    /// CA, and nothing but host rules can apply to it.
    pub sni_only: bool,
    /// CA certificate PEM path.
    pub ca_cert: Option<String>,
    /// CA private key PEM path.
    pub ca_key: Option<String>,
    /// Leaf certificates kept in memory.
    pub cert_cache_size: u64,
    /// Validity of a leaf certificate.
    pub leaf_validity: Duration,
    /// New leaves issued per second, sustained (ours; default 20): a flood of new names
    /// under an allowed wildcard costs a signature each.
    pub leaf_issue_rate: u32,
    /// New leaves issued at once before the rate applies (default 100).
    pub leaf_issue_burst: u32,
}

pub(crate) fn tls(raw: crate::section::tls::RawTls, errs: &mut Errors) -> TlsConfig {
    let sni_only = match raw.mode.as_ref().map(|m| m.value.as_str()) {
        None | Some("mitm") => false,
        Some("sni-only") => true,
        Some(other) => {
            if let Some(m) = &raw.mode {
                errs.hint(
                    "tls.mode",
                    pos(m),
                    format!("unknown mode `{other}`"),
                    "use `mitm` (the default) or `sni-only`",
                );
            }
            false
        }
    };
    if sni_only && raw.ca_cert.is_some() {
        errs.warn(
            "tls",
            (0, 0),
            "`ca_cert`/`ca_key` are not used with `mode: sni-only` (TLS is passed through, never terminated)",
        );
    }
    if raw.ca_cert.is_some() != raw.ca_key.is_some() {
        errs.push(
            "tls",
            (0, 0),
            "`ca_cert` and `ca_key` must be given together",
        );
    }
    TlsConfig {
        sni_only,
        ca_cert: raw.ca_cert,
        ca_key: raw.ca_key,
        cert_cache_size: raw.cert_cache_size.filter(|&n| n > 0).unwrap_or(1000),
        leaf_validity: Duration::from_secs(
            3600 * raw.leaf_cert_expiry_hours.filter(|&h| h > 0).unwrap_or(24),
        ),
        leaf_issue_rate: raw.leaf_issue_rate.filter(|&n| n > 0).unwrap_or(20),
        leaf_issue_burst: raw.leaf_issue_burst.filter(|&n| n > 0).unwrap_or(100),
    }
}
