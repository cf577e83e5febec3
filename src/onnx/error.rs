//! Errors from reading, writing and interpreting ONNX files. Each names the file and the part of the
//! model (tensor, node, field) that is wrong, so the CLI can print it as is.

use std::path::PathBuf;

/// What can go wrong with an ONNX file or its contents. All of these are the input's fault
/// (exit code 2) except [`OnnxError::Io`] on write, which the CLI reports as such.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid ONNX model: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("tensor '{tensor}': {what}")]
    Tensor { tensor: String, what: String },
    #[error("tensor '{tensor}': external data {what}")]
    External { tensor: String, what: String },
}

impl OnnxError {
    pub(crate) fn tensor(tensor: &str, what: impl Into<String>) -> Self {
        OnnxError::Tensor {
            tensor: tensor.to_string(),
            what: what.into(),
        }
    }
    pub(crate) fn external(tensor: &str, what: impl Into<String>) -> Self {
        OnnxError::External {
            tensor: tensor.to_string(),
            what: what.into(),
        }
    }
}
