//! `fold_reshape_targets`: replaces a `Reshape` target computed at run time by a constant one,
//! where inference knows every element as a number or as a dim of the input.
//!
//! ```text
//! x:[N,200,1,1] -> Shape -> Slice[0:1] -> Concat(.., [200]) -> t      Reshape(x, t)
//!     =>      Reshape(x, [0, 200])
//! ```
//! An element that is a number stays; one equal to the input's dim at the same position becomes
//! 0 (copy that dim); at most one other element, a symbolic size, becomes -1 (Reshape computes
//! it from the total, and it can be nothing else). The shape chain is left to
//! `eliminate_dead_nodes`. Refuses `allowzero` (0 would then be a real zero) and targets with a
//! second unknown element. Opsets 5+ (target as an input). Results are bit-identical.

use super::rewrite::{attr_i, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::onnx::proto::NodeProto;

pub struct FoldReshapeTargets;

/// The constant target equivalent to the inferred one, if there is one.
fn constant_target(graph: &Graph, ctx: &PassContext, n: &NodeProto) -> Option<Vec<i64>> {
    if !is_op(n, "Reshape") || n.input.len() != 2 || attr_i(n, "allowzero", 0) != 0 {
        return None;
    }
    if graph.constant(&n.input[1]).is_some() {
        return None;
    }
    let values = ctx.facts.value(&n.input[1])?;
    let input = ctx.facts.shape(&n.input[0]);
    let mut free = values.iter().filter(|v| v.as_const() == Some(-1)).count();
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        match v.as_const() {
            Some(c) => out.push(c),
            None if input.and_then(|s| s.get(i)) == Some(v) => out.push(0),
            None if v.is_size() && free == 0 => {
                free = 1;
                out.push(-1);
            }
            None => return None,
        }
    }
    Some(out)
}

impl Pass for FoldReshapeTargets {
    fn name(&self) -> &'static str {
        "fold_reshape_targets"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fold
    }
    fn description(&self) -> &'static str {
        "replace Reshape targets computed from shapes by constants (0 copies a dim, -1 the rest)"
    }
    fn details(&self) -> &'static str {
        "a Reshape target computed from shapes becomes a constant where inference knows it: 0 \
         for a dim copied from the input, -1 for the one remaining symbolic size (`Reshape(x, \
         Concat(Shape(x)[0:1], [200]))` is `Reshape(x, [0, 200])`)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        let mut count = 0;
        for i in 0..graph.nodes().len() {
            let Some(target) = constant_target(graph, ctx, &graph.nodes()[i]) else {
                continue;
            };
            let tensor = crate::graph::builder::tensor_i64("", &[target.len() as i64], &target);
            let name = graph.add_initializer("reshape_target", tensor);
            graph.proto_mut().node[i].input[1] = name;
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::attr_int;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    /// Reshape(x, Concat(Shape(x)[0:1], [tail])): a flatten written as a shape chain.
    fn flatten(dims: &[&str], tail: &[i64], allowzero: i64) -> crate::onnx::ModelProto {
        ModelBuilder::new(14)
            .input("x", DataType::Float, dims)
            .node("Shape", &["x"], &["s"])
            .initializer_i64("zero", &[1], &[0])
            .initializer_i64("one", &[1], &[1])
            .node("Slice", &["s", "zero", "one"], &["n"])
            .initializer_i64("tail", &[tail.len() as i64], tail)
            .node("Concat", &["n", "tail"], &["t"])
            .attr(attr_int("axis", 0))
            .node("Reshape", &["x", "t"], &["y"])
            .attr(attr_int("allowzero", allowzero))
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn a_shape_chain_target_becomes_a_constant() {
        let m = flatten(&["N", "6", "1", "1"], &[6], 0);
        let (after, n) = run_pass(&FoldReshapeTargets, &m);
        assert_eq!(n, 1);
        let g = after.graph.as_ref().unwrap();
        let reshape = g.node.iter().find(|n| n.op_type() == "Reshape").unwrap();
        let t = g
            .initializer
            .iter()
            .find(|t| t.name() == reshape.input[1])
            .unwrap();
        assert_eq!(
            t.raw_data.as_deref(),
            Some(
                &[0u8; 8]
                    .iter()
                    .chain(&6i64.to_le_bytes())
                    .copied()
                    .collect::<Vec<u8>>()[..]
            )
        );
        assert_eq!(max_difference(&m, &after), 0.0);
        // the chain is dead now; eliminate_dead_nodes removes it
        assert_eq!(ops(&after).iter().filter(|o| *o == "Reshape").count(), 1);
    }

    #[test]
    fn a_symbolic_element_that_is_no_input_dim_becomes_minus_one() {
        // [N, 4] -> [N*4 / 2, 2]: the first element is 2*N, not the input's first dim
        let m = ModelBuilder::new(14)
            .input("x", DataType::Float, &["N", "4"])
            .node("Shape", &["x"], &["s"])
            .initializer_i64("zero", &[], &[0])
            .node("Gather", &["s", "zero"], &["n"])
            .initializer_i64("two", &[], &[2])
            .node("Mul", &["n", "two"], &["n2"])
            .initializer_i64("axes", &[1], &[0])
            .node("Unsqueeze", &["n2", "axes"], &["n2v"])
            .initializer_i64("tail", &[1], &[2])
            .node("Concat", &["n2v", "tail"], &["t"])
            .attr(attr_int("axis", 0))
            .node("Reshape", &["x", "t"], &["y"])
            .output("y", DataType::Float, &[])
            .build();
        let (after, n) = run_pass(&FoldReshapeTargets, &m);
        assert_eq!(n, 1);
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn allowzero_and_unknown_elements_are_left_alone() {
        assert_eq!(
            run_pass(
                &FoldReshapeTargets,
                &flatten(&["N", "6", "1", "1"], &[6], 1)
            )
            .1,
            0
        );
        // a target read from a graph input is not known
        let m = ModelBuilder::new(14)
            .input("x", DataType::Float, &["N", "6"])
            .input("t", DataType::Int64, &["2"])
            .node("Reshape", &["x", "t"], &["y"])
            .output("y", DataType::Float, &[])
            .build();
        assert_eq!(run_pass(&FoldReshapeTargets, &m).1, 0);
    }
}
