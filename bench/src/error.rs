//! The benchmark's error type: a message that says what failed, with the cause appended.
//!
//! The library returns typed errors ([`im2win::Error`]); the command only reports them, so a
//! string with context is all it needs.

use std::fmt;

/// What went wrong while benchmarking, as a human-readable message with its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError {
    message: String,
}

/// The result type of the benchmark.
pub type Result<T> = std::result::Result<T, BenchError>;

impl BenchError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        BenchError {
            message: message.into(),
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BenchError {}

/// Adds what was being done to an error, as `"<what>: <cause>"`.
pub trait Context<T> {
    /// Wraps the error with a fixed description of the failed step.
    fn context(self, what: &str) -> Result<T>;

    /// Wraps the error with a description built only when there is an error.
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| BenchError::new(format!("{what}: {e}")))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BenchError::new(format!("{}: {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_the_cause() {
        let failed: std::result::Result<(), &str> = Err("out of memory");
        let err = failed.context("allocating the input").unwrap_err();
        assert_eq!(err.to_string(), "allocating the input: out of memory");
        let failed: std::result::Result<(), &str> = Err("bad");
        let err = failed.with_context(|| format!("layer {}", 3)).unwrap_err();
        assert_eq!(err.to_string(), "layer 3: bad");
        assert_eq!(Ok::<u8, &str>(1).context("never used"), Ok(1));
    }
}
