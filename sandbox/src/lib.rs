//! The `SandboxBackend` trait and its backends (local Linux namespaces; Kubernetes), the warm
//! pool, and the harness adapters that turn an agent CLI's output into one event stream.
//!
//! Empty until the local-sandbox issue fills it.
