//! Credentials the gateway holds for its sandbox: secret sources (env, file, Vault, 1Password
//! Connect…) read lazily into a store, and tokens minted from them (GCP service accounts,
//! OAuth grants, AWS SigV4 signatures) and cached until they near expiry. Values never leave this module except to
//! be put on the wire by a transform.

pub mod aws;
pub mod crypto;
pub mod mint;
pub mod onepassword;
pub mod sigv4;
pub mod store;
pub mod tokens;
