//! The `--where` expression language:
//!
//! ```text
//! duration_ms > 500 and host ~ "*.openai.com"
//! not (action = allow) or status >= 500
//! sandbox.team = "infra" and secrets ~ "*GITHUB*"
//! ```
//!
//! Comparisons `= != > >= < <=` compare numbers as numbers and everything else as text; `~`
//! and `!~` match a glob (`*`, `?`), case-insensitively. `and` binds tighter than `or`.

use crate::read::filter::Glob;
use crate::read::row::{FIELDS, Row, Val, known};

/// A `--where` expression that cannot be read: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(String);

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
    pub fn parse(src: &str) -> Result<Expr, ExprError> {
        let toks = lex(src)?;
        let mut p = Parser { toks, i: 0 };
        let e = p.or()?;
        match p.toks.get(p.i) {
            None => Ok(e),
            Some(t) => Err(ExprError(format!("unexpected `{}` in --where", t.text()))),
        }
    }

    pub(crate) fn eval(&self, r: &Row<'_>) -> bool {
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

fn lex(src: &str) -> Result<Vec<Tok>, ExprError> {
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
                    .ok_or_else(|| ExprError(format!("unterminated string at column {}", i + 1)))?;
                (Tok::Quoted(src[i + 1..i + 1 + end].to_string()), end + 2)
            }
            _ => {
                let end = src[i..]
                    .find(|ch: char| ch.is_whitespace() || "()=!<>~\"'".contains(ch))
                    .unwrap_or(src.len() - i);
                if end == 0 {
                    return Err(ExprError(format!(
                        "unexpected `{}` at column {}",
                        c as char,
                        i + 1
                    )));
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

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.and()?;
        while self.keyword("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.not()?;
        while self.keyword("and") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
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
                    _ => Err(ExprError("missing `)` in --where".into())),
                }
            }
            Some(Tok::Word(field)) => {
                if !known(&field) {
                    return Err(ExprError(format!(
                        "unknown field `{field}` in --where; known fields: {}",
                        FIELDS.join(", ")
                    )));
                }
                let op = match self.toks.get(self.i) {
                    Some(Tok::Op(op)) => *op,
                    _ => {
                        return Err(ExprError(format!(
                            "expected a comparison after `{field}` (= != > >= < <= ~ !~)"
                        )));
                    }
                };
                self.i += 1;
                let lit = match self.toks.get(self.i).cloned() {
                    Some(Tok::Num(n)) => Lit::Num(n),
                    Some(Tok::Quoted(s) | Tok::Word(s)) => Lit::Str(s),
                    _ => return Err(ExprError(format!("expected a value after `{field}`"))),
                };
                self.i += 1;
                Ok(Expr::Cmp(field, op, lit))
            }
            Some(t) => Err(ExprError(format!("expected a field, found `{}`", t.text()))),
            None => Err(ExprError("--where ends too early".into())),
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
        let e = Expr::parse("durations > 5").unwrap_err().to_string();
        assert!(
            e.contains("unknown field `durations`") && e.contains("duration_ms"),
            "{e}"
        );
        assert!(Expr::parse("host ~").is_err());
        assert!(Expr::parse("(host = a").is_err());
        assert!(Expr::parse("host = 'a").is_err());
    }
}
