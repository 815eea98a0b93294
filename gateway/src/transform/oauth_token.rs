//! `oauth_token`: an access token from an OAuth 2.0 grant (client credentials, refresh token,
//! JWT bearer…), cached until it nears expiry, set in the entry's header with its prefix.
//! Without a token the request is refused when the entry says `require`, else sent as is.

use audit::Annotations;
use http::StatusCode;
use policy::Reason;

use crate::credential::tokens::TokenId;
use crate::exchange::failure::Failure;
use crate::transform::request::set_header;
use crate::transform::step::{Cx, Transform};

/// The policy's `oauth_token` entry at this index (the first that matched).
pub(super) struct OAuthToken(pub usize);

impl Transform for OAuthToken {
    async fn run(&self, cx: &mut Cx<'_>) -> Result<(), Failure> {
        let o = &cx.snap.policy.oauth[self.0];
        let grant = Some(o.grant.as_str());
        let minted = cx.snap.tokens.get(TokenId::OAuth(self.0)).await;
        let (action, note) = match minted {
            Ok(m) => {
                let value = [o.value_prefix.as_bytes(), m.token.expose()].concat();
                let name = set_header(cx.parts, &o.header, &value)?;
                cx.scrub
                    .push((m.token.expose().to_vec(), b"[centaur:oauth_token]".to_vec()));
                let note = Annotations::Token {
                    error: None,
                    grant,
                    injected: vec![format!("header:{name}")],
                    rejected: None,
                    service_account: None,
                    skipped: None,
                };
                ("allow", note)
            }
            Err(e) => {
                let why = Some(Reason::TokenUnavailable.code());
                let note = Annotations::Token {
                    error: Some(e.code()),
                    grant,
                    injected: vec![],
                    rejected: why.filter(|_| o.require),
                    service_account: None,
                    skipped: why.filter(|_| !o.require),
                };
                (if o.require { "reject" } else { "allow" }, note)
            }
        };
        cx.note("oauth_token", action, note);
        if action == "reject" {
            return Err(Failure::Credential {
                status: StatusCode::BAD_GATEWAY,
                transform: "oauth_token",
                reason: Reason::TokenUnavailable,
            });
        }
        Ok(())
    }
}
