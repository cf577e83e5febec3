//! `eliminate_dead_nodes`: removes nodes whose outputs reach no graph output.
//!
//! ```text
//! x -> A -> y (output)         x -> A -> y (output)
//!   \-> B -> unused       =>
//! ```
//! Reads from subgraphs (If/Loop/Scan bodies capturing outer values) count as uses. ONNX ops have
//! no side effects, so nothing else keeps a node alive. Results are bit-identical.

use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateDeadNodes;

impl Pass for EliminateDeadNodes {
    fn name(&self) -> &'static str {
        "eliminate_dead_nodes"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove nodes that contribute to no graph output"
    }
    fn details(&self) -> &'static str {
        "removes nodes that reach no graph output (subgraph reads count as uses)"
    }
    fn run(&self, graph: &mut Graph, _: &mut PassContext) -> Result<usize, PassError> {
        let dead = graph.dead_nodes();
        graph.remove_nodes(&dead);
        Ok(dead.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    #[test]
    fn dead_chains_go_live_ones_stay() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2"])
            .node("Relu", &["x"], &["y"])
            .node("Neg", &["x"], &["d1"])
            .node("Abs", &["d1"], &["d2"])
            .output("y", DataType::Float, &["2"])
            .build();
        let (after, n) = run_pass(&EliminateDeadNodes, &m);
        assert_eq!((n, ops(&after)), (2, vec!["Relu".to_string()]));
        assert_eq!(max_difference(&m, &after), 0.0);
    }
}
