//! The policy file as written: serde structs that refuse unknown keys. Validation turns these
//! into the types of `config.rs`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A string with its position in the file; in the schema, a string.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct S(pub Spanned<String>);

impl std::ops::Deref for S {
    type Target = Spanned<String>;
    fn deref(&self) -> &Spanned<String> {
        &self.0
    }
}

impl JsonSchema for S {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "string".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(g)
    }
    fn inline_schema() -> bool {
        true
    }
}

/// A listener address that may be set to `null` to turn the listener off.
pub(crate) type Listen = Option<Option<S>>;

fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Listen, D::Error> {
    Option::<S>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub transforms: Vec<RawTransform>,
    #[serde(default)]
    pub management: RawManagement,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub tests: Vec<RawCase>,
}

/// A file of policy test cases only.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCases {
    #[serde(default)]
    pub tests: Vec<RawCase>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCase {
    pub name: Option<String>,
    pub request: S,
    #[serde(default)]
    pub headers: Vec<S>,
    pub expect: S,
    pub reason: Option<String>,
    pub rule: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub listen: Listen,
    pub proxy_ip: Option<S>,
    pub proxy_ip6: Option<S>,
    pub upstream_resolver: Option<S>,
    #[serde(default)]
    pub passthrough: Vec<S>,
    #[serde(default)]
    pub records: Vec<RawRecord>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecord {
    pub name: S,
    #[serde(rename = "type")]
    pub kind: S,
    pub value: S,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub http_listen: Listen,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub https_listen: Listen,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub tunnel_listen: Listen,
    pub max_request_body_bytes: Option<u64>,
    pub max_response_body_bytes: Option<u64>,
    pub upstream_response_header_timeout: Option<S>,
    pub upstream_deny_cidrs: Option<Vec<S>>,
    #[schemars(skip)]
    pub upstream_proxy: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub upstream_allow_cidrs: Vec<S>,
    pub client_header_timeout: Option<S>,
    pub idle_timeout: Option<S>,
    pub upstream_connect_timeout: Option<S>,
    pub tunnel_idle_timeout: Option<S>,
    pub tls_handshake_timeout: Option<S>,
    pub max_connections: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub mode: Option<S>,
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub cert_cache_size: Option<u64>,
    pub leaf_cert_expiry_hours: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    #[serde(default)]
    pub hosts: BTreeMap<String, S>,
    #[serde(default)]
    pub ca_files: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "name", content = "config", deny_unknown_fields)]
pub(crate) enum RawTransform {
    #[serde(rename = "allowlist")]
    Allowlist(RawAllowlist),
    #[serde(rename = "secrets")]
    Secrets(RawSecrets),
    #[serde(rename = "gcp_auth")]
    GcpAuth(RawGcpAuth),
    #[serde(rename = "oauth_token")]
    OAuthToken(RawOAuth),
    #[serde(rename = "hmac_sign")]
    HmacSign(RawHmac),
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGcpAuth {
    pub keyfile_path: Option<String>,
    pub keyfile: Option<RawSource>,
    #[schemars(skip)]
    pub credentials_provider: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub subject: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOAuth {
    #[serde(default)]
    pub tokens: Vec<RawOAuthEntry>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOAuthEntry {
    pub grant: S,
    pub token_endpoint: Option<S>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub header: Option<String>,
    pub value_prefix: Option<String>,
    #[serde(default)]
    pub require: bool,
    #[serde(default)]
    pub token_endpoint_headers: BTreeMap<String, RawSource>,
    pub audience: Option<String>,
    pub refresh_token: Option<RawSource>,
    pub client_id: Option<RawSource>,
    pub client_secret: Option<RawSource>,
    pub username: Option<RawSource>,
    pub password: Option<RawSource>,
    pub issuer: Option<RawSource>,
    pub subject: Option<RawSource>,
    pub private_key: Option<RawSource>,
    pub private_key_id: Option<RawSource>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHmac {
    #[serde(default)]
    pub timestamp: RawHmacTimestamp,
    #[serde(default)]
    pub signature: RawSignature,
    #[serde(default)]
    pub credentials: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub headers: Vec<RawHmacHeader>,
    #[serde(default)]
    pub allow_chunked_body: bool,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHmacTimestamp {
    pub format: Option<S>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSignature {
    pub algorithm: Option<S>,
    pub key_encoding: Option<S>,
    pub output_encoding: Option<S>,
    pub message: Option<S>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHmacHeader {
    pub name: S,
    pub value: S,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecrets {
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecret {
    pub source: RawSource,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub replace: Option<RawReplace>,
    pub inject: Option<RawInject>,
    // iron-proxy's legacy replace fields, normalised into `replace`.
    pub proxy_value: Option<S>,
    pub match_headers: Option<Vec<S>>,
    pub match_body: Option<bool>,
    pub require: Option<bool>,
}

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

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReplace {
    pub proxy_value: Option<S>,
    pub match_headers: Option<Vec<S>>,
    #[serde(default)]
    pub match_body: bool,
    #[serde(default)]
    pub match_query: bool,
    #[serde(default)]
    pub match_path: bool,
    #[serde(default)]
    pub require: bool,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInject {
    pub header: Option<String>,
    pub query_param: Option<String>,
    pub formatter: Option<S>,
    #[serde(default)]
    pub require: bool,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAllowlist {
    #[serde(default)]
    pub domains: Vec<S>,
    #[serde(default)]
    pub cidrs: Vec<S>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub warn: bool,
    pub mode: Option<S>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub host: Option<S>,
    pub cidr: Option<S>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<S>,
    #[serde(default)]
    pub ports: Vec<u16>,
}

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
