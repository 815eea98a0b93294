//! Sandbox backends. Today: the local backend, which runs a command in Linux namespaces
//! (network, user, mount, PID, IPC, UTS) behind a gateway of its own, with nftables rules
//! rendered by `netpol` and resource limits from cgroups (v1 or v2); and the objects a
//! Kubernetes sandbox is made of (`kubernetes`), rendered without a cluster.
//!
//! Must not depend on the gateway or the control plane: the caller starts the gateway on the
//! address this crate hands out.

pub mod kubernetes;
pub mod local;
