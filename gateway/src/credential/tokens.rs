//! Access tokens minted by `gcp_auth` (RFC 7523 JWT bearer with a service-account key) and
//! `oauth_token` (refresh_token, client_credentials, password, jwt_bearer). One cell per
//! transform entry: minted once however many requests wait (single flight), refreshed ahead
//! of expiry on a task of its own (no request's lifetime bounds it), and minted afresh when a
//! credential source rotates. Tokens live in [`SecretValue`]s; errors carry codes only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use std::time::{Duration, Instant};

use policy::Policy;

use crate::credential::mint::{Creds, MintError, Minted, Spec, mint, resolve};
use crate::credential::store::{SecretStore, SecretValue};
use crate::upstream::Upstreams;

#[derive(Debug, Clone)]
pub(crate) struct Token {
    minted: Minted,
    refresh_at: Instant,
    expires_at: Instant,
    fingerprint: [u8; 32],
}

/// What only the miss and mint paths touch.
#[derive(Debug, Default)]
struct Miss {
    failed: Option<(MintError, Instant, [u8; 32])>,
    /// A refresh token the endpoint rotated, kept while the configured one is unchanged.
    rotated: Option<(SecretValue, [u8; 32])>,
}

/// One transform's token. A request reads it through an atomic pointer, without a lock.
#[derive(Debug)]
struct Cell {
    spec: Spec,
    token: ArcSwapOption<Token>,
    refreshing: AtomicBool,
    miss: Mutex<Miss>,
    flight: tokio::sync::Mutex<()>,
}

/// How long a failed mint is remembered before a request tries again.
const FAILURE_BACKOFF: Duration = Duration::from_secs(2);

/// Which cell: a `gcp_auth` transform or an `oauth_token` entry, by index in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenId {
    /// `Policy::gcp_auth[i]`.
    Gcp(usize),
    /// `Policy::oauth[i]`.
    OAuth(usize),
}

/// The token cells of one policy snapshot.
#[derive(Debug, Clone)]
pub struct TokenCache {
    gcp: Arc<[Arc<Cell>]>,
    oauth: Arc<[Arc<Cell>]>,
    secrets: SecretStore,
    http: Upstreams,
}

fn cell(spec: Spec) -> Arc<Cell> {
    Arc::new(Cell {
        spec,
        token: ArcSwapOption::empty(),
        refreshing: AtomicBool::new(false),
        miss: Mutex::default(),
        flight: tokio::sync::Mutex::new(()),
    })
}

enum Lookup {
    Hit(Result<Minted, MintError>, bool),
    Miss,
}

impl TokenCache {
    /// Cells for the policy's token transforms; nothing is minted until first use.
    pub fn new(policy: &Policy, secrets: SecretStore, http: Upstreams) -> Self {
        TokenCache {
            gcp: policy
                .gcp_auth
                .iter()
                .map(|g| cell(Spec::Gcp(Arc::new(g.clone()))))
                .collect(),
            oauth: policy
                .oauth
                .iter()
                .map(|o| cell(Spec::OAuth(Arc::new(o.clone()))))
                .collect(),
            secrets,
            http,
        }
    }

    /// The current token of `id`: cached, minted now (single flight), or the cached one
    /// while a background refresh runs ahead of its expiry.
    pub async fn get(&self, id: TokenId) -> Result<Minted, MintError> {
        let cell = match id {
            TokenId::Gcp(i) => self.gcp.get(i),
            TokenId::OAuth(i) => self.oauth.get(i),
        }
        .ok_or(MintError::Response)?
        .clone();
        let creds = resolve(&cell.spec, &self.secrets).await?;
        let fp = creds.fingerprint();
        if let Lookup::Hit(r, refresh) = lookup(&cell, fp, true) {
            if refresh {
                let this = self.clone();
                let cell = cell.clone();
                tokio::spawn(async move { this.refresh(cell).await });
            }
            return r;
        }
        let _flight = cell.flight.lock().await;
        if let Lookup::Hit(r, _) = lookup(&cell, fp, false) {
            return r;
        }
        self.mint_and_store(&cell, creds).await
    }

    async fn refresh(&self, cell: Arc<Cell>) {
        let _flight = cell.flight.lock().await;
        let result = match resolve(&cell.spec, &self.secrets).await {
            Ok(creds) => self.mint_and_store(&cell, creds).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            log_failure(
                &cell.spec,
                &e,
                "token refresh failed; the current token is used until it expires",
            );
            // Keep the token; try again a little later, not on every request.
            if let Some(t) = cell.token.load_full() {
                let mut t = (*t).clone();
                t.refresh_at = Instant::now() + FAILURE_BACKOFF;
                cell.token.store(Some(Arc::new(t)));
            }
            cell.miss.lock().unwrap_or_else(|p| p.into_inner()).failed = None;
        }
        cell.refreshing.store(false, Ordering::Release);
    }

    async fn mint_and_store(&self, cell: &Cell, creds: Creds) -> Result<Minted, MintError> {
        let fp = creds.fingerprint();
        let rotated = {
            let miss = cell.miss.lock().unwrap_or_else(|p| p.into_inner());
            miss.rotated
                .as_ref()
                .filter(|(_, f)| *f == fp)
                .map(|(v, _)| v.clone())
        };
        let started = Instant::now();
        let result = mint(&cell.spec, &creds, rotated, &self.http).await;
        let mut miss = cell.miss.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok((minted, lifetime, new_refresh)) => {
                if let Some(r) = new_refresh {
                    miss.rotated = Some((r, fp));
                }
                // Refresh at three quarters of the lifetime, or a minute before expiry for
                // long-lived tokens, whichever is later.
                let expires_at = started + lifetime;
                let refresh_at = (started + lifetime * 3 / 4).max(
                    expires_at
                        .checked_sub(Duration::from_secs(60))
                        .unwrap_or(started),
                );
                cell.token.store(Some(Arc::new(Token {
                    minted: minted.clone(),
                    refresh_at,
                    expires_at,
                    fingerprint: fp,
                })));
                miss.failed = None;
                Ok(minted)
            }
            Err(e) => {
                log_failure(&cell.spec, &e, "could not mint an access token");
                miss.failed = Some((e.clone(), Instant::now(), fp));
                Err(e)
            }
        }
    }
}

fn lookup(cell: &Cell, fp: [u8; 32], may_refresh: bool) -> Lookup {
    let now = Instant::now();
    if let Some(t) = &*cell.token.load()
        && t.fingerprint == fp
        && now < t.expires_at
    {
        let refresh =
            may_refresh && now >= t.refresh_at && !cell.refreshing.swap(true, Ordering::AcqRel);
        return Lookup::Hit(Ok(t.minted.clone()), refresh);
    }
    let miss = cell.miss.lock().unwrap_or_else(|p| p.into_inner());
    match &miss.failed {
        Some((e, at, f)) if *f == fp && at.elapsed() < FAILURE_BACKOFF => {
            Lookup::Hit(Err(e.clone()), false)
        }
        _ => Lookup::Miss,
    }
}

fn log_failure(spec: &Spec, e: &MintError, what: &str) {
    let (id, grant) = match spec {
        Spec::Gcp(g) => (g.id.as_str(), "gcp_service_account"),
        Spec::OAuth(o) => (o.id.as_str(), o.grant.as_str()),
    };
    if matches!(e, MintError::OAuth(c) if c == "invalid_grant") {
        tracing::error!(transform = id, grant, error = %e, "{what}: the grant is invalid and will not recover until its credentials change");
    } else {
        tracing::warn!(transform = id, grant, error = %e, "{what}");
    }
}
