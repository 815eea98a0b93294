//! Secret values: fetched lazily from their sources, cached per entry, refreshed in the
//! background when stale (a refresh never stalls requests), and held in a type that never
//! prints them (invariant 3).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use std::time::{Duration, Instant};

use policy::{NamedSource, Source, SourceId, VaultToken};

use crate::upstream::Upstreams;

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

impl SecretValue {
    /// A value from bytes.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        SecretValue(bytes.into())
    }
}

/// Values for `{type: env}` sources handed to the gateway by its embedder instead of its
/// process environment (`centaur sandbox run --secrets-from FILE`): looked up first; a name it
/// lacks falls back to the environment. `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct SecretEnv(Arc<HashMap<String, SecretValue>>);

impl SecretEnv {
    /// An overlay of these variables.
    pub fn new(vars: HashMap<String, SecretValue>) -> Self {
        SecretEnv(Arc::new(vars))
    }

    /// The value given for `var`, if any.
    pub fn get(&self, var: &str) -> Option<&SecretValue> {
        self.0.get(var)
    }
}

impl fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("SecretEnv").field(&names).finish()
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
    /// The index names no source of this snapshot (a bug, never a user error).
    #[error("no such secret in this policy snapshot")]
    Unknown,
    /// `json_key` did not find a string field.
    #[error("value is not a JSON object with that string field")]
    JsonKey,
    /// Vault has no address or token configured.
    #[error("vault address or token is not set ({0})")]
    VaultConfig(&'static str),
    /// Vault could not be reached or answered badly.
    #[error("vault request failed: {0}")]
    Vault(String),
    /// Vault answered, but the secret has no such string field.
    #[error("vault secret has no such string field")]
    VaultField,
    /// 1Password Connect could not be reached, refused, or has no such vault, item or field.
    #[error("1password connect: {0}")]
    OnePassword(String),
    /// AWS Secrets Manager or Parameter Store could not be reached, refused, or has no such
    /// secret or value.
    #[error("aws: {0}")]
    Aws(String),
}

/// A value and when it was fetched.
#[derive(Debug)]
struct Fetched {
    value: SecretValue,
    at: Instant,
}

/// One source's cache. The value is read without a lock (an atomic pointer); the mutexes
/// are taken only on a miss.
#[derive(Debug)]
struct Cell {
    source: Source,
    value: ArcSwapOption<Fetched>,
    refreshing: AtomicBool,
    failed: Mutex<Option<(SecretError, Instant)>>,
    /// Single flight for a fetch a request waits on (first use, expired failure).
    fetching: tokio::sync::Mutex<()>,
}

impl Cell {
    fn store(&self, value: SecretValue, at: Instant) {
        self.value.store(Some(Arc::new(Fetched { value, at })));
    }
}

/// The values of one policy snapshot's sources, index-aligned with `Policy::sources`.
#[derive(Debug, Clone)]
pub struct SecretStore {
    cells: Arc<[Arc<Cell>]>,
    http: Upstreams,
    env: SecretEnv,
}

/// What a cache lookup found.
enum Cached {
    Hit(Result<SecretValue, SecretError>, bool),
    Miss,
}

impl SecretStore {
    /// A store for `sources`; nothing is read until first use. Vault is reached through
    /// `http` (the guarded upstream client); `env` values win over the process environment.
    pub fn new(sources: &[NamedSource], http: Upstreams, env: SecretEnv) -> Self {
        SecretStore {
            cells: sources
                .iter()
                .map(|s| {
                    Arc::new(Cell {
                        source: s.source.clone(),
                        value: ArcSwapOption::empty(),
                        refreshing: AtomicBool::new(false),
                        failed: Mutex::default(),
                        fetching: tokio::sync::Mutex::new(()),
                    })
                })
                .collect(),
            http,
            env,
        }
    }

    /// The value of source `id`: cached, fetched on first use (one fetch however many
    /// requests wait), or the last good value while a background refresh runs.
    pub async fn get(&self, id: SourceId) -> Result<SecretValue, SecretError> {
        let cell = self.cells.get(id.0).ok_or(SecretError::Unknown)?;
        if let Cached::Hit(v, refresh) = self.cached(cell) {
            if refresh {
                self.spawn_refresh(cell.clone());
            }
            return v;
        }
        let _flight = cell.fetching.lock().await;
        if let Cached::Hit(v, _) = self.cached(cell) {
            return v;
        }
        let fetched = fetch(&cell.source, &self.http, &self.env).await;
        let mut failed = cell.failed.lock().unwrap_or_else(|p| p.into_inner());
        match &fetched {
            Ok(v) => {
                cell.store(v.clone(), Instant::now());
                *failed = None;
            }
            Err(e) => *failed = Some((e.clone(), Instant::now())),
        }
        fetched
    }

    fn cached(&self, cell: &Cell) -> Cached {
        let (ttl, failure_ttl) = cell.source.ttls();
        if let Some(f) = &*cell.value.load() {
            let refresh = ttl.is_some_and(|t| f.at.elapsed() >= t)
                && !cell.refreshing.swap(true, Ordering::AcqRel);
            return Cached::Hit(Ok(f.value.clone()), refresh);
        }
        let failed = cell.failed.lock().unwrap_or_else(|p| p.into_inner());
        match &*failed {
            Some((e, at)) if at.elapsed() < failure_ttl => Cached::Hit(Err(e.clone()), false),
            _ => Cached::Miss,
        }
    }

    fn spawn_refresh(&self, cell: Arc<Cell>) {
        let (http, env) = (self.http.clone(), self.env.clone());
        // A task of its own: no request's lifetime bounds it.
        tokio::spawn(async move {
            match fetch(&cell.source, &http, &env).await {
                Ok(v) => cell.store(v, Instant::now()),
                // Keep serving the last good value; try again after half a ttl.
                Err(e) => {
                    tracing::warn!(source = %cell.source, error = %e, "secret refresh failed; serving the last good value");
                    let half = cell.source.ttls().0.unwrap_or_default() / 2;
                    if let Some(f) = cell.value.load_full() {
                        let at = Instant::now()
                            .checked_sub(half)
                            .unwrap_or_else(Instant::now);
                        cell.store(f.value.clone(), at);
                    }
                }
            }
            cell.refreshing.store(false, Ordering::Release);
        });
    }
}

/// How long a Vault request may take.
const VAULT_TIMEOUT: Duration = Duration::from_secs(30);

async fn fetch(
    source: &Source,
    http: &Upstreams,
    env: &SecretEnv,
) -> Result<SecretValue, SecretError> {
    let raw = match source {
        Source::Env { var, .. } => match env.get(var) {
            Some(v) if !v.expose().is_empty() => v.expose().to_vec(),
            _ => std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .ok_or(SecretError::EnvMissing)?
                .into_encoded_bytes(),
        },
        Source::File { path, .. } => tokio::fs::read(path)
            .await
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(SecretError::FileUnreadable)?,
        Source::Vault {
            address,
            mount,
            path,
            field,
            token,
            ..
        } => vault(address.as_deref(), mount, path, field, token, http).await?,
        Source::OnePasswordConnect {
            reference,
            host,
            token,
            ..
        } => super::onepassword::connect(reference, host.as_deref(), token, http)
            .await
            .map_err(SecretError::OnePassword)?,
        Source::Aws {
            item,
            region,
            endpoint,
            ..
        } => super::aws::read(item, region.as_deref(), endpoint.as_deref(), http)
            .await
            .map_err(SecretError::Aws)?,
    };
    let bytes = match source.json_key() {
        None => raw,
        Some(k) => json_field(&raw, k).ok_or(SecretError::JsonKey)?,
    };
    Ok(SecretValue(bytes.into()))
}

fn json_field(raw: &[u8], key: &str) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    v.get(key)?.as_str().map(|s| s.as_bytes().to_vec())
}

/// Reads one field of a KV v2 secret: `GET {addr}/v1/{mount}/data/{path}` with
/// `X-Vault-Token`; the answer is `{"data": {"data": {field: value}, "metadata": …}}`.
async fn vault(
    address: Option<&str>,
    mount: &str,
    path: &str,
    field: &str,
    token: &VaultToken,
    http: &Upstreams,
) -> Result<Vec<u8>, SecretError> {
    let addr = match address {
        Some(a) => a.to_string(),
        None => std::env::var("VAULT_ADDR").map_err(|_| SecretError::VaultConfig("VAULT_ADDR"))?,
    };
    let token = match token {
        VaultToken::Env(var) => std::env::var(var).ok(),
        VaultToken::File(path) => tokio::fs::read_to_string(path).await.ok(),
    }
    .map(|t| t.trim().to_string())
    .filter(|t| !t.is_empty())
    .ok_or(SecretError::VaultConfig("token"))?;
    let token =
        http::HeaderValue::from_str(&token).map_err(|_| SecretError::VaultConfig("token"))?;
    let url = format!(
        "{}/v1/{}/data/{}",
        addr.trim_end_matches('/'),
        mount.trim_matches('/'),
        path.trim_start_matches('/')
    );
    let (status, body) = http
        .call(
            http::Method::GET,
            &url,
            vec![(http::HeaderName::from_static("x-vault-token"), token)],
            bytes::Bytes::new(),
            VAULT_TIMEOUT,
        )
        .await
        .map_err(|e| SecretError::Vault(e.to_string()))?;
    if !status.is_success() {
        return Err(SecretError::Vault(format!("status {}", status.as_u16())));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| SecretError::Vault("not JSON".into()))?;
    doc.pointer("/data/data")
        .and_then(|d| d.get(field))
        .and_then(|v| v.as_str())
        .map(|s| s.as_bytes().to_vec())
        .ok_or(SecretError::VaultField)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant 3: a secret value never prints.
    #[test]
    fn debug_and_display_redact() {
        let v = SecretValue(b"sk-live-123".to_vec().into());
        assert!(!format!("{v:?} {v}").contains("sk-live"));
        let env = SecretEnv::new([("API_KEY".to_string(), v)].into());
        assert_eq!(format!("{env:?}"), "SecretEnv([\"API_KEY\"])");
    }

    /// An embedder's values win over the process environment; a name they lack falls back.
    #[tokio::test]
    async fn env_overlay_wins_and_falls_back_to_the_environment() {
        let env = SecretEnv::new(
            [(
                "CENTAUR_TEST_OVERLAY".to_string(),
                SecretValue::new(*b"from-file"),
            )]
            .into(),
        );
        let http = test_upstreams();
        let src = |var: &str| Source::Env {
            var: var.into(),
            json_key: None,
        };
        let got = fetch(&src("CENTAUR_TEST_OVERLAY"), &http, &env)
            .await
            .unwrap();
        assert_eq!(got.expose(), b"from-file");
        // PATH is set in every test environment and absent from the overlay.
        let path = fetch(&src("PATH"), &http, &env).await.unwrap();
        assert_eq!(path.expose(), std::env::var("PATH").unwrap().as_bytes());
        let missing = fetch(&src("CENTAUR_TEST_UNSET_VAR"), &http, &env).await;
        assert_eq!(missing, Err(SecretError::EnvMissing));
    }

    fn test_upstreams() -> Upstreams {
        Upstreams::for_tests()
    }

    #[tokio::test]
    async fn file_sources_refresh_without_stalling_and_keep_the_last_good_value() {
        crate::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "{\"token\": \"one\"}").unwrap();
        let source = Source::File {
            path: path.display().to_string(),
            ttl: Some(Duration::from_millis(10)),
            failure_ttl: Duration::from_secs(60),
            json_key: Some("token".into()),
        };
        let http = test_upstreams();
        let store = SecretStore::new(
            &[NamedSource {
                source,
                name: "k".into(),
            }],
            http,
            SecretEnv::default(),
        );
        let get = || async { store.get(SourceId(0)).await.unwrap().expose().to_vec() };
        assert_eq!(get().await, b"one");
        std::fs::write(&path, "{\"token\": \"two\"}").unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Stale: the old value is served at once and a refresh happens beside it.
        assert_eq!(get().await, b"one");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get().await, b"two");
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            get().await,
            b"two",
            "a failed refresh keeps the last good value"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get().await, b"two");
    }
}
