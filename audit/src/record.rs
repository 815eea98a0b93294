//! The audit record. Field names follow iron-proxy (`host`, `method`, `path`, `action`,
//! `status_code`, `duration_ms`, `request_transforms`, `response_transforms`, `rejected_by`)
//! so existing pipelines keep working; the rest are ours (DESIGN.md "Audit record").

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

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
    pub name: String,
    /// `allow`, `reject` or `error`.
    pub action: String,
    /// The rule that matched, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What the transform did: secret names and locations, never values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

/// One audit record: one per request, tunnel or refused connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// RFC 3339 UTC timestamp with nanoseconds, taken when the request started.
    pub ts: String,
    /// Unique id of this record.
    pub id: String,
    /// Sandbox identity labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sandbox: BTreeMap<String, String>,
    /// Listener that accepted the connection: `https`, `http`, `tunnel`.
    pub listener: &'static str,
    /// Client socket address.
    pub client: String,
    /// Destination host (normalised; `host:port` when the port is not the default).
    pub host: String,
    /// HTTP method; `CONNECT`/`SOCKS5` for tunnels; absent for refused handshakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request path, without the query string (which may hold credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SNI sent by the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Client-side TLS parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// The upstream address actually connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Outcome.
    pub action: Action,
    /// Status returned to the client (HTTP status; 200 for an established tunnel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Stable reason code (docs/reason-codes.md).
    pub reason: String,
    /// The policy rule that allowed the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The transform that rejected the request (iron-proxy field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
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
    pub tunnel: Option<String>,
    /// A short error description (never a secret, never a request or config excerpt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Position in the hash chain, from 1; set by the writer.
    pub seq: u64,
    /// The previous record's `hash` (64 zeros for the first); set by the writer. The record's
    /// own `hash` follows it on the line (`chain.rs`).
    pub prev_hash: String,
}

impl Record {
    /// A record started now, with a fresh id and everything else empty.
    pub fn start(listener: &'static str, client: String) -> Record {
        Record {
            ts: now_rfc3339(),
            id: new_id(),
            sandbox: BTreeMap::new(),
            listener,
            client,
            host: String::new(),
            method: None,
            path: None,
            sni: None,
            tls: None,
            upstream: None,
            action: Action::Reject,
            status_code: None,
            reason: String::new(),
            rule: None,
            rejected_by: None,
            duration_ms: 0.0,
            bytes_in: 0,
            bytes_out: 0,
            request_transforms: Vec::new(),
            response_transforms: Vec::new(),
            tunnel: None,
            error: None,
            seq: 0,
            prev_hash: String::new(),
        }
    }
}

/// The current time as RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    format_ts(OffsetDateTime::now_utc())
}

/// A UTC time in the records' fixed-width `ts` format, which sorts as text in time order.
pub fn format_ts(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    t.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000000Z".into())
}

fn new_id() -> String {
    let n: u128 = rand::random();
    format!("{n:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_iron_field_names_and_omits_empty_ones() {
        let mut r = Record::start("https", "127.0.0.1:5000".into());
        r.host = "example.com".into();
        r.reason = "not_allowlisted".into();
        r.rejected_by = Some("allowlist".into());
        r.status_code = Some(403);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["action"], "reject");
        assert_eq!(v["status_code"], 403);
        assert_eq!(v["rejected_by"], "allowlist");
        assert!(v.get("request_transforms").is_none());
        assert!(v.get("sandbox").is_none());
        assert_eq!(v["ts"].as_str().unwrap().len(), 30);
        assert_eq!(v["id"].as_str().unwrap().len(), 32);
    }
}
