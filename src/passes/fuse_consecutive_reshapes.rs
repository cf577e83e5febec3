//! `fuse_consecutive_reshapes`: a `Reshape` of a `Reshape` reshapes the original directly.
//!
//! ```text
//! x -> Reshape(s1) -> Reshape(s2) -> y      =>      x -> Reshape(s2) -> y
//! ```
//! `s2` must be constant without 0 entries (a 0 copies a dim of the intermediate shape, which
//! differs from x's) unless `allowzero` is set. The first Reshape stays if something else reads
//! it. Results are bit-identical.

use super::rewrite::{attr_i, const_i64s, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct FuseConsecutiveReshapes;

impl Pass for FuseConsecutiveReshapes {
    fn name(&self) -> &'static str {
        "fuse_consecutive_reshapes"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "reshape the original value directly instead of a reshaped one"
    }
    fn details(&self) -> &'static str {
        "Reshape of a Reshape reshapes the original (not with 0 in the target)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        let mut count = 0;
        for i in 0..graph.nodes().len() {
            let node = graph.nodes()[i].clone();
            if !is_op(&node, "Reshape") || node.input.len() != 2 {
                continue;
            }
            let Some(inner) = graph
                .producer(&node.input[0])
                .filter(|p| is_op(p, "Reshape"))
                .cloned()
            else {
                continue;
            };
            let Some(target) = const_i64s(graph, ctx, &node.input[1]) else {
                continue;
            };
            if target.contains(&0) && attr_i(&node, "allowzero", 0) == 0 {
                continue;
            }
            graph.proto_mut().node[i].input[0] = inner.input[0].clone();
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

    fn model(s2: &[i64]) -> crate::onnx::ModelProto {
        ModelBuilder::new(14)
            .input("x", DataType::Float, &["2", "3", "4"])
            .initializer_i64("s1", &[2], &[6, 4])
            .initializer_i64("s2", &[s2.len() as i64], s2)
            .node("Reshape", &["x", "s1"], &["r1"])
            .node("Reshape", &["r1", "s2"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn the_second_reshape_reads_the_original() {
        let m = model(&[4, -1]);
        let (after, n) = run_pass(&FuseConsecutiveReshapes, &m);
        assert_eq!(n, 1);
        assert_eq!(after.graph.as_ref().unwrap().node[1].input[0], "x");
        assert_eq!(max_difference(&m, &after), 0.0);
        // the orphaned first Reshape is eliminate_dead_nodes' business
        assert_eq!(ops(&after).len(), 2);
    }

    #[test]
    fn a_zero_in_the_target_blocks_it() {
        assert_eq!(run_pass(&FuseConsecutiveReshapes, &model(&[0, -1])).1, 0);
    }
}
