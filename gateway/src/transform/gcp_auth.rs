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
        let g = &cx.snap.policy.gcp_auth[self.0];
        let (name, header) = (g.name(), g.header().to_string());
        match cx.snap.tokens.get(TokenId::Gcp(self.0)).await {
            Ok(m) => {
                let value = [b"Bearer ", m.token.expose()].concat();
                set_header(cx.parts, &header, &value)?;
                let shown = format!("[centaur:{name}]").into_bytes();
                cx.scrub.push((m.token.expose().to_vec(), shown));
                let note = Annotations::Token {
                    error: None,
                    grant: None,
                    injected: vec![format!("header:{header}")],
                    rejected: None,
                    service_account: m.account,
                    skipped: None,
                };
                cx.note(name, "allow", note);
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
                cx.note(name, "reject", note);
                Err(Failure::Credential {
                    status: StatusCode::FORBIDDEN,
                    transform: name,
                    reason: Reason::TokenUnavailable,
                })
            }
        }
    }
}
