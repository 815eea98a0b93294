//! One stored event of a thread's log.

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its id: strictly increasing within the thread.
    pub event_id: i64,
    /// The execution it belongs to, if any.
    pub execution_id: Option<String>,
    /// `output` (a harness stdout line, verbatim), `execution_state`, `message`.
    pub kind: String,
    /// The payload: JSON, or the harness's line exactly as it printed it.
    pub data: String,
    /// When it was appended (Unix ms).
    pub created_at: i64,
}
