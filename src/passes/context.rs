//! What passes may know beyond the graph they rewrite: the model's opsets, tensor data (external
//! data included), the types and shapes our inference finds (`crate::infer`), and the
//! constant-folding budget.

use serde::{Deserialize, Serialize};

use crate::infer::Inference;
use crate::onnx::external::{ExternalData, ExternalRef};
use crate::onnx::proto::{OperatorSetIdProto, TensorProto};
use crate::onnx::{OnnxError, TensorData};

/// A fold that was not done, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkippedFold {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// Shared state of one optimization run.
pub struct PassContext {
    pub ir_version: i64,
    pub opsets: Vec<OperatorSetIdProto>,
    /// The default-domain opset.
    pub opset: i64,
    external: ExternalData,
    /// Types, shapes and small values of the graph's values, as of the last refresh.
    pub facts: Inference,
    /// Largest tensor a fold may create, in bytes.
    pub fold_size_limit: usize,
    /// Bytes folds may still add to the model in total.
    pub fold_budget: u64,
    pub skipped_folds: Vec<SkippedFold>,
}

impl PassContext {
    pub fn new(
        model: &crate::onnx::Model,
        fold_size_limit: usize,
        fold_budget: u64,
    ) -> PassContext {
        PassContext {
            ir_version: model.proto.ir_version(),
            opsets: model.proto.opset_import.clone(),
            opset: model.opset("").unwrap_or(1),
            external: ExternalData::new(model.dir().to_path_buf()),
            facts: Inference::default(),
            fold_size_limit,
            fold_budget,
            skipped_folds: Vec::new(),
        }
    }

    /// The directory external data resolves against.
    pub fn dir(&self) -> &std::path::Path {
        self.external.dir()
    }

    /// Typed data of a tensor, wherever it is stored.
    pub fn tensor_data(&self, t: &TensorProto) -> Result<TensorData, OnnxError> {
        let external = match ExternalRef::of(t)? {
            Some(r) => Some(self.external.read(t.name(), &r)?),
            None => None,
        };
        TensorData::new(t, external)
    }

    /// The dims of a value when every one is a known number.
    pub fn static_shape(&self, value: &str) -> Option<Vec<i64>> {
        self.facts.static_shape(value)
    }

    /// The dims of a value of known rank, each a number where it is one.
    pub fn dims(&self, value: &str) -> Option<Vec<Option<i64>>> {
        Some(
            self.facts
                .shape(value)?
                .iter()
                .map(|d| d.as_const())
                .collect(),
        )
    }

    /// Are both values' shapes known and the same (symbolic dims included)?
    pub fn same_shape(&self, a: &str, b: &str) -> bool {
        matches!((self.facts.shape(a), self.facts.shape(b)), (Some(x), Some(y)) if x == y)
    }

    /// Does broadcasting a constant of shape `dims` against `x` leave x's shape as it is? Its
    /// rank must be at most x's and each dim 1 or x's (known) dim; with x's shape unknown only a
    /// true scalar (`[]`) is known not to grow it. The one broadcast check rewrites use.
    pub fn broadcast_keeps_shape(&self, dims: &[i64], x: &str) -> bool {
        let Some(shape) = self.facts.shape(x) else {
            return dims.is_empty();
        };
        let Some(offset) = shape.len().checked_sub(dims.len()) else {
            return false;
        };
        dims.iter()
            .enumerate()
            .all(|(k, &d)| d == 1 || shape[offset + k].as_const() == Some(d))
    }

    pub fn rank(&self, value: &str) -> Option<usize> {
        self.facts.rank(value)
    }

    /// The ONNX element type code of a value.
    pub fn elem_type(&self, value: &str) -> Option<i32> {
        self.facts.elem_type(value).map(|t| t.code())
    }

    /// Notes a fold not done, once per node and reason.
    pub fn skip_fold(&mut self, node: &str, op: &str, reason: String) {
        if !self
            .skipped_folds
            .iter()
            .any(|s| s.node == node && s.reason == reason)
        {
            self.skipped_folds.push(SkippedFold {
                node: node.into(),
                op: op.into(),
                reason,
            });
        }
    }
}
