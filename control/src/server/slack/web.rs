//! The Slack Web API, called through the control plane's gateway with placeholder tokens:
//! `chat.postMessage`, `chat.update`, `conversations.replies`, `apps.connections.open`.
//! Failures are classified the way the outbox needs them.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::server::egress::{Egress, SLACK_APP_PLACEHOLDER, SLACK_BOT_PLACEHOLDER};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read.
const MAX_ANSWER: usize = 4 << 20;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// 429 or `ratelimited`: try again after this long (`Retry-After`).
    RateLimited(Duration),
    /// Network, 5xx, or Slack's own transient errors: try again with back-off. The call may
    /// have taken effect.
    Transient(String),
    /// Slack refused for good (`channel_not_found`, `not_in_channel`, `msg_too_long`,
    /// `invalid_auth`, …) or the gateway refused: do not retry.
    Permanent(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::RateLimited(d) => write!(f, "rate limited for {}s", d.as_secs()),
            CallError::Transient(e) => write!(f, "{e} (transient)"),
            CallError::Permanent(e) => f.write_str(e),
        }
    }
}

/// Slack's `error` codes worth retrying.
const TRANSIENT: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
];

/// Which token a call carries (as a placeholder).
#[derive(Debug, Clone, Copy)]
pub enum Token {
    /// The bot token.
    Bot,
    /// The app-level token (Socket Mode).
    App,
}

/// The client.
#[derive(Debug, Clone)]
pub struct Web {
    egress: Egress,
    host: String,
    prefix: String,
}

impl Web {
    /// A client of `https://{host}{prefix}/…` through `egress`.
    pub fn new(egress: Egress, host: String, prefix: String) -> Web {
        Web {
            egress,
            host,
            prefix,
        }
    }

    /// The gateway this client goes through.
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Calls `method` with a JSON body (`form` false) or the same fields form-encoded (read
    /// methods take only forms); answers the `ok` body.
    pub async fn call(
        &self,
        method: &str,
        token: Token,
        args: &Value,
        form: bool,
    ) -> Result<Value, CallError> {
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(method, token, args, form)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Transient(format!(
                "{method}: no answer in {}s",
                CALL_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn exchange(
        &self,
        method: &str,
        token: Token,
        args: &Value,
        form: bool,
    ) -> Result<Value, CallError> {
        let net = |e: &dyn std::fmt::Display| CallError::Transient(format!("{method}: {e}"));
        let tls = self.egress.connect(&self.host).await.map_err(|e| net(&e))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| net(&e))?;
        tokio::spawn(conn);
        let bearer = match token {
            Token::Bot => SLACK_BOT_PLACEHOLDER,
            Token::App => SLACK_APP_PLACEHOLDER,
        };
        let (ctype, body) = if form {
            ("application/x-www-form-urlencoded", form_body(args))
        } else {
            ("application/json; charset=utf-8", args.to_string())
        };
        let req = Request::post(format!("{}/{method}", self.prefix.trim_end_matches('/')))
            .header("host", &self.host)
            .header("authorization", format!("Bearer {bearer}"))
            .header("content-type", ctype)
            .header("user-agent", concat!("centaur/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Permanent(format!("{method}: {e}")))?;
        let resp = send.send_request(req).await.map_err(|e| net(&e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let refused_by = resp
            .headers()
            .get("x-centaur-reason")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| net(&e))?
            .to_bytes();
        classify(method, status.as_u16(), retry_after, refused_by, &body)
    }

    /// `chat.postMessage` in a thread, with `metadata` (our delivery id); answers its `ts`.
    pub async fn post(
        &self,
        channel: &str,
        thread_ts: &str,
        text: &str,
        metadata: Value,
    ) -> Result<String, CallError> {
        let args = json!({"channel": channel, "thread_ts": thread_ts, "text": text,
                          "mrkdwn": true, "unfurl_links": false, "metadata": metadata});
        let v = self
            .call("chat.postMessage", Token::Bot, &args, false)
            .await?;
        Ok(v["ts"].as_str().unwrap_or_default().to_string())
    }

    /// `chat.update` of one of our messages.
    pub async fn update(&self, channel: &str, ts: &str, text: &str) -> Result<(), CallError> {
        let args = json!({"channel": channel, "ts": ts, "text": text});
        self.call("chat.update", Token::Bot, &args, false)
            .await
            .map(drop)
    }

    /// `conversations.replies` of a thread, with message metadata, oldest first (up to
    /// 1,000 messages, following cursors).
    pub async fn replies(&self, channel: &str, ts: &str) -> Result<Vec<Value>, CallError> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        for _ in 0..5 {
            let mut args = json!({"channel": channel, "ts": ts, "limit": 200,
                                  "include_all_metadata": true});
            if !cursor.is_empty() {
                args["cursor"] = json!(cursor);
            }
            let v = self
                .call("conversations.replies", Token::Bot, &args, true)
                .await?;
            out.extend(v["messages"].as_array().cloned().unwrap_or_default());
            cursor = v["response_metadata"]["next_cursor"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if cursor.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// `apps.connections.open`: a Socket Mode WebSocket URL.
    pub async fn open_socket(&self) -> Result<String, CallError> {
        let v = self
            .call("apps.connections.open", Token::App, &json!({}), true)
            .await?;
        v["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| CallError::Permanent("apps.connections.open: no url".into()))
    }
}

/// What an answer means.
fn classify(
    method: &str,
    status: u16,
    retry_after: Option<u64>,
    refused_by: Option<String>,
    body: &[u8],
) -> Result<Value, CallError> {
    if status == 429 {
        return Err(CallError::RateLimited(Duration::from_secs(
            retry_after.unwrap_or(1).clamp(1, 3600),
        )));
    }
    if status >= 500 || status == 408 {
        return Err(CallError::Transient(format!("{method}: HTTP {status}")));
    }
    if let Some(reason) = refused_by {
        return Err(CallError::Permanent(format!(
            "{method}: the control plane's gateway refused the call ({reason})"
        )));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| CallError::Transient(format!("{method}: HTTP {status}, not a JSON answer")))?;
    if v["ok"] == true {
        return Ok(v);
    }
    let error = v["error"].as_str().unwrap_or("unknown_error").to_string();
    Err(match error.as_str() {
        "ratelimited" => CallError::RateLimited(Duration::from_secs(retry_after.unwrap_or(1))),
        e if TRANSIENT.contains(&e) => CallError::Transient(format!("{method}: {e}")),
        _ => CallError::Permanent(format!("{method}: {error}")),
    })
}

/// `k=v&…`, values percent-encoded (JSON values other than strings as JSON).
fn form_body(args: &Value) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let Some(map) = args.as_object() else {
        return String::new();
    };
    map.iter()
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            format!("{k}={}", utf8_percent_encode(&v, NON_ALPHANUMERIC))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_outbox_needs() {
        let c = |status, ra, by: Option<&str>, body: &str| {
            classify("m", status, ra, by.map(str::to_string), body.as_bytes())
        };
        assert!(c(200, None, None, r#"{"ok":true,"ts":"1"}"#).is_ok());
        assert_eq!(
            c(429, Some(7), None, ""),
            Err(CallError::RateLimited(Duration::from_secs(7)))
        );
        assert!(matches!(
            c(503, None, None, ""),
            Err(CallError::Transient(_))
        ));
        assert!(matches!(
            c(200, None, None, r#"{"ok":false,"error":"internal_error"}"#),
            Err(CallError::Transient(_))
        ));
        for permanent in [
            "channel_not_found",
            "not_in_channel",
            "msg_too_long",
            "invalid_auth",
        ] {
            let body = format!(r#"{{"ok":false,"error":"{permanent}"}}"#);
            assert_eq!(
                c(200, None, None, &body),
                Err(CallError::Permanent(format!("m: {permanent}")))
            );
        }
        assert!(matches!(
            c(403, None, Some("not_allowlisted"), "denied"),
            Err(CallError::Permanent(e)) if e.contains("not_allowlisted")
        ));
    }

    #[test]
    fn forms_encode_every_field() {
        let f = form_body(&json!({"channel": "C 1", "limit": 200, "ok": true}));
        assert_eq!(f, "channel=C%201&limit=200&ok=true");
    }
}
