//! Graph rewrites and the manager that runs them.
//!
//! Each pass lives in a file of its own, named as the pass (`fuse_bn_into_conv.rs` is the pass
//! `fuse_bn_into_conv`). A pass rewrites one graph and says how many rewrites it made; it does not
//! validate or time itself. The [`manager`] runs passes over the main graph and every subgraph to a
//! fixed point, checks the graph after every pass (topological order, every input produced, the
//! interface unchanged), counts and times each pass, and returns a report. "Does not apply" is not
//! an error: a pass that finds nothing to do returns 0.

mod bisect;
mod context;
pub mod manager;
pub mod prune;
mod rewrite;
#[cfg(test)]
pub(crate) mod testing;

mod dedupe_initializers;
mod eliminate_common_subexpressions;
pub(crate) mod eliminate_dead_nodes;
mod eliminate_dropout;
mod eliminate_identity;
mod eliminate_nop_arithmetic;
mod eliminate_nop_cast;
mod eliminate_nop_concat;
mod eliminate_nop_expand;
mod eliminate_nop_pad;
mod eliminate_nop_reshape;
mod eliminate_nop_slice;
mod eliminate_nop_transpose;
mod eliminate_nop_where;
mod eliminate_unused_initializers;
mod fold_constants;
mod fold_reshape_targets;
mod fuse_add_bias_into_conv;
mod fuse_bn_into_conv;
mod fuse_bn_into_gemm;
mod fuse_consecutive_reshapes;
mod fuse_consecutive_slices;
mod fuse_consecutive_squeezes;
mod fuse_consecutive_transposes;
mod fuse_consecutive_unsqueezes;
mod fuse_gelu;
mod fuse_layer_norm;
mod fuse_matmul_add_into_gemm;
mod fuse_mul_into_conv;
mod fuse_pad_into_conv;
mod fuse_transpose_into_gemm;

pub use bisect::{Culprit, bisect};
pub use context::{PassContext, SkippedFold};
pub use manager::{
    OptimizeOptions, OptimizeReport, PassError, PassStats, optimize, optimize_with_progress,
};

use crate::graph::Graph;

/// What a pass does to the numbers a model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassKind {
    /// Removes what computes nothing: results are bit-identical.
    Cleanup,
    /// Precomputes constant subgraphs: bit-identical up to the evaluator's float rounding.
    Fold,
    /// Merges operations: float results change by reassociation only.
    Fusion,
}

/// One graph rewrite.
pub trait Pass: Sync {
    /// The pass's name, its file's name.
    fn name(&self) -> &'static str;
    fn kind(&self) -> PassKind;
    /// What it does, when it applies and what it refuses: the pass reference (docs/passes.md) is
    /// generated from this.
    fn details(&self) -> &'static str {
        self.description()
    }
    /// One line for `--list-passes`.
    fn description(&self) -> &'static str;
    /// Rewrites `graph` once; returns how many rewrites it made.
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError>;
}

/// Every pass, in the order the default preset runs them.
pub fn registry() -> Vec<&'static dyn Pass> {
    vec![
        &eliminate_identity::EliminateIdentity,
        &eliminate_dropout::EliminateDropout,
        &eliminate_nop_cast::EliminateNopCast,
        &eliminate_nop_transpose::EliminateNopTranspose,
        &eliminate_nop_reshape::EliminateNopReshape,
        &eliminate_nop_pad::EliminateNopPad,
        &eliminate_nop_slice::EliminateNopSlice,
        &eliminate_nop_expand::EliminateNopExpand,
        &eliminate_nop_concat::EliminateNopConcat,
        &eliminate_nop_where::EliminateNopWhere,
        &eliminate_nop_arithmetic::EliminateNopArithmetic,
        &fold_constants::FoldConstants,
        &fold_reshape_targets::FoldReshapeTargets,
        &eliminate_common_subexpressions::EliminateCommonSubexpressions,
        &dedupe_initializers::DedupeInitializers,
        &fuse_consecutive_transposes::FuseConsecutiveTransposes,
        &fuse_consecutive_reshapes::FuseConsecutiveReshapes,
        &fuse_consecutive_slices::FuseConsecutiveSlices,
        &fuse_consecutive_squeezes::FuseConsecutiveSqueezes,
        &fuse_consecutive_unsqueezes::FuseConsecutiveUnsqueezes,
        &fuse_pad_into_conv::FusePadIntoConv,
        &fuse_bn_into_conv::FuseBnIntoConv,
        &fuse_add_bias_into_conv::FuseAddBiasIntoConv,
        &fuse_mul_into_conv::FuseMulIntoConv,
        &fuse_bn_into_gemm::FuseBnIntoGemm,
        &fuse_matmul_add_into_gemm::FuseMatmulAddIntoGemm,
        &fuse_transpose_into_gemm::FuseTransposeIntoGemm,
        &fuse_gelu::FuseGelu,
        &fuse_layer_norm::FuseLayerNorm,
        &eliminate_dead_nodes::EliminateDeadNodes,
        &eliminate_unused_initializers::EliminateUnusedInitializers,
    ]
}

/// The passes of an optimization level: 0 none, 1 cleanup and folding, 2 everything lossless.
pub fn preset(level: u8) -> Vec<&'static dyn Pass> {
    registry()
        .into_iter()
        .filter(|p| match level {
            0 => false,
            1 => matches!(p.kind(), PassKind::Cleanup | PassKind::Fold),
            _ => true,
        })
        .collect()
}

pub fn by_name(name: &str) -> Option<&'static dyn Pass> {
    registry().into_iter().find(|p| p.name() == name)
}
