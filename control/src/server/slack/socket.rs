//! Socket Mode: for teams with no public URL. `apps.connections.open` (with the app-level
//! token's placeholder) gives a WebSocket URL; the server follows it through the control
//! plane's gateway, stores each `events_api` envelope's payload exactly as the HTTP path does,
//! acknowledges it only once stored, and reconnects on `disconnect`, a close, or an error.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::server::app::App;
use crate::server::slack::routes::{Refused, accept};
use crate::server::slack::state::Slack;

/// The largest frame or message read.
const MAX_FRAME: usize = 4 << 20;
/// A connection with no frame this long is pinged.
const PING_EVERY: Duration = Duration::from_secs(30);

/// Follows Socket Mode until the process ends.
pub async fn run(app: Arc<App>, slack: Arc<Slack>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match session(&app, &slack).await {
            Ok(why) => {
                tracing::info!("slack socket mode: {why}; reconnecting");
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                tracing::warn!(
                    "slack socket mode: {e}; reconnecting in {}s",
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The host of a `wss://host[:port]/path` URL.
fn host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("wss://")?;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    (!host.is_empty()).then_some(host)
}

/// One connection, until Slack asks us to reconnect (`Ok`) or it fails (`Err`).
async fn session(app: &App, slack: &Slack) -> Result<String, String> {
    let url = slack.web.open_socket().await.map_err(|e| e.to_string())?;
    let host = host(&url).ok_or_else(|| format!("apps.connections.open gave {url:?}"))?;
    let tls = slack
        .web
        .egress()
        .connect(host)
        .await
        .map_err(|e| format!("connecting to {host}: {e}"))?;
    // Slack's envelopes are small: a frame over 4 MiB is an error, not a buffer to grow.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), tls, Some(config))
        .await
        .map_err(|e| format!("WebSocket handshake with {host}: {e}"))?;
    tracing::info!("slack socket mode: connected to {host}");
    let mut quiet = 0;
    loop {
        let msg = match tokio::time::timeout(PING_EVERY, ws.next()).await {
            Ok(Some(msg)) => msg.map_err(|e| e.to_string())?,
            Ok(None) => break,
            // Silence: ping; a connection silent through three pings is dead.
            Err(_) if quiet < 3 => {
                quiet += 1;
                ws.send(Message::Ping(Vec::new().into()))
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
            Err(_) => return Err("the connection went silent".into()),
        };
        quiet = 0;
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return Ok("the connection was closed".into()),
            _ => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            tracing::warn!("slack socket mode: a frame that is not JSON");
            continue;
        };
        match v["type"].as_str() {
            Some("hello") => continue,
            Some("disconnect") => {
                let reason = v["reason"].as_str().unwrap_or("no reason");
                return Ok(format!("Slack asked to reconnect ({reason})"));
            }
            _ => {}
        }
        let Some(id) = v["envelope_id"].as_str() else {
            continue;
        };
        if v["type"] == "events_api" {
            let payload = v["payload"].to_string();
            match accept(app, slack, payload.as_bytes()).await {
                Ok(_) => {}
                Err(Refused::Invalid(e)) => {
                    tracing::warn!("slack socket mode: an envelope we cannot read: {e}");
                }
                // Not acknowledged: Slack sends it again.
                Err(Refused::Store(e)) => {
                    tracing::error!("slack socket mode: cannot store an event: {e}");
                    continue;
                }
            }
        }
        let ack = json!({"envelope_id": id}).to_string();
        ws.send(Message::Text(ack.into()))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok("the connection ended".into())
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn hosts_of_socket_urls() {
        assert_eq!(
            host("wss://wss-primary.slack.com/link/?ticket=1&app_id=A"),
            Some("wss-primary.slack.com")
        );
        assert_eq!(host("wss://slack.test:8443/link"), Some("slack.test"));
        assert_eq!(host("https://x/"), None);
        assert_eq!(host("wss:///x"), None);
    }
}
