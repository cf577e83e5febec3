//! `eliminate_nop_where`: removes a `Where` whose condition is a constant that picks one side
//! everywhere.
//!
//! ```text
//! Where(cond=[true, true], x, y) -> z      =>      x
//! ```
//! The condition must be a constant with every element equal, and the side it picks must already
//! have the output's shape (inferred; a side that Where would broadcast stays). Opsets 9+.
//! Results are bit-identical.

use super::rewrite::{bypass_all, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateNopWhere;

impl Pass for EliminateNopWhere {
    fn name(&self) -> &'static str {
        "eliminate_nop_where"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Where nodes whose constant condition picks one side everywhere"
    }
    fn details(&self) -> &'static str {
        "removes a Where whose constant condition picks one side everywhere, when that side \
         already has the output's shape"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |g, ctx, n| {
            if !is_op(n, "Where") || n.input.len() != 3 {
                return None;
            }
            let cond = g.constant(&n.input[0])?;
            let values = ctx.tensor_data(&cond).ok()?.to_f64_lossy()?;
            let first = *values.first()?;
            if values.iter().any(|&v| v != first) {
                return None;
            }
            let side = if first != 0.0 {
                &n.input[1]
            } else {
                &n.input[2]
            };
            ctx.same_shape(side, n.output.first()?)
                .then(|| side.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::raw_tensor;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(cond: &[u8], y_dims: &[&str]) -> crate::onnx::ModelProto {
        ModelBuilder::new(14)
            .input("x", DataType::Float, &["N", "3"])
            .input("y", DataType::Float, y_dims)
            .initializer(raw_tensor(
                "c",
                DataType::Bool,
                &[cond.len() as i64],
                cond.to_vec(),
            ))
            .node("Where", &["c", "x", "y"], &["z"])
            .node("Relu", &["z"], &["out"])
            .output("out", DataType::Float, &[])
            .build()
    }

    #[test]
    fn an_all_true_condition_passes_x_through() {
        let m = model(&[1, 1, 1], &["N", "3"]);
        let (after, n) = run_pass(&EliminateNopWhere, &m);
        assert_eq!(n, 1);
        assert_eq!(ops(&after), ["Relu"]);
        assert_eq!(after.graph.as_ref().unwrap().node[0].input[0], "x");
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn mixed_conditions_and_broadcasting_sides_stay() {
        assert_eq!(
            run_pass(&EliminateNopWhere, &model(&[1, 0, 1], &["N", "3"])).1,
            0
        );
        // all false picks y, which Where broadcasts from [3] to [N, 3]
        assert_eq!(
            run_pass(&EliminateNopWhere, &model(&[0, 0, 0], &["3"])).1,
            0
        );
    }
}
