//! Path patterns: `/v1/*` matches `/v1` and everything below it; otherwise `*` matches within
//! one segment and `?` one character, as Go's `path.Match` (iron-proxy's matcher) does.

use std::fmt;
use std::str::FromStr;

/// Why a path pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Patterns are absolute.
    #[error("a path pattern must start with `/`")]
    NotAbsolute,
    /// Character classes are not supported.
    #[error("`[` and `\\` are not supported in path patterns")]
    Unsupported,
}

/// A validated path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    raw: String,
    /// `Some(prefix)` for `/x/*`: matches `/x` and anything under `/x/`.
    subtree: Option<String>,
}

impl PathPattern {
    /// Whether the decoded request path matches.
    pub fn matches(&self, path: &str) -> bool {
        if let Some(prefix) = &self.subtree {
            return path == prefix
                || (path.len() > prefix.len()
                    && path.starts_with(prefix.as_str())
                    && path.as_bytes()[prefix.len()] == b'/');
        }
        glob(self.raw.as_bytes(), path.as_bytes())
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for PathPattern {
    type Err = PathError;

    fn from_str(raw: &str) -> Result<Self, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        if raw.contains(['[', '\\']) {
            return Err(PathError::Unsupported);
        }
        let subtree = raw
            .strip_suffix("/*")
            .filter(|p| !p.contains(['*', '?']))
            .map(str::to_string);
        Ok(PathPattern {
            raw: raw.to_string(),
            subtree,
        })
    }
}

/// Segment-bounded glob: `*` never crosses `/`. Iterative with one backtrack point per star,
/// so it runs in O(pattern × path) on hostile input.
fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(b'?') if text[t] != b'/' => {
                p += 1;
                t += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) if text[st] != b'/' => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                _ => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> PathPattern {
        s.parse().unwrap()
    }

    #[test]
    fn subtree_patterns() {
        let p = pat("/v1/*");
        assert!(p.matches("/v1"));
        assert!(p.matches("/v1/"));
        assert!(p.matches("/v1/a/b/c"));
        assert!(!p.matches("/v10"));
        assert!(!p.matches("/v"));
    }

    #[test]
    fn globs_stay_within_a_segment() {
        assert!(pat("/a/*/c").matches("/a/b/c"));
        assert!(!pat("/a/*/c").matches("/a/b/x/c"));
        assert!(pat("/a/b?").matches("/a/bc"));
        assert!(!pat("/a/b?").matches("/a/b/"));
        assert!(pat("/exact").matches("/exact"));
        assert!(!pat("/exact").matches("/exact/more"));
        assert!(pat("/*.json").matches("/x.json"));
        assert!(!pat("/*.json").matches("/a/x.json"));
    }

    #[test]
    fn refuses_relative_and_classes() {
        assert_eq!("v1".parse::<PathPattern>(), Err(PathError::NotAbsolute));
        assert_eq!("/[ab]".parse::<PathPattern>(), Err(PathError::Unsupported));
    }

    #[test]
    fn hostile_pattern_is_fast() {
        let p = pat("/*a*a*a*a*a*a*a*b");
        let text = format!("/{}", "a".repeat(5000));
        assert!(!p.matches(&text));
    }
}
