//! `fuse_transpose_into_gemm`: a 2-D `Transpose` feeding `Gemm`'s A or B flips `transA`/`transB`.
//!
//! ```text
//! B -> Transpose(perm=[1,0]) -> Gemm(A, Bt)      =>      Gemm(A, B, transB = !transB)
//! ```
//! The Transpose stays if something else reads it. All Gemm opsets. Results are bit-identical.

use super::rewrite::{attr_i, attr_ints, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::graph::builder::attr_int;

pub struct FuseTransposeIntoGemm;

impl Pass for FuseTransposeIntoGemm {
    fn name(&self) -> &'static str {
        "fuse_transpose_into_gemm"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "absorb a 2-D Transpose of Gemm's A or B into transA/transB"
    }
    fn details(&self) -> &'static str {
        "a Transpose of Gemm's A or B becomes transA/transB"
    }
    fn run(&self, graph: &mut Graph, _: &mut PassContext) -> Result<usize, PassError> {
        let mut count = 0;
        for i in 0..graph.nodes().len() {
            for (slot, flag) in [(0usize, "transA"), (1, "transB")] {
                let node = graph.nodes()[i].clone();
                if !is_op(&node, "Gemm") || node.input.len() <= slot {
                    continue;
                }
                let Some(t) = graph.producer(&node.input[slot]).cloned() else {
                    continue;
                };
                if !is_op(&t, "Transpose") || attr_ints(&t, "perm").is_some_and(|p| p != [1, 0]) {
                    continue;
                }
                // without perm a Transpose reverses the axes: [1,0] for the 2-D inputs Gemm takes
                let flipped = 1 - attr_i(&node, flag, 0);
                let n = &mut graph.proto_mut().node[i];
                n.input[slot] = t.input[0].clone();
                n.attribute.retain(|a| a.name() != flag);
                n.attribute.push(attr_int(flag, flipped));
                count += 1;
            }
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

    fn model(p: &[i64], trans_b: i64) -> crate::onnx::ModelProto {
        let w: Vec<f32> = (0..12).map(|k| k as f32 * 0.1).collect();
        ModelBuilder::new(13)
            .input("a", DataType::Float, &["2", "4"])
            .initializer_f32("w", if trans_b == 1 { &[4, 3] } else { &[3, 4] }, &w)
            .node("Transpose", &["w"], &["wt"])
            .attr(perm("perm", p))
            .node("Gemm", &["a", "wt"], &["y"])
            .attr(attr_int("transB", trans_b))
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn the_transpose_becomes_a_flag() {
        for trans_b in [0, 1] {
            let m = model(&[1, 0], trans_b);
            let (after, n) = run_pass(&FuseTransposeIntoGemm, &m);
            assert_eq!(n, 1);
            let gemm = after
                .graph
                .as_ref()
                .unwrap()
                .node
                .iter()
                .find(|n| n.op_type() == "Gemm")
                .unwrap()
                .clone();
            assert_eq!(gemm.input[1], "w");
            assert_eq!(attr_i(&gemm, "transB", 0), 1 - trans_b);
            assert_eq!(max_difference(&m, &after), 0.0);
        }
    }
}
