//! Values as written in a policy file: strings with their position, durations, listen
//! addresses, sizes, and the helpers that parse them into errors with line:column.

use std::net::SocketAddr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::error::{ConfigErrors, Errors, Pos};
use crate::matcher::cidr::Cidr;

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

pub(crate) fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Listen, D::Error> {
    Option::<S>::deserialize(d).map(Some)
}

pub(crate) fn yaml_error(e: &serde_saphyr::Error) -> ConfigErrors {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // saphyr renders a position and a code frame; keep ours in front and one line of text.
    let full = e.to_string();
    let first = full.lines().next().unwrap_or(&full);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((at, rest)) if at.starts_with("line ") => rest,
        _ => first,
    };
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    let hint = if message.contains("unknown variant") {
        Some("supported transforms: allowlist, header_allowlist, secrets, gcp_auth, gcp_id_token, oauth_token, hmac_sign, aws_auth; sources: env, file, vault, 1password_connect, aws_sm, aws_ssm")
    } else if message.starts_with("invalid u") || message.starts_with("invalid i") {
        Some("expected a whole number")
    } else {
        None
    }
    .map(str::to_string);
    ConfigErrors(vec![crate::error::ConfigError {
        path: String::new(),
        line,
        column,
        message,
        hint,
    }])
}

pub(crate) fn parse<T: std::str::FromStr>(s: &S, path: &str, errs: &mut Errors) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    s.value.parse().map_err(|e| errs.push(path, pos(s), e)).ok()
}

pub(crate) fn listen(
    raw: Listen,
    default: Option<&str>,
    path: &str,
    errs: &mut Errors,
) -> Option<SocketAddr> {
    let text = match raw {
        Some(None) => return None,
        Some(Some(s)) => match parse_listen(&s.value) {
            Ok(a) => return Some(a),
            Err(e) => {
                errs.hint(
                    path,
                    pos(&s),
                    e,
                    "write `127.0.0.1:8080`, `:443` or `[::1]:53`; `null` turns it off",
                );
                return None;
            }
        },
        None => default?,
    };
    parse_listen(text).ok()
}

/// Parses a listen address: `:port` (all IPv4 interfaces), `ip:port`, `[v6]:port`, `localhost:port`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let expanded = if let Some(port) = text.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if let Some(port) = text.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        text.to_string()
    };
    expanded
        .parse()
        .map_err(|_| format!("`{text}` is not a listen address"))
}

pub(crate) fn duration(
    raw: Option<S>,
    default: Duration,
    path: &str,
    errs: &mut Errors,
) -> Duration {
    let Some(s) = raw else { return default };
    match parse_duration(&s.value) {
        Ok(d) if d > Duration::ZERO => d,
        Ok(_) => {
            errs.push(path, pos(&s), "must be greater than zero");
            default
        }
        Err(e) => {
            errs.push(path, pos(&s), e);
            default
        }
    }
}

/// Parses a duration; the number must be followed by a unit.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = raw;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{raw}` is not a duration (expected e.g. `30s`, `500ms`, `5m`)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{raw}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => return Err(format!("`{raw}` has no unit (use ms, s, m or h)")),
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{raw}` (use ms, s, m or h)"
                ));
            }
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

pub(crate) fn positive(v: Option<usize>, default: usize, path: &str, errs: &mut Errors) -> usize {
    match v {
        Some(0) => {
            errs.push(path, (0, 0), "must be greater than zero");
            default
        }
        Some(n) => n,
        None => default,
    }
}

pub(crate) fn cidrs(list: &[S], path: &str, errs: &mut Errors) -> Vec<Cidr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| parse(s, &format!("{path}[{i}]"), errs))
        .collect()
}

/// The position of a spanned value.
pub(crate) fn pos(s: &S) -> Pos {
    (s.referenced.line(), s.referenced.column())
}

/// Whether `s` is an HTTP token (RFC 9110 `tchar`s): a valid header name.
pub(crate) fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
