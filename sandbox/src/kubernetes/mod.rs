//! The Kubernetes backend: the objects one sandbox is made of, rendered from one description
//! ([`objects::Spec`]) as JSON ready for server-side apply (pure, no IO), and [`cluster`],
//! which creates, repairs, lists, reaps and deletes them through the API server (kube-rs).
//!
//! A sandbox is eight objects in one namespace, created in this order so nothing runs
//! unconfined and nothing is left behind:
//!
//! 1. the **parent**, a ConfigMap `centaur-<id>` that owns the rest (ownerReferences), so one
//!    delete removes them all;
//! 2. the gateway's **Service** (its cluster IP is the sandbox's only resolver and proxy);
//! 3. the gateway's **Secrets**: its CA (certificate and key) and its environment (the real
//!    credentials, the management token), mounted only into the gateway;
//! 4. the gateway's **ConfigMap**: its policy and the CA certificate the sandbox trusts;
//! 5. the two **NetworkPolicies** from `netpol`, before any pod starts;
//! 6. the **gateway pod** (its own pod, never a sidecar: a sidecar would share the sandbox's
//!    network namespace, and no NetworkPolicy could keep the sandbox from going around it);
//! 7. the **sandbox pod**.

pub mod cluster;
pub mod exec;
pub mod objects;
