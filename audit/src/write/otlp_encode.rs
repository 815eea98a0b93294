//! Audit records as OTLP log records, encoded as protobuf (`http/protobuf`) or JSON
//! (`http/json`), following `opentelemetry/proto/logs/v1/logs.proto`.
//!
//! Each record becomes one log record: body `request`, the time of the request's start,
//! severity from its action (error → ERROR, reject → WARN, otherwise INFO), and every member
//! of the JSON record as a flat attribute (objects as maps, lists as arrays), plus iron-proxy's
//! `remote_addr` for `client` so existing queries keep working.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One log record's parts.
struct Log {
    time_ns: u64,
    severity: (u8, &'static str),
    attributes: Map<String, Value>,
}

fn log(line: &[u8], observed: u64) -> Option<Log> {
    let Value::Object(mut attributes) = serde_json::from_slice(line).ok()? else {
        return None;
    };
    let time_ns = attributes
        .get("ts")
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .and_then(|t| u64::try_from(t.unix_timestamp_nanos()).ok())
        .unwrap_or(observed);
    let severity = match attributes.get("action").and_then(Value::as_str) {
        Some("error") => (17, "ERROR"),
        Some("reject") => (13, "WARN"),
        _ => (9, "INFO"),
    };
    if let Some(c) = attributes.get("client").cloned() {
        attributes.insert("remote_addr".into(), c);
    }
    Some(Log {
        time_ns,
        severity,
        attributes,
    })
}

fn now_ns() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(0)
}

/// An `ExportLogsServiceRequest` in protobuf.
pub fn protobuf(lines: &[Vec<u8>], resource: &[(String, String)]) -> Vec<u8> {
    let observed = now_ns();
    let mut scope_logs = Vec::new();
    message(&mut scope_logs, 1, |s| {
        string(s, 1, "centaur.audit");
        string(s, 2, env!("CARGO_PKG_VERSION"));
    });
    for l in lines.iter().filter_map(|l| log(l, observed)) {
        message(&mut scope_logs, 2, |r| {
            fixed64(r, 1, l.time_ns);
            varint_field(r, 2, u64::from(l.severity.0));
            string(r, 3, l.severity.1);
            message(r, 5, |b| string(b, 1, "request"));
            for (k, v) in &l.attributes {
                message(r, 6, |kv| key_value(kv, k, v));
            }
            fixed64(r, 11, observed);
        });
    }
    let mut resource_logs = Vec::new();
    message(&mut resource_logs, 1, |r| {
        for (k, v) in resource {
            message(r, 1, |kv| {
                string(kv, 1, k);
                message(kv, 2, |a| string(a, 1, v));
            });
        }
    });
    bytes_field(&mut resource_logs, 2, &scope_logs);
    let mut out = Vec::with_capacity(resource_logs.len() + 8);
    bytes_field(&mut out, 1, &resource_logs);
    out
}

fn key_value(buf: &mut Vec<u8>, k: &str, v: &Value) {
    string(buf, 1, k);
    message(buf, 2, |a| any_value(a, v));
}

fn any_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => {}
        Value::Bool(b) => varint_field(buf, 2, u64::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => varint_field(buf, 3, i as u64),
            (None, Some(f)) => {
                key(buf, 4, 1);
                buf.extend_from_slice(&f.to_le_bytes());
            }
            (None, None) => string(buf, 1, &n.to_string()),
        },
        Value::String(s) => string(buf, 1, s),
        Value::Array(items) => message(buf, 5, |arr| {
            for i in items {
                message(arr, 1, |a| any_value(a, i));
            }
        }),
        Value::Object(m) => message(buf, 6, |list| {
            for (k, v) in m {
                message(list, 1, |kv| key_value(kv, k, v));
            }
        }),
    }
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    key(buf, field, 0);
    varint(buf, v);
}

fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    key(buf, field, 1);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(buf, field, 2);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn string(buf: &mut Vec<u8>, field: u32, s: &str) {
    bytes_field(buf, field, s.as_bytes());
}

fn message(buf: &mut Vec<u8>, field: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    fill(&mut inner);
    bytes_field(buf, field, &inner);
}

/// An `ExportLogsServiceRequest` in OTLP's JSON mapping (64-bit integers as strings).
pub fn json(lines: &[Vec<u8>], resource: &[(String, String)]) -> Vec<u8> {
    let observed = now_ns();
    let records: Vec<Value> = lines
        .iter()
        .filter_map(|l| log(l, observed))
        .map(|l| {
            serde_json::json!({
                "timeUnixNano": l.time_ns.to_string(),
                "observedTimeUnixNano": observed.to_string(),
                "severityNumber": l.severity.0,
                "severityText": l.severity.1,
                "body": {"stringValue": "request"},
                "attributes": l.attributes.iter().map(|(k, v)| json_kv(k, v)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let resource: Vec<Value> = resource
        .iter()
        .map(|(k, v)| serde_json::json!({"key": k, "value": {"stringValue": v}}))
        .collect();
    let body = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": resource},
        "scopeLogs": [{
            "scope": {"name": "centaur.audit", "version": env!("CARGO_PKG_VERSION")},
            "logRecords": records,
        }],
    }]});
    body.to_string().into_bytes()
}

fn json_kv(k: &str, v: &Value) -> Value {
    serde_json::json!({"key": k, "value": json_any(v)})
}

fn json_any(v: &Value) -> Value {
    match v {
        Value::Null => serde_json::json!({}),
        Value::Bool(b) => serde_json::json!({"boolValue": b}),
        Value::Number(n) => match n.as_i64() {
            Some(i) => serde_json::json!({"intValue": i.to_string()}),
            None => serde_json::json!({"doubleValue": n.as_f64()}),
        },
        Value::String(s) => serde_json::json!({"stringValue": s}),
        Value::Array(items) => {
            serde_json::json!({"arrayValue": {"values": items.iter().map(json_any).collect::<Vec<_>>()}})
        }
        Value::Object(m) => serde_json::json!({"kvlistValue": {
            "values": m.iter().map(|(k, v)| json_kv(k, v)).collect::<Vec<_>>()
        }}),
    }
}
