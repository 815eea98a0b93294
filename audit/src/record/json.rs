//! The record's JSON line, written directly. Every request writes one, and serde_json spends
//! most of that time escaping: it looks up each byte of every key and value in a table, one
//! at a time. Here the keys are constants written as they are, and a string is scanned for
//! bytes to escape sixteen at a time before it is copied whole.
//!
//! The output is byte for byte serde_json's compact rendering of the `Serialize` derives in
//! `record.rs`, which stay the schema: the tests compare the two over every field and every
//! annotation. Annotations other than `secrets`' (rare on the request path) go through serde.

use serde::Serialize;

use super::{Action, Annotations, Placed, Record, TlsInfo, Transform};

impl Record {
    /// Appends the record as one compact JSON object, as `serde_json::to_writer` would.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut o = Object::open(out);
        o.str("ts", &self.ts);
        o.str("id", &self.id);
        if !self.sandbox.is_empty() {
            let mut labels = Object::open(o.key("sandbox"));
            for (k, v) in self.sandbox.iter() {
                labels.key_escaped(k);
                string(labels.out, v);
            }
            labels.close();
        }
        o.str("listener", self.listener);
        o.str("client", &self.client);
        o.str("host", &self.host);
        o.opt_str("method", self.method.as_deref());
        o.opt_str("path", self.path.as_deref());
        o.opt_str("sni", self.sni.as_deref());
        if let Some(tls) = &self.tls {
            tls.write_json(o.key("tls"));
        }
        o.opt_str("mode", self.mode);
        o.opt_str("upstream", self.upstream.as_deref());
        o.str("action", self.action.as_str());
        if let Some(status) = self.status_code {
            o.number("status_code", status)?;
        }
        o.str("reason", self.reason);
        o.opt_str("rule", self.rule.as_deref());
        o.opt_str("rejected_by", self.rejected_by);
        o.number("duration_ms", self.duration_ms)?;
        o.number("bytes_in", self.bytes_in)?;
        o.number("bytes_out", self.bytes_out)?;
        list(
            &mut o,
            "request_transforms",
            &self.request_transforms,
            transform,
        )?;
        list(
            &mut o,
            "response_transforms",
            &self.response_transforms,
            transform,
        )?;
        o.opt_str("tunnel", self.tunnel.as_deref());
        o.opt_str("error", self.error.as_deref());
        o.close();
        Ok(())
    }
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Reject => "reject",
            Action::Error => "error",
            Action::ClientCancel => "client_cancel",
        }
    }
}

impl TlsInfo {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Object::open(out);
        o.str("version", &self.version);
        o.opt_str("alpn", self.alpn.as_deref());
        o.close();
    }
}

/// A member holding a non-empty list (an empty one is left out, as `skip_serializing_if`
/// does), each element written by `each`.
fn list<T>(
    o: &mut Object<'_>,
    key: &'static str,
    items: &[T],
    each: impl FnMut(&mut Vec<u8>, &T) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    match items.is_empty() {
        true => Ok(()),
        false => array(o.key(key), items, each),
    }
}

fn array<T>(
    out: &mut Vec<u8>,
    items: &[T],
    mut each: impl FnMut(&mut Vec<u8>, &T) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item)?;
    }
    out.push(b']');
    Ok(())
}

fn transform(out: &mut Vec<u8>, t: &Transform) -> serde_json::Result<()> {
    let mut o = Object::open(out);
    o.str("name", t.name);
    o.str("action", t.action);
    o.opt_str("rule", t.rule.as_deref());
    if let Some(a) = &t.annotations {
        a.write_json(o.key("annotations"))?;
    }
    o.close();
    Ok(())
}

impl Annotations {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let Annotations::Secrets {
            injected,
            rejected,
            secret_unavailable,
            swapped,
        } = self
        else {
            return serde_json::to_writer(out, self);
        };
        let mut o = Object::open(out);
        list(&mut o, "injected", injected, placed)?;
        o.opt_str("rejected", rejected.as_deref());
        list(&mut o, "secret_unavailable", secret_unavailable, text)?;
        list(&mut o, "swapped", swapped, placed)?;
        o.close();
        Ok(())
    }
}

fn placed(out: &mut Vec<u8>, p: &Placed) -> serde_json::Result<()> {
    let mut o = Object::open(out);
    array(o.key("locations"), &p.locations, text)?;
    o.str("secret", &p.secret);
    o.close();
    Ok(())
}

fn text(out: &mut Vec<u8>, s: &impl AsRef<str>) -> serde_json::Result<()> {
    string(out, s.as_ref());
    Ok(())
}

/// An object being written: members are separated by commas as they are added.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, empty: true }
    }

    fn separate(&mut self) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
    }

    /// Starts a member whose name is a constant of this file, which needs no escaping; the
    /// caller writes the value.
    fn key(&mut self, name: &'static str) -> &mut Vec<u8> {
        debug_assert!(!name.bytes().any(needs_escape));
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// Starts a member whose name comes from elsewhere (a sandbox label).
    fn key_escaped(&mut self, name: &str) {
        self.separate();
        string(self.out, name);
        self.out.push(b':');
    }

    fn str(&mut self, name: &'static str, value: &str) {
        string(self.key(name), value);
    }

    fn opt_str(&mut self, name: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(name, v);
        }
    }

    /// A number as serde_json writes it (shortest round-trip for floats, `null` for NaN).
    fn number(&mut self, name: &'static str, value: impl Serialize) -> serde_json::Result<()> {
        serde_json::to_writer(self.key(name), &value)
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// Whether JSON needs this byte escaped inside a string (RFC 8259 §7).
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The index of the first byte to escape. Each chunk is tested whole, without an early exit,
/// so that the test compiles to vector instructions.
fn first_escape(bytes: &[u8]) -> Option<usize> {
    const CHUNK: usize = 16;
    let mut at = 0;
    for chunk in bytes.chunks_exact(CHUNK) {
        if chunk.iter().fold(false, |any, &b| any | needs_escape(b)) {
            break;
        }
        at += CHUNK;
    }
    bytes[at..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| at + i)
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it: the two-character forms
/// where JSON has one, `\u00xx` (lowercase) for other control characters, and everything else,
/// non-ASCII included, as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = s.as_bytes();
    out.push(b'"');
    while let Some(i) = first_escape(rest) {
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::record::McpMessage;

    fn same_as_serde(r: &Record) {
        let mut ours = Vec::new();
        r.write_json(&mut ours).unwrap();
        let theirs = serde_json::to_vec(r).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }

    /// Strings that exercise every escape, at every position around the 16-byte chunks.
    fn awkward_strings() -> Vec<String> {
        let mut out: Vec<String> = ["", "plain", "é ü 雪 🦀", "\u{7f}", "a\"b\\c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        out.push((0u8..0x20).map(char::from).collect());
        for len in [15, 16, 17, 31, 32, 33] {
            for at in [0, len / 2, len - 1] {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é'] {
                    let mut s: Vec<char> = std::iter::repeat_n('x', len).collect();
                    s[at] = special;
                    out.push(s.into_iter().collect());
                }
            }
        }
        out
    }

    fn full_record(text: &str) -> Record {
        let mut r = Record::start("tunnel", Arc::from(text));
        r.sandbox = Arc::new(BTreeMap::from([
            ("thread".to_string(), text.to_string()),
            (text.to_string(), "x".to_string()),
        ]));
        r.host = text.into();
        r.method = Some(text.to_string().into());
        r.path = Some(text.into());
        r.sni = Some(text.into());
        r.tls = Some(Arc::new(TlsInfo {
            version: "TLSv1.3".into(),
            alpn: Some(text.into()),
        }));
        r.mode = Some("sni-only");
        r.upstream = Some(text.into());
        r.action = Action::ClientCancel;
        r.status_code = Some(502);
        r.reason = "upstream_error";
        r.rule = Some(text.into());
        r.rejected_by = Some("secrets");
        r.duration_ms = 12.345;
        r.bytes_in = u64::MAX;
        r.bytes_out = 7;
        r.tunnel = Some(text.into());
        r.error = Some(text.into());
        r
    }

    fn every_annotation(text: &str) -> Vec<Transform> {
        let s = || text.to_string();
        let placed = || Placed {
            locations: vec![s(), "header:x".into()],
            secret: s(),
        };
        let annotations = vec![
            Annotations::Secrets {
                injected: vec![placed(), placed()],
                rejected: Some(s()),
                secret_unavailable: vec![s(), s()],
                swapped: vec![placed()],
            },
            Annotations::Secrets {
                injected: vec![],
                rejected: None,
                secret_unavailable: vec![],
                swapped: vec![],
            },
            Annotations::Token {
                error: Some(s()),
                grant: Some("client_credentials"),
                injected: vec![s()],
                rejected: None,
                service_account: Some(s()),
                skipped: Some("token_unavailable"),
            },
            Annotations::Signed {
                injected: vec![s()],
            },
            Annotations::Mcp {
                messages: vec![McpMessage {
                    decision: "deny",
                    method: s(),
                    reason: Some("tool_not_allowed"),
                    tool: Some(s()),
                }],
                server: s(),
            },
            Annotations::AwsSigned {
                injected: vec![s()],
                region: s(),
                service: s(),
            },
            Annotations::Rejected { rejected: "bad" },
            Annotations::Scrubbed { scrubbed: 3 },
            Annotations::Stripped {
                stripped_headers: vec![s()],
            },
            Annotations::Stubbed { stubbed: s() },
        ];
        annotations
            .into_iter()
            .map(|a| Transform {
                name: "secrets",
                action: "allow",
                rule: Some(text.into()),
                annotations: Some(a),
            })
            .chain([Transform {
                name: "allowlist",
                action: "reject",
                rule: None,
                annotations: None,
            }])
            .collect()
    }

    #[test]
    fn writes_what_serde_writes_for_every_field_and_escape() {
        for text in awkward_strings() {
            let mut r = full_record(&text);
            same_as_serde(&r);
            r.request_transforms = every_annotation(&text);
            r.response_transforms = every_annotation(&text);
            same_as_serde(&r);
        }
    }

    #[test]
    fn writes_what_serde_writes_for_a_sparse_record_and_odd_numbers() {
        let mut r = Record::start("https", "127.0.0.1:1".into());
        same_as_serde(&r);
        for d in [0.0, -0.0, 1e-7, 1e21, 4952.974, f64::NAN, f64::INFINITY] {
            r.duration_ms = d;
            same_as_serde(&r);
        }
        r.tls = Some(Arc::new(TlsInfo {
            version: "TLSv1.2".into(),
            alpn: None,
        }));
        for action in [Action::Allow, Action::Reject, Action::Error] {
            r.action = action;
            same_as_serde(&r);
        }
    }
}
