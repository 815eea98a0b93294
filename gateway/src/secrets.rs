//! Secret values: fetched lazily from their sources, cached per entry, refreshed in the
//! background when stale (a refresh never stalls requests), and held in a type that never
//! prints them (invariant 3).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use policy::{SecretEntry, Source};

/// A real secret value. `Debug` and `Display` redact.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<[u8]>);

impl SecretValue {
    /// The bytes, for putting on the wire.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a value could not be had. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The variable is unset or empty.
    #[error("environment variable is unset or empty")]
    EnvMissing,
    /// The file could not be read or is empty.
    #[error("file is unreadable or empty")]
    FileUnreadable,
    /// The index names no entry of this snapshot (a bug, never a user error).
    #[error("no such secret in this policy snapshot")]
    Unknown,
    /// `json_key` did not find a string field.
    #[error("value is not a JSON object with that string field")]
    JsonKey,
}

#[derive(Debug, Default)]
struct State {
    value: Option<(SecretValue, Instant)>,
    failed: Option<(SecretError, Instant)>,
    refreshing: bool,
}

/// One entry's cache.
#[derive(Debug)]
struct Cell {
    source: Source,
    state: Arc<Mutex<State>>,
}

/// The values of one policy snapshot's secrets, index-aligned with `Policy::secrets`.
#[derive(Debug)]
pub struct SecretStore {
    cells: Vec<Cell>,
}

impl SecretStore {
    /// A store for `entries`. Nothing is read until first use.
    pub fn new(entries: &[SecretEntry]) -> Self {
        SecretStore {
            cells: entries
                .iter()
                .map(|e| Cell {
                    source: e.source.clone(),
                    state: Arc::default(),
                })
                .collect(),
        }
    }

    /// The value of entry `i`: cached, fetched on first use, or the last good value while a
    /// background refresh runs.
    pub fn get(&self, i: usize) -> Result<SecretValue, SecretError> {
        let Some(cell) = self.cells.get(i) else {
            return Err(SecretError::Unknown);
        };
        let (ttl, failure_ttl) = match &cell.source {
            Source::Env { .. } => (None, Duration::from_secs(60)),
            Source::File {
                ttl, failure_ttl, ..
            } => (*ttl, *failure_ttl),
        };
        let cached = {
            let mut st = cell.state.lock().unwrap_or_else(|p| p.into_inner());
            match (&st.value, &st.failed) {
                (Some((v, at)), _) => {
                    let v = v.clone();
                    let refresh = ttl.is_some_and(|t| at.elapsed() >= t) && !st.refreshing;
                    st.refreshing |= refresh;
                    Some((Ok(v), refresh))
                }
                (None, Some((e, at))) if at.elapsed() < failure_ttl => {
                    Some((Err(e.clone()), false))
                }
                _ => None,
            }
        };
        if let Some((result, refresh)) = cached {
            // Outside the lock: the refresh takes it again.
            if refresh {
                spawn_refresh(cell.source.clone(), cell.state.clone());
            }
            return result;
        }
        // First use (or a failure that has expired): read now. File reads are small.
        let fetched = fetch(&cell.source);
        let mut st = cell.state.lock().unwrap_or_else(|p| p.into_inner());
        match &fetched {
            Ok(v) => st.value = Some((v.clone(), Instant::now())),
            Err(e) => st.failed = Some((e.clone(), Instant::now())),
        }
        fetched
    }
}

fn spawn_refresh(source: Source, state: Arc<Mutex<State>>) {
    let refresh = move || {
        let fetched = fetch(&source);
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.refreshing = false;
        match fetched {
            Ok(v) => st.value = Some((v, Instant::now())),
            // Keep serving the last good value; try again after a while.
            Err(e) => {
                tracing::warn!(source = %source, error = %e, "secret refresh failed; serving the last good value");
                if let Some((_, at)) = &mut st.value {
                    *at = Instant::now();
                }
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(refresh);
        }
        Err(_) => refresh(),
    }
}

fn fetch(source: &Source) -> Result<SecretValue, SecretError> {
    let (raw, json_key) = match source {
        Source::Env { var, json_key } => {
            let v = std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .ok_or(SecretError::EnvMissing)?;
            (v.into_encoded_bytes(), json_key)
        }
        Source::File { path, json_key, .. } => {
            let v = std::fs::read(path)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(SecretError::FileUnreadable)?;
            (v, json_key)
        }
    };
    let bytes = match json_key {
        None => raw,
        Some(k) => serde_json::from_slice::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| {
                v.get(k)
                    .and_then(|f| f.as_str())
                    .map(|s| s.as_bytes().to_vec())
            })
            .ok_or(SecretError::JsonKey)?,
    };
    Ok(SecretValue(bytes.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant 3: a secret value never prints.
    #[test]
    fn debug_and_display_redact() {
        let v = SecretValue(b"sk-live-123".to_vec().into());
        assert!(!format!("{v:?} {v}").contains("sk-live"));
    }

    #[test]
    fn file_sources_refresh_without_stalling_and_keep_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "{\"token\": \"one\"}").unwrap();
        let entry = Source::File {
            path: path.display().to_string(),
            ttl: Some(Duration::from_millis(10)),
            failure_ttl: Duration::from_secs(60),
            json_key: Some("token".into()),
        };
        let store = SecretStore {
            cells: vec![Cell {
                source: entry,
                state: Arc::default(),
            }],
        };
        assert_eq!(store.get(0).unwrap().expose(), b"one");
        std::fs::write(&path, "{\"token\": \"two\"}").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // Stale: the old value is served at once and a refresh happens beside it.
        assert_eq!(store.get(0).unwrap().expose(), b"one");
        assert_eq!(store.get(0).unwrap().expose(), b"two");
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            store.get(0).unwrap().expose(),
            b"two",
            "a failed refresh keeps the last good value"
        );
    }
}
