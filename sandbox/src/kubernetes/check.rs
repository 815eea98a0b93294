//! Checking a [`Spec`] before any object is made: every problem at once, and the
//! Kubernetes name, label and quantity rules it uses (also the server config's).

use netpol::{Model, Ports};

use super::{Spec, SpecError, reserved_env};

impl Spec {
    /// Checks everything the objects are made of.
    pub fn check(&self) -> Result<(), SpecError> {
        let mut errs = Vec::new();
        if let Err(e) = Model::new(&self.id, Ports::default()) {
            errs.push(e.to_string());
        }
        let labels = [
            ("thread label", &self.thread_label),
            ("deploy hash", &self.deploy),
        ];
        for (what, v) in labels {
            if !label_value(v) {
                errs.push(format!(
                    "{what} {v:?} is not a label value (at most 63 of A-Z a-z 0-9 . _ -, starting and ending alphanumeric)"
                ));
            }
        }
        if !dns_label(&self.namespace) {
            errs.push(format!("namespace {:?} is not a DNS label", self.namespace));
        }
        if let Some(ns) = self
            .control_plane_namespace
            .as_ref()
            .filter(|n| !dns_label(n))
        {
            errs.push(format!("control-plane namespace {ns:?} is not a DNS label"));
        }
        for (what, image) in [
            ("image", &self.image),
            ("gateway image", &self.gateway_image),
        ] {
            if image.is_empty() || image.chars().any(char::is_whitespace) {
                errs.push(format!("{what} {image:?} is not an image reference"));
            }
        }
        self.check_extras(&mut errs);
        if self.command.is_empty() {
            errs.push("the command is empty".into());
        }
        for r in [&self.resources, &self.gateway_resources] {
            for q in [&r.cpu, &r.memory, &r.ephemeral_storage] {
                if !quantity(q) {
                    errs.push(format!("{q:?} is not a Kubernetes quantity"));
                }
            }
        }
        if self.uid <= 0 {
            errs.push(format!("uid {} would be root or invalid", self.uid));
        }
        let reserved = reserved_env();
        for (k, _) in &self.env {
            if !env_name(k) {
                errs.push(format!("{k:?} is not an environment variable name"));
            } else if reserved.contains(&k.as_str()) {
                errs.push(format!("{k} is set by the backend"));
            }
        }
        for (k, v) in &self.control_plane_labels {
            if !label_value(v) || k.is_empty() {
                errs.push(format!("control-plane label {k}={v:?} is not a label"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SpecError(errs))
        }
    }

    /// [`Spec::check`] of the workspace claim and the gateway's routes.
    fn check_extras(&self, errs: &mut Vec<String>) {
        if let Some(w) = &self.workspace {
            if !quantity(&w.size) {
                errs.push(format!("the workspace size {:?} is not a quantity", w.size));
            }
            if !label_value(&self.thread_label) || self.thread_label.is_empty() {
                errs.push("a workspace claim needs a thread label".into());
            }
            if w.storage_class.as_deref().is_some_and(|c| !dns_label(c)) {
                errs.push(format!(
                    "the storage class {:?} is not a name",
                    w.storage_class
                ));
            }
        }
        for r in &self.routes {
            let ok = r.split_once('=').is_some_and(|(name, to)| {
                !name.is_empty() && to.contains(':') && !r.contains(char::is_whitespace)
            });
            if !ok {
                errs.push(format!("route {r:?} is not NAME=HOST:PORT"));
            }
        }
    }
}

/// A label value: empty, or at most 63 of `A-Z a-z 0-9 . _ -` starting and ending
/// alphanumeric.
pub fn label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// An RFC 1123 DNS label (namespaces, Service names).
pub fn dns_label(v: &str) -> bool {
    (1..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

/// A Kubernetes quantity as limits use it: a decimal number and an optional suffix (`500m`,
/// `2`, `1.5`, `4Gi`, `512M`).
pub fn quantity(v: &str) -> bool {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let number = !n.is_empty() && n.parse::<f64>().is_ok_and(|x| x > 0.0);
    number && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&unit)
}

fn env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
