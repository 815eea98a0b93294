//! Commands shared by the `centaur-gateway` and `centaur` binaries, so that both parse the
//! same arguments and print the same output from one place.

pub mod policy;
