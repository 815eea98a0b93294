//! Which records a query keeps: the flag filters of `centaur audit query` and a small
//! expression language for anything else:
//!
//! ```text
//! duration_ms > 500 and host ~ "*.openai.com"
//! not (action = allow) or status >= 500
//! sandbox.team = "infra" and secrets ~ "*GITHUB*"
//! ```
//!
//! Comparisons `= != > >= < <=` compare numbers as numbers and everything else as text; `~`
//! and `!~` match a glob (`*`, `?`), case-insensitively. `and` binds tighter than `or`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::row::{FIELDS, Row, Val, known};

/// A glob with `*` and `?`, matched case-insensitively.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob(Vec<u8>);

impl Glob {
    /// A glob from its text.
    pub fn new(p: &str) -> Glob {
        Glob(p.to_ascii_lowercase().into_bytes())
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let (p, s) = (&self.0, s.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si].to_ascii_lowercase()) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == b'*')
    }
}

/// An HTTP status filter: `404`, `5xx`, or a comma list of either.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusFilter(Vec<(u16, u16)>);

impl StatusFilter {
    /// Parses `404`, `5xx`, `4xx,502`.
    pub fn parse(s: &str) -> Result<StatusFilter, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            let lower = part.to_ascii_lowercase();
            let range = match lower.strip_suffix("xx") {
                Some(d) if d.len() == 1 => d
                    .parse::<u16>()
                    .ok()
                    .filter(|d| (1..=5).contains(d))
                    .map(|d| (d * 100, d * 100 + 99)),
                _ => part
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .map(|s| (s, s)),
            };
            out.push(range.ok_or_else(|| {
                format!("`{part}` is not a status (use e.g. 404, 5xx or 4xx,502)")
            })?);
        }
        Ok(StatusFilter(out))
    }

    fn matches(&self, status: Option<u16>) -> bool {
        status.is_some_and(|s| self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&s)))
    }
}

/// Everything a query filters on. Empty filters keep every record.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records at or after this time (record `ts` format).
    pub since: Option<String>,
    /// Records before this time.
    pub until: Option<String>,
    /// `LABEL=VALUE` or a value any label has.
    pub sandbox: Option<(Option<String>, Glob)>,
    /// Host glob.
    pub host: Option<Glob>,
    /// Actions, as written in records (`allow`, `reject`, `error`, `client_cancel`).
    pub actions: Vec<String>,
    /// Reason codes.
    pub reasons: Vec<String>,
    /// A secret's name.
    pub secret: Option<String>,
    /// Status.
    pub status: Option<StatusFilter>,
    /// Method (case-insensitive).
    pub method: Option<String>,
    /// Path glob.
    pub path: Option<Glob>,
    /// An expression.
    pub expr: Option<Expr>,
}

impl Filter {
    /// Maps the `--action` words (`allow`, `deny`, `error`, `cancel`) to record actions.
    pub fn action(word: &str) -> Result<&'static str, String> {
        match word {
            "allow" => Ok("allow"),
            "deny" | "reject" => Ok("reject"),
            "error" => Ok("error"),
            "cancel" | "client_cancel" => Ok("client_cancel"),
            other => Err(format!(
                "unknown action `{other}` (use allow, deny, error or cancel)"
            )),
        }
    }

    /// Parses `--sandbox`: `LABEL=VALUE` or a bare value.
    pub fn sandbox(s: &str) -> (Option<String>, Glob) {
        match s.split_once('=') {
            Some((k, v)) => (Some(k.to_string()), Glob::new(v)),
            None => (None, Glob::new(s)),
        }
    }

    /// Whether a line's timestamp is outside the window, read without parsing the line
    /// (records start with `{"ts":"…"`). `None` when the line does not start that way.
    pub fn outside_window(&self, line: &[u8]) -> Option<bool> {
        if self.since.is_none() && self.until.is_none() {
            return Some(false);
        }
        let rest = line.strip_prefix(b"{\"ts\":\"")?;
        let end = memchr::memchr(b'"', rest)?;
        let ts = std::str::from_utf8(&rest[..end]).ok()?;
        Some(self.out_of_window(ts))
    }

    fn out_of_window(&self, ts: &str) -> bool {
        self.since.as_deref().is_some_and(|s| ts < s)
            || self.until.as_deref().is_some_and(|u| ts >= u)
    }

    /// Whether the record passes every filter.
    pub fn matches(&self, r: &Row<'_>) -> bool {
        if r.is_marker() || self.out_of_window(&r.ts) {
            return false;
        }
        if let Some(h) = &self.host
            && !h.matches(&r.host)
        {
            return false;
        }
        if !self.actions.is_empty() && !self.actions.iter().any(|a| *a == r.action) {
            return false;
        }
        if !self.reasons.is_empty() && !self.reasons.iter().any(|a| *a == r.reason) {
            return false;
        }
        if let Some(s) = &self.status
            && !s.matches(r.status_code)
        {
            return false;
        }
        if let Some(m) = &self.method
            && !r
                .method
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(m))
        {
            return false;
        }
        if let Some(p) = &self.path
            && !r.path.as_deref().is_some_and(|x| p.matches(x))
        {
            return false;
        }
        if let Some((label, g)) = &self.sandbox {
            let hit = match label {
                Some(l) => r.sandbox.get(l.as_str()).is_some_and(|v| g.matches(v)),
                None => r.sandbox.values().any(|v| g.matches(v)),
            };
            if !hit {
                return false;
            }
        }
        if let Some(s) = &self.secret
            && !r.secrets().contains(&s.as_str())
        {
            return false;
        }
        self.expr.as_ref().is_none_or(|e| e.eval(r))
    }
}

/// A time bound: `1h`/`30m`/`2d`-style (ago), or an absolute UTC time (`2026-11-21`,
/// `2026-11-21T10:00:00Z`, `2026-11-21 10:00`), in the records' `ts` format.
pub fn time_bound(s: &str, now: OffsetDateTime) -> Result<String, String> {
    let s = s.trim();
    let t = if let Some(ago) = relative(s) {
        now - ago
    } else if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        t
    } else {
        let padded = match s.len() {
            10 => format!("{s}T00:00:00"),
            16 => format!("{s}:00"),
            _ => s.to_string(),
        }
        .replace(' ', "T");
        let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        time::PrimitiveDateTime::parse(padded.trim_end_matches('Z'), &fmt)
            .map(|p| p.assume_utc())
            .map_err(|_| {
                format!(
                    "`{s}` is not a time (use e.g. 1h, 30m, 2d, 2026-11-21 or 2026-11-21T10:00:00Z)"
                )
            })?
    };
    Ok(crate::record::format_ts(t.to_offset(time::UtcOffset::UTC)))
}

fn relative(s: &str) -> Option<time::Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(time::Duration::seconds(n.checked_mul(secs)?))
}

/// A parsed `--where` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// `field op value`.
    Cmp(String, Op, Lit),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Glob,
    NotGlob,
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// A number.
    Num(f64),
    /// Text (quoted or a bare word).
    Str(String),
}

impl Expr {
    /// Parses an expression; errors name the position and, for fields, the known ones.
    pub fn parse(src: &str) -> Result<Expr, String> {
        let toks = lex(src)?;
        let mut p = Parser { toks, i: 0 };
        let e = p.or()?;
        match p.toks.get(p.i) {
            None => Ok(e),
            Some(t) => Err(format!("unexpected `{}` in --where", t.text())),
        }
    }

    fn eval(&self, r: &Row<'_>) -> bool {
        match self {
            Expr::And(a, b) => a.eval(r) && b.eval(r),
            Expr::Or(a, b) => a.eval(r) || b.eval(r),
            Expr::Not(a) => !a.eval(r),
            Expr::Cmp(f, op, lit) => compare(&r.get(f), *op, lit),
        }
    }
}

fn compare(v: &Val<'_>, op: Op, lit: &Lit) -> bool {
    use std::cmp::Ordering;
    if let Op::Glob | Op::NotGlob = op {
        let pat = match lit {
            Lit::Str(s) => Glob::new(s),
            Lit::Num(n) => Glob::new(&Val::Num(*n).text()),
        };
        let hit = !matches!(v, Val::Null) && pat.matches(&v.text());
        return hit == (op == Op::Glob);
    }
    let ord = match (v, lit) {
        (Val::Null, _) => return op == Op::Ne,
        (Val::Num(a), Lit::Num(b)) => a.partial_cmp(b),
        (v, Lit::Str(b)) => Some(v.text().as_ref().cmp(b.as_str())),
        (v, Lit::Num(b)) => Some(v.text().as_ref().cmp(Val::Num(*b).text().as_ref())),
    };
    let Some(ord) = ord else { return false };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Glob | Op::NotGlob => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Num(f64),
    Op(Op),
    Open,
    Close,
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(q) => format!("\"{q}\""),
            Tok::Num(n) => n.to_string(),
            Tok::Op(o) => format!("{o:?}"),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
        }
    }
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let two = b.get(i..i + 2).unwrap_or(&[]);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => (Tok::Open, 1),
            b')' => (Tok::Close, 1),
            _ if two == b"!=" => (Tok::Op(Op::Ne), 2),
            _ if two == b"!~" => (Tok::Op(Op::NotGlob), 2),
            _ if two == b">=" => (Tok::Op(Op::Ge), 2),
            _ if two == b"<=" => (Tok::Op(Op::Le), 2),
            _ if two == b"==" => (Tok::Op(Op::Eq), 2),
            b'=' => (Tok::Op(Op::Eq), 1),
            b'>' => (Tok::Op(Op::Gt), 1),
            b'<' => (Tok::Op(Op::Lt), 1),
            b'~' => (Tok::Op(Op::Glob), 1),
            b'"' | b'\'' => {
                let end = src[i + 1..]
                    .find(c as char)
                    .ok_or_else(|| format!("unterminated string at column {}", i + 1))?;
                (Tok::Quoted(src[i + 1..i + 1 + end].to_string()), end + 2)
            }
            _ => {
                let end = src[i..]
                    .find(|ch: char| ch.is_whitespace() || "()=!<>~\"'".contains(ch))
                    .unwrap_or(src.len() - i);
                if end == 0 {
                    return Err(format!("unexpected `{}` at column {}", c as char, i + 1));
                }
                let w = &src[i..i + end];
                let tok = match w.parse::<f64>() {
                    Ok(n) if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') => Tok::Num(n),
                    _ => Tok::Word(w.to_string()),
                };
                (tok, end)
            }
        };
        out.push(tok);
        i += len;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
}

impl Parser {
    fn keyword(&mut self, k: &str) -> bool {
        let hit = matches!(self.toks.get(self.i), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k));
        if hit {
            self.i += 1;
        }
        hit
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.keyword("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.keyword("and") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let tok = self.toks.get(self.i).cloned();
        self.i += 1;
        match tok {
            Some(Tok::Open) => {
                let e = self.or()?;
                match self.toks.get(self.i) {
                    Some(Tok::Close) => {
                        self.i += 1;
                        Ok(e)
                    }
                    _ => Err("missing `)` in --where".into()),
                }
            }
            Some(Tok::Word(field)) => {
                if !known(&field) {
                    return Err(format!(
                        "unknown field `{field}` in --where; known fields: {}",
                        FIELDS.join(", ")
                    ));
                }
                let op = match self.toks.get(self.i) {
                    Some(Tok::Op(op)) => *op,
                    _ => {
                        return Err(format!(
                            "expected a comparison after `{field}` (= != > >= < <= ~ !~)"
                        ));
                    }
                };
                self.i += 1;
                let lit = match self.toks.get(self.i).cloned() {
                    Some(Tok::Num(n)) => Lit::Num(n),
                    Some(Tok::Quoted(s) | Tok::Word(s)) => Lit::Str(s),
                    _ => return Err(format!("expected a value after `{field}`")),
                };
                self.i += 1;
                Ok(Expr::Cmp(field, op, lit))
            }
            Some(t) => Err(format!("expected a field, found `{}`", t.text())),
            None => Err("--where ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: &str) -> Row<'_> {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn globs_match_case_insensitively() {
        assert!(Glob::new("*.openai.com").matches("api.OpenAI.com"));
        assert!(!Glob::new("*.openai.com").matches("openai.com"));
        assert!(Glob::new("a?c*").matches("abcdef"));
        assert!(Glob::new("*").matches(""));
        assert!(!Glob::new("a*b").matches("acbx"));
    }

    #[test]
    fn expressions_parse_evaluate_and_name_unknown_fields() {
        let r = row(
            r#"{"ts":"2026-11-21T10:00:00.000000000Z","host":"api.openai.com","action":"allow","status_code":503,"duration_ms":750.5,"sandbox":{"team":"infra"}}"#,
        );
        let t = |s: &str| Expr::parse(s).unwrap().eval(&r);
        assert!(t(r#"duration_ms > 500 and host ~ "*.openai.com""#));
        assert!(!t("duration_ms > 500 and not host ~ '*.openai.com'"));
        assert!(t("status >= 500 or action = reject"));
        assert!(t(
            "(action = reject or action = allow) and sandbox.team = infra"
        ));
        assert!(t("rule != x"));
        assert!(!t("rule = x"));
        let e = Expr::parse("durations > 5").unwrap_err();
        assert!(
            e.contains("unknown field `durations`") && e.contains("duration_ms"),
            "{e}"
        );
        assert!(Expr::parse("host ~").is_err());
        assert!(Expr::parse("(host = a").is_err());
        assert!(Expr::parse("host = 'a").is_err());
    }

    #[test]
    fn time_bounds_and_statuses() {
        let now = OffsetDateTime::parse("2026-11-21T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(
            time_bound("1h", now).unwrap(),
            "2026-11-21T11:00:00.000000000Z"
        );
        assert_eq!(
            time_bound("2026-11-20", now).unwrap(),
            "2026-11-20T00:00:00.000000000Z"
        );
        assert_eq!(
            time_bound("2026-11-20 08:30", now).unwrap(),
            "2026-11-20T08:30:00.000000000Z"
        );
        assert_eq!(
            time_bound("2026-11-20T08:30:00+01:00", now).unwrap(),
            "2026-11-20T07:30:00.000000000Z"
        );
        assert!(time_bound("yesterday", now).is_err());
        let s = StatusFilter::parse("5xx,404").unwrap();
        assert!(s.matches(Some(503)) && s.matches(Some(404)) && !s.matches(Some(403)));
        assert!(StatusFilter::parse("6xx").is_err());
    }
}
