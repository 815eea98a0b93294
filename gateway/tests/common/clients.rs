//! Real clients run as processes against the gateway: curl, the project's Python (requests,
//! httpx, websockets), and an SSE reader that times each event's arrival.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::env::{API, Env};
use super::logs::assert_no_canary;

/// Runs a command to completion off the async runtime.
pub async fn run(cmd: &str, args: &[String], envs: &[(&str, String)]) -> Output {
    let (cmd, args, envs) = (
        cmd.to_string(),
        args.to_vec(),
        envs.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        Command::new(&cmd)
            .args(&args)
            .envs(envs)
            .output()
            .unwrap_or_else(|e| panic!("{cmd} could not run ({e}): run scripts/install-deps"))
    })
    .await
    .unwrap()
}

/// Starts a long-lived client with all three of its streams piped (its stdin held open until
/// the caller drops it), killed if the test ends first.
pub fn spawn_piped(cmd: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} could not run ({e}): run scripts/install-deps"))
}

/// curl with the test CA trusted; returns (http status, body, stderr).
pub async fn curl(env: &Env, args: &[&str]) -> (u16, String, String) {
    let mut a: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "10".into(),
        "--cacert".into(),
        env.ca(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    let out = run("curl", &a, &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_no_canary("a response to the sandbox", &stdout);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// curl arguments for `url` on `api.test`, sent to the transparent listener.
pub fn via_api(env: &Env, url: &str, extra: &[&str]) -> Vec<String> {
    let mut a = env.to_https(API);
    a.push(url.into());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A request to `api.test` with curl; (status, body). A transport failure fails the test.
pub async fn get(env: &Env, url: &str, extra: &[&str]) -> (u16, String) {
    let args = via_api(env, url, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, err) = curl(env, &args).await;
    assert!(code != 0, "{err}");
    (code, body)
}

/// Runs a Python script with `args`; returns its standard output, failing the test (with its
/// output) when it fails.
pub async fn python_script(script: &str, args: &[String]) -> String {
    let mut a = vec![script.to_string()];
    a.extend_from_slice(args);
    let out = run(&python(), &a, &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn python() -> String {
    if let Ok(p) = std::env::var("CENTAUR_PYTHON") {
        return p;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps",
        p.display()
    );
    p.display().to_string()
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Reads the origin's `/sse` (three events, 300 ms apart) through the tunnel with httpx, with
/// `authorization` as the Authorization header when not empty; returns each event's arrival
/// time in seconds after the request started.
pub async fn sse_arrival_times(env: &Env, authorization: &str) -> Vec<f64> {
    let script = format!(
        r#"
import sys, time, httpx
auth = sys.argv[1]
t0 = time.monotonic()
with httpx.Client(timeout=10) as c:
    with c.stream("GET", "https://{API}/sse", headers={{"Authorization": auth}} if auth else {{}}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                print(f"{{time.monotonic() - t0:.3f}} {{line}}", flush=True)
"#
    );
    let proxy = format!("http://{}", env.tunnel());
    let out = run(
        &python(),
        &["-c".into(), script, authorization.into()],
        &[("HTTPS_PROXY", proxy), ("SSL_CERT_FILE", env.ca())],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let times: Vec<f64> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        times.len(),
        3,
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    times
}

/// Whether a test that needs root can run (testkit's rule: never skipped under CI).
pub fn root_or_skip(name: &str) -> bool {
    testkit::root_or_skip(name, "needs root for network namespaces")
}
