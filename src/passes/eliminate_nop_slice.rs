//! `eliminate_nop_slice`: removes a `Slice` that keeps everything.
//!
//! ```text
//! x:[4,5] -> Slice(starts=[0], ends=[INT_MAX], axes=[1]) -> y      =>      x
//! ```
//! Every sliced axis must start at 0 with step 1 and end at or past the axis size (known from the
//! inferred shape, or an end of at least 2^31-1). Starts/ends/axes/steps are attributes before
//! opset 10 and constant inputs from 10. Results are bit-identical.

use super::rewrite::{attr_ints, bypass_all, const_i64s, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::onnx::proto::NodeProto;

pub struct EliminateNopSlice;

/// starts, ends, axes and steps of a Slice.
type SliceParams = (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);

pub(super) fn params(g: &Graph, ctx: &PassContext, n: &NodeProto) -> Option<SliceParams> {
    if n.input.len() >= 3 {
        let opt = |k: usize| {
            n.input
                .get(k)
                .filter(|v| !v.is_empty())
                .map(|v| const_i64s(g, ctx, v))
        };
        let axes = match opt(3) {
            Some(v) => Some(v?),
            None => None,
        };
        let steps = match opt(4) {
            Some(v) => Some(v?),
            None => None,
        };
        Some((
            const_i64s(g, ctx, &n.input[1])?,
            const_i64s(g, ctx, &n.input[2])?,
            axes,
            steps,
        ))
    } else {
        Some((
            attr_ints(n, "starts")?,
            attr_ints(n, "ends")?,
            attr_ints(n, "axes"),
            None,
        ))
    }
}

impl Pass for EliminateNopSlice {
    fn name(&self) -> &'static str {
        "eliminate_nop_slice"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Slice nodes that keep every element"
    }
    fn details(&self) -> &'static str {
        "removes a Slice that keeps every element"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |g, ctx, n| {
            if !is_op(n, "Slice") {
                return None;
            }
            let input = n.input.first().filter(|i| !i.is_empty())?;
            let (starts, ends, axes, steps) = params(g, ctx, n)?;
            let rank = ctx.rank(input).map(|r| r as i64);
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let keeps_all = starts.iter().enumerate().all(|(k, &start)| {
                let step = steps.as_ref().map_or(1, |s| s.get(k).copied().unwrap_or(0));
                let axis = axes.get(k).copied().unwrap_or(-1);
                let axis = if axis < 0 {
                    rank.map_or(-1, |r| axis + r)
                } else {
                    axis
                };
                let dim = (axis >= 0)
                    .then(|| {
                        ctx.dims(input)
                            .and_then(|s| s.get(axis as usize).copied().flatten())
                    })
                    .flatten();
                let end = ends.get(k).copied().unwrap_or(0);
                start == 0 && step == 1 && (end >= i32::MAX as i64 || dim.is_some_and(|d| end >= d))
            });
            (keeps_all && starts.len() == ends.len()).then(|| input.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(starts: i64, ends: i64) -> crate::onnx::ModelProto {
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["4", "5"])
            .initializer_i64("starts", &[1], &[starts])
            .initializer_i64("ends", &[1], &[ends])
            .initializer_i64("axes", &[1], &[1])
            .node("Slice", &["x", "starts", "ends", "axes"], &["s"])
            .node("Relu", &["s"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn a_full_slice_goes() {
        for end in [5, i64::MAX] {
            let m = model(0, end);
            let (after, n) = run_pass(&EliminateNopSlice, &m);
            assert_eq!((n, ops(&after)), (1, vec!["Relu".to_string()]));
            assert_eq!(max_difference(&m, &after), 0.0);
        }
    }

    #[test]
    fn a_real_slice_stays() {
        assert_eq!(run_pass(&EliminateNopSlice, &model(1, 5)).1, 0);
        assert_eq!(run_pass(&EliminateNopSlice, &model(0, 4)).1, 0);
    }
}
