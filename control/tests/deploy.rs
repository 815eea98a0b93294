//! The Helm charts in deploy/charts, with a real Helm (4.1.4, the upstream binary from the npm
//! package scripts/install-deps unpacks into .k8s): linted strictly, rendered with several
//! value sets, every rendered object validated against the Kubernetes schemas offline
//! (`kubernetes-validate --strict`), values the schema forbids refused, and what the charts
//! hand our binaries (the server's config, the gateway's policy) accepted by those binaries;
//! and `centaur server --check`, which the chart's config goes through. No cluster is involved: what a cluster would do with the objects is a known gap (README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tool(rel: &str) -> PathBuf {
    let p = repo().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps",
        p.display()
    );
    p
}

fn chart(name: &str) -> PathBuf {
    repo().join("deploy/charts").join(name)
}

/// Runs helm with its cache and config in a temporary directory (nothing from $HOME).
fn helm(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(tool(".k8s/helm"))
        .args(args)
        .env("HELM_CACHE_HOME", home.path())
        .env("HELM_CONFIG_HOME", home.path())
        .env("HELM_DATA_HOME", home.path())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `helm template` with `sets`; panics with Helm's words if it fails.
fn render(name: &str, sets: &[&str]) -> String {
    let c = chart(name);
    let mut args = vec![
        "template",
        "rel",
        c.to_str().unwrap(),
        "--namespace",
        "agents",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let o = helm(&args);
    assert!(o.status.success(), "{name} {sets:?}:\n{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The value sets each chart is rendered with: the defaults and every switch turned.
fn value_sets(name: &str) -> Vec<Vec<&'static str>> {
    match name {
        "centaur" => vec![
            vec![],
            vec![
                "replicaCount=3",
                "database.existingSecret=centaur-db",
                "sandbox.namespace=centaur-sandboxes",
                "sandbox.runtimeClassName=gvisor",
                "sandbox.workspaceStorage=20Gi",
                "sandbox.storageClassName=fast",
                "networkPolicy.databaseCidrs={10.20.0.0/16}",
                "networkPolicy.ingressNamespaces={ingress-nginx}",
                "persistence.enabled=false",
                "serviceMonitor.enabled=true",
            ],
            vec![
                "sandbox.warmPool=3",
                "networkPolicy.enabled=false",
                "rbac.create=false",
                "serviceAccount.create=false",
                "podDisruptionBudget.enabled=false",
            ],
        ],
        _ => vec![
            vec!["ca.existingSecret=gateway-ca"],
            vec![
                "ca.existingSecret=gateway-ca",
                "envFromSecret=gateway-env",
                "networkPolicy.clientNamespaces={team-a,team-b}",
                "networkPolicy.clientPodLabels.egress=gateway",
                "networkPolicy.adminNamespaces={monitoring}",
                "serviceMonitor.enabled=true",
                "audit.durability=strict",
            ],
            vec![
                "ca.existingSecret=gateway-ca",
                "existingPolicyConfigMap=my-policy",
                "networkPolicy.enabled=false",
            ],
        ],
    }
}

#[test]
fn helm_lints_both_charts_strictly() {
    let o = helm(&["lint", "--strict", chart("centaur").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 chart(s) linted, 0 chart(s) failed"));
    let o = helm(&[
        "lint",
        "--strict",
        chart("centaur-gateway").to_str().unwrap(),
        "--set",
        "ca.existingSecret=gateway-ca",
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Every object of every value set is valid for the oldest and the newest Kubernetes the
/// charts support (`kubeVersion: >=1.30`); only the ServiceMonitor, a CRD, has no schema.
#[test]
fn every_rendered_object_is_valid_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["centaur", "centaur-gateway"] {
        for (i, sets) in value_sets(name).iter().enumerate() {
            let file = dir.path().join(format!("{name}-{i}.yaml"));
            let rendered = render(name, sets);
            let objects = rendered.lines().filter(|l| l.starts_with("kind: ")).count();
            let crds = rendered.matches("\nkind: ServiceMonitor\n").count();
            std::fs::write(&file, rendered).unwrap();
            for k in ["1.30.0", "1.34.0"] {
                let o = Command::new(tool(".venv/bin/kubernetes-validate"))
                    .args(["--strict", "-k", k])
                    .arg(&file)
                    .output()
                    .unwrap();
                let t = text(&o);
                assert!(o.status.success(), "{name} {sets:?} on {k}:\n{t}");
                assert!(!t.contains("ERROR"), "{t}");
                let unchecked: Vec<&str> = t.lines().filter(|l| l.starts_with("WARN")).collect();
                assert!(
                    unchecked.iter().all(|l| l.contains("kind ServiceMonitor")),
                    "{unchecked:#?}"
                );
                assert_eq!(
                    t.matches(" passed for resource ").count(),
                    objects - crds,
                    "{t}"
                );
            }
        }
    }
}

#[test]
fn values_the_schema_forbids_are_refused_with_where_and_why() {
    let cases: [(&str, &[&str], &str); 9] = [
        ("centaur", &["replicaCount=0"], "/replicaCount"),
        ("centaur", &["sandbox.memory=lots"], "/sandbox/memory"),
        ("centaur", &["sandbox.uid=0"], "/sandbox/uid"),
        ("centaur", &["port=70000"], "/port"),
        (
            "centaur",
            &["sandbx.image=x"],
            "additional properties 'sandbx' not allowed",
        ),
        (
            "centaur",
            &["networkPolicy.databaseCidrs={everywhere}"],
            "/networkPolicy/databaseCidrs/0",
        ),
        ("centaur-gateway", &[], "/ca/existingSecret"),
        (
            "centaur-gateway",
            &["ca.existingSecret=ca", "audit.durability=sometimes"],
            "/audit/durability",
        ),
        (
            "centaur-gateway",
            &["ca.existingSecret=ca", "policy.management.listen=:1"],
            "invalid propertyName 'management'",
        ),
    ];
    for (name, sets, want) in cases {
        let c = chart(name);
        let mut args = vec!["template", "rel", c.to_str().unwrap()];
        for s in sets {
            args.extend(["--set", s]);
        }
        let o = helm(&args);
        assert!(!o.status.success(), "{name} {sets:?} rendered");
        assert!(
            text(&o).contains(want),
            "{name} {sets:?}: want {want:?} in\n{}",
            text(&o)
        );
    }
}

/// The chart's template checks say what to do, where a schema cannot.
#[test]
fn the_centaur_chart_refuses_what_would_not_run() {
    let c = chart("centaur");
    let c = c.to_str().unwrap();
    let o = helm(&["template", "rel", c, "--set", "replicaCount=2"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("replicaCount > 1 needs PostgreSQL"),
        "{}",
        text(&o)
    );
    let o = helm(&[
        "template",
        "rel",
        c,
        "--set",
        "sandbox.warmPool=2",
        "--set",
        "sandbox.workspaceStorage=1Gi",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("sandbox.warmPool needs an empty sandbox.workspaceStorage"),
        "{}",
        text(&o)
    );
    let o = helm(&["template", "rel", c, "--set", "config.listen=0.0.0.0:1"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("config.listen is set by the chart"),
        "{}",
        text(&o)
    );
}

/// The `data:` key `key` of the rendered ConfigMap, unindented.
fn config_map_entry(rendered: &str, key: &str) -> String {
    let start = rendered
        .find(&format!("  {key}: |\n"))
        .unwrap_or_else(|| panic!("no {key} in\n{rendered}"));
    rendered[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect()
}

/// The server's config the chart renders is one `centaur server --check` accepts, with the
/// Kubernetes backend in the release's namespace; and `--check` is not a rubber stamp.
#[test]
fn the_server_accepts_the_config_the_chart_renders() {
    let dir = tempfile::tempdir().unwrap();
    for (sets, ns) in [
        (&[][..], "agents"),
        (
            &[
                "sandbox.namespace=centaur-sandboxes",
                "sandbox.workspaceStorage=20Gi",
                "sandbox.storageClassName=fast",
            ][..],
            "centaur-sandboxes",
        ),
    ] {
        let cfg = config_map_entry(&render("centaur", sets), "centaur.yaml");
        let file = dir.path().join("centaur.yaml");
        std::fs::write(&file, &cfg).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_centaur"))
            .args(["server", "--check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{cfg}\n{}", text(&o));
        assert!(
            text(&o).contains(&format!("sandboxes kubernetes (namespace {ns}")),
            "{}",
            text(&o)
        );
        // The chart routes centaur.internal to the server's Service.
        assert!(
            text(&o).contains("centaur.internal via rel-centaur."),
            "{}",
            text(&o)
        );
    }
    let cfg = config_map_entry(
        &render("centaur", &["config.harnesses.claude.kind=amp"]),
        "centaur.yaml",
    );
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, cfg).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(["server", "--check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("amp is not supported"), "{}", text(&o));
}

/// The policy the gateway chart renders (listeners placed, the CA where the Secret is
/// mounted) passes `centaur policy check` (the same check `centaur-gateway check` runs), and
/// a policy the gateway would refuse is caught the same way.
#[test]
fn the_gateway_accepts_the_policy_the_chart_renders() {
    let rendered = render(
        "centaur-gateway",
        &[
            "ca.existingSecret=gateway-ca",
            "envFromSecret=gateway-env",
            "policy.transforms[0].name=allowlist",
            "policy.transforms[0].config.domains[0]=api.github.com",
        ],
    );
    let policy = config_map_entry(&rendered, "policy.yaml");
    assert!(policy.contains("tunnel_listen: :1080"), "{policy}");
    assert!(policy.contains("api.github.com"), "{policy}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, &policy).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{policy}\n{}", text(&o));
    assert!(text(&o).contains("allow rules: 1"), "{}", text(&o));
    let bad = render(
        "centaur-gateway",
        &[
            "ca.existingSecret=gateway-ca",
            "policy.transforms[0].name=allowlist",
            "policy.transforms[0].config.domans[0]=api.github.com",
        ],
    );
    std::fs::write(&file, config_map_entry(&bad, "policy.yaml")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("domans"), "{}", text(&o));
}

/// `centaur server --check` reports every mistake of a config at once, starting nothing.
#[test]
fn server_check_reports_every_mistake_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("centaur.yaml");
    std::fs::write(
        &file,
        "data_dir: ./never-made\n\
         sandbox:\n  idle_timeout: 0s\n  max_running: 0\n  warm_pool: 3\n  backend: kubernetes\n  kubernetes:\n    namespace: Not_A_Namespace\n    memory: lots\n    workspace_storage: 1Gi\n\
         harnesses:\n  a: {kind: amp}\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(["server", "--check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    for want in [
        "sandbox.idle_timeout: at least 1s",
        "sandbox.max_running: at least 1",
        "sandbox.warm_pool (3) must be below sandbox.max_running (0)",
        "sandbox.kubernetes.namespace",
        "sandbox.kubernetes.image is required",
        "sandbox.kubernetes.gateway_image is required",
        "sandbox.kubernetes.memory",
        "sandbox.warm_pool: not with sandbox.kubernetes.workspace_storage",
        "amp is not supported",
    ] {
        assert!(t.contains(want), "{want:?} in\n{t}");
    }
    assert!(
        !dir.path().join("never-made").exists(),
        "--check made the data directory"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(["server", "--check"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--check checks a config file"),
        "{}",
        text(&o)
    );
}
