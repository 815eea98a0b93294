//! `centaur keys create|list|revoke`: API keys, straight in the store.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use control::clock::SystemClock;
use control::store::{Location, Scope, Store};

/// API keys.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Make a key; it is printed once, alone on stdout (only its SHA-256 is stored).
    ///
    /// Example:
    ///   KEY=$(centaur keys create --data-dir ./centaur-data --name me --scopes agent)
    Create {
        #[command(flatten)]
        db: Db,
        /// A name for the key (shown by `list`, used by `revoke`).
        #[arg(long)]
        name: String,
        /// What it may do, comma-separated: agent (the /agent API), tools:NAME or tools:* (the
        /// /tools API, one tool or all), admin (everything).
        #[arg(long, default_value = "agent")]
        scopes: String,
    },
    /// List keys (never the keys themselves).
    List {
        #[command(flatten)]
        db: Db,
    },
    /// Revoke keys by id or name.
    Revoke {
        #[command(flatten)]
        db: Db,
        /// The key's id (`key_…`) or name.
        key: String,
    },
}

/// The store to use: the server's.
#[derive(Debug, Args)]
pub struct Db {
    /// The server's data directory (SQLite store `centaur.db` in it).
    #[arg(long, value_name = "DIR", default_value = "centaur-data")]
    data_dir: PathBuf,
    /// A PostgreSQL URL instead.
    #[arg(long, env = "CENTAUR_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

async fn open(db: &Db) -> anyhow::Result<Store> {
    let loc = Location::new(db.database_url.as_deref(), &db.data_dir)?;
    Ok(Store::open(&loc, Arc::new(SystemClock)).await?)
}

/// Runs a `centaur keys` subcommand.
pub async fn run(cmd: KeysCmd) -> anyhow::Result<u8> {
    match cmd {
        KeysCmd::Create { db, name, scopes } => {
            let scopes =
                Scope::parse_list(&scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let store = open(&db).await?;
            let (secret, key) = store.create_key(&name, &scopes).await?;
            eprintln!(
                "centaur: created {} ({}, scopes {}); it is shown once:",
                key.key_id,
                key.name,
                key.scopes.join(",")
            );
            println!("{secret}");
        }
        KeysCmd::List { db } => {
            let store = open(&db).await?;
            println!(
                "{:<22} {:<20} {:<14} {:<16} state",
                "id", "name", "prefix", "scopes"
            );
            for k in store.list_keys().await? {
                println!(
                    "{:<22} {:<20} {:<14} {:<16} {}",
                    k.key_id,
                    k.name,
                    k.prefix,
                    k.scopes.join(","),
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
        }
        KeysCmd::Revoke { db, key } => {
            let store = open(&db).await?;
            match store.revoke_key(&key).await? {
                0 => anyhow::bail!("no active key with id or name {key:?}"),
                n => println!("revoked {n} key(s)"),
            }
        }
    }
    Ok(0)
}
