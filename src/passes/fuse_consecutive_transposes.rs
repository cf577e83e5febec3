//! `fuse_consecutive_transposes`: composes two `Transpose`s into one (or none).
//!
//! ```text
//! x -> Transpose(p1) -> Transpose(p2) -> y      =>      x -> Transpose(p1∘p2) -> y
//! combined[i] = p1[p2[i]]; an identity result removes both
//! ```
//! Both need explicit `perm`s. The first Transpose stays if something else reads it.
//! Results are bit-identical.

use super::rewrite::{attr_ints, bypass, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct FuseConsecutiveTransposes;

impl Pass for FuseConsecutiveTransposes {
    fn name(&self) -> &'static str {
        "fuse_consecutive_transposes"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "compose consecutive Transpose nodes"
    }
    fn details(&self) -> &'static str {
        "Transpose of a Transpose becomes one (or none)"
    }
    fn run(&self, graph: &mut Graph, _: &mut PassContext) -> Result<usize, PassError> {
        let mut count = 0;
        let mut i = 0;
        while i < graph.nodes().len() {
            let node = graph.nodes()[i].clone();
            let inner = (is_op(&node, "Transpose"))
                .then(|| graph.producer(&node.input[0]).cloned())
                .flatten()
                .filter(|p| is_op(p, "Transpose"));
            let perms = inner.as_ref().and_then(|p| {
                Some((
                    attr_ints(p, "perm")?,
                    attr_ints(&node, "perm")?,
                    p.input[0].clone(),
                ))
            });
            if let Some((p1, p2, x)) = perms
                && p1.len() == p2.len()
                && p2.iter().all(|&k| (k as usize) < p1.len())
            {
                let combined: Vec<i64> = p2.iter().map(|&k| p1[k as usize]).collect();
                if combined.iter().enumerate().all(|(k, &v)| v == k as i64) {
                    if bypass(graph, i, &x)? {
                        count += 1;
                        continue;
                    }
                } else {
                    let n = &mut graph.proto_mut().node[i];
                    n.input[0] = x;
                    n.attribute.retain(|a| a.name() != "perm");
                    n.attribute
                        .push(crate::graph::builder::attr_ints("perm", &combined));
                    count += 1;
                }
            }
            i += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::attr_ints as perm;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, run_pass};

    fn model(p1: &[i64], p2: &[i64]) -> crate::onnx::ModelProto {
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["2", "3", "4"])
            .node("Transpose", &["x"], &["t1"])
            .attr(perm("perm", p1))
            .node("Transpose", &["t1"], &["t2"])
            .attr(perm("perm", p2))
            .node("Relu", &["t2"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn transposes_compose() {
        let m = model(&[1, 0, 2], &[0, 2, 1]);
        let (after, n) = run_pass(&FuseConsecutiveTransposes, &m);
        assert!(n >= 1);
        assert_eq!(max_difference(&m, &after), 0.0);
        let inverse = model(&[1, 2, 0], &[2, 0, 1]);
        let (after, _) = run_pass(&FuseConsecutiveTransposes, &inverse);
        let g = after.graph.as_ref().unwrap();
        assert_eq!(
            g.node.iter().next_back().unwrap().input[0],
            "x",
            "inverse permutations cancel"
        );
        assert_eq!(max_difference(&inverse, &after), 0.0);
    }

    #[test]
    fn transposes_without_perm_stay() {
        let mut m = model(&[1, 0, 2], &[0, 2, 1]);
        m.graph.as_mut().unwrap().node[0].attribute.clear();
        assert_eq!(run_pass(&FuseConsecutiveTransposes, &m).1, 0);
    }
}
