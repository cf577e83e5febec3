//! `fuse_consecutive_squeezes`: two `Squeeze`s become one.
//!
//! ```text
//! x:[1,3,1,4] -> Squeeze([0]) -> [3,1,4] -> Squeeze([1]) -> [3,4]      =>      Squeeze([0,2])
//! ```
//! The second node's axes are positions in the intermediate shape, mapped back to the input's
//! positions. Needs explicit constant axes (a Squeeze without axes depends on the data's shape)
//! and the input's rank. Opsets 1-12 (attribute) and 13+ (input). Results are bit-identical.

use super::rewrite::{axes_of, is_op, set_axes};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct FuseConsecutiveSqueezes;

/// Axes of one Squeeze equal to Squeeze(s1) then Squeeze(s2) on an input of rank `r`.
pub fn combine(s1: &[i64], s2: &[i64], r: i64) -> Option<Vec<i64>> {
    let norm = |axes: &[i64], rank: i64| -> Option<Vec<i64>> {
        let mut v: Vec<i64> = axes
            .iter()
            .map(|&a| if a < 0 { a + rank } else { a })
            .collect();
        v.sort();
        (v.iter().all(|&a| (0..rank).contains(&a)) && v.windows(2).all(|w| w[0] < w[1]))
            .then_some(v)
    };
    let s1 = norm(s1, r)?;
    let s2 = norm(s2, r - s1.len() as i64)?;
    let remaining: Vec<i64> = (0..r).filter(|p| !s1.contains(p)).collect();
    let mut all: Vec<i64> = s1
        .iter()
        .copied()
        .chain(s2.iter().map(|&p| remaining[p as usize]))
        .collect();
    all.sort();
    Some(all)
}

impl Pass for FuseConsecutiveSqueezes {
    fn name(&self) -> &'static str {
        "fuse_consecutive_squeezes"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "merge consecutive Squeeze nodes"
    }
    fn details(&self) -> &'static str {
        "two Squeezes with constant axes become one"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        Ok(merge_pairs(graph, ctx, "Squeeze", combine))
    }
}

/// Combines (inner axes, outer axes, rank of the inner input) into one node's axes.
type CombineAxes = fn(&[i64], &[i64], i64) -> Option<Vec<i64>>;

/// Makes every `op` node whose input comes from another `op` node read that node's input, with
/// the axes `combine` makes of (inner axes, outer axes, rank of the inner input).
pub fn merge_pairs(graph: &mut Graph, ctx: &PassContext, op: &str, combine: CombineAxes) -> usize {
    let mut count = 0;
    for i in 0..graph.nodes().len() {
        let node = graph.nodes()[i].clone();
        if !is_op(&node, op) {
            continue;
        }
        let Some(inner) = graph
            .producer(&node.input[0])
            .filter(|p| is_op(p, op))
            .cloned()
        else {
            continue;
        };
        let (Some(a1), Some(a2)) = (axes_of(graph, ctx, &inner), axes_of(graph, ctx, &node)) else {
            continue;
        };
        let Some(rank) = ctx.rank(&inner.input[0]).map(|r| r as i64) else {
            continue;
        };
        let Some(all) = combine(&a1, &a2, rank) else {
            continue;
        };
        graph.proto_mut().node[i].input[0] = inner.input[0].clone();
        set_axes(graph, i, &all);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, run_pass};

    #[test]
    fn axes_combine_like_two_squeezes() {
        assert_eq!(combine(&[0], &[1], 4), Some(vec![0, 2]));
        assert_eq!(combine(&[2], &[0], 4), Some(vec![0, 2]));
        assert_eq!(combine(&[-1], &[-1], 3), Some(vec![1, 2]));
    }

    #[test]
    fn squeezes_merge() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["1", "3", "1", "4"])
            .initializer_i64("s1", &[1], &[0])
            .initializer_i64("s2", &[1], &[1])
            .node("Squeeze", &["x", "s1"], &["q1"])
            .node("Squeeze", &["q1", "s2"], &["y"])
            .output("y", DataType::Float, &[])
            .build();
        let (after, n) = run_pass(&FuseConsecutiveSqueezes, &m);
        assert_eq!(n, 1);
        assert_eq!(after.graph.as_ref().unwrap().node[1].input[0], "x");
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn a_squeeze_without_axes_blocks_it() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["1", "3", "1", "4"])
            .initializer_i64("s2", &[1], &[1])
            .node("Squeeze", &["x"], &["q1"])
            .node("Squeeze", &["q1", "s2"], &["y"])
            .output("y", DataType::Float, &[])
            .build();
        assert_eq!(run_pass(&FuseConsecutiveSqueezes, &m).1, 0);
    }
}
