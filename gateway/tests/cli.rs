//! The policy tools as a user runs them: `check` on valid and invalid fixtures (one per error
//! class, each with its expected message in the file), `explain`, `test`, and `schema`
//! checked by an independent JSON Schema validator (Python `jsonschema`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_centaur-gateway"))
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/policies")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_invalid_fixture_fails_with_its_message_and_position() {
    let files = fixtures("invalid");
    assert!(files.len() >= 14);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            f.display()
        );
        let (ok, _, err) = run(bin().arg("check").arg(&f));
        assert!(!ok, "{} was accepted", f.display());
        for expect in expected {
            assert!(
                err.contains(expect),
                "{}: expected {expect:?} in\n{err}",
                f.display()
            );
        }
    }
}

#[test]
fn valid_fixtures_pass_with_a_summary_and_their_test_cases() {
    for f in fixtures("valid") {
        let (ok, out, err) = run(bin().arg("check").arg(&f));
        assert!(ok, "{}: {err}", f.display());
        assert!(
            out.contains(": ok") && out.contains("allow rules:"),
            "{out}"
        );
    }
    let full =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies/valid/full.yaml");
    let (_, out, _) = run(bin().arg("check").arg(&full));
    for line in [
        "secret OPENAI_API_KEY → replace `OPENAI_PH` in listed headers, required → api.openai.com",
        "gcp_auth key GCP_SA_JSON → authorization → *.googleapis.com",
        "oauth_token client_credentials at https://auth.example.com/oauth/token",
        "hmac_sign sha256 → X-Key, X-Signature, X-Timestamp → exchange.example.com",
        "allow  *.github.com  (report only)",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    let (ok, out, _) = run(bin().arg("test").arg(&full));
    assert!(ok, "{out}");
    assert!(out.contains("5 passed, 0 failed"), "{out}");
}

#[test]
fn test_reports_each_failing_case_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "tests:
  - {name: github is allowed, request: 'GET https://api.github.com/user', expect: allow}
  - {name: wrong expectation, request: 'GET https://evil.example/', expect: allow}
  - {request: 'GET https://api.github.com/../x', expect: deny, reason: path_dot_segments}
",
    )
    .unwrap();
    let minimal =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies/valid/minimal.yaml");
    let (ok, out, _) = run(bin().arg("test").arg(&minimal).arg("--cases").arg(&cases));
    assert!(!ok);
    assert!(out.contains("PASS  github is allowed"), "{out}");
    assert!(
        out.contains("FAIL  wrong expectation: expected allow, got deny"),
        "{out}"
    );
    assert!(out.contains("2 passed, 1 failed"), "{out}");
    // No cases at all is an error, not a silent pass.
    let (ok, _, err) = run(bin().arg("test").arg(&minimal));
    assert!(!ok && err.contains("no test cases"), "{err}");
}

#[test]
fn explain_names_the_rule_and_each_effect_but_never_a_value() {
    let full =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies/valid/full.yaml");
    let (ok, out, err) = run(bin()
        .args(["explain"])
        .arg(&full)
        .args([
            "--request",
            "POST https://api.openai.com/v1/chat/completions",
            "-H",
            "Authorization: Bearer OPENAI_PH",
        ])
        .env("OPENAI_API_KEY", "sk-c4n4ry-never-read"));
    assert!(ok, "{err}");
    assert!(out.contains("decision  allow"), "{out}");
    assert!(
        out.contains("rule      transforms[0].config.rules[0]"),
        "{out}"
    );
    assert!(
        out.contains("`OPENAI_API_KEY`: placeholder `OPENAI_PH` replaced in header:authorization"),
        "{out}"
    );
    common::assert_no_canary("explain output", &out);
    let (_, out, _) = run(bin()
        .arg("explain")
        .arg(&full)
        .args(["-r", "POST https://exchange.example.com/orders"]));
    assert!(
        out.contains("hmac_sign") && out.contains("X-Signature"),
        "{out}"
    );
    let (_, out, _) = run(bin()
        .arg("explain")
        .arg(&full)
        .args(["-r", "GET https://pastebin.com/"]));
    assert!(
        out.contains("decision  deny") && out.contains("reason    not_allowlisted"),
        "{out}"
    );
    let (ok, _, err) = run(bin()
        .arg("explain")
        .arg(&full)
        .args(["-r", "https://no-method"]));
    assert!(!ok && err.contains("METHOD URL"), "{err}");
}

/// The schema comes from the parser's own types; an independent validator accepts every
/// valid fixture and rejects a typo.
#[test]
fn schema_validates_fixtures_with_an_independent_validator() {
    let (ok, schema, _) = run(bin().arg("schema"));
    assert!(ok);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.json");
    std::fs::write(&path, &schema).unwrap();
    let script = "
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
for name, doc in json.loads(sys.argv[2]).items():
    errs = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    print(name, 'valid' if not errs else 'invalid: ' + errs[0].message)
";
    // YAML to JSON in Rust (serde-saphyr), so Python needs nothing but jsonschema.
    let mut docs = serde_json::Map::new();
    for f in
        fixtures("valid")
            .into_iter()
            .chain([Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/policies/invalid/typo.yaml")])
    {
        let text = std::fs::read_to_string(&f).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        docs.insert(f.file_name().unwrap().to_string_lossy().into(), v);
    }
    let out = Command::new(common::python())
        .args(["-c", script])
        .arg(&path)
        .arg(serde_json::Value::Object(docs).to_string())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("full.yaml valid"), "{out}");
    assert!(out.contains("minimal.yaml valid"), "{out}");
    assert!(
        out.contains("typo.yaml invalid") && out.contains("hosts"),
        "{out}"
    );
}

/// Hostile policy files (invariant 8): deep nesting, a million entries and an alias bomb are
/// each refused with a positioned error, quickly, inside a 512 MiB address-space limit.
#[test]
fn hostile_policy_files_are_refused_quickly_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = format!(
        "transforms: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut huge = String::from("transforms:\n  - name: allowlist\n    config:\n      domains:\n");
    for i in 0..1_000_000 {
        huge.push_str(&format!("        - h{i}.example.com\n"));
    }
    let mut bomb = String::from("transforms:\n  - name: allowlist\n    config:\n      domains:\n");
    bomb.push_str(
        "        - &l0 [a.test, a.test, a.test, a.test, a.test, a.test, a.test, a.test]\n",
    );
    for level in 1..10 {
        let refs = vec![format!("*l{}", level - 1); 8].join(", ");
        bomb.push_str(&format!("        - &l{level} [{refs}]\n"));
    }
    for (name, text, words) in [
        ("nested", nested, "recursion limit"),
        ("huge", huge, "budget"),
        ("bomb", bomb, "error"),
    ] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let started = std::time::Instant::now();
        let out = Command::new("prlimit")
            .arg("--as=536870912")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_centaur-gateway"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(words), "{name}: {stderr}");
        assert!(
            took < std::time::Duration::from_secs(30),
            "{name} took {took:?}"
        );
    }
}

#[test]
fn a_start_up_error_names_its_file_and_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ca.pem");
    let config = dir.path().join("g.yaml");
    std::fs::write(
        &config,
        format!(
            "dns: {{enabled: false}}\ntls: {{ca_cert: {0}, ca_key: {0}}}\ntransforms: []\n",
            missing.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = run(bin().arg("run").arg("--config").arg(&config));
    assert!(!ok);
    let line = err.lines().last().unwrap();
    assert!(
        line.starts_with("centaur-gateway: certificate authority: ")
            && line.matches(missing.to_str().unwrap()).count() == 1
            && line.matches("No such file").count() == 1,
        "{err}"
    );
}
