//! ONNX models on disk and in memory: the protobuf types (generated from `proto/onnx.proto`), loading
//! with memory mapping and external data, lossless saving, and typed views of tensor data.
//!
//! A [`Model`] keeps the decoded `ModelProto` exactly as read: nothing is normalised on load, so a
//! model saved without edits is byte-identical to its input. Tensor payloads are `Bytes` slices of
//! the memory-mapped file; they are copied only when something changes them.

#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub mod attributes;
mod dtype;
mod error;
pub mod external;
mod load;
pub mod save;
pub mod schema;
mod tensor;
pub mod upgrade;

pub use dtype::DataType;
pub use error::OnnxError;
pub use external::ExternalData;
pub use load::{MAX_IR_VERSION, MIN_IR_VERSION, Model};
pub use save::{
    ExternalDataPolicy, PROTOBUF_LIMIT, SaveOptions, SaveSummary, save_bytes_atomically,
};
pub use tensor::{TensorData, TensorValues};

/// Is a `dim_param` a name? Some exporters write `?`, `-1` or `None` for every dynamic dim of an
/// input, which would make its height equal its width; such a "name" is an unknown.
pub fn names_a_dim(p: &str) -> bool {
    p.chars().any(|c| c.is_alphanumeric()) && !matches!(p, "-1" | "None" | "none" | "null")
}

pub use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
