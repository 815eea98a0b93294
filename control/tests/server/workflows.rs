//! Workflows through a real server: a handler with steps (a loop's names de-duplicated), a
//! real one-second sleep and a wait, in the worker's own sandbox; the server is killed with
//! `kill -9` while the run waits, and the restarted server finishes it when the event
//! arrives — the step that ran before the crash is not run again. A handler whose replay
//! makes other calls fails with NON_DETERMINISTIC_REPLAY. Protects invariant 7 (durable
//! before acknowledged): a step's result is committed before the handler goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{self, Setup};

const PROBE: &str = r#"
WORKFLOW_NAME = "probe"


def effect(name):
    with open("effects.log", "a") as f:
        f.write(name + "\n")
    return name


async def handler(inp, ctx):
    first = await ctx.step("first", lambda: effect("first"))
    total = 0
    for i in range(3):
        total += await ctx.step("loop", lambda i=i: i)
    await ctx.sleep("nap", seconds=1)
    approval = await ctx.wait_for_event("approval", correlation_id=inp["id"], timeout=600)
    last = await ctx.step("last", lambda: effect("last"))
    return {"first": first, "total": total, "approval": approval, "last": last}
"#;

const PARENT: &str = r#"
WORKFLOW_NAME = "parent"


async def handler(inp, ctx):
    answer = await ctx.run_agent("ask", text="steps=1 pause=0 hello from a workflow")
    child = await ctx.run_workflow("child", {"n": 21})
    try:
        await ctx.run_agent("doomed", text="please fail")
    except Exception as e:
        failed = type(e).__name__
    return {"answer": answer, "child": child, "failed": failed}
"#;

const CHILD: &str = r#"
WORKFLOW_NAME = "child"


async def handler(inp, ctx):
    if inp.get("hold"):
        await ctx.wait_for_event("hold", correlation_id=inp["hold"])
    return await ctx.step("double", lambda: inp["n"] * 2)
"#;

const HOLDER: &str = r#"
WORKFLOW_NAME = "holder"


async def handler(inp, ctx):
    return await ctx.run_workflow("child", {"n": 1, "hold": inp["id"]}, name="held")
"#;

const DRIFT: &str = r#"
import random

WORKFLOW_NAME = "drift"


async def handler(inp, ctx):
    await ctx.step(f"pick-{random.random()}", lambda: 1)
    await ctx.sleep("nap", seconds=1)
    return "unreachable"
"#;

pub async fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut c = tokio::process::Command::new("curl");
    c.args(["-s", "-w", "\n%{http_code}", "-X", method, url, "-H"])
        .arg(format!("x-api-key: {key}"));
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
    }
    let out = c.output().await.unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

pub async fn until_status(base: &str, key: &str, run: &str, want: &str) -> Value {
    for _ in 0..600 {
        let (_, r) = call("GET", &format!("{base}/workflows/runs/{run}"), key, None).await;
        if r["status"] == want {
            return r;
        }
        assert!(
            !(r["status"] == "failed" && want != "failed"),
            "the run failed: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run} never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sleeps_waits_survives_kill_9_and_runs_each_step_once() {
    if !harness::root_or_skip("a_run_sleeps_waits_survives_kill_9_and_runs_each_step_once") {
        return;
    }
    let (setup, key) = flows();
    let server = setup.start().await;
    let base = server.base.clone();
    let listed = loaded(&base, &key).await;
    let names: Vec<&str> = listed["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["child", "drift", "holder", "parent", "probe"],
        "{listed}"
    );
    assert!(server.log().contains("workflow") && server.log().contains("broken.py"));

    let create = json!({"workflow_name": "probe", "input": {"id": "42"}, "trigger_key": "t1"});
    let (code, run) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        &key,
        Some(create.clone()),
    )
    .await;
    assert_eq!(code, 201, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    let (code, again) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        &key,
        Some(create),
    )
    .await;
    assert_eq!(
        (code, &again["run_id"], &again["idempotent"]),
        (200, &run["run_id"], &json!(true))
    );
    let (code, err) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        &key,
        Some(json!({"workflow_name": "nope"})),
    )
    .await;
    assert_eq!(code, 404, "{err}");
    assert!(
        err["message"]
            .to_string()
            .contains("child, drift, holder, parent, probe"),
        "{err}"
    );

    let waiting = until_status(&base, &key, &id, "waiting").await;
    let steps: Vec<(&str, bool)> = waiting["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["done"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("first", true),
            ("loop", true),
            ("loop#2", true),
            ("loop#3", true),
            ("nap", true),
            ("approval", false)
        ]
    );
    assert_eq!(waiting["waiting_on"]["type"], "event");
    assert_eq!(waiting["waiting_on"]["correlation_id"], "42");

    // The server dies while the run waits; a new one finishes it when the event comes.
    server.kill9().await;
    let server = setup.start().await;
    let base = server.base.clone();
    let (code, posted) = call(
        "POST",
        &format!("{base}/workflows/events"),
        &key,
        Some(json!({"event_type": "approval", "correlation_id": "42", "payload": {"ok": true}})),
    )
    .await;
    assert_eq!(code, 200, "{posted}");
    let done = until_status(&base, &key, &id, "completed").await;
    assert_eq!(
        done["output"],
        json!({"first": "first", "total": 3, "approval": {"ok": true}, "last": "last"})
    );
    let effects = std::fs::read_to_string(setup.data().join("workflows/work/effects.log")).unwrap();
    assert_eq!(effects, "first\nlast\n", "each step's side effect ran once");

    // A replay that makes other calls than the recorded ones fails, and says why.
    let (_, drift) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        &key,
        Some(json!({"workflow_name": "drift"})),
    )
    .await;
    let failed = until_status(&base, &key, drift["run_id"].as_str().unwrap(), "failed").await;
    assert_eq!(failed["error_code"], "NON_DETERMINISTIC_REPLAY", "{failed}");
    assert!(
        failed["error_text"].as_str().unwrap().contains("pick-"),
        "{failed}"
    );
    server.stop().await;
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_agent_turns_cancel_and_the_cli() {
    if !harness::root_or_skip("children_agent_turns_cancel_and_the_cli") {
        return;
    }
    let (setup, key) = flows();
    let server = setup.start().await;
    loaded(&server.base, &key).await;
    children_and_agents(&server.base, &key).await;
    cli(&server.base, &key).await;
    server.stop().await;
    harness::stop_sandboxes(&setup.data()).await;
}

/// `GET /workflows` once the worker has loaded the five workflows.
async fn loaded(base: &str, key: &str) -> Value {
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = call("GET", &format!("{base}/workflows"), key, None).await.1;
        if listed["workflows"].as_array().is_some_and(|w| w.len() == 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    listed
}

/// A server config with the test's workflows, and an `agent` key.
fn flows() -> (Setup, String) {
    let setup = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        "workflows:\n  dirs: [flows]\n  concurrency: 4\n",
    );
    let flows = setup.dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("probe.py"), PROBE).unwrap();
    std::fs::write(flows.join("drift.py"), DRIFT).unwrap();
    std::fs::write(flows.join("parent.py"), PARENT).unwrap();
    std::fs::write(flows.join("child.py"), CHILD).unwrap();
    std::fs::write(flows.join("holder.py"), HOLDER).unwrap();
    std::fs::write(
        flows.join("broken.py"),
        "WORKFLOW_NAME = 'broken'\nhandler = 3\n",
    )
    .unwrap();
    harness::chmod(&flows, 0o755);
    let key = setup.key("flows", "agent");
    (setup, key)
}

/// A run that runs an agent turn (on the counting harness) and a child run, and one whose
/// cancel reaches its waiting child.
async fn children_and_agents(base: &str, key: &str) {
    let (_, run) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        key,
        Some(json!({"workflow_name": "parent"})),
    )
    .await;
    let id = run["run_id"].as_str().unwrap();
    let done = until_status(base, key, id, "completed").await;
    assert_eq!(
        done["output"],
        json!({"answer": "steps=1 pause=0 hello from a workflow", "child": 42, "failed": "AgentFailed"}),
        "{done}"
    );
    let kinds: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "start_agent",
            "wait_agent",
            "start_workflow",
            "wait_workflow",
            "start_agent",
            "wait_agent"
        ]
    );
    let child_id = done["steps"][2]["value"]["result"].as_str().unwrap();
    let (_, child) = call(
        "GET",
        &format!("{base}/workflows/runs/{child_id}"),
        key,
        None,
    )
    .await;
    assert_eq!(
        (
            &child["parent_run_id"],
            &child["root_run_id"],
            &child["output"]
        ),
        (&json!(id), &json!(id), &json!(42)),
        "{child}"
    );
    let (_, turns) = call(
        "GET",
        &format!("{base}/agent/threads/workflow:{id}/executions"),
        key,
        None,
    )
    .await;
    assert_eq!(
        turns["executions"].as_array().map(Vec::len),
        Some(2),
        "{turns}"
    );

    // Cancelling a parent that waits on a child cancels the child too.
    let (_, run) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        key,
        Some(json!({"workflow_name": "holder", "input": {"id": "h1"}})),
    )
    .await;
    let id = run["run_id"].as_str().unwrap();
    let waiting = until_status(base, key, id, "waiting").await;
    let child_id = waiting["waiting_on"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    until_status(base, key, &child_id, "waiting").await;
    let (code, cancelled) = call(
        "POST",
        &format!("{base}/workflows/runs/{id}/cancel"),
        key,
        None,
    )
    .await;
    assert_eq!(
        (code, &cancelled["status"]),
        (200, &json!("cancelled")),
        "{cancelled}"
    );
    until_status(base, key, &child_id, "cancelled").await;
}

/// `centaur workflows`, as a person uses it.
async fn cli(base: &str, key: &str) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(harness::CENTAUR)
            .arg("workflows")
            .args(args)
            .env("CENTAUR_SERVER", base)
            .env("CENTAUR_API_KEY", key)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = run(&["run", "child", "--input", r#"{"n": 5}"#, "--follow"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "10");
    assert!(err.contains("step double"), "{err}");
    let (code, out, err) = run(&["list", "--workflow", "child", "--status", "completed"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("workflows:") && out.contains("completed  child"),
        "{out}"
    );
    let id = out
        .lines()
        .find(|l| l.contains("completed  child"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (code, out, _) = run(&["show", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("✓ step") && out.contains("output 10"), "{out}");
    // The run's progress is on its thread's event stream.
    let events = std::process::Command::new(harness::CENTAUR)
        .args(["events", &format!("workflow:{id}")])
        .env("CENTAUR_SERVER", base)
        .env("CENTAUR_API_KEY", key)
        .output()
        .unwrap();
    let text = String::from_utf8(events.stdout).unwrap();
    let kinds: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(&l[l.find('{')?..]).ok())
        .map(|v| {
            (
                v["type"].as_str().unwrap_or("").to_string(),
                v["status"]
                    .as_str()
                    .or(v["name"].as_str())
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("workflow.run".to_string(), "running".to_string()),
            ("workflow.step".to_string(), "double".to_string()),
            ("workflow.run".to_string(), "completed".to_string())
        ],
        "{text}"
    );
    let (code, _, err) = run(&["run", "child", "--input", "{nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--input \"{nope\" is not JSON"), "{err}");
    let (code, _, err) = run(&["show", "wfr_0000000000000000"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404 NOT_FOUND"), "{err}");
    let (code, _, err) = run(&["list", "--status", "bogus"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("INVALID_FIELD"), "{err}");
    // A failing run is followed to its end, and the exit code says so.
    let (code, _, err) = run(&["run", "child", "--input", r#"{"n": null}"#, "--follow"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("failed") && err.contains("HANDLER_ERROR"),
        "{err}"
    );
}

const CALLER: &str = r#"
import json
import urllib.request

WORKFLOW_NAME = "caller"
PLACEHOLDER = "centaur-placeholder-github-token"


def search():
    req = urllib.request.Request(
        "https://api.github.com/search/issues?q=workflow",
        headers={"Authorization": f"Bearer {PLACEHOLDER}"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["items"][0]["title"]


def elsewhere():
    try:
        with urllib.request.urlopen("https://example.com/page", timeout=10) as r:
            return f"reached: {r.status}"
    except Exception as e:
        return f"refused: {type(e).__name__}"


async def handler(inp, ctx):
    return {"title": await ctx.step("search", search), "elsewhere": await ctx.step("elsewhere", elsewhere)}
"#;

/// A workflow's step calls an API with the placeholder its code holds; the worker's own
/// gateway (`workflows.policy`) puts the real token on the wire for that host only, and
/// refuses a host the policy does not allow. The token is nowhere the worker can read.
/// Protects invariants 1 (default deny: a host the policy does not allow is refused) and 3
/// (secret confinement: the real token only on the wire to its host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_calls_apis_with_placeholders_through_its_own_gateway() {
    if !harness::root_or_skip("a_workflow_calls_apis_with_placeholders_through_its_own_gateway") {
        return;
    }
    let origins = crate::tools::Origins::start().await;
    let setup = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        "workflows:\n  dirs: [flows]\n  policy: flows-policy.yaml\n  secrets_from: flows.env\n",
    );
    let d = setup.dir.path();
    origins.write_files(d);
    std::fs::rename(d.join("tools.env"), d.join("flows.env")).unwrap();
    let base_policy = std::fs::read_to_string(d.join("tools-base.yaml")).unwrap();
    std::fs::write(
        d.join("flows-policy.yaml"),
        format!(
            "{base_policy}transforms:\n  - name: allowlist\n    config: {{domains: [api.github.com]}}\n  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: GITHUB_TOKEN}}\n          rules: [{{host: api.github.com}}]\n          replace: {{proxy_value: centaur-placeholder-github-token, match_headers: [Authorization]}}\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("flows")).unwrap();
    std::fs::write(d.join("flows/caller.py"), CALLER).unwrap();
    harness::chmod(&d.join("flows"), 0o755);
    let key = setup.key("caller", "agent");
    let server = setup.start().await;
    let (_, run) = call(
        "POST",
        &format!("{}/workflows/runs", server.base),
        &key,
        Some(json!({"workflow_name": "caller"})),
    )
    .await;
    let done = until_status(
        &server.base,
        &key,
        run["run_id"].as_str().unwrap(),
        "completed",
    )
    .await;
    let title = done["output"]["title"].as_str().unwrap();
    assert!(!title.is_empty(), "{done}");
    assert!(
        done["output"]["elsewhere"]
            .as_str()
            .unwrap()
            .starts_with("refused"),
        "{done}"
    );
    let canary = crate::tools::CANARY;
    assert!(!done.to_string().contains(canary));
    let seen = crate::tools::files_containing(&setup.data().join("workflows"), canary.as_bytes());
    assert!(
        seen.is_empty(),
        "the token is in the worker's files: {seen:?}"
    );
    server.stop().await;
    harness::stop_sandboxes(&setup.data()).await;
}

/// A file added or changed under `workflows.dirs` is loaded without a restart, once the
/// runs in flight pause; a run waiting across the reload finishes on the new worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_workflow_file_is_loaded_without_a_restart() {
    if !harness::root_or_skip("a_changed_workflow_file_is_loaded_without_a_restart") {
        return;
    }
    let (setup, key) = flows();
    let server = setup.start().await;
    let base = server.base.clone();
    loaded(&base, &key).await;
    // A run waiting on an event while the worker is replaced.
    let (_, held) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        &key,
        Some(json!({"workflow_name": "child", "input": {"n": 4, "hold": "r1"}})),
    )
    .await;
    let held = held["run_id"].as_str().unwrap().to_string();
    until_status(&base, &key, &held, "waiting").await;
    let flows = setup.dir.path().join("flows");
    std::fs::write(
        flows.join("late.py"),
        "WORKFLOW_NAME = 'late'\n\n\nasync def handler(inp, ctx):\n    return 'new code'\n",
    )
    .unwrap();
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = call("GET", &format!("{base}/workflows"), &key, None)
            .await
            .1;
        if listed.to_string().contains("\"late\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed.to_string().contains("\"late\""), "{listed}");
    assert!(
        server.log().contains("the workflow files changed"),
        "{}",
        server.log()
    );
    let (_, run) = call(
        "POST",
        &format!("{base}/workflows/runs"),
        &key,
        Some(json!({"workflow_name": "late"})),
    )
    .await;
    let done = until_status(&base, &key, run["run_id"].as_str().unwrap(), "completed").await;
    assert_eq!(done["output"], "new code");
    call(
        "POST",
        &format!("{base}/workflows/events"),
        &key,
        Some(json!({"event_type": "hold", "correlation_id": "r1"})),
    )
    .await;
    let done = until_status(&base, &key, &held, "completed").await;
    assert_eq!(done["output"], 8);
    server.stop().await;
    harness::stop_sandboxes(&setup.data()).await;
}
