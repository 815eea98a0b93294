//! A record as read back: borrowed from the line where it can be, with the field names and
//! values the filters, the expression language and the output formats use.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

/// One audit record, read.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)]
pub struct Row<'a> {
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub sandbox: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    #[serde(borrow, default)]
    pub listener: Cow<'a, str>,
    #[serde(borrow, default)]
    pub client: Cow<'a, str>,
    #[serde(borrow, default)]
    pub host: Cow<'a, str>,
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub path: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub sni: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tls: Option<RowTls<'a>>,
    #[serde(borrow, default)]
    pub upstream: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub action: Cow<'a, str>,
    #[serde(default)]
    pub status_code: Option<u16>,
    #[serde(borrow, default)]
    pub reason: Cow<'a, str>,
    #[serde(borrow, default)]
    pub rule: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub rejected_by: Option<Cow<'a, str>>,
    #[serde(default)]
    pub duration_ms: f64,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    #[serde(borrow, default)]
    pub request_transforms: Vec<RowTransform<'a>>,
    #[serde(borrow, default)]
    pub response_transforms: Vec<RowTransform<'a>>,
    #[serde(borrow, default)]
    pub tunnel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub error: Option<Cow<'a, str>>,
    #[serde(default)]
    pub seq: u64,
    #[serde(borrow, default)]
    pub hash: Option<Cow<'a, str>>,
}

/// Client TLS parameters.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)]
pub struct RowTls<'a> {
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    #[serde(borrow, default)]
    pub alpn: Option<Cow<'a, str>>,
}

/// One transform trace entry.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)]
pub struct RowTransform<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub action: Cow<'a, str>,
    #[serde(borrow, default)]
    pub annotations: Option<&'a serde_json::value::RawValue>,
}

/// What the `secrets` transform annotates: the names it swapped or injected.
#[derive(Deserialize)]
struct SecretUse<'a> {
    #[serde(borrow, default)]
    swapped: Vec<SecretName<'a>>,
    #[serde(borrow, default)]
    injected: Vec<SecretName<'a>>,
}

#[derive(Deserialize)]
struct SecretName<'a> {
    secret: &'a str,
}

/// A field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'r> {
    /// Text.
    Str(Cow<'r, str>),
    /// A number.
    Num(f64),
    /// Absent.
    Null,
}

impl Val<'_> {
    /// As text (numbers in their shortest form; absent as empty).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s.as_ref()),
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                Cow::Owned(format!("{}", *n as i64))
            }
            Val::Num(n) => Cow::Owned(format!("{n}")),
            Val::Null => Cow::Borrowed(""),
        }
    }
}

/// Fields a filter or `--fields` may name. `sandbox.LABEL` names one identity label.
pub const FIELDS: &[&str] = &[
    "ts",
    "id",
    "sandbox",
    "sandbox.LABEL",
    "listener",
    "client",
    "host",
    "method",
    "path",
    "sni",
    "tls.version",
    "tls.alpn",
    "upstream",
    "action",
    "status_code",
    "status",
    "reason",
    "rule",
    "rejected_by",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "tunnel",
    "error",
    "seq",
    "hash",
    "secrets",
    "transforms",
];

/// Whether `name` is a known field.
pub fn known(name: &str) -> bool {
    name.starts_with("sandbox.") || FIELDS.contains(&name) && name != "sandbox.LABEL"
}

fn opt<'r>(v: &'r Option<Cow<'_, str>>) -> Val<'r> {
    v.as_deref()
        .map_or(Val::Null, |s| Val::Str(Cow::Borrowed(s)))
}

fn text<'r>(v: &'r str) -> Val<'r> {
    Val::Str(Cow::Borrowed(v))
}

impl Row<'_> {
    /// Whether this line is a file header or footer rather than a record.
    pub fn is_marker(&self) -> bool {
        self.kind.is_some()
    }

    /// The value of a known field (see [`FIELDS`]).
    pub fn get(&self, field: &str) -> Val<'_> {
        match field {
            "ts" => text(&self.ts),
            "id" => text(&self.id),
            "sandbox" => Val::Str(Cow::Owned(
                self.sandbox
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            )),
            "listener" => text(&self.listener),
            "client" => text(&self.client),
            "host" => text(&self.host),
            "method" => opt(&self.method),
            "path" => opt(&self.path),
            "sni" => opt(&self.sni),
            "tls.version" => self.tls.as_ref().map_or(Val::Null, |t| text(&t.version)),
            "tls.alpn" => self.tls.as_ref().map_or(Val::Null, |t| opt(&t.alpn)),
            "upstream" => opt(&self.upstream),
            "action" => text(&self.action),
            "status_code" | "status" => self.status_code.map_or(Val::Null, |s| Val::Num(s.into())),
            "reason" => text(&self.reason),
            "rule" => opt(&self.rule),
            "rejected_by" => opt(&self.rejected_by),
            "duration_ms" => Val::Num(self.duration_ms),
            "bytes_in" => Val::Num(self.bytes_in as f64),
            "bytes_out" => Val::Num(self.bytes_out as f64),
            "tunnel" => opt(&self.tunnel),
            "error" => opt(&self.error),
            "seq" => Val::Num(self.seq as f64),
            "hash" => opt(&self.hash),
            "secrets" => Val::Str(Cow::Owned(self.secrets().join(","))),
            "transforms" => Val::Str(Cow::Owned(
                self.request_transforms
                    .iter()
                    .map(|t| t.name.as_ref())
                    .collect::<Vec<_>>()
                    .join(","),
            )),
            other => match other.strip_prefix("sandbox.") {
                Some(label) => self.sandbox.get(label).map_or(Val::Null, |v| text(v)),
                None => Val::Null,
            },
        }
    }

    /// Names of the secrets swapped or injected into this request.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for t in self
            .request_transforms
            .iter()
            .filter(|t| t.name == "secrets")
        {
            let Some(ann) = t
                .annotations
                .and_then(|a| serde_json::from_str::<SecretUse<'_>>(a.get()).ok())
            else {
                continue;
            };
            for e in ann.swapped.into_iter().chain(ann.injected) {
                if !out.contains(&e.secret) {
                    out.push(e.secret);
                }
            }
        }
        out
    }
}
