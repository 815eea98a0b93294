//! API keys: stored as the SHA-256 of the key (a short prefix kept for display), with scopes.

use sqlx::Row as _;

use super::db::{Store, StoreError, hex, in_tx, on_pool};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The agent API (`/agent/*`): spawn, message, execute, events, release.
    Agent,
    /// Everything, and other threads' listings.
    Admin,
    /// The tools API (`/tools/*`): some `tools:NAME` or `tools:*` scope; which tools, see
    /// [`Scope::tool_allowed`].
    Tools,
}

impl Scope {
    /// Parses a comma-separated scope list (`agent`, `admin`, `tools:NAME`, `tools:*`).
    pub fn parse_list(s: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "agent" | "admin" | "*" => out.push(part.to_string()),
                p if p.starts_with("tools:") && p.len() > 6 => out.push(p.to_string()),
                p => {
                    return Err(format!(
                        "unknown scope {p:?} (known: agent, admin, tools:NAME, tools:*)"
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err("no scope given (known: agent, admin, tools:NAME, tools:*)".into());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether a key with these scopes may act with this one (`*` and `admin` cover all).
    pub fn allowed(self, scopes: &[String]) -> bool {
        scopes.iter().any(|s| {
            s == "*"
                || s == "admin"
                || match self {
                    Scope::Agent => s == "agent" || s.starts_with("agent:"),
                    Scope::Admin => false,
                    Scope::Tools => s.starts_with("tools:"),
                }
        })
    }

    /// Whether a key with these scopes may list and call the tool `name` (`tools:NAME`,
    /// `tools:*`, `admin`, `*`), unless a sandbox token's `-tools:NAME` blocks it.
    pub fn tool_allowed(scopes: &[String], name: &str) -> bool {
        let blocked = scopes
            .iter()
            .any(|s| s.strip_prefix("-tools:").is_some_and(|t| t == name));
        !blocked
            && scopes.iter().any(|s| {
                s == "*"
                    || s == "admin"
                    || s == "tools:*"
                    || s.strip_prefix("tools:").is_some_and(|t| t == name)
            })
    }
}

/// A stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Its id (`key_…`).
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// The key's first characters, for display.
    pub prefix: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it was made (Unix ms).
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// A sandbox token's thread: calls with it act for this thread only.
    pub thread_key: Option<String>,
    /// A sandbox token's runtime: honoured only while it is the thread's active one.
    pub runtime_id: Option<String>,
}

/// The SHA-256 hex of a key: what the store keeps.
pub fn key_hash(key: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes()).as_ref())
}

/// A key from an `api_keys` row (either engine's).
macro_rules! key_row {
    ($r:expr) => {{
        let r = $r;
        let scopes: String = r.try_get("scopes")?;
        Key {
            key_id: r.try_get("key_id")?,
            name: r.try_get("name")?,
            prefix: r.try_get("key_prefix")?,
            scopes: scopes.split(',').map(str::to_string).collect(),
            created_at: r.try_get("created_at")?,
            revoked_at: r.try_get("revoked_at")?,
            thread_key: r.try_get("thread_key")?,
            runtime_id: r.try_get("runtime_id")?,
        }
    }};
}

impl Store {
    /// Makes a key; returns it (shown once) and its record.
    pub async fn create_key(
        &self,
        name: &str,
        scopes: &[String],
    ) -> Result<(String, Key), StoreError> {
        if name.is_empty() || name.len() > 100 {
            return Err(StoreError::reject(
                super::code::Code::InvalidField,
                "a key's name must be 1 to 100 characters",
            ));
        }
        self.insert_key(name, scopes, None).await
    }

    /// Makes the token of a thread's sandbox (`runtime_id`), revoking the thread's earlier
    /// ones: one live token per thread. Returns the token.
    pub async fn create_sandbox_token(
        &self,
        thread_key: &str,
        runtime_id: &str,
        scopes: &[String],
    ) -> Result<String, StoreError> {
        let name = format!("sandbox:{runtime_id}");
        let (token, _) = self
            .insert_key(&name, scopes, Some((thread_key, runtime_id)))
            .await?;
        Ok(token)
    }

    async fn insert_key(
        &self,
        name: &str,
        scopes: &[String],
        sandbox: Option<(&str, &str)>,
    ) -> Result<(String, Key), StoreError> {
        let mut raw = [0u8; 32];
        rand::fill(&mut raw);
        use base64::Engine as _;
        let secret = format!(
            "ctr_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let key = Key {
            key_id: super::db::new_id("key_"),
            name: name.to_string(),
            prefix: secret[..12].to_string(),
            scopes: scopes.to_vec(),
            created_at: self.now(),
            revoked_at: None,
            thread_key: sandbox.map(|s| s.0.to_string()),
            runtime_id: sandbox.map(|s| s.1.to_string()),
        };
        let hash = key_hash(&secret);
        in_tx!(self, |tx| {
            if let Some(thread) = &key.thread_key {
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE thread_key = $2 AND revoked_at IS NULL",
                )
                .bind(key.created_at)
                .bind(thread)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO api_keys (key_id, name, key_prefix, key_hash, scopes, created_at, thread_key, runtime_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&key.key_id)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&hash)
            .bind(key.scopes.join(","))
            .bind(key.created_at)
            .bind(&key.thread_key)
            .bind(&key.runtime_id)
            .execute(&mut *tx)
            .await?;
        });
        Ok((secret, key))
    }

    /// The unrevoked key whose hash this is.
    pub async fn find_key(&self, key: &str) -> Result<Option<Key>, StoreError> {
        let hash = key_hash(key);
        on_pool!(self, |pool| {
            let row =
                sqlx::query("SELECT * FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                    .bind(&hash)
                    .fetch_optional(pool)
                    .await?;
            match row {
                Some(r) => Ok(Some(key_row!(&r))),
                None => Ok(None),
            }
        })
    }

    /// Every key made with `create_key` (not sandbox tokens), oldest first.
    pub async fn list_keys(&self) -> Result<Vec<Key>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT * FROM api_keys WHERE thread_key IS NULL ORDER BY created_at, key_id",
            )
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(key_row!(r));
            }
            Ok(out)
        })
    }

    /// Revokes the keys with this id or name; returns how many were live.
    pub async fn revoke_key(&self, id_or_name: &str) -> Result<u64, StoreError> {
        let now = self.now();
        let n = in_tx!(self, |tx| {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE (key_id = $2 OR name = $2) AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id_or_name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n)
    }
}
