//! The encoder's one error type.

use std::path::PathBuf;

/// What can go wrong loading a model or encoding texts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model directory cannot be used: a missing or unreadable file, a
    /// file that does not parse, an architecture, module or setting this
    /// encoder does not support. The path names the file at fault.
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// An input the encoder refuses (an empty text).
    #[error("{0}")]
    Input(String),
    /// The forward pass failed (a shape the weights do not fit, out of memory).
    #[error("encoder forward pass: {0}")]
    Compute(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn model(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Error {
        Error::Model { path: path.into(), reason: reason.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
