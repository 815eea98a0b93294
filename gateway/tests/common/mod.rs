//! Test harness: a real gateway on 127.0.0.1:0 with a fresh CA, real local origins, and real
//! clients (curl, openssl, Python) run as processes. One file per concern; every test module
//! sees them all through this module.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod clients;
mod env;
mod fakes;
mod logs;
mod process;

pub use clients::*;
pub use env::*;
pub use fakes::*;
pub use logs::*;
pub use process::*;
