//! The gateway's own log lines, captured in memory so a test can check that no secret value
//! reaches them (invariant 3).

/// Every real credential in the tests carries this marker; it must never reach a client, an
/// audit record or a log line (invariant 3).
pub const CANARY: &str = "c4n4ry";

/// Asserts that nothing the sandbox or the audit log sees carries a real credential.
pub fn assert_no_canary(what: &str, text: &str) {
    assert!(
        !text.contains(CANARY),
        "a real credential leaked into {what}: {text}"
    );
}

pub static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut l) = LOGS.lock() {
            l.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the gateway's log (debug and up) for the canary check.
pub fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("gateway=debug,info")
        .with_writer(|| LogSink)
        .with_ansi(false)
        .try_init();
}
