//! The template subset of iron-proxy's Go templates that policies use: literal text,
//! `{{ .Name }}`, `{{ .Credentials.name }}` and `{{ base64 "text" .Name … }}`. Every variable
//! is checked when the policy loads (Go's `missingkey=error`, moved from request time to load
//! time).

use base64::Engine;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
    Base64(Vec<Arg>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Text(String),
    Var(String),
}

impl Template {
    /// Parses `raw`; `known` says whether a variable (without its dot: `Value`,
    /// `Credentials.key`) exists.
    pub fn parse(raw: &str, known: &dyn Fn(&str) -> bool) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = raw;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let end = rest[start..].find("}}").ok_or("unclosed `{{`")? + start;
            pieces.push(action(rest[start + 2..end].trim(), known)?);
            rest = &rest[end + 2..];
        }
        if rest.contains("}}") {
            return Err("`}}` without `{{`".into());
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// Whether the template reads `var`.
    pub fn uses(&self, var: &str) -> bool {
        self.0.iter().any(|p| match p {
            Piece::Var(v) => v == var,
            Piece::Base64(args) => args.iter().any(|a| matches!(a, Arg::Var(v) if v == var)),
            Piece::Text(_) => false,
        })
    }

    /// Renders; `lookup` gives each variable's bytes (all were checked at parse time).
    pub fn render(&self, lookup: &dyn Fn(&str) -> Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::Var(v) => out.extend_from_slice(&lookup(v)),
                Piece::Base64(args) => {
                    let mut raw = Vec::new();
                    for a in args {
                        match a {
                            Arg::Text(t) => raw.extend_from_slice(t.as_bytes()),
                            Arg::Var(v) => raw.extend_from_slice(&lookup(v)),
                        }
                    }
                    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
                    out.extend_from_slice(b64.as_bytes());
                }
            }
        }
        out
    }
}

fn var(token: &str, known: &dyn Fn(&str) -> bool) -> Result<String, String> {
    let name = token.strip_prefix('.').unwrap_or(token);
    if token.starts_with('.') && known(name) {
        Ok(name.to_string())
    } else {
        Err(format!("unknown template variable `{token}`"))
    }
}

fn action(a: &str, known: &dyn Fn(&str) -> bool) -> Result<Piece, String> {
    if a.starts_with('.') {
        return var(a, known).map(Piece::Var);
    }
    let Some(args) = a.strip_prefix("base64 ") else {
        return Err(format!(
            "unsupported template action `{{{{ {a} }}}}`: use `.Name` or `base64 \"text\" .Name`"
        ));
    };
    let mut out = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let close = r.find('"').ok_or("unclosed string in base64 arguments")?;
            out.push(Arg::Text(r[..close].to_string()));
            rest = r[close + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(Arg::Var(var(&rest[..end], known)?));
            rest = rest[end..].trim_start();
        }
    }
    Ok(Piece::Base64(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_renders_and_checks_variables() {
        let known = |v: &str| matches!(v, "Timestamp" | "Body" | "Credentials.key");
        let t = Template::parse(
            "{{.Timestamp}}:{{ .Body }}:{{ base64 \"k:\" .Credentials.key }}",
            &known,
        )
        .unwrap();
        let out = t.render(&|v| match v {
            "Timestamp" => b"1".to_vec(),
            "Body" => b"{}".to_vec(),
            _ => b"s".to_vec(),
        });
        assert_eq!(out, b"1:{}:azpz");
        assert!(t.uses("Body") && !t.uses("Method"));
        for bad in [
            "{{ .Nope }}",
            "{{ Body }}",
            "{{ .Body",
            "x }}",
            "{{ printf .Body }}",
        ] {
            assert!(Template::parse(bad, &known).is_err(), "{bad}");
        }
    }
}
