//! `fuse_matmul_add_into_gemm`: turns a 2-D `MatMul` followed by a constant `Add` into one `Gemm`.
//!
//! ```text
//! A:[M,K] -> MatMul(B:[K,N]) -> Add(C) -> y      =>      A -> Gemm(B, C) -> y
//! ```
//! A must be 2-D (known from the inferred shape), B a constant 2-D tensor, C a constant that
//! broadcasts to [M,N] (Gemm's unidirectional broadcast: [N], [1,N], [M,N] or a scalar). The MatMul
//! output must feed only the Add. Batched (3-D and up) MatMuls are left alone: Gemm is 2-D only.
//! Results change by float rounding only.

use super::rewrite::{absorb, is_op, rewrite_each, sole_consumer};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct FuseMatmulAddIntoGemm;

fn candidate(graph: &Graph, ctx: &PassContext, mm: usize) -> Option<(usize, String)> {
    let node = &graph.nodes()[mm];
    if !is_op(node, "MatMul") || node.input.len() != 2 {
        return None;
    }
    if ctx.rank(&node.input[0])? != 2 {
        return None;
    }
    let b = graph.constant(&node.input[1])?;
    if b.dims.len() != 2 || b.data_type() != crate::onnx::DataType::Float.code() {
        return None;
    }
    let n = b.dims[1];
    let add = sole_consumer(graph, &node.output[0])?;
    let a = &graph.nodes()[add];
    if !is_op(a, "Add") || a.input.len() != 2 {
        return None;
    }
    let c_name = if a.input[0] == node.output[0] {
        &a.input[1]
    } else {
        &a.input[0]
    };
    let c = graph.constant(c_name)?;
    let m = ctx.dims(&node.input[0])?.first().copied().flatten();
    let ok = match c.dims.as_slice() {
        [] => true,
        [d] => *d == n || *d == 1,
        [r, d] => (*d == n || *d == 1) && (*r == 1 || Some(*r) == m),
        _ => false,
    };
    (ok && c.data_type() == b.data_type()).then(|| (add, c_name.clone()))
}

impl Pass for FuseMatmulAddIntoGemm {
    fn name(&self) -> &'static str {
        "fuse_matmul_add_into_gemm"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "turn a 2-D MatMul with a constant weight and a constant Add into a Gemm"
    }
    fn details(&self) -> &'static str {
        "a 2-D MatMul with a constant weight plus a constant Add becomes a Gemm"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        if ctx.opset < 7 {
            // Gemm before opset 7 broadcasts C only with `broadcast=1`: not handled
            return Ok(0);
        }
        Ok(rewrite_each(graph, |g, i| {
            let Some((add, c)) = candidate(g, ctx, i) else {
                return false;
            };
            let node = &mut g.proto_mut().node[i];
            node.op_type = Some("Gemm".into());
            node.input.push(c);
            absorb(g, i, add);
            true
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(a_dims: &[&str], c_dims: &[i64], c: &[f32]) -> crate::onnx::ModelProto {
        let b: Vec<f32> = (0..12).map(|k| (k as f32 * 0.7).sin()).collect();
        ModelBuilder::new(13)
            .input("a", DataType::Float, a_dims)
            .initializer_f32("b", &[4, 3], &b)
            .initializer_f32("c", c_dims, c)
            .node("MatMul", &["a", "b"], &["m"])
            .node("Add", &["m", "c"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn matmul_plus_bias_becomes_gemm() {
        for (dims, c) in [
            (vec![3], vec![1.0, 2.0, 3.0]),
            (vec![1, 3], vec![1.0, 2.0, 3.0]),
            (vec![], vec![0.5]),
        ] {
            let m = model(&["2", "4"], &dims, &c);
            let (after, n) = run_pass(&FuseMatmulAddIntoGemm, &m);
            assert_eq!((n, ops(&after)), (1, vec!["Gemm".to_string()]), "{dims:?}");
            assert!(max_difference(&m, &after) < 1e-5);
        }
    }

    #[test]
    fn batched_matmuls_stay() {
        assert_eq!(
            run_pass(
                &FuseMatmulAddIntoGemm,
                &model(&["2", "2", "4"], &[3], &[1.0, 2.0, 3.0])
            )
            .1,
            0
        );
    }
}
