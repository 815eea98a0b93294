//! One value of the config each: durations, sizes, the sandbox user, mounts. Each pushes
//! its mistakes onto the list `settle` reports at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `sandbox.idle_timeout`: a duration of at least 1s, or `none`; 30 minutes when left out.
pub fn idle_timeout(v: Option<&str>, errors: &mut Vec<String>) -> Option<Duration> {
    match v {
        Some("none") => None,
        Some(d) => match duration(d) {
            Ok(d) if d >= Duration::from_secs(1) => Some(d),
            Ok(_) => {
                errors.push("sandbox.idle_timeout: at least 1s (or none)".into());
                None
            }
            Err(e) => {
                errors.push(format!("sandbox.idle_timeout: {e}"));
                None
            }
        },
        None => Some(Duration::from_secs(30 * 60)),
    }
}

/// A duration such as `500ms`, `30s`, `10m`, `1h`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 10m, 1h)"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    })
}

/// `UID[:GID]`, never 0; nobody by default.
pub(super) fn user(spec: Option<&str>, errors: &mut Vec<String>) -> (u32, u32) {
    let Some(u) = spec else {
        return (65534, 65534);
    };
    let (a, b) = u.split_once(':').unwrap_or((u, u));
    match (a.parse::<u32>(), b.parse::<u32>()) {
        (Ok(0), _) | (_, Ok(0)) => {
            errors.push("sandbox.user: the harness never runs as root".to_string());
            (65534, 65534)
        }
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            errors.push(format!("sandbox.user: {u:?} is not UID[:GID]"));
            (65534, 65534)
        }
    }
}

/// A size (`1MiB`), or the default.
pub(super) fn size(v: Option<&str>, what: &str, default: u64, errors: &mut Vec<String>) -> u64 {
    match v {
        None => default,
        Some(s) => policy::parse_size(s).unwrap_or_else(|e| {
            errors.push(format!("{what}: {e}"));
            default
        }),
    }
}

/// A duration (`30s`), or the default in seconds.
pub(super) fn duration_or(
    v: &Option<String>,
    what: &str,
    default: u64,
    errors: &mut Vec<String>,
) -> Duration {
    match v {
        None => Duration::from_secs(default),
        Some(s) => duration(s).unwrap_or_else(|e| {
            errors.push(format!("limits.{what}: {e}"));
            Duration::from_secs(default)
        }),
    }
}

/// `SRC[:DEST]` read-only mounts: the source must exist, the destination be absolute.
pub(super) fn mounts(
    list: &[String],
    base: &Path,
    errors: &mut Vec<String>,
) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for m in list {
        let (src, dest) = m.split_once(':').unwrap_or((m, m));
        let src = base.join(src);
        let dest = PathBuf::from(dest);
        if !dest.is_absolute() {
            errors.push(format!(
                "sandbox.mounts: {m:?}: the destination must be absolute"
            ));
        } else if !src.exists() {
            errors.push(format!("sandbox.mounts: {} does not exist", src.display()));
        } else {
            out.push((src, dest));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("10m").unwrap(), Duration::from_secs(600));
        assert!(duration("ten").is_err());
        assert!(duration("5y").is_err());
    }
}
