//! Credential sources (`env`, `file`, `vault`, `1password_connect`, `aws_sm`, `aws_ssm`): where
//! a transform's real values come from. Each distinct source is read once and shared by the
//! transforms naming it. `types` holds the types, `remote` the validation of each kind.

mod remote;
mod types;

pub(crate) use types::RawSource;
pub use types::{AwsItem, NamedSource, OpRef, Source, SourceId, VaultToken};

use crate::error::Errors;

use remote::{aws_source, connect_source, empty, ttls, vault_source};

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
        aws @ (RawSource::AwsSm { .. } | RawSource::AwsSsm { .. }) => aws_source(path, aws, errs)?,
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
