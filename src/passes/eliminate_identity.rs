//! `eliminate_identity`: removes `Identity` nodes.
//!
//! ```text
//! x -> Identity -> y -> Op      =>      x -> Op
//! ```
//! Readers of `y` read `x`. When `y` is a graph output its name must stay, so the producer of `x`
//! is renamed to `y` instead; when `x` is a graph input or initializer, such an Identity stays.
//! All opsets. Results are bit-identical.

use super::rewrite::{bypass_all, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateIdentity;

impl Pass for EliminateIdentity {
    fn name(&self) -> &'static str {
        "eliminate_identity"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove Identity nodes"
    }
    fn details(&self) -> &'static str {
        "removes Identity nodes (renaming the producer when the output is a graph output)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        bypass_all(graph, ctx, |_, _, n| {
            (is_op(n, "Identity") && n.input.first().is_some_and(|i| !i.is_empty()))
                .then(|| n.input[0].clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    #[test]
    fn identities_go_and_numbers_stay() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2", "3"])
            .node("Relu", &["x"], &["a"])
            .node("Identity", &["a"], &["b"])
            .node("Identity", &["b"], &["c"])
            .node("Neg", &["c"], &["y"])
            .output("y", DataType::Float, &["2", "3"])
            .build();
        let (after, n) = run_pass(&EliminateIdentity, &m);
        assert_eq!(n, 2);
        assert_eq!(ops(&after), ["Relu", "Neg"]);
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn an_identity_producing_a_graph_output_renames_its_producer() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2"])
            .node("Relu", &["x"], &["a"])
            .node("Identity", &["a"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        let (after, n) = run_pass(&EliminateIdentity, &m);
        assert_eq!(n, 1);
        let g = after.graph.as_ref().unwrap();
        assert_eq!(g.node[0].output[0], "y");
        assert_eq!(g.output[0].name(), "y");
    }

    #[test]
    fn an_identity_from_a_graph_input_to_a_graph_output_stays() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2"])
            .node("Identity", &["x"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        assert_eq!(run_pass(&EliminateIdentity, &m).1, 0);
    }
}
