//! Error type shared by the pure-Rust modules; `lib.rs` maps it to Python exceptions.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoreError {
    /// The ONNX Runtime shared library could not be loaded.
    #[error("cannot load the ONNX Runtime library {path}: {msg}")]
    Runtime { path: String, msg: String },
    /// A model directory file is missing, unreadable or does not fit the rest.
    #[error("{path}: {msg}")]
    Model { path: String, msg: String },
    /// Tokenization of an input failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// ONNX Runtime failed while running the graph.
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
