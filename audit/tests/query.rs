//! Queries and stats over a generated multi-file log of two gateways (one file gzip
//! compressed) with known answers: each filter's result is compared with a simple model of
//! what was written.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::PathBuf;

use audit::read::filter::{Expr, Filter, Glob, StatusFilter};
use audit::read::query::{Format, Printer, query};
use common::{Model, model};

const N: u64 = 3000;

/// Two gateways, 3000 records each, interleaved in time; one rotated file gzipped.
async fn logs() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    for g in 0..2u8 {
        let d = dir.path().join(format!("gw{g}"));
        std::fs::create_dir(&d).unwrap();
        common::write(&d, g, 0, N, Some(128 * 1024)).await;
    }
    let mut files: Vec<PathBuf> = (0..2)
        .flat_map(|g| common::files(&dir.path().join(format!("gw{g}"))))
        .collect();
    // Compress one rotated file as logrotate would.
    let target = files
        .iter()
        .position(|f| !f.ends_with("audit.jsonl"))
        .unwrap();
    let raw = std::fs::read(&files[target]).unwrap();
    let gz = PathBuf::from(format!("{}.gz", files[target].display()));
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    std::fs::remove_file(&files[target]).unwrap();
    files[target] = gz;
    (dir, files)
}

fn all() -> Vec<Model> {
    (0..2)
        .flat_map(|g| (0..N).map(move |i| model(g, i)))
        .collect()
}

fn run(files: &[PathBuf], f: &Filter) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut printer = Printer::new(Format::Json, &[]);
    let s = query(files, f, &mut out, &mut printer, None).unwrap();
    assert!(s.bad.is_empty() && s.not_audit.is_empty());
    assert_eq!(s.scanned, 2 * N);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn expect(files: &[PathBuf], f: Filter, keep: impl Fn(&Model) -> bool) {
    let got = run(files, &f);
    let want: Vec<Model> = all().into_iter().filter(|m| keep(m)).collect();
    assert_eq!(got.len(), want.len(), "{f:?}");
    assert!(
        !want.is_empty(),
        "a filter that keeps nothing proves little: {f:?}"
    );
    // In time order across both gateways, so the merged output is exactly the model sorted.
    let mut want_ts: Vec<&str> = want.iter().map(|m| m.ts.as_str()).collect();
    want_ts.sort();
    let got_ts: Vec<&str> = got.iter().map(|r| r["ts"].as_str().unwrap()).collect();
    assert_eq!(got_ts, want_ts);
}

#[tokio::test]
async fn each_filter_returns_exactly_the_records_the_model_predicts() {
    let (_dir, files) = logs().await;
    assert!(files.len() > 6, "{files:?}");
    expect(&files, Filter::default(), |_| true);
    let since = "2026-03-01T12:00:05.000000000Z".to_string();
    let until = "2026-03-01T12:00:12.500000000Z".to_string();
    expect(
        &files,
        Filter {
            since: Some(since.clone()),
            until: Some(until.clone()),
            host: Some(Glob::new("*.openai.com")),
            ..Filter::default()
        },
        |m| m.ts >= since && m.ts < until && m.host == "api.openai.com",
    );
    expect(
        &files,
        Filter {
            actions: vec![Filter::action("deny").unwrap().into()],
            ..Filter::default()
        },
        |m| m.action == "reject",
    );
    expect(
        &files,
        Filter {
            reasons: vec!["upstream_connect_failed".into()],
            ..Filter::default()
        },
        |m| m.reason == "upstream_connect_failed",
    );
    expect(
        &files,
        Filter {
            secret: Some("OPENAI_KEY".into()),
            ..Filter::default()
        },
        |m| m.secret.is_some(),
    );
    expect(
        &files,
        Filter {
            status: Some(StatusFilter::parse("5xx").unwrap()),
            ..Filter::default()
        },
        |m| m.status >= 500,
    );
    expect(
        &files,
        Filter {
            method: Some("post".into()),
            path: Some(Glob::new("/v1/*/3")),
            ..Filter::default()
        },
        |m| m.method == "POST" && m.path == "/v1/x/3",
    );
    expect(
        &files,
        Filter {
            sandbox: Some(Filter::sandbox("sandbox_id=gw-1")),
            ..Filter::default()
        },
        |m| m.sandbox == "gw-1",
    );
    expect(
        &files,
        Filter {
            expr: Some(
                Expr::parse(
                    r#"duration_ms >= 90 and host ~ "*.example.com" and not action = allow"#,
                )
                .unwrap(),
            ),
            ..Filter::default()
        },
        |m| m.duration_ms >= 90.0 && m.host.ends_with(".example.com") && m.action != "allow",
    );
}

#[tokio::test]
async fn csv_table_fields_limit_and_stats_over_the_same_log() {
    let (_dir, files) = logs().await;
    let fields = audit::read::query::fields("ts,host,status,sandbox.sandbox_id,secrets").unwrap();
    let mut out = Vec::new();
    let mut printer = Printer::new(Format::Csv, &fields);
    let f = Filter {
        secret: Some("OPENAI_KEY".into()),
        ..Filter::default()
    };
    query(&files, &f, &mut out, &mut printer, Some(3)).unwrap();
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "ts,host,status,sandbox.sandbox_id,secrets");
    assert_eq!(rows.len(), 4);
    let first = all()
        .into_iter()
        .filter(|m| m.secret.is_some())
        .min_by(|a, b| a.ts.cmp(&b.ts))
        .unwrap();
    assert_eq!(
        rows[1],
        format!(
            "{},api.openai.com,200,{},OPENAI_KEY",
            first.ts, first.sandbox
        )
    );

    let mut out = Vec::new();
    let mut printer = Printer::new(Format::Table, &[]);
    query(&files, &Filter::default(), &mut out, &mut printer, Some(2)).unwrap();
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("TS") && rows[0].contains("HOST") && rows[0].contains("REASON"));
    // Aligned: every column starts at the same offset on every row.
    let col = rows[0].find("ACTION").unwrap();
    assert!(
        rows[1..].iter().all(|r| r[col..].starts_with("reject")
            || r[col..].starts_with("allow")
            || r[col..].starts_with("error")),
        "{text}"
    );

    assert!(
        audit::read::query::fields("ts,nope")
            .unwrap_err()
            .to_string()
            .contains("known fields")
    );

    let s = audit::read::stats::stats(&files, &Filter::default(), audit::read::stats::By::Host)
        .unwrap();
    assert_eq!(s.total.count, 2 * N);
    let model = all();
    let count = |f: &dyn Fn(&Model) -> bool| model.iter().filter(|m| f(m)).count() as u64;
    assert_eq!(s.total.deny, count(&|m| m.action == "reject"));
    assert_eq!(s.total.error, count(&|m| m.action == "error"));
    assert_eq!(s.total.bytes_out, 100 * 2 * N);
    for (host, g) in &s.groups {
        assert_eq!(g.count, count(&|m| m.host == host.as_str()), "{host}");
        // Durations are i % 100 for i of this host: check p50 and p99 within 2%.
        let mut d: Vec<f64> = model
            .iter()
            .filter(|m| m.host == host.as_str())
            .map(|m| m.duration_ms)
            .collect();
        d.sort_by(f64::total_cmp);
        for (q, got) in [(0.5, g.p50_ms), (0.99, g.p99_ms)] {
            let want = d[((q * d.len() as f64).ceil() as usize).max(1) - 1];
            assert!(
                (got - want).abs() <= want * 0.021 + 0.001,
                "{host} q{q}: {got} vs {want}"
            );
        }
    }
    assert_eq!(
        s.denies_by_reason,
        vec![(
            "not_allowlisted".to_string(),
            count(&|m| m.action == "reject")
        )]
    );
    assert_eq!(
        s.secrets_by_host,
        vec![(
            "api.openai.com".to_string(),
            "OPENAI_KEY".to_string(),
            count(&|m| m.secret.is_some())
        )]
    );
    let by_sandbox =
        audit::read::stats::stats(&files, &Filter::default(), audit::read::stats::By::Sandbox)
            .unwrap();
    assert_eq!(by_sandbox.groups.len(), 2);
    assert!(
        by_sandbox
            .groups
            .iter()
            .all(|(k, g)| k.starts_with("sandbox_id=gw-") && g.count == N)
    );
}
