//! The policy file as written: serde structs that refuse unknown keys. Validation turns these
//! into the types of `config.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::value::{S, duration, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    /// `stdout` or a file path: shorthand for `file: {path}` without rotation.
    pub output: Option<S>,
    /// JSON lines on standard output (default: on unless a file is given).
    pub stdout: Option<bool>,
    pub file: Option<RawAuditFile>,
    pub otlp: Option<RawOtlp>,
    /// `batch` (default) or `strict`.
    pub durability: Option<S>,
    /// While the audit cannot be written: `refuse` traffic (503 `audit_unavailable`, the
    /// default with `strict`) or `continue` serving it (the default with `batch`).
    pub on_failure: Option<S>,
    /// Batch mode: longest time between fsyncs (default 100ms).
    pub sync_interval: Option<S>,
    /// Batch mode: most records between fsyncs (default 1000).
    pub sync_records: Option<usize>,
    #[serde(default)]
    pub sandbox: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuditFile {
    pub path: S,
    /// Rotate at this size, e.g. `100MiB`.
    pub max_size: Option<S>,
    /// Rotate when the file's first record is this old, e.g. `1h`.
    pub max_age: Option<S>,
    /// Rotated files to keep (default: all).
    pub keep: Option<usize>,
    /// Gzip rotated files.
    pub compress: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOtlp {
    /// Base endpoint, e.g. `http://127.0.0.1:4318`; `OTEL_EXPORTER_OTLP_*` override it.
    pub endpoint: Option<S>,
    /// `http/protobuf` (default) or `http/json`.
    pub protocol: Option<S>,
}

/// Audit settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// JSON lines on standard output.
    pub stdout: bool,
    /// A hash-chained JSON lines file with rotation.
    pub file: Option<AuditFile>,
    /// OTLP/HTTP logs export. Also enabled by `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` when the file does not mention it.
    pub otlp: Option<OtlpConfig>,
    /// When a record counts as written.
    pub durability: Durability,
    /// While a sink is failing, refuse requests before they reach an upstream.
    pub refuse_when_failing: bool,
    /// Identity labels written into every record.
    pub sandbox: BTreeMap<String, String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            stdout: true,
            file: None,
            otlp: None,
            durability: Durability::default(),
            refuse_when_failing: false,
            sandbox: BTreeMap::new(),
        }
    }
}

/// The audit file and its rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFile {
    /// The live file; rotated files are `PATH.<first seq>` (and `.gz` when compressed).
    pub path: String,
    /// Rotate when the live file reaches this size.
    pub max_bytes: Option<u64>,
    /// Rotate when the live file's first record is this old.
    pub max_age: Option<Duration>,
    /// Rotated files to keep; older ones are deleted. `None` keeps all.
    pub keep: Option<usize>,
    /// Gzip rotated files.
    pub compress: bool,
}

/// OTLP settings written in the policy file; the standard `OTEL_EXPORTER_OTLP_*` variables
/// fill in (and for the endpoint, override) what is not written here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtlpConfig {
    /// Base endpoint (`/v1/logs` is appended) — as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `http/json`.
    pub protocol: Option<String>,
}

/// When a record counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Records are written as they come and fsynced every `interval` or every `records`
    /// records, whichever is first. A power cut can lose up to that much; `kill -9` loses only
    /// records still queued in the process.
    Batch {
        /// Longest time between fsyncs.
        interval: Duration,
        /// Most records between fsyncs.
        records: usize,
    },
    /// A response is released to the client only after its record is fsynced.
    Strict,
}

const SYNC_INTERVAL: Duration = Duration::from_millis(100);

const SYNC_RECORDS: usize = 1000;

impl Default for Durability {
    fn default() -> Self {
        Durability::Batch {
            interval: SYNC_INTERVAL,
            records: SYNC_RECORDS,
        }
    }
}

pub(crate) fn audit(raw: RawAudit, errs: &mut Errors) -> AuditConfig {
    let mut file = raw.file.and_then(|f| audit_file(f, errs));
    if let Some(out) = raw.output {
        if file.is_some() {
            errs.push(
                "audit.output",
                pos(&out),
                "give either `output` or `file`, not both (`file` adds rotation)",
            );
        } else if out.value != "stdout" && out.value != "-" {
            file = Some(AuditFile {
                path: out.value.clone(),
                max_bytes: None,
                max_age: None,
                keep: None,
                compress: false,
            });
        }
    }
    let stdout = raw.stdout.unwrap_or(file.is_none());
    let otlp = raw.otlp.map(|o| {
        if let Some(p) = &o.protocol
            && !matches!(p.value.as_str(), "http/protobuf" | "http/json")
        {
            errs.push(
                "audit.otlp.protocol",
                pos(p),
                format!(
                    "unsupported OTLP protocol `{}` (use http/protobuf or http/json)",
                    p.value
                ),
            );
        }
        OtlpConfig {
            endpoint: o.endpoint.map(|s| s.value.clone()),
            protocol: o.protocol.map(|s| s.value.clone()),
        }
    });
    let interval = duration(
        raw.sync_interval,
        SYNC_INTERVAL,
        "audit.sync_interval",
        errs,
    );
    let records = raw.sync_records.unwrap_or(SYNC_RECORDS).max(1);
    let durability = match raw.durability.as_ref().map(|s| s.value.as_str()) {
        None | Some("batch") => Durability::Batch { interval, records },
        Some("strict") => Durability::Strict,
        Some(other) => {
            if let Some(s) = &raw.durability {
                errs.push(
                    "audit.durability",
                    pos(s),
                    format!("unknown durability `{other}` (use batch or strict)"),
                );
            }
            Durability::default()
        }
    };
    let refuse_when_failing = on_failure(raw.on_failure.as_ref(), durability, errs);
    if !stdout && file.is_none() && otlp.is_none() {
        errs.push(
            "audit",
            (0, 0),
            "every audit sink is off: enable stdout, a file or otlp",
        );
    }
    AuditConfig {
        stdout,
        file,
        otlp,
        durability,
        refuse_when_failing,
        sandbox: raw.sandbox,
    }
}

/// `audit.on_failure`: whether to refuse traffic while the audit cannot be written.
fn on_failure(raw: Option<&S>, durability: Durability, errs: &mut Errors) -> bool {
    match raw.map(|s| s.value.as_str()) {
        None => durability == Durability::Strict,
        Some("refuse") => true,
        Some("continue") => false,
        Some(other) => {
            if let Some(s) = raw {
                errs.push(
                    "audit.on_failure",
                    pos(s),
                    format!("unknown on_failure `{other}` (use refuse or continue)"),
                );
            }
            false
        }
    }
}

fn audit_file(f: RawAuditFile, errs: &mut Errors) -> Option<AuditFile> {
    if f.path.value.trim().is_empty() {
        errs.push("audit.file.path", pos(&f.path), "must not be empty");
        return None;
    }
    let max_bytes = f.max_size.and_then(|s| match parse_size(&s.value) {
        Ok(0) => {
            errs.push("audit.file.max_size", pos(&s), "must be greater than zero");
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            errs.push("audit.file.max_size", pos(&s), e);
            None
        }
    });
    let max_age = f.max_age.map(|s| {
        duration(
            Some(s),
            Duration::from_secs(3600),
            "audit.file.max_age",
            errs,
        )
    });
    Some(AuditFile {
        path: f.path.value.clone(),
        max_bytes,
        max_age,
        keep: f.keep,
        compress: f.compress.unwrap_or(false),
    })
}

/// Parses a size with a unit: `512KiB`, `100MiB`, `1GiB` (also `KB`, `MB`, `GB`, `B`).
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (n, unit) = raw.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{raw}` is not a size (expected e.g. `100MiB`)"))?;
    let mult: u64 = match unit.trim() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "" => return Err(format!("`{raw}` has no unit (use B, KiB, MiB or GiB)")),
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{raw}` (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{raw}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_need_units() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("5 KB"), Ok(5000));
        assert!(parse_size("100").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
