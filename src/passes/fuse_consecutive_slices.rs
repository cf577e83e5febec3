//! `fuse_consecutive_slices`: a `Slice` of a `Slice` becomes one `Slice`.
//!
//! ```text
//! x -> Slice(axes=[1], 0:129) -> Slice(axes=[2], 1:INT_MAX) -> y
//!     =>      x -> Slice(axes=[1, 2], starts=[0, 1], ends=[129, INT_MAX]) -> y
//! ```
//! Slices along different axes (any steps) combine by listing both; slices along the same axis
//! combine when both have step 1 and non-negative starts and ends: `x[a:b][c:d]` is
//! `x[a+c : min(b, a+d)]`, clamping included. Parameters must be constant inputs (opsets 10+),
//! negative axes need a known rank, and the first Slice stays if something else reads it.
//! Results are bit-identical.

use std::collections::BTreeMap;

use super::eliminate_nop_slice::params;
use super::rewrite::{is_op, sole_consumer};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::onnx::proto::{NodeProto, TensorProto};

pub struct FuseConsecutiveSlices;

/// Axis to (start, end, step) of one Slice, axes normalised; `None` if a negative axis cannot
/// be normalised or an axis repeats.
fn by_axis(g: &Graph, ctx: &PassContext, n: &NodeProto) -> Option<BTreeMap<i64, (i64, i64, i64)>> {
    if n.input.len() < 3 {
        return None; // attribute form (opsets before 10)
    }
    let (starts, ends, axes, steps) = params(g, ctx, n)?;
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return None;
    }
    let rank = ctx.rank(&n.input[0]).map(|r| r as i64);
    let mut out = BTreeMap::new();
    for k in 0..starts.len() {
        let a = if axes[k] < 0 {
            axes[k] + rank?
        } else {
            axes[k]
        };
        if out.insert(a, (starts[k], ends[k], steps[k])).is_some() {
            return None;
        }
    }
    Some(out)
}

/// One Slice doing what `inner` then `outer` do, as axis to (start, end, step).
fn combine(
    inner: BTreeMap<i64, (i64, i64, i64)>,
    outer: BTreeMap<i64, (i64, i64, i64)>,
) -> Option<BTreeMap<i64, (i64, i64, i64)>> {
    let mut out = inner;
    for (axis, (c, d, step)) in outer {
        match out.get(&axis).copied() {
            None => {
                out.insert(axis, (c, d, step));
            }
            Some((a, b, 1)) if step == 1 && a >= 0 && b >= 0 && c >= 0 && d >= 0 => {
                let start = a.checked_add(c)?;
                let end = b.min(a.saturating_add(d));
                out.insert(axis, (start, end, 1));
            }
            Some(_) => return None,
        }
    }
    Some(out)
}

/// A 1-D INT64 constant (the builder's, as tests make them).
fn i64_tensor(values: &[i64]) -> TensorProto {
    crate::graph::builder::tensor_i64("", &[values.len() as i64], values)
}

impl Pass for FuseConsecutiveSlices {
    fn name(&self) -> &'static str {
        "fuse_consecutive_slices"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "merge a Slice of a Slice into one Slice"
    }
    fn details(&self) -> &'static str {
        "Slice of a Slice becomes one (different axes; or one axis, step 1, non-negative \
         bounds)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        let mut count = 0;
        for i in 0..graph.nodes().len() {
            let outer = graph.nodes()[i].clone();
            if !is_op(&outer, "Slice") || outer.input.len() < 3 {
                continue;
            }
            let Some(inner) = graph
                .producer(&outer.input[0])
                .filter(|p| is_op(p, "Slice"))
                .cloned()
            else {
                continue;
            };
            if sole_consumer(graph, &outer.input[0]).is_none() {
                continue;
            }
            let (Some(a), Some(b)) = (by_axis(graph, ctx, &inner), by_axis(graph, ctx, &outer))
            else {
                continue;
            };
            let Some(merged) = combine(a, b) else {
                continue;
            };
            let axes: Vec<i64> = merged.keys().copied().collect();
            let column =
                |f: fn(&(i64, i64, i64)) -> i64| merged.values().map(f).collect::<Vec<_>>();
            let names = [
                graph.add_initializer("slice_starts", i64_tensor(&column(|p| p.0))),
                graph.add_initializer("slice_ends", i64_tensor(&column(|p| p.1))),
                graph.add_initializer("slice_axes", i64_tensor(&axes)),
                graph.add_initializer("slice_steps", i64_tensor(&column(|p| p.2))),
            ];
            let node = &mut graph.proto_mut().node[i];
            node.input = std::iter::once(inner.input[0].clone())
                .chain(names)
                .collect();
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(first: [i64; 3], second: [i64; 3]) -> crate::onnx::ModelProto {
        // [start, end, axis] of each slice, step 1
        ModelBuilder::new(14)
            .input("x", DataType::Float, &["4", "10", "12"])
            .initializer_i64("s1", &[1], &[first[0]])
            .initializer_i64("e1", &[1], &[first[1]])
            .initializer_i64("a1", &[1], &[first[2]])
            .initializer_i64("s2", &[1], &[second[0]])
            .initializer_i64("e2", &[1], &[second[1]])
            .initializer_i64("a2", &[1], &[second[2]])
            .node("Slice", &["x", "s1", "e1", "a1"], &["t"])
            .node("Slice", &["t", "s2", "e2", "a2"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn slices_along_different_axes_merge() {
        let m = model([0, 7, 1], [1, i64::MAX, -1]);
        let (after, n) = run_pass(&FuseConsecutiveSlices, &m);
        assert_eq!(n, 1);
        assert_eq!(ops(&after).iter().filter(|o| *o == "Slice").count(), 2); // one dead
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn slices_along_one_axis_compose_with_clamping() {
        for (first, second) in [
            ([2, 9, 1], [1, 5, 1]),
            ([2, 9, 1], [3, 100, 1]),
            ([8, 100, 1], [5, 7, 1]),
        ] {
            let m = model(first, second);
            let (after, n) = run_pass(&FuseConsecutiveSlices, &m);
            assert_eq!(n, 1, "{first:?} {second:?}");
            assert_eq!(max_difference(&m, &after), 0.0, "{first:?} {second:?}");
        }
    }

    #[test]
    fn negative_bounds_on_one_axis_are_left_alone() {
        assert_eq!(
            run_pass(&FuseConsecutiveSlices, &model([0, -1, 1], [1, 5, 1])).1,
            0
        );
    }
}
