//! Decisions are values: a verdict, the rule that made it and a stable reason code.

use std::sync::Arc;

use crate::reason::Reason;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request may proceed.
    Allow,
    /// The request is refused.
    Deny,
}

/// The outcome of evaluating a request against a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The rule that decided, as its path in the policy file (`transforms[0].config.domains[1]`).
    pub rule: Option<Arc<str>>,
    /// The stable reason.
    pub reason: Reason,
}

impl Decision {
    /// Whether the verdict is allow.
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}
