//! The audit record. Field names follow iron-proxy (`host`, `method`, `path`, `action`,
//! `status_code`, `duration_ms`, `request_transforms`, `response_transforms`, `rejected_by`)
//! so existing pipelines keep working; the rest are ours (DESIGN.md "Audit record").

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

mod json;

/// What happened to the request or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Allowed and forwarded (whatever the upstream answered).
    Allow,
    /// Refused by policy or as bad input.
    Reject,
    /// Allowed, but the gateway or the upstream failed.
    Error,
    /// The client went away before the exchange finished.
    ClientCancel,
}

/// Negotiated TLS parameters with the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The ALPN protocol, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
}

/// One transform's effect on a request (iron-proxy's trace entry).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transform {
    /// Transform name, e.g. `allowlist`.
    pub name: &'static str,
    /// `allow`, `reject` or `error`.
    pub action: &'static str,
    /// The rule that matched, if any (shared with the compiled policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
    /// What the transform did: secret names and locations, never values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
}

/// One JSON-RPC message an `mcp` server judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McpMessage {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The method (`tools/call`, `initialize`, …).
    pub method: String,
    /// Why it was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The tool, for a `tools/call`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// What a transform did to a request or response, as its audit entry shows it. Names,
/// locations and codes only: no type here can hold a secret value (invariant 3). Fields are
/// declared in the order they are written, which is alphabetical.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Annotations {
    /// `secrets`: the entries that put a value on the wire, and those whose source failed.
    Secrets {
        /// Entries injected (header or query), with where.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        injected: Vec<Placed>,
        /// The required secret that refused the request.
        #[serde(skip_serializing_if = "Option::is_none")]
        rejected: Option<String>,
        /// Optional secrets whose source could not be read (sent without).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        secret_unavailable: Vec<String>,
        /// Entries whose placeholder was swapped, with where.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        swapped: Vec<Placed>,
    },
    /// `gcp_auth` and `oauth_token`: a minted token set on the request, or why not.
    Token {
        /// The sanitised mint failure (an OAuth error code, `token_endpoint_http_<n>`, …).
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The OAuth grant (`oauth_token`).
        #[serde(skip_serializing_if = "Option::is_none")]
        grant: Option<&'static str>,
        /// Where the token was set (`header:authorization`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        injected: Vec<String>,
        /// Why the request was refused (`token_unavailable`).
        #[serde(skip_serializing_if = "Option::is_none")]
        rejected: Option<&'static str>,
        /// The service account the token was minted for (`gcp_auth`).
        #[serde(skip_serializing_if = "Option::is_none")]
        service_account: Option<String>,
        /// Why the request went on without a token (`token_unavailable`).
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<&'static str>,
    },
    /// `hmac_sign`: the headers it set.
    Signed {
        /// Header names.
        injected: Vec<String>,
    },
    /// `mcp`: the server and each JSON-RPC message judged (method and tool names, never
    /// arguments).
    Mcp {
        /// The messages, in order.
        messages: Vec<McpMessage>,
        /// The server's name.
        server: String,
    },
    /// `aws_auth`: the headers it set, for the region and service the client signed for.
    AwsSigned {
        /// Header names.
        injected: Vec<String>,
        /// The region of the signature's scope.
        region: String,
        /// The service of the signature's scope.
        service: String,
    },
    /// A refusal with only its reason code (`hmac_sign`).
    Rejected {
        /// The reason code.
        rejected: &'static str,
    },
    /// Response scrubbing: how many real values were turned back into placeholders.
    Scrubbed {
        /// Occurrences replaced.
        scrubbed: u64,
    },
    /// `header_allowlist`: the request headers it removed (names, sorted).
    Stripped {
        /// Header names.
        stripped_headers: Vec<String>,
    },
    /// A token request the gateway answered itself.
    Stubbed {
        /// The endpoint answered.
        stubbed: String,
    },
}

/// One secret and where it was put.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placed {
    /// `header:<name>`, `query:<name>`, `path` or `body`.
    pub locations: Vec<String>,
    /// The secret's name (never its value).
    pub secret: String,
}

/// One audit record: one per request, tunnel or refused connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// RFC 3339 UTC timestamp with nanoseconds, taken when the request started.
    pub ts: String,
    /// Unique id of this record.
    pub id: String,
    /// Sandbox identity labels (the writer's, shared by every record it emits).
    #[serde(skip_serializing_if = "no_labels")]
    pub sandbox: Arc<BTreeMap<String, String>>,
    /// Listener that accepted the connection: `https`, `http`, `tunnel`.
    pub listener: &'static str,
    /// Client socket address (formatted once per connection).
    pub client: Arc<str>,
    /// Destination host (normalised; `host:port` when the port is not the default).
    pub host: String,
    /// HTTP method; `CONNECT`/`SOCKS5` for tunnels; absent for refused handshakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Cow<'static, str>>,
    /// Request path, without the query string (which may hold credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SNI sent by the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<Arc<str>>,
    /// Client-side TLS parameters (the connection's, shared by its requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Arc<TlsInfo>>,
    /// `sni-only` for a TLS connection passed through untouched (iron-proxy's `mode`; absent
    /// when the gateway terminated TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// The upstream address actually connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Arc<str>>,
    /// Outcome.
    pub action: Action,
    /// Status returned to the client (HTTP status; 200 for an established tunnel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Stable reason code (docs/reason-codes.md).
    pub reason: &'static str,
    /// The policy rule that allowed the request (shared with the compiled policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
    /// The transform that rejected the request (iron-proxy field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<&'static str>,
    /// Wall time from the start of the request to the end of the response body, in ms.
    pub duration_ms: f64,
    /// Bytes of request body received from the client.
    pub bytes_in: u64,
    /// Bytes of response body sent to the client.
    pub bytes_out: u64,
    /// Request transform trace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_transforms: Vec<Transform>,
    /// Response transform trace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_transforms: Vec<Transform>,
    /// The tunnel this request travelled in (`host:port` of the CONNECT or SOCKS5 target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Arc<str>>,
    /// A short error description (never a secret, never a request or config excerpt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    // The writer appends the chain members to the serialised record: `seq` (its position,
    // from 1), `prev_hash` (the previous record's hash, 64 zeros for the first) and `hash`
    // (`chain.rs`).
}

fn no_labels(labels: &Arc<BTreeMap<String, String>>) -> bool {
    labels.is_empty()
}

impl Record {
    /// A record started now, with a fresh id and everything else empty.
    pub fn start(listener: &'static str, client: Arc<str>) -> Record {
        Record {
            ts: now_rfc3339(),
            id: new_id(),
            sandbox: Arc::default(),
            listener,
            client,
            host: String::new(),
            method: None,
            path: None,
            sni: None,
            tls: None,
            mode: None,
            upstream: None,
            action: Action::Reject,
            status_code: None,
            reason: "",
            rule: None,
            rejected_by: None,
            duration_ms: 0.0,
            bytes_in: 0,
            bytes_out: 0,
            request_transforms: Vec::new(),
            response_transforms: Vec::new(),
            tunnel: None,
            error: None,
        }
    }
}

/// The current time as RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    format_ts(OffsetDateTime::now_utc())
}

/// A UTC time in the records' fixed-width `ts` format, which sorts as text in time order.
/// Every record takes one, so the digits are written directly rather than by interpreting a
/// format description, for the years 0 to 9999 that this format has room for.
pub fn format_ts(t: OffsetDateTime) -> String {
    let Ok(year) = u32::try_from(t.year()) else {
        return format_ts_described(t);
    };
    if year > 9999 {
        return format_ts_described(t);
    }
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    for (at, len, n) in [
        (0, 4, year),
        (5, 2, u32::from(u8::from(t.month()))),
        (8, 2, u32::from(t.day())),
        (11, 2, u32::from(t.hour())),
        (14, 2, u32::from(t.minute())),
        (17, 2, u32::from(t.second())),
        (20, 9, t.nanosecond()),
    ] {
        let mut n = n;
        for digit in out[at..at + len].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    out.iter().map(|&b| char::from(b)).collect()
}

fn format_ts_described(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    t.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000000Z".into())
}

/// 128 random bits in lowercase hex.
fn new_id() -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(char::from(DIGITS[usize::from(b >> 4)]));
        id.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_iron_field_names_and_omits_empty_ones() {
        let mut r = Record::start("https", "127.0.0.1:5000".into());
        r.host = "example.com".into();
        r.reason = "not_allowlisted";
        r.rejected_by = Some("allowlist");
        r.status_code = Some(403);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["action"], "reject");
        assert_eq!(v["status_code"], 403);
        assert_eq!(v["rejected_by"], "allowlist");
        assert!(v.get("request_transforms").is_none());
        assert!(v.get("sandbox").is_none());
        assert_eq!(v["ts"].as_str().unwrap().len(), 30);
        assert_eq!(v["id"].as_str().unwrap().len(), 32);
        assert!(
            v["id"]
                .as_str()
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
    }

    #[test]
    fn timestamps_written_digit_by_digit_match_the_format_description() {
        let base = OffsetDateTime::now_utc().unix_timestamp();
        for secs in [0, 951_782_400, 1_709_251_199, base, 253_402_300_799] {
            for nanos in [0, 1, 999_999_999, 123_456_789] {
                let t = OffsetDateTime::from_unix_timestamp(secs).unwrap()
                    + time::Duration::nanoseconds(nanos);
                assert_eq!(format_ts(t), format_ts_described(t), "{secs}.{nanos}");
            }
        }
        // Before year 0: the format description's own rendering.
        let far = OffsetDateTime::from_unix_timestamp(-100_000_000_000).unwrap();
        assert_eq!(format_ts(far), format_ts_described(far));
    }
}
