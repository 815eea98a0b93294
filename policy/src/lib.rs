//! The policy file model: parse, validate (every error, with its path and line:column),
//! compile to an immutable [`Policy`], and evaluate a request to a [`Decision`].
//!
//! Pure: this crate does no IO and must not depend on tokio, hyper or any network code.

mod decision;
mod error;
mod explain;
mod matcher;
mod policy;
mod reason;
mod section;
mod shape;
mod transform;
mod value;

pub use decision::{Decision, Verdict};
pub use error::{ConfigError, ConfigErrors};
pub use explain::cases::{Case, parse_cases};
pub use explain::{Effect, Explanation, Sample};
pub use matcher::cidr::{Cidr, CidrError};
pub use matcher::host::{Host, HostError, HostName, HostPattern, unmap};
pub use matcher::path::{PathError, PathPattern};
pub use matcher::rule::{Request, Rule, Target};
pub use policy::{Policy, Stub};
pub use reason::Reason;
pub use section::audit::{AuditConfig, AuditFile, Durability, OtlpConfig, parse_size};
pub use section::dns::{DnsConfig, DnsRecord, DnsValue};
pub use section::management::ManagementConfig;
pub use section::mcp::{Clause, Judged, Mcp, McpDenial, McpServer, McpTool, Test};
pub use section::proxy::{DEFAULT_DENY_CIDRS, ProxyConfig, Timeouts, UpstreamConfig};
pub use section::tls::TlsConfig;
pub use section::upstream_proxy::{ProxyUrl, UpstreamProxy};
pub use section::{Config, schema};
pub use transform::allowlist::Allowlist;
pub use transform::aws_auth::AwsAuth;
pub use transform::gcp_auth::{GcpAuth, IdToken, gcp_metadata_token_path};
pub use transform::header_allowlist::{HeaderAllowlist, MANAGED_HEADERS};
pub use transform::hmac_sign::{
    Encoding, HMAC_MESSAGE_VARS, HmacAlgorithm, HmacSign, TimestampFormat,
};
pub use transform::oauth_token::{Grant, OAuthToken};
pub use transform::plan::{BodyRead, DotSegments, Plan, Step, decode_path};
pub use transform::secrets::{
    Formatter, HeaderMatch, HeaderScope, Inject, InjectTarget, Mode, Replace, SecretEntry,
};
pub use transform::source::{AwsItem, NamedSource, OpRef, Source, SourceId, VaultToken};
pub use transform::template::Template;
pub use value::{parse_duration, parse_listen};
