//! Which records a query keeps: the flag filters of `centaur audit query`, globs and time
//! bounds; `--where` expressions are in `expr.rs`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

pub use crate::read::expr::{Expr, ExprError};
use crate::read::row::Row;

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

/// A filter flag that cannot be read. The words say what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// `--status`.
    #[error("`{0}` is not a status (use e.g. 404, 5xx or 4xx,502)")]
    Status(String),
    /// `--action`.
    #[error("unknown action `{0}` (use allow, deny, error or cancel)")]
    Action(String),
    /// `--since`, `--until`.
    #[error("`{0}` is not a time (use e.g. 1h, 30m, 2d, 2026-11-21 or 2026-11-21T10:00:00Z)")]
    Time(String),
}

/// An HTTP status filter: `404`, `5xx`, or a comma list of either.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusFilter(Vec<(u16, u16)>);

impl StatusFilter {
    /// Parses `404`, `5xx`, `4xx,502`.
    pub fn parse(s: &str) -> Result<StatusFilter, FilterError> {
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
            out.push(range.ok_or_else(|| FilterError::Status(part.to_string()))?);
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
    pub fn action(word: &str) -> Result<&'static str, FilterError> {
        match word {
            "allow" => Ok("allow"),
            "deny" | "reject" => Ok("reject"),
            "error" => Ok("error"),
            "cancel" | "client_cancel" => Ok("client_cancel"),
            other => Err(FilterError::Action(other.to_string())),
        }
    }

    /// Parses `--sandbox`: `LABEL=VALUE` or a bare value.
    pub fn sandbox(s: &str) -> (Option<String>, Glob) {
        match s.split_once('=') {
            Some((k, v)) => (Some(k.to_string()), Glob::new(v)),
            None => (None, Glob::new(s)),
        }
    }

    /// Whether a line can be passed over without parsing it: a file header or footer, or a
    /// record outside the time window.
    pub fn skip_fast(&self, line: &[u8]) -> bool {
        line.starts_with(b"{\"kind\":") || self.outside_window(line) == Some(true)
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
pub fn time_bound(s: &str, now: OffsetDateTime) -> Result<String, FilterError> {
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
            .map_err(|_| FilterError::Time(s.to_string()))?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_case_insensitively() {
        assert!(Glob::new("*.openai.com").matches("api.OpenAI.com"));
        assert!(!Glob::new("*.openai.com").matches("openai.com"));
        assert!(Glob::new("a?c*").matches("abcdef"));
        assert!(Glob::new("*").matches(""));
        assert!(!Glob::new("a*b").matches("acbx"));
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
