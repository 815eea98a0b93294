//! `centaur workflows list|run|show|cancel|event`: a person's client for `/workflows`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::ask::Conn;
use crate::client::{Api, encode};

/// `centaur workflows`.
#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: WorkflowsCmd,
}

#[derive(Debug, Subcommand)]
enum WorkflowsCmd {
    /// The workflows the server runs, and its recent runs.
    List {
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs in this status (queued, running, sleeping, waiting, completed, failed,
        /// cancelled).
        #[arg(long)]
        status: Option<String>,
        /// How many runs (newest first).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Starts a run of NAME; prints its id (with --follow: its progress, then its output).
    Run {
        /// The workflow.
        name: String,
        /// The handler's input, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Runs are idempotent on (workflow, trigger key): the same key returns the same run.
        #[arg(long)]
        trigger_key: Option<String>,
        /// Wait until the run ends, printing each step as it is recorded; exit 1 if it fails.
        #[arg(short, long)]
        follow: bool,
    },
    /// A run: its status, what it waits on, its steps and output.
    Show {
        /// The run id (`wfr_…`).
        run: String,
    },
    /// Cancels a run (and its children and agent turns).
    Cancel {
        /// The run id.
        run: String,
    },
    /// Posts an event: it wakes the runs waiting for this type and correlation id.
    Event {
        /// The event's type.
        event_type: String,
        /// Its correlation id.
        correlation_id: String,
        /// Its payload, as JSON.
        #[arg(long, default_value = "null")]
        payload: String,
    },
}

/// Runs the command; the exit code is 1 when a followed run did not complete.
pub async fn run(a: WorkflowsArgs) -> anyhow::Result<u8> {
    let api = Api::new(&a.conn.server, &a.conn.key)?;
    match a.cmd {
        WorkflowsCmd::List {
            workflow,
            status,
            limit,
        } => list(&api, workflow, status, limit).await,
        WorkflowsCmd::Run {
            name,
            input,
            trigger_key,
            follow,
        } => {
            let input: Value = serde_json::from_str(&input)
                .with_context(|| format!("--input {input:?} is not JSON"))?;
            let mut body = json!({"workflow_name": name, "input": input});
            if let Some(k) = trigger_key {
                body["trigger_key"] = k.into();
            }
            let r = api.call("POST", "/workflows/runs", Some(&body)).await?;
            let id = r["run_id"].as_str().unwrap_or_default().to_string();
            if r["idempotent"] == true {
                eprintln!("(the trigger key found run {id}, created earlier)");
            }
            if !follow {
                println!("{id}");
                return Ok(0);
            }
            follow_run(&api, &id).await
        }
        WorkflowsCmd::Show { run } => {
            let r = api
                .call("GET", &format!("/workflows/runs/{}", encode(&run)), None)
                .await?;
            print_run(&r);
            Ok(0)
        }
        WorkflowsCmd::Cancel { run } => {
            let r = api
                .call(
                    "POST",
                    &format!("/workflows/runs/{}/cancel", encode(&run)),
                    None,
                )
                .await?;
            let status = r["status"].as_str().unwrap_or("?");
            if status == "running" {
                println!("{run}: cancel requested (it stops at its next step)");
            } else {
                println!("{run}: {status}");
            }
            Ok(0)
        }
        WorkflowsCmd::Event {
            event_type,
            correlation_id,
            payload,
        } => {
            let payload: Value = serde_json::from_str(&payload)
                .with_context(|| format!("--payload {payload:?} is not JSON"))?;
            let body = json!({"event_type": event_type, "correlation_id": correlation_id, "payload": payload});
            let r = api.call("POST", "/workflows/events", Some(&body)).await?;
            println!(
                "event {} stored; {} waiting run(s) woken",
                r["event_id"], r["woken"]
            );
            Ok(0)
        }
    }
}

async fn list(
    api: &Api,
    workflow: Option<String>,
    status: Option<String>,
    limit: u32,
) -> anyhow::Result<u8> {
    let found = api.call("GET", "/workflows", None).await?;
    println!("workflows:");
    for w in found["workflows"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {}  ({})",
            w["name"].as_str().unwrap_or("?"),
            w["version"].as_str().unwrap_or("?"),
            w["file"].as_str().unwrap_or("?")
        );
    }
    let mut q = format!("limit={limit}");
    if let Some(w) = workflow {
        q.push_str(&format!("&workflow={}", encode(&w)));
    }
    if let Some(s) = status {
        q.push_str(&format!("&status={}", encode(&s)));
    }
    let runs = api
        .call("GET", &format!("/workflows/runs?{q}"), None)
        .await?;
    println!("runs:");
    for r in runs["runs"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<10} {:<24} {}",
            r["run_id"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            r["workflow_name"].as_str().unwrap_or("?"),
            waiting(r)
        );
    }
    Ok(0)
}

/// Polls the run, printing each newly recorded step, until it ends.
async fn follow_run(api: &Api, id: &str) -> anyhow::Result<u8> {
    eprintln!("run {id}");
    let mut printed = 0;
    let mut last_status = String::new();
    loop {
        let r = api
            .call("GET", &format!("/workflows/runs/{}", encode(id)), None)
            .await?;
        let steps = r["steps"].as_array().cloned().unwrap_or_default();
        for s in steps.iter().skip(printed).filter(|s| s["done"] == true) {
            eprintln!(
                "  ✓ {} {}",
                s["kind"].as_str().unwrap_or("?"),
                s["name"].as_str().unwrap_or("?")
            );
            printed += 1;
        }
        let status = r["status"].as_str().unwrap_or("?").to_string();
        if status != last_status {
            if matches!(status.as_str(), "sleeping" | "waiting") {
                eprintln!("  … {status} {}", waiting(&r));
            }
            last_status = status.clone();
        }
        match status.as_str() {
            "completed" => {
                println!("{}", serde_json::to_string_pretty(&r["output"])?);
                return Ok(0);
            }
            "failed" | "cancelled" => {
                eprintln!(
                    "run {id} {status}: {} {}",
                    r["error_code"].as_str().unwrap_or(""),
                    r["error_text"].as_str().unwrap_or("")
                );
                return Ok(1);
            }
            "?" => bail!("unexpected answer: {r}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn waiting(r: &Value) -> String {
    let w = &r["waiting_on"];
    match w["type"].as_str() {
        Some("sleep") | Some("retry") => format!("until {}", at(&w["until"])),
        Some("event") => format!(
            "for event {} / {}",
            w["event_type"].as_str().unwrap_or("?"),
            w["correlation_id"].as_str().unwrap_or("?")
        ),
        Some("workflow") => format!("for run {}", w["run_id"].as_str().unwrap_or("?")),
        Some("execution") => format!(
            "for agent turn {}",
            w["execution_id"].as_str().unwrap_or("?")
        ),
        _ => String::new(),
    }
}

fn at(ms: &Value) -> String {
    ms.as_i64()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn print_run(r: &Value) {
    println!(
        "{}  {}  {}",
        r["run_id"].as_str().unwrap_or("?"),
        r["workflow_name"].as_str().unwrap_or("?"),
        r["status"].as_str().unwrap_or("?")
    );
    let w = waiting(r);
    if !w.is_empty() {
        println!("waiting {w}");
    }
    if let Some(p) = r["parent_run_id"].as_str() {
        println!("parent {p}");
    }
    println!("steps:");
    for s in r["steps"].as_array().into_iter().flatten() {
        println!(
            "  {} {:<14} {:<24} {}",
            if s["done"] == true { "✓" } else { "…" },
            s["kind"].as_str().unwrap_or("?"),
            s["name"].as_str().unwrap_or("?"),
            s["value"]
        );
    }
    if let Some(e) = r["error_text"].as_str() {
        println!("error {}: {e}", r["error_code"].as_str().unwrap_or(""));
    }
    if !r["output"].is_null() {
        println!("output {}", r["output"]);
    }
}
