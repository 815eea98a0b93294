//! Every object the Kubernetes backend creates, validated against the Kubernetes schemas
//! offline by `kubernetes-validate --strict` (PyPI; installed by scripts/install-deps). Without
//! `--strict` a misspelled field would pass, so the last test shows one being refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use sandbox::kubernetes::objects::{GatewayFiles, Owner, Resources, Spec, WorkspaceClaim};
use serde_json::Value;

/// The Kubernetes versions the objects must be valid for: the oldest and newest the backend
/// supports.
const VERSIONS: [&str; 2] = ["1.30.0", "1.34.0"];

fn validator() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/kubernetes-validate");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps",
        p.display()
    );
    p
}

fn spec(warm: bool) -> Spec {
    Spec {
        id: "rt-7f3e2d1c0b".into(),
        namespace: "centaur-sandboxes".into(),
        thread_key: if warm {
            String::new()
        } else {
            "api:deploys".into()
        },
        thread_label: if warm {
            String::new()
        } else {
            "4f9a0c2e81b7d3a6".into()
        },
        deploy: "6b86b273ff34".into(),
        warm,
        image: "registry.example.com/centaur/sandbox:2026.11".into(),
        gateway_image: "registry.example.com/centaur/gateway:2026.11".into(),
        // A thread's sandbox keeps its workspace on a claim; a warm one has no thread yet.
        workspace: (!warm).then(|| WorkspaceClaim {
            size: "10Gi".into(),
            storage_class: Some("standard".into()),
        }),
        routes: vec!["centaur.internal=centaur.centaur.svc:8700".into()],
        command: vec!["codex".into(), "app-server".into()],
        env: vec![
            ("OPENAI_API_KEY".into(), "OPENAI_API_KEY".into()),
            ("GITHUB_TOKEN".into(), "GITHUB_TOKEN".into()),
        ],
        uid: 1001,
        resources: Resources {
            cpu: "2".into(),
            memory: "4Gi".into(),
            ephemeral_storage: "10Gi".into(),
        },
        gateway_resources: Resources {
            cpu: "500m".into(),
            memory: "128Mi".into(),
            ephemeral_storage: "512Mi".into(),
        },
        runtime_class: warm.then(|| "gvisor".into()),
        control_plane_labels: [("app.kubernetes.io/name".to_string(), "centaur".to_string())]
            .into(),
        control_plane_namespace: Some("centaur".into()),
    }
}

fn objects(warm: bool) -> Vec<Value> {
    let s = spec(warm);
    let owner = Owner {
        name: s.name(),
        uid: "0f8c6a2e-1b3d-4e5f-8a9b-7c6d5e4f3a2b".into(),
    };
    let files = GatewayFiles {
        policy: "transforms:\n  - name: allowlist\n    config:\n      domains: [api.openai.com]\n"
            .into(),
        ca_cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ca_key: "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".into(),
        env: vec![("IRON_MANAGEMENT_API_KEY".into(), "t0ken".into())],
    };
    let mut all: Vec<Value> = s.workspace_claim().into_iter().collect();
    all.push(s.parent());
    all.extend(
        s.owned(&owner, &files, Ipv4Addr::new(10, 96, 0, 42))
            .unwrap(),
    );
    all
}

/// Runs the validator on `docs` (JSON documents, which are YAML) for `version`.
fn validate(docs: &[Value], version: &str) -> (bool, String) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for d in docs {
        writeln!(f, "---\n{d}").unwrap();
    }
    let out = Command::new(validator())
        .args(["--strict", "-k", version])
        .arg(f.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_object_of_a_sandbox_is_valid_kubernetes() {
    for warm in [false, true] {
        let docs = objects(warm);
        // Eight objects, and the thread's workspace claim when there is a thread.
        let n = if warm { 9 } else { 10 };
        assert_eq!(docs.len(), n);
        for v in VERSIONS {
            let (ok, text) = validate(&docs, v);
            assert!(ok, "kubernetes {v}, warm {warm}:\n{text}");
            assert_eq!(text.matches(" passed for resource ").count(), n, "{text}");
        }
    }
}

#[test]
fn the_validator_refuses_a_misspelled_field() {
    let mut docs = objects(false);
    let pod = docs.last_mut().unwrap();
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = true.into();
    let (ok, text) = validate(&docs, VERSIONS[1]);
    assert!(!ok, "a misspelled field passed:\n{text}");
    assert!(text.contains("readOnlyRootFileSystem"), "{text}");
}
