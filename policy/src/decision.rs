//! Decisions are values: a verdict, the rule that made it and a stable reason code.

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request may proceed.
    Allow,
    /// The request is refused.
    Deny,
}

/// Why the policy decided as it did. Codes are stable: they appear in audit records and are
/// listed in `docs/reason-codes.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A rule of every allowlist matched.
    Allowed,
    /// No allowlist rule matched, but the allowlist is in report (`warn`) mode.
    WouldDeny,
    /// No allowlist rule matched.
    NotAllowlisted,
    /// The policy has no allowlist at all, which denies everything (invariant 1).
    NoAllowlist,
    /// A token endpoint the gateway answers itself (`gcp_auth`, `oauth_token`): nothing
    /// leaves, so no allowlist rule is needed.
    Stubbed,
}

impl Reason {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::WouldDeny => "would_deny",
            Reason::NotAllowlisted => "not_allowlisted",
            Reason::NoAllowlist => "no_allowlist",
            Reason::Stubbed => "stubbed",
        }
    }
}

/// The outcome of evaluating a request against a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The rule that decided, as its path in the policy file (`transforms[0].config.domains[1]`).
    pub rule: Option<String>,
    /// The stable reason.
    pub reason: Reason,
}

impl Decision {
    /// Whether the verdict is allow.
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}
