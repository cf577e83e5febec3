//! `eliminate_nop_expand`: removes an `Expand` that broadcasts to the input's own shape.
//!
//! ```text
//! x:[2,3] -> Expand(shape=[1,3]) -> y:[2,3]      =>      x
//! ```
//! Either inference found the output's shape equal to the input's (symbolic dims included), or
//! every dim of a constant target is 1 or equal to the input's dim, with no more dims than the
//! input has. Opsets 8+.

use super::rewrite::{bypass_all, const_i64s, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateNopExpand;

impl Pass for EliminateNopExpand {
    fn name(&self) -> &'static str {
        "eliminate_nop_expand"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Expand nodes that broadcast to the shape the value already has"
    }
    fn details(&self) -> &'static str {
        "removes an Expand to the value's own shape (symbolic dims included)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |g, ctx, n| {
            if !is_op(n, "Expand") || n.input.len() < 2 {
                return None;
            }
            let input = &n.input[0];
            if ctx.same_shape(input, n.output.first()?) {
                return Some(input.clone());
            }
            let target = const_i64s(g, ctx, &n.input[1])?;
            let dims = ctx.dims(input)?;
            if target.len() > dims.len() {
                return None;
            }
            let offset = dims.len() - target.len();
            let nop = target
                .iter()
                .enumerate()
                .all(|(k, &t)| t == 1 || dims[offset + k] == Some(t));
            nop.then(|| input.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(shape: &[i64]) -> crate::onnx::ModelProto {
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["2", "3"])
            .initializer_i64("shape", &[shape.len() as i64], shape)
            .node("Expand", &["x", "shape"], &["e"])
            .node("Relu", &["e"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn an_expand_to_the_same_shape_goes() {
        for shape in [vec![1, 3], vec![2, 3], vec![1]] {
            let m = model(&shape);
            let (after, n) = run_pass(&EliminateNopExpand, &m);
            assert_eq!((n, ops(&after)), (1, vec!["Relu".to_string()]), "{shape:?}");
            assert_eq!(max_difference(&m, &after), 0.0);
        }
    }

    #[test]
    fn a_real_expand_stays() {
        assert_eq!(run_pass(&EliminateNopExpand, &model(&[4, 2, 3])).1, 0);
        assert_eq!(run_pass(&EliminateNopExpand, &model(&[1, 1, 3])).1, 0);
    }
}
