//! `dedupe_initializers`: makes initializers with the same type, shape and bytes one.
//!
//! ```text
//! w1 = [1,2,3], w2 = [1,2,3]: A(x, w1), B(y, w2)   =>   A(x, w1), B(y, w1)
//! ```
//! The later copies' readers read the first; the copies become unused. Initializers that are graph
//! inputs or outputs are left alone. Results are bit-identical.

use std::collections::BTreeMap;

use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::onnx::proto::TensorProto;

pub struct DedupeInitializers;

impl Pass for DedupeInitializers {
    fn name(&self) -> &'static str {
        "dedupe_initializers"
    }
    fn kind(&self) -> PassKind {
        PassKind::Cleanup
    }
    fn description(&self) -> &'static str {
        "merge initializers with identical type, shape and bytes"
    }
    fn details(&self) -> &'static str {
        "initializers with the same type, shape and bytes become one"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        // only tensors of one type and shape can be equal: bytes are read and compared within
        // such groups alone (a model of distinct weights reads none of them)
        let mut groups: BTreeMap<(i32, Vec<i64>), Vec<&TensorProto>> = BTreeMap::new();
        for t in &graph.proto().initializer {
            let name = t.name();
            if graph.is_input(name) || graph.is_output(name) || graph.consumers(name).is_empty() {
                continue;
            }
            groups
                .entry((t.data_type(), t.dims.clone()))
                .or_default()
                .push(t);
        }
        let mut renames: Vec<(String, String)> = Vec::new();
        for tensors in groups.values().filter(|g| g.len() > 1) {
            let mut kept: Vec<(&str, bytes::Bytes)> = Vec::new();
            for t in tensors {
                let Ok(raw) = ctx.tensor_data(t).and_then(|d| d.to_raw()) else {
                    continue;
                };
                match kept.iter().find(|(_, b)| *b == raw) {
                    Some((first, _)) => renames.push((t.name().to_string(), first.to_string())),
                    None => kept.push((t.name(), raw)),
                }
            }
        }
        for (from, to) in &renames {
            graph.replace_all_uses(from, to);
        }
        Ok(renames.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, run_pass};

    #[test]
    fn identical_weights_are_shared() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2"])
            .initializer_f32("a", &[2], &[1.0, 2.0])
            .initializer_f32("b", &[2], &[1.0, 2.0])
            .initializer_f32("c", &[2], &[1.0, 3.0])
            .node("Mul", &["x", "a"], &["p"])
            .node("Mul", &["p", "b"], &["q"])
            .node("Mul", &["q", "c"], &["y"])
            .output("y", DataType::Float, &["2"])
            .build();
        let (after, n) = run_pass(&DedupeInitializers, &m);
        assert_eq!(n, 1);
        let g = after.graph.as_ref().unwrap();
        assert_eq!(g.node[1].input[1], "a");
        assert_eq!(g.node[2].input[1], "c");
        assert_eq!(max_difference(&m, &after), 0.0);
    }
}
