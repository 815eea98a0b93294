//! One model of "who may talk to whom", rendered as nftables rules for a local sandbox and as
//! Kubernetes NetworkPolicy objects for a cluster. Pure rendering: no IO, no tokio.
//!
//! Empty until the local-sandbox issue fills it.
