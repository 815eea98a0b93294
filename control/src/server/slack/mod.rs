//! Slack: signed Events API requests and Socket Mode in, through a durable inbox that makes
//! each Slack message one turn; progress and answers out, through a durable outbox and the
//! control plane's own gateway (the bot token never in this code's hands). See docs/slack.md.

pub mod courier;
pub mod envelope;
pub mod inbox;
pub mod mrkdwn;
pub mod routes;
pub mod settings;
pub mod socket;
pub mod state;
pub mod verify;
pub mod web;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::server::app::App;
use crate::server::egress::Egress;
use crate::server::slack::settings::SlackSettings;
use crate::server::slack::state::{Counters, Slack};
use crate::server::slack::web::Web;

/// Slack's runtime, its Web API client going through `egress`.
pub fn new(settings: SlackSettings, egress: Egress) -> Arc<Slack> {
    let web = Web::new(egress, settings.host.clone(), settings.prefix.clone());
    Arc::new(Slack {
        settings,
        web,
        inbox: Notify::new(),
        courier: Notify::new(),
        counters: Counters::default(),
    })
}

/// Starts the inbox processor, the courier and (with an app token) Socket Mode. `sole`: the
/// only server on its store, so delivery leases left by a previous process are free now.
pub async fn spawn(app: &Arc<App>, sole: bool) {
    let Some(slack) = app.slack.clone() else {
        return;
    };
    if sole {
        match app.store().slack_release_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("slack: resuming {n} deliveries a previous process held"),
            Err(e) => tracing::warn!("slack: {e}"),
        }
    }
    tokio::spawn(inbox::run(app.clone(), slack.clone()));
    tokio::spawn(courier::run(app.clone(), slack.clone()));
    if slack.settings.app_token.is_some() {
        tokio::spawn(socket::run(app.clone(), slack));
    }
}
