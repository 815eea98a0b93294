//! The store itself: the pools, migrations, the transaction macros both engines share, and
//! the checks every write makes (thread keys, request hashes, ids).

use std::sync::Arc;
use std::time::Instant;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::store::code::{Code, Rejection};

/// The longest thread key, in bytes.
pub const MAX_THREAD_KEY: usize = 512;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request was refused (nothing was written).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("{0}")]
    Migrate(String),
}

impl StoreError {
    pub(super) fn reject(code: Code, message: impl Into<String>) -> Self {
        StoreError::Rejected(Rejection::new(code, message))
    }
}

/// A thread whose events changed, and when the change committed.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The thread.
    pub thread_key: Arc<str>,
    /// Its newest event id.
    pub event_id: i64,
    /// When the commit returned (for the delivery latency histogram).
    pub at: Instant,
    /// The events the commit appended, in order (empty when they are not known here: another
    /// replica's commit; read them from the store).
    pub events: Arc<[crate::store::event::Event]>,
}

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) db: Db,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) announce: broadcast::Sender<Announcement>,
    /// This process's id in PostgreSQL notifications (its own are already announced).
    pub(super) instance: Arc<str>,
    /// SQLite has one writer at a time: this process's writers take turns here (first come,
    /// first served) instead of retrying `BEGIN IMMEDIATE` with back-off sleeps.
    pub(super) writer: Arc<tokio::sync::Mutex<()>>,
}

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Runs `$body` in a write transaction on whichever engine the store uses; `$tx` names the
/// transaction inside. A `?` in the body rolls back.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        match &$store.db {
            $crate::store::db::Db::Sqlite(pool) => {
                // Writers queue here, in order, rather than in SQLite's sleeping busy handler.
                let _writer = $store.writer.lock().await;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::db::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Runs `$body` with `$pool` bound to whichever engine's pool the store uses.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::store::db::Db::Sqlite($pool) => $body,
            $crate::store::db::Db::Postgres($pool) => $body,
        }
    };
}

pub(crate) use {in_tx, on_pool};

/// Where the store lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// `centaur.db` in this directory (created if missing).
    Sqlite(std::path::PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl Location {
    /// The database URL if one is given, else SQLite in the data directory.
    pub fn new(database_url: Option<&str>, data_dir: &std::path::Path) -> Result<Self, StoreError> {
        match database_url {
            None | Some("") => Ok(Location::Sqlite(data_dir.join("centaur.db"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Location::Postgres(u.to_string()))
            }
            Some(u) if u.starts_with("sqlite:") => Ok(Location::Sqlite(
                u.trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:")
                    .into(),
            )),
            Some(_) => Err(StoreError::Migrate(
                "the database URL must start with postgres:// (or sqlite:)".into(),
            )),
        }
    }

    /// For messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(p) => format!("SQLite {}", p.display()),
            Location::Postgres(u) => {
                let redacted = match (u.find("://"), u.rfind('@')) {
                    (Some(s), Some(at)) if at > s + 3 => match u[s + 3..at].split_once(':') {
                        Some((user, _)) => format!("{}{user}:***{}", &u[..s + 3], &u[at..]),
                        None => u.clone(),
                    },
                    _ => u.clone(),
                };
                format!("PostgreSQL {redacted}")
            }
        }
    }
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the store. A database that
    /// another, newer version migrated is refused.
    pub async fn open(location: &Location, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        let db = match location {
            Location::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Migrate(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // Durable before acknowledged: a commit is on disk when it returns.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(std::time::Duration::from_secs(10))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await?;
                migrate(&SQLITE, &pool, "SQLite").await?;
                Db::Sqlite(pool)
            }
            Location::Postgres(url) => {
                let options: PgConnectOptions = url.parse()?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .connect_with(options)
                    .await?;
                migrate(&POSTGRES, &pool, "PostgreSQL").await?;
                Db::Postgres(pool)
            }
        };
        let (announce, _) = broadcast::channel(4096);
        Ok(Store {
            db,
            clock,
            announce,
            instance: format!("{:016x}", rand::random::<u64>()).into(),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Announcements of threads whose events changed.
    pub fn subscribe(&self) -> broadcast::Receiver<Announcement> {
        self.announce.subscribe()
    }

    /// On PostgreSQL: turns other replicas' `NOTIFY centaur_events` into announcements until
    /// the connection fails (the caller restarts it). On SQLite: returns at once (one server
    /// owns the file).
    pub async fn listen(&self) -> Result<(), StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(());
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen("centaur_events").await?;
        loop {
            let n = listener.recv().await?;
            let payload = n.payload();
            let Some((instance, rest)) = payload.split_once(' ') else {
                continue;
            };
            if instance == &*self.instance {
                continue;
            }
            let Some((id, thread)) = rest.split_once(' ') else {
                continue;
            };
            let _ = self.announce.send(Announcement {
                thread_key: thread.into(),
                event_id: id.parse().unwrap_or(0),
                at: Instant::now(),
                events: Arc::new([]),
            });
        }
    }

    pub(super) fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    pub(super) fn announce(
        &self,
        thread_key: &str,
        event_id: i64,
        events: Vec<crate::store::event::Event>,
    ) {
        let _ = self.announce.send(Announcement {
            thread_key: thread_key.into(),
            event_id,
            at: Instant::now(),
            events: events.into(),
        });
    }

    /// Closes the pool (waits for connections to return).
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

async fn migrate<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
    engine: &str,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
{
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::Migrate(format!(
            "this {engine} database was migrated by a newer centaur (migration {v} is not known to this version); refusing to start: upgrade centaur or point it at another database"
        )),
        sqlx::migrate::MigrateError::VersionMismatch(v) => StoreError::Migrate(format!(
            "migration {v} applied to this {engine} database differs from this version's; refusing to start"
        )),
        other => StoreError::Migrate(format!("cannot migrate the {engine} database: {other}")),
    })
}

/// Checks a thread key: 1..=512 bytes, a `namespace:` prefix of at least one character, no
/// control characters.
pub fn check_thread_key(key: &str) -> Result<(), Rejection> {
    let bad = |why: &str| {
        Err(Rejection::new(
            Code::InvalidThreadKey,
            format!("thread_key {why}"),
        ))
    };
    if key.is_empty() {
        return bad("is empty");
    }
    if key.len() > MAX_THREAD_KEY {
        return bad(&format!(
            "is {} bytes; the limit is {MAX_THREAD_KEY}",
            key.len()
        ));
    }
    if key.find(':').is_none_or(|i| i == 0) {
        return bad(&format!(
            "{key:?} has no namespace prefix (expected NAMESPACE:ID, e.g. cli:1234)"
        ));
    }
    if key.chars().any(char::is_control) {
        return bad("has control characters");
    }
    Ok(())
}

/// The SHA-256 of a request's canonical JSON (keys sorted, compact): the idempotency check.
pub fn request_hash(v: &serde_json::Value) -> String {
    fn canonical(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&m[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    canonical(v, &mut s);
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()).as_ref())
}

/// The bytes of lower- or upper-case hex; `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A fresh random id with this prefix (`exe_`, `msg_`, `rt_`…): 16 hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_keys_need_a_namespace_and_a_bounded_length() {
        assert!(check_thread_key("cli:1").is_ok());
        assert!(check_thread_key("slack:T1:C2:1700000000.1").is_ok());
        for bad in ["", ":x", "nocolon", "a:\u{7}"] {
            let e = check_thread_key(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidThreadKey, "{bad:?}");
        }
        let long = format!("a:{}", "x".repeat(511));
        assert!(
            check_thread_key(&long)
                .unwrap_err()
                .message
                .contains("513 bytes")
        );
    }

    #[test]
    fn the_request_hash_ignores_key_order_but_not_values() {
        let a = serde_json::json!({"b": 1, "a": {"y": [1, 2], "x": "é"}});
        let b = serde_json::json!({"a": {"x": "é", "y": [1, 2]}, "b": 1});
        let c = serde_json::json!({"a": {"x": "é", "y": [2, 1]}, "b": 1});
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
        // The canonical form of {"a":1}, hashed by hand with sha256sum.
        assert_eq!(
            request_hash(&serde_json::json!({"a": 1})),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
    }
}
