//! Matchers: host names and patterns, CIDR ranges, path patterns, and the rules built from
//! them. Each parses from its written form (lower-case, punycode, no bare `*`) and prints back
//! to it.

pub(crate) mod cidr;
pub(crate) mod host;
pub(crate) mod path;
pub(crate) mod rule;
