//! `eliminate_nop_concat`: removes a `Concat` of a single input.
//!
//! ```text
//! x -> Concat(axis=k) -> y      =>      x
//! ```
//! All opsets. Results are bit-identical.

use super::rewrite::{bypass_all, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateNopConcat;

impl Pass for EliminateNopConcat {
    fn name(&self) -> &'static str {
        "eliminate_nop_concat"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Concat nodes of a single input"
    }
    fn details(&self) -> &'static str {
        "removes a Concat of a single input"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |_, _, n| {
            let inputs: Vec<&String> = n.input.iter().filter(|i| !i.is_empty()).collect();
            (is_op(n, "Concat") && inputs.len() == 1).then(|| inputs[0].clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::attr_int;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    #[test]
    fn a_concat_of_one_input_goes() {
        let m = ModelBuilder::new(14)
            .input("x", DataType::Float, &["2", "3"])
            .node("Concat", &["x"], &["c"])
            .attr(attr_int("axis", 1))
            .node("Relu", &["c"], &["y"])
            .output("y", DataType::Float, &[])
            .build();
        let (after, n) = run_pass(&EliminateNopConcat, &m);
        assert_eq!(n, 1);
        assert_eq!(ops(&after), ["Relu"]);
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn a_concat_of_two_stays() {
        let m = ModelBuilder::new(14)
            .input("x", DataType::Float, &["2", "3"])
            .node("Concat", &["x", "x"], &["y"])
            .attr(attr_int("axis", 1))
            .output("y", DataType::Float, &[])
            .build();
        assert_eq!(run_pass(&EliminateNopConcat, &m).1, 0);
    }
}
