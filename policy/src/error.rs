//! Configuration errors: every problem, each with its path, position and a hint.

use std::fmt;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the document: `transforms[0].config.domains[2]`.
    pub path: String,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Every problem found in a policy file; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} error{} in policy:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Collects errors (and warnings: valid but risky choices) while a raw document is turned
/// into validated types.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ConfigError>, Vec<ConfigError>);

impl Errors {
    /// A warning: the file is valid, but a reader should know this.
    pub(crate) fn warn(&mut self, path: impl Into<String>, at: Pos, message: impl fmt::Display) {
        self.1.push(ConfigError {
            path: path.into(),
            line: at.0,
            column: at.1,
            message: message.to_string(),
            hint: None,
        });
    }

    /// The warnings so far, in file order.
    pub(crate) fn take_warnings(&mut self) -> Vec<ConfigError> {
        let mut w = std::mem::take(&mut self.1);
        w.sort_by_key(|e| (e.line == 0, e.line, e.column));
        w
    }

    pub(crate) fn push(&mut self, path: impl Into<String>, at: Pos, message: impl fmt::Display) {
        self.0.push(ConfigError {
            path: path.into(),
            line: at.0,
            column: at.1,
            message: message.to_string(),
            hint: None,
        });
    }

    pub(crate) fn hint(
        &mut self,
        path: impl Into<String>,
        at: Pos,
        message: impl fmt::Display,
        hint: impl Into<String>,
    ) {
        self.push(path, at, message);
        if let Some(last) = self.0.last_mut() {
            last.hint = Some(hint.into());
        }
    }

    /// The value, or every error in file order (errors without a position last).
    pub(crate) fn finish<T>(mut self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            return Ok(value);
        }
        self.0.sort_by_key(|e| (e.line == 0, e.line, e.column));
        Err(ConfigErrors(self.0))
    }
}

/// A (line, column) position; (0, 0) when unknown.
pub(crate) type Pos = (u64, u64);
