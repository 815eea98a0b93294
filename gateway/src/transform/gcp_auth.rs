//! `gcp_auth`: an access token minted from a service-account key (a signed JWT exchanged at
//! Google's token endpoint, cached until it nears expiry), set as `Authorization: Bearer`.

use audit::Annotations;
use http::StatusCode;
use policy::Reason;

use crate::credential::tokens::TokenId;
use crate::exchange::failure::Failure;
use crate::transform::request::set_header;
use crate::transform::step::{Cx, Transform};

/// The policy's `gcp_auth` transform at this index.
pub(super) struct GcpAuth(pub usize);

impl Transform for GcpAuth {
    async fn run(&self, cx: &mut Cx<'_>) -> Result<(), Failure> {
        match cx.snap.tokens.get(TokenId::Gcp(self.0)).await {
            Ok(m) => {
                let value = [b"Bearer ", m.token.expose()].concat();
                set_header(cx.parts, "authorization", &value)?;
                cx.scrub
                    .push((m.token.expose().to_vec(), b"[centaur:gcp_auth]".to_vec()));
                let note = Annotations::Token {
                    error: None,
                    grant: None,
                    injected: vec!["header:authorization".into()],
                    rejected: None,
                    service_account: m.account,
                    skipped: None,
                };
                cx.note("gcp_auth", "allow", note);
                Ok(())
            }
            Err(e) => {
                let note = Annotations::Token {
                    error: Some(e.code()),
                    grant: None,
                    injected: vec![],
                    rejected: Some(Reason::TokenUnavailable.code()),
                    service_account: None,
                    skipped: None,
                };
                cx.note("gcp_auth", "reject", note);
                Err(Failure::Credential {
                    status: StatusCode::FORBIDDEN,
                    transform: "gcp_auth",
                    reason: Reason::TokenUnavailable,
                })
            }
        }
    }
}
