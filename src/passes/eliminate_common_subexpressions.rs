//! `eliminate_common_subexpressions`: computes identical nodes once.
//!
//! ```text
//! a = Relu(x); b = Relu(x); y = Add(a, b)     =>     a = Relu(x); y = Add(a, a)
//! ```
//! Two nodes are the same when op, domain, inputs and attributes match byte for byte. Random ops,
//! nodes with subgraphs, and nodes whose outputs are graph outputs are never merged away.
//! Results are bit-identical.

use std::collections::HashMap;

use prost::Message;

use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::{Graph, subgraphs};

pub struct EliminateCommonSubexpressions;

const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

impl Pass for EliminateCommonSubexpressions {
    fn name(&self) -> &'static str {
        "eliminate_common_subexpressions"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "compute identical nodes (same op, inputs and attributes) once"
    }
    fn details(&self) -> &'static str {
        "identical nodes (op, inputs, attributes) compute once; never random ops"
    }
    fn run(&self, graph: &mut Graph, _: &mut PassContext) -> Result<usize, PassError> {
        let order = graph.topological_order().map_err(|e| PassError::Broke {
            pass: "eliminate_common_subexpressions",
            error: e,
        })?;
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut doomed = Vec::new();
        for i in order {
            let node = &graph.nodes()[i];
            if NONDETERMINISTIC.contains(&node.op_type())
                || subgraphs(node).next().is_some()
                || node.output.is_empty()
            {
                continue;
            }
            let mut key = node.clone();
            key.name = None;
            key.doc_string = None;
            key.output.clear();
            key.metadata_props.clear();
            let key = key.encode_to_vec();
            let Some(&kept) = seen.get(&key) else {
                seen.insert(key, i);
                continue;
            };
            let outputs = graph.nodes()[i].output.clone();
            if outputs.iter().any(|o| graph.is_output(o))
                || graph.nodes()[kept].output.len() != outputs.len()
            {
                continue;
            }
            let kept_outputs = graph.nodes()[kept].output.clone();
            for (from, to) in outputs.iter().zip(&kept_outputs) {
                if !from.is_empty() && !to.is_empty() {
                    graph.replace_all_uses(from, to);
                }
            }
            doomed.push(i);
        }
        graph.remove_nodes(&doomed);
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    #[test]
    fn twin_nodes_merge() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2"])
            .node("Relu", &["x"], &["a"])
            .node("Relu", &["x"], &["b"])
            .node("Add", &["a", "b"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        let (after, n) = run_pass(&EliminateCommonSubexpressions, &m);
        assert_eq!(
            (n, ops(&after)),
            (1, vec!["Relu".to_string(), "Add".to_string()])
        );
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn random_nodes_and_graph_outputs_are_kept() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2"])
            .node("RandomUniformLike", &["x"], &["r1"])
            .node("RandomUniformLike", &["x"], &["r2"])
            .node("Relu", &["x"], &["y1"])
            .node("Relu", &["x"], &["y2"])
            .output("r1", DataType::Float, &["2"])
            .output("r2", DataType::Float, &["2"])
            .output("y1", DataType::Float, &["2"])
            .output("y2", DataType::Float, &["2"])
            .build();
        assert_eq!(run_pass(&EliminateCommonSubexpressions, &m).1, 0);
    }
}
