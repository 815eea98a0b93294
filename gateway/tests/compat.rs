//! The original platform's own proxy configuration, as a migrating team brings it: `*` on the
//! allowlist (with `check`'s warning), a `header_allowlist` with literal names and `/regex/`
//! entries, credentials only where declared. Guards invariant 3 (credentials only where the
//! policy says): the header list never strips a header a credential transform set.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use common::{API, Env, Opts, curl};

const REAL: &str = "inj-c4n4ry-header-allowlist";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_headers_never_reach_the_origin_and_injected_ones_always_do() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, REAL).unwrap();
    let transforms = format!(
        "  - name: allowlist
    config: {{domains: ['*']}}
  - name: header_allowlist
    config:
      headers: [accept, user-agent, content-type, '/^x-codex-.*$/', '/^x-[a-z0-9-]*(api-key|token)$/']
  - name: secrets
    config:
      secrets:
        - source: {{type: file, path: {key}}}
          rules: [{{host: {API}}}]
          inject: {{header: Authorization, formatter: 'Bearer {{{{ .Value }}}}'}}
",
        key = key.display()
    );
    let env = Env::start(Opts {
        transforms: Some(transforms),
        ..Opts::default()
    })
    .await;
    let mut args = env.to_https(API);
    for h in [
        "X-Exfil: the-secret-plan",
        "Cookie: session=1",
        "X-Codex-Turn: 7",
        "X-Goog-Api-Key: placeholder",
        "X-Token-Extra: no",
    ] {
        args.extend(["-H".to_string(), h.to_string()]);
    }
    args.push(format!("https://{API}/v1/x"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = curl(&env, &args).await;
    assert_eq!(code, 200, "{err}");
    let seen = env.origin.seen().pop().unwrap();
    let h = &seen["headers"];
    assert_eq!(
        h["authorization"],
        format!("Bearer {REAL}"),
        "injected, though not listed"
    );
    assert_eq!(h["x-codex-turn"], "7");
    assert_eq!(h["x-goog-api-key"], "placeholder");
    assert!(h["user-agent"].is_string() && h["accept"].is_string());
    for gone in ["x-exfil", "cookie", "x-token-extra"] {
        assert!(h[gone].is_null(), "{gone} reached the origin: {h}");
    }
    let r = env.record(|r| r["host"] == API).await;
    let t = r["request_transforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "header_allowlist")
        .cloned()
        .unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(
        t["annotations"]["stripped_headers"],
        serde_json::json!(["cookie", "x-exfil", "x-token-extra"])
    );
    assert_eq!(t["rule"], "transforms[1]");
    // `*`: a host no rule names is allowed too (the origin answers for other.test as well).
    let mut args = env.to_https("other.test");
    args.push("https://other.test/anything".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&env, &args).await.0, 200);
    env.stop().await;
}

/// The rebuilt base configuration loads unchanged and `check` says only that `*` is open.
#[test]
fn the_seeds_base_configuration_passes_check_with_one_warning() {
    let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/policies/valid/iron-proxy-base.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_centaur-gateway"))
        .arg("check")
        .arg(&f)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("`*` allows every host"), "{stderr}");
    assert!(stdout.contains("61 names, 3 patterns"), "{stdout}");
}
