//! Workflows started from outside: a schedule fired by two replicas on PostgreSQL (one
//! killed with `kill -9`), webhooks with GitHub's signature and a bearer token, and the
//! shipped examples (a schedule, a webhook, a child, an agent turn). Protects invariant 7
//! (each slot and delivery starts one run) and invariant 8 (webhook bodies are bounded).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{self, Setup};
use crate::workflows::{call, until_status};

/// One server config of the schedule test: a workflow that runs every second.
fn ticker(url: &str) -> Setup {
    let mut setup = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        "workflows:\n  dirs: [flows]\n",
    );
    setup.database_url = Some(url.to_string());
    let flows = setup.dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        flows.join("tick.py"),
        "WORKFLOW_NAME = 'tick'\nSCHEDULE = {'interval_seconds': 1, 'input': {'from': 'schedule'}}\n\n\nasync def handler(inp, ctx):\n    return inp\n",
    )
    .unwrap();
    harness::chmod(&flows, 0o755);
    setup
}

/// Two replicas on one PostgreSQL database, one of them killed with `kill -9` and started
/// again: every one-second slot fires exactly once (no slot twice, none skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_each_slot_once_across_replicas_and_a_restart() {
    if !harness::root_or_skip("a_schedule_fires_each_slot_once_across_replicas_and_a_restart") {
        return;
    }
    let Some(url) = testkit::postgres_db("schedule_replicas") else {
        return;
    };
    let (a, b) = (ticker(&url), ticker(&url));
    let key = a.key("ticks", "agent");
    let server_a = a.start().await;
    let server_b = b.start().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    server_a.kill9().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_a = a.start().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server_b.stop().await;
    // Let the last run that was fired finish.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, runs) = call(
        "GET",
        &format!("{}/workflows/runs?workflow=tick&limit=500", server_a.base),
        &key,
        None,
    )
    .await;
    server_a.stop().await;
    harness::stop_sandboxes(&a.data()).await;
    harness::stop_sandboxes(&b.data()).await;
    let runs = runs["runs"].as_array().unwrap();
    let mut slots: Vec<i64> = runs
        .iter()
        .map(|r| {
            let k = r["trigger_key"].as_str().unwrap();
            k.strip_prefix("schedule:tick:").unwrap().parse().unwrap()
        })
        .collect();
    slots.sort_unstable();
    assert!(slots.len() >= 7, "{} runs: {runs:?}", slots.len());
    for w in slots.windows(2) {
        assert_eq!(w[1] - w[0], 1_000, "a slot twice or skipped: {slots:?}");
    }
    let done = runs.iter().filter(|r| r["status"] == "completed").count();
    assert!(done + 1 >= runs.len(), "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| r["input"] == json!({"from": "schedule"}) || r["status"] != "completed")
    );
}

const HOOKED: &str = r#"
WORKFLOW_NAME = "hooked"
WEBHOOKS = [
    {"slug": "gh", "auth": {"type": "github", "secret": "GH_HOOK_SECRET"}, "trigger_key": {"header": "X-GitHub-Delivery"}},
    {"slug": "ops", "auth": {"type": "bearer", "secret": "OPS_TOKEN"}, "content_types": ["text/plain"]},
]


async def handler(inp, ctx):
    return inp["webhook"]
"#;

/// An HMAC-SHA256 of `body` by openssl (an implementation not ours), in hex.
fn openssl_hmac(key: &str, body: &str) -> String {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "printf %s \"$BODY\" | openssl dgst -sha256 -hmac \"$KEY\" -r",
        ])
        .env("BODY", body)
        .env("KEY", key)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

async fn post(url: &str, headers: &[(&str, &str)], body: &str, method: &str) -> (u16, Value) {
    let mut c = tokio::process::Command::new("curl");
    c.args([
        "-s",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        url,
        "--data-binary",
        body,
    ]);
    for (k, v) in headers {
        c.args(["-H", &format!("{k}: {v}")]);
    }
    let out = c.output().await.unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// GitHub's signature scheme (X-Hub-Signature-256, computed by openssl) and a bearer token:
/// accepted once per delivery, refused when wrong, the secrets never in the run's input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_verify_github_signatures_and_bearer_tokens() {
    if !harness::root_or_skip("webhooks_verify_github_signatures_and_bearer_tokens") {
        return;
    }
    let setup = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        "workflows:\n  dirs: [flows]\n  secrets_from: flows.env\nlimits:\n  max_body: 4KiB\n",
    );
    let d = setup.dir.path();
    std::fs::create_dir_all(d.join("flows")).unwrap();
    std::fs::write(d.join("flows/hooked.py"), HOOKED).unwrap();
    std::fs::write(
        d.join("flows.env"),
        "GH_HOOK_SECRET=It's a Secret to Everybody\nOPS_TOKEN=ops-token-123\n",
    )
    .unwrap();
    harness::chmod(&d.join("flows"), 0o755);
    let key = setup.key("hooks", "agent");
    let server = setup.start().await;
    let gh = format!("{}/api/webhooks/gh", server.base);
    let body = r#"{"action":"opened","number":7}"#;
    let sig = format!(
        "sha256={}",
        openssl_hmac("It's a Secret to Everybody", body)
    );
    let headers = [
        ("Content-Type", "application/json"),
        ("X-GitHub-Delivery", "d-1"),
        ("X-GitHub-Event", "pull_request"),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    let (code, first) = post(&gh, &headers, body, "POST").await;
    assert_eq!((code, &first["duplicate"]), (202, &json!(false)), "{first}");
    let id = first["run_id"].as_str().unwrap();
    // The same delivery again (GitHub redelivers): the same run, not a second one.
    let (code, again) = post(&gh, &headers, body, "POST").await;
    assert_eq!(
        (code, &again["run_id"], &again["duplicate"]),
        (202, &first["run_id"], &json!(true))
    );
    let done = until_status(&server.base, &key, id, "completed").await;
    let hook = &done["output"];
    assert_eq!(hook["body"], json!({"action": "opened", "number": 7}));
    assert_eq!(hook["provider"], "github");
    assert_eq!(hook["headers"]["x-github-event"], "pull_request");
    assert_eq!(hook["headers"]["x-hub-signature-256"], "[redacted]");
    assert!(
        !done.to_string().contains(&sig[7..]),
        "the signature is not kept"
    );

    // Refusals: each with its reason, and no run.
    let tampered = body.replace('7', "8");
    for (h, b, m, want, says) in [
        (
            headers.to_vec(),
            tampered.as_str(),
            "POST",
            401,
            "does not match",
        ),
        (
            headers[..3].to_vec(),
            body,
            "POST",
            401,
            "no x-hub-signature-256",
        ),
        (
            vec![headers[0], headers[1], ("X-Hub-Signature-256", "sha1=00")],
            body,
            "POST",
            401,
            "does not start with",
        ),
        (headers.to_vec(), body, "PUT", 405, "not accepted"),
        (
            vec![("Content-Type", "text/plain"), headers[1], headers[3]],
            body,
            "POST",
            415,
            "content type",
        ),
    ] {
        let (code, r) = post(&gh, &h, b, m).await;
        assert_eq!(code, want, "{r}");
        assert!(r["error"].as_str().unwrap().contains(says), "{r}");
    }
    let big = "x".repeat(5000);
    let (code, _) = post(&gh, &headers, &big, "POST").await;
    assert_eq!(code, 413);
    let (code, r) = post(
        &format!("{}/api/webhooks/nope", server.base),
        &headers,
        body,
        "POST",
    )
    .await;
    assert_eq!(code, 404, "{r}");

    // A bearer webhook with a text body; the trigger key is the body's hash.
    let ops = format!("{}/api/webhooks/ops", server.base);
    let (code, r) = post(
        &ops,
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", "Bearer wrong"),
        ],
        "deploy",
        "POST",
    )
    .await;
    assert_eq!(code, 401, "{r}");
    let auth = [
        ("Content-Type", "text/plain"),
        ("Authorization", "Bearer ops-token-123"),
    ];
    let (code, r) = post(&ops, &auth, "deploy", "POST").await;
    assert_eq!(code, 202, "{r}");
    let done = until_status(
        &server.base,
        &key,
        r["run_id"].as_str().unwrap(),
        "completed",
    )
    .await;
    assert_eq!(done["output"]["body"], "deploy");
    assert_eq!(done["output"]["headers"]["authorization"], "[redacted]");
    assert!(!done.to_string().contains("ops-token-123"));
    let (_, runs) = call(
        "GET",
        &format!("{}/workflows/runs?workflow=hooked", server.base),
        &key,
        None,
    )
    .await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "{runs}");
    server.stop().await;
    harness::stop_sandboxes(&setup.data()).await;
}

/// The shipped examples (workflows/): the digest through its sleep, its approval, an agent
/// turn and its child; the GitHub webhook with a signed pull request event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_workflows_run() {
    if !harness::root_or_skip("the_example_workflows_run") {
        return;
    }
    let setup = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        &format!(
            "workflows:\n  dirs: ['{}']\n  secrets_from: flows.env\n",
            harness::repo().join("workflows").display()
        ),
    );
    std::fs::write(
        setup.dir.path().join("flows.env"),
        "GITHUB_WEBHOOK_SECRET=s3cret\n",
    )
    .unwrap();
    let key = setup.key("examples", "agent");
    let server = setup.start().await;
    let base = server.base.clone();
    let (_, listed) = call("GET", &format!("{base}/workflows"), &key, None).await;
    let names: Vec<&str> = listed["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["daily_digest", "github_pull_requests", "notify"],
        "{listed}"
    );
    assert!(
        !server.log().contains("not valid") && !server.log().contains("not served"),
        "{}",
        server.log()
    );

    let input = json!({"items": ["build is green", "2 PRs open"], "cool_down": 1});
    let (_, run) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        &key,
        Some(json!({"workflow_name": "daily_digest", "input": input})),
    )
    .await;
    let id = run["run_id"].as_str().unwrap();
    let waiting = until_status(&base, &key, id, "waiting").await;
    let day = waiting["steps"][0]["value"]["result"]["day"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(waiting["waiting_on"]["correlation_id"], day);
    call(
        "POST",
        &format!("{base}/workflows/events"),
        &key,
        Some(json!({"event_type": "approval", "correlation_id": day, "payload": {"approved_by": "ana"}})),
    )
    .await;
    let done = until_status(&base, &key, id, "completed").await;
    let out = &done["output"];
    assert_eq!(out["approval"], json!({"approved_by": "ana"}));
    assert_eq!(
        out["summary"],
        "Summarize this for the team:\n- build is green\n- 2 PRs open"
    );
    assert_eq!(out["notified"]["delivered"], true);

    let hook = format!("{base}/api/webhooks/github-pull-requests");
    let body = r#"{"action":"opened","number":7,"pull_request":{"number":7,"title":"Fix it","html_url":"https://github.com/o/r/pull/7"},"repository":{"full_name":"o/r"}}"#;
    let sig = format!("sha256={}", openssl_hmac("s3cret", body));
    let headers = [
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", "delivery-1"),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    let (code, r) = post(&hook, &headers, body, "POST").await;
    assert_eq!(code, 202, "{r}");
    let done = until_status(&base, &key, r["run_id"].as_str().unwrap(), "completed").await;
    assert_eq!(done["output"]["pull_request"], 7);
    assert!(
        done["output"]["first_look"]
            .as_str()
            .unwrap()
            .contains("pull request #7 (Fix it)")
    );
    server.stop().await;
    harness::stop_sandboxes(&setup.data()).await;
}
