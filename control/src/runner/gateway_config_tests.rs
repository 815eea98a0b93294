use super::*;

const POLICY: &str = "
proxy:
  https_listen: 0.0.0.0:8443
metrics: {listen: null}
management: {listen: 127.0.0.1:9000}
audit:
  sandbox: {team: infra}
transforms:
  - name: allowlist
    config: {domains: [api.openai.com, api.anthropic.com]}
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: OPENAI_API_KEY}
          rules: [{host: api.openai.com}]
          replace: {proxy_value: sk-placeholder-openai}
        - source: {type: env, var: ANTHROPIC_API_KEY}
          rules: [{host: api.anthropic.com}]
          inject: {header: x-api-key}
        - source: {type: file, path: /run/secrets/other}
          rules: [{host: api.openai.com}]
          replace: {proxy_value: FILE_PLACEHOLDER}
";

fn config() -> Config {
    Config::parse_placed(POLICY).unwrap_or_else(|e| panic!("{e}"))
}

/// Invariant 3: the sandbox's environment gets placeholders, never a value; only secrets
/// with a variable name appear.
#[test]
fn placeholders_name_env_secrets_only() {
    assert_eq!(
        placeholders(&config()),
        vec![
            (
                "OPENAI_API_KEY".to_string(),
                "sk-placeholder-openai".to_string()
            ),
            ("ANTHROPIC_API_KEY".to_string(), INJECTED.to_string()),
        ]
    );
    assert_eq!(
        env_vars(&config()),
        vec!["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
    );
}

#[test]
fn settings_the_runner_replaces_are_named() {
    let w = overridden(&config());
    assert_eq!(w.len(), 3, "{w:#?}");
    assert!(w[0].starts_with("proxy.https_listen in the policy is ignored"));
    assert!(w.iter().any(|m| m.starts_with("management.listen")));
    assert!(w.iter().any(|m| m.starts_with("metrics.listen")));
    assert!(overridden(&Config::parse_placed("{}").unwrap()).is_empty());
}

/// Invariant 6: the gateway listens only on the sandbox's own link, and every record names
/// the sandbox.
#[test]
fn shape_puts_every_listener_on_the_link_and_labels_records() {
    let labels = [("task".to_string(), "fix-tests".to_string())].into();
    let g = Ipv4Addr::new(10, 77, 0, 5);
    let c = shape(
        config(),
        &Placement {
            id: "ab12cd34",
            gateway: g,
            ports: Ports::default(),
            ca: (Path::new("/r/ca.crt"), Path::new("/r/ca.key")),
            audit: Path::new("/var/log/centaur/sandbox-ab12cd34.jsonl"),
            labels: &labels,
        },
    );
    assert_eq!(c.proxy.https_listen, Some("10.77.0.5:443".parse().unwrap()));
    assert_eq!(c.proxy.http_listen, Some("10.77.0.5:80".parse().unwrap()));
    assert_eq!(
        c.proxy.tunnel_listen,
        Some("10.77.0.5:1080".parse().unwrap())
    );
    assert_eq!(c.dns.listen, Some("10.77.0.5:53".parse().unwrap()));
    assert_eq!(c.dns.proxy_ip, Some(g));
    assert_eq!(c.management.listen, None);
    assert_eq!(c.metrics_listen, None);
    assert!(!c.audit.stdout);
    assert_eq!(
        c.audit.file.as_ref().map(|f| f.path.as_str()),
        Some("/var/log/centaur/sandbox-ab12cd34.jsonl")
    );
    assert_eq!(c.tls.ca_key.as_deref(), Some("/r/ca.key"));
    let labels: Vec<(&str, &str)> = c
        .audit
        .sandbox
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("runner", "local"),
            ("sandbox_id", "ab12cd34"),
            ("task", "fix-tests"),
            ("team", "infra"),
        ]
    );
}

#[test]
fn dotenv_reads_quotes_comments_and_export() {
    let v = parse_dotenv(
        "# keys\nexport OPENAI_API_KEY=sk-real-1\nANTHROPIC_API_KEY = \"sk ant\"\nEMPTY=\nQ='a#b'\n",
    )
    .unwrap();
    assert_eq!(v["OPENAI_API_KEY"].expose(), b"sk-real-1");
    assert_eq!(v["ANTHROPIC_API_KEY"].expose(), b"sk ant");
    assert_eq!(v["EMPTY"].expose(), b"");
    assert_eq!(v["Q"].expose(), b"a#b");
}

/// Invariant 3: a malformed line is named by number; its value is never echoed.
#[test]
fn dotenv_errors_name_the_line_not_the_value() {
    let e = parse_dotenv("A=1\nsk-secret-value-without-name\n").unwrap_err();
    assert_eq!(e, "line 2: expected NAME=VALUE");
    let e = parse_dotenv("1BAD=sk-secret\n").unwrap_err();
    assert!(
        e.starts_with("line 1: \"1BAD\" is not a variable name"),
        "{e}"
    );
    assert!(!e.contains("sk-secret"));
}
