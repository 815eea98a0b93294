//! The policy file model: parse, validate (every error, with its path and line:column),
//! compile to an immutable [`Policy`], and evaluate a request to a [`Decision`].
//!
//! Pure: this crate does no IO and must not depend on tokio, hyper or any network code.

mod allowlist;
mod audit;
mod cidr;
mod config;
mod decision;
mod duration;
mod error;
mod explain;
mod host;
mod path;
mod plan;
mod raw;
mod secrets;
mod template;
mod tokens;
mod validate;
mod validate_hmac;
mod validate_secrets;
mod validate_tokens;

pub use allowlist::{Allowlist, Policy, Request, Rule, Stub, Target};
pub use audit::{AuditConfig, AuditFile, Durability, OtlpConfig, parse_size};
pub use cidr::{Cidr, CidrError};
pub use config::{
    Config, DEFAULT_DENY_CIDRS, DnsConfig, DnsRecord, DnsValue, ManagementConfig, ProxyConfig,
    Timeouts, TlsConfig, UpstreamConfig, parse_listen, schema,
};
pub use decision::{Decision, Reason, Verdict};
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use explain::{Case, Effect, Explanation, Sample, parse_cases};
pub use host::{Host, HostError, HostName, HostPattern, unmap};
pub use path::{PathError, PathPattern};
pub use plan::{BodyRead, DotSegments, Plan, Step, decode_path};
pub use secrets::{
    Formatter, HeaderMatch, HeaderScope, Inject, InjectTarget, Mode, NamedSource, Replace,
    SecretEntry, Source, SourceId, VaultToken,
};
pub use template::Template;
pub use tokens::{
    Encoding, GcpAuth, Grant, HMAC_MESSAGE_VARS, HmacAlgorithm, HmacSign, OAuthToken,
    TimestampFormat, gcp_metadata_token_path,
};
