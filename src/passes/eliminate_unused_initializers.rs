//! `eliminate_unused_initializers`: removes initializers nothing reads.
//!
//! An initializer read by a node, a subgraph, or named as a graph output stays; so does one that
//! is also a graph input (IR < 4 style), since removing it would make that input required.
//! Results are bit-identical.

use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct EliminateUnusedInitializers;

impl Pass for EliminateUnusedInitializers {
    fn name(&self) -> &'static str {
        "eliminate_unused_initializers"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "remove initializers nothing reads"
    }
    fn details(&self) -> &'static str {
        "removes initializers nothing reads (not those that are also graph inputs)"
    }
    fn run(&self, graph: &mut Graph, _: &mut PassContext) -> Result<usize, PassError> {
        let unused: Vec<String> = graph
            .unused_initializers()
            .into_iter()
            .filter(|n| !graph.is_input(n))
            .collect();
        if unused.is_empty() {
            return Ok(0);
        }
        graph
            .proto_mut()
            .initializer
            .retain(|t| !unused.iter().any(|u| u == t.name()));
        Ok(unused.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::run_pass;

    #[test]
    fn unread_initializers_go() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2"])
            .initializer_f32("w", &[2], &[1.0, 2.0])
            .initializer_f32("unused", &[2], &[3.0, 4.0])
            .node("Mul", &["x", "w"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        let (after, n) = run_pass(&EliminateUnusedInitializers, &m);
        assert_eq!(n, 1);
        let names: Vec<_> = after
            .graph
            .unwrap()
            .initializer
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        assert_eq!(names, ["w"]);
    }

    #[test]
    fn an_initializer_that_is_also_an_input_stays() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2"])
            .input("bias", DataType::Float, &["2"])
            .initializer_f32("bias", &[2], &[0.0, 0.0])
            .node("Relu", &["x"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        assert_eq!(run_pass(&EliminateUnusedInitializers, &m).1, 0);
    }
}
