//! What a credential transform is: one step of a plan, run on a shared context that holds
//! the request head, its body (read once, on first need), the audit entries and the values
//! put on the wire.

use http::request::Parts;
use policy::Request;

use crate::exchange::failure::Failure;
use crate::shared::Snapshot;
use crate::transform::request::Body;

/// A credential transform: one step of a plan, run against the request in place.
pub(super) trait Transform {
    /// Changes the request, notes what it did in the audit entry, and registers every value
    /// it put on the wire for scrubbing; a failure refuses the request.
    async fn run(&self, cx: &mut Cx<'_>) -> Result<(), Failure>;
}

/// What every step works on.
pub(super) struct Cx<'a> {
    pub(super) snap: &'a Snapshot,
    pub(super) req: &'a Request<'a>,
    pub(super) parts: &'a mut Parts,
    pub(super) body: Body<'a>,
    pub(super) audit: &'a mut Vec<audit::Transform>,
    /// (real value on the wire, what the client is shown instead), for the response scrubber.
    pub(super) scrub: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Cx<'_> {
    /// Adds the audit entry of a transform that acted.
    pub(super) fn note(
        &mut self,
        name: &'static str,
        action: &'static str,
        annotations: audit::Annotations,
    ) {
        self.audit.push(audit::Transform {
            name,
            action,
            rule: None,
            annotations: Some(annotations),
        });
    }
}

/// What the client sees in place of a value injected by the transform or secret `name`.
pub(super) fn shown(name: &str) -> Vec<u8> {
    ["[centaur:", name, "]"].concat().into_bytes()
}
