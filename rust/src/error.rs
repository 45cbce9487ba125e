//! Error type shared by the pure-Rust modules; `lib.rs` maps it to Python exceptions.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoreError {
    /// A runtime's shared library (ONNX Runtime, OpenVINO) could not be loaded.
    #[error("cannot load the {runtime} library {path}: {msg}")]
    Runtime { runtime: &'static str, path: String, msg: String },
    /// A model directory file is missing, unreadable or does not fit the rest.
    #[error("{path}: {msg}")]
    Model { path: String, msg: String },
    /// Tokenization of an input failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// The runtime failed while running the graph.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A caller passed an argument outside its domain.
    #[error("{0}")]
    InvalidArgument(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;

impl CoreError {
    pub fn model(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        CoreError::Model { path: path.as_ref().display().to_string(), msg: msg.into() }
    }
}

/// Run `f`, turning a panic (a bug here or in a dependency such as `tokenizers` or `ort`, which no
/// input is known to cause) into an `Inference` error, so that a caller gets an error to handle
/// instead of a Python `PanicException` (a BaseException, which `except Exception` does not catch).
pub fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(CoreError::Inference(format!("internal error (a panic, please report it): {msg}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_inference_error() {
        let out: Result<()> = guarded(|| panic!("index out of bounds: the len is 3 but the index is 7"));
        match out {
            Err(CoreError::Inference(msg)) => assert!(msg.contains("the len is 3 but the index is 7"), "{msg}"),
            other => panic!("expected an inference error, got {other:?}"),
        }
        let formatted: Result<()> = guarded(|| panic!("{} {}", "formatted", 42));
        assert!(matches!(formatted, Err(CoreError::Inference(m)) if m.contains("formatted 42")));
        assert_eq!(guarded(|| Ok(5)).ok(), Some(5));
        assert!(matches!(guarded::<()>(|| Err(CoreError::Tokenize("x".into()))), Err(CoreError::Tokenize(_))));
    }
}
