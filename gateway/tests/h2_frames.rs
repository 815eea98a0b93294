//! HTTP/2 parser differentials (RFC 9113 section 8), invariants 1 and 8: malformed requests
//! crafted frame by frame with Python's `h2` (its own checks off) reach the gateway's TLS
//! listener bound for an HTTP/1.1-only origin, so any that slipped through would be
//! re-spoken as HTTP/1.1. A case passes when the gateway refuses it (a 4xx, a stream reset or
//! a GOAWAY) and the origin never receives it; every refusal is audited.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Env, Opts, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_requests_are_refused_and_never_forwarded() {
    let env = Env::start(Opts::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakes/h2_frames.py");
    let https = env.https();
    let args = [
        https.ip().to_string(),
        https.port().to_string(),
        env.ca(),
        "h1.test".into(),
    ];
    let stdout = common::python_script(script, &args).await;
    let results: Vec<serde_json::Value> = stdout.lines().map(json).collect();
    assert!(results.len() > 25, "{stdout}");
    let seen: Vec<String> = env
        .origin
        .seen()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect();
    for r in &results {
        let name = r["case"].as_str().unwrap();
        let status = r["status"].as_u64();
        eprintln!("{r}");
        if name.starts_with("control") {
            assert_eq!(status, Some(200), "{r}");
            assert!(seen.contains(&format!("/h2/{name}")), "{name}: {seen:?}");
            continue;
        }
        let refused = status.is_some_and(|s| (400..500).contains(&s))
            || !r["reset"].is_null()
            || !r["goaway"].is_null();
        assert!(refused, "{name} was not refused: {r}");
        assert!(
            !seen.iter().any(|p| p.starts_with(&format!("/h2/{name}"))),
            "{name} reached the origin: {r}"
        );
    }
    // Connection-level refusals (GOAWAY) are audited, and so is each stream the h2 library
    // reset before the gateway saw a request, once, naming the stream and the code.
    let goaways = results.iter().filter(|r| !r["goaway"].is_null()).count();
    assert!(goaways > 0, "no case ended in GOAWAY: {stdout}");
    let recorded = env.count_reason("http2_protocol_error", goaways).await;
    assert_eq!(recorded, goaways, "each GOAWAY is recorded once");
    let resets = results
        .iter()
        .filter(|r| r["reset"].as_u64().is_some_and(|c| c != 0 && c != 8))
        .count();
    assert!(resets > 0, "no case ended in a stream reset: {stdout}");
    let recorded = env.count_reason("http2_stream_reset", resets).await;
    assert_eq!(recorded, resets, "each reset stream is recorded once");
    for r in env.audit(0).await {
        if r["reason"] == "http2_stream_reset" {
            assert_eq!(r["error"], "stream 1 reset: PROTOCOL_ERROR", "{r}");
            assert_eq!(r["sni"], "h1.test", "{r}");
            assert_eq!(r["action"], "reject", "{r}");
        }
    }
    env.stop().await;
}
