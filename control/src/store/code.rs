//! Why a request was refused: stable codes (the API's `code` field) and their statuses.

/// Why a request was refused: a stable code (the API's `code` field) and a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A required field is missing.
    MissingField,
    /// A field has the wrong type or value.
    InvalidField,
    /// The body has a field the endpoint does not know.
    UnknownField,
    /// The body is not JSON.
    InvalidJson,
    /// The body is larger than the limit.
    BodyTooLarge,
    /// A thread key is empty, too long, or has no `namespace:` prefix.
    InvalidThreadKey,
    /// A message has no content.
    InvalidMessage,
    /// The harness is not in the server's config.
    UnknownHarness,
    /// An idempotency key was reused with a different payload.
    IdempotencyPayloadMismatch,
    /// The thread has no active assignment.
    NoActiveAssignment,
    /// The caller's assignment generation is not the active one.
    AssignmentGenerationStale,
    /// The thread's active assignment runs another harness.
    ActiveAssignmentMismatch,
    /// Too many executions failed on this thread lately.
    ThreadFailureLoop,
    /// The execution is not running (queued or ended): there is no turn to steer.
    ExecutionNotRunning,
    /// No such thing.
    NotFound,
    /// No or an unknown API key.
    Unauthorized,
    /// The key lacks the scope, or a sandbox token touched another thread.
    Forbidden,
    /// The server is starting.
    NotReady,
    /// A bug or a store failure.
    Internal,
}

impl Code {
    /// Every code, in the order docs/api.md lists them.
    pub const ALL: [Code; 19] = [
        Code::MissingField,
        Code::InvalidField,
        Code::UnknownField,
        Code::InvalidJson,
        Code::BodyTooLarge,
        Code::InvalidThreadKey,
        Code::InvalidMessage,
        Code::UnknownHarness,
        Code::IdempotencyPayloadMismatch,
        Code::NoActiveAssignment,
        Code::AssignmentGenerationStale,
        Code::ActiveAssignmentMismatch,
        Code::ThreadFailureLoop,
        Code::ExecutionNotRunning,
        Code::NotFound,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotReady,
        Code::Internal,
    ];

    /// The code as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MissingField => "MISSING_FIELD",
            Code::InvalidField => "INVALID_FIELD",
            Code::UnknownField => "UNKNOWN_FIELD",
            Code::InvalidJson => "INVALID_JSON",
            Code::BodyTooLarge => "BODY_TOO_LARGE",
            Code::InvalidThreadKey => "INVALID_THREAD_KEY",
            Code::InvalidMessage => "INVALID_MESSAGE",
            Code::UnknownHarness => "UNKNOWN_HARNESS",
            Code::IdempotencyPayloadMismatch => "IDEMPOTENCY_PAYLOAD_MISMATCH",
            Code::NoActiveAssignment => "NO_ACTIVE_ASSIGNMENT",
            Code::AssignmentGenerationStale => "ASSIGNMENT_GENERATION_STALE",
            Code::ActiveAssignmentMismatch => "ACTIVE_ASSIGNMENT_MISMATCH",
            Code::ThreadFailureLoop => "THREAD_FAILURE_LOOP",
            Code::ExecutionNotRunning => "EXECUTION_NOT_RUNNING",
            Code::NotFound => "NOT_FOUND",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Forbidden => "FORBIDDEN",
            Code::NotReady => "NOT_READY",
            Code::Internal => "INTERNAL",
        }
    }

    /// The HTTP status the code carries.
    pub fn status(self) -> u16 {
        match self {
            Code::InvalidJson | Code::InvalidMessage => 400,
            Code::Unauthorized => 401,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::IdempotencyPayloadMismatch
            | Code::NoActiveAssignment
            | Code::AssignmentGenerationStale
            | Code::ActiveAssignmentMismatch
            | Code::ThreadFailureLoop
            | Code::ExecutionNotRunning => 409,
            Code::BodyTooLarge => 413,
            Code::MissingField
            | Code::InvalidField
            | Code::UnknownField
            | Code::InvalidThreadKey
            | Code::UnknownHarness => 422,
            Code::Internal => 500,
            Code::NotReady => 503,
        }
    }
}

/// A refusal: what the API answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    /// The stable code.
    pub code: Code,
    /// What is wrong, for a person.
    pub message: String,
}

impl Rejection {
    /// A refusal with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name_and_an_error_status() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
        assert!(Code::ALL.iter().all(|c| c.status() >= 400));
    }

    #[test]
    fn docs_api_md_lists_every_code_in_order_with_its_status() {
        let doc = include_str!("../../../docs/api.md");
        let table = &doc[doc
            .find("## Error codes")
            .expect("docs/api.md has ## Error codes")..];
        let rows: Vec<(String, u16)> = table
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((code.to_string(), cells.get(2)?.parse().ok()?))
            })
            .collect();
        let want: Vec<(String, u16)> = Code::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), c.status()))
            .collect();
        assert_eq!(rows, want);
    }
}
