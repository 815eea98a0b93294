//! Test harness: a real gateway on 127.0.0.1:0 with a fresh CA, real local origins, and real
//! clients (curl, openssl, Python) run as processes. One file per concern; every test binary
//! sees them all through this module.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod clients;
mod env;
mod fakes;
mod logs;
mod process;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use env::*;
#[allow(unused_imports)]
pub use fakes::*;
#[allow(unused_imports)]
pub use logs::*;
#[allow(unused_imports)]
pub use process::*;
