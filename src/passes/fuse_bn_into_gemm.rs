//! `fuse_bn_into_gemm`: folds an inference `BatchNormalization` into the `Gemm` (or 2-D `MatMul`
//! with a constant weight) before it.
//!
//! ```text
//! A -> Gemm(B, C; alpha, beta, transB) -> BatchNormalization(scale, bias, mean, var) -> y
//!   =>  A -> Gemm(B', C'; alpha, beta=1, transB) -> y
//! s = scale / sqrt(var + eps);  B'[:, n] = B[:, n] * s[n];  C' = beta * C * s + bias - mean * s
//! ```
//! On a 2-D output BatchNormalization's channel axis is the Gemm's N axis. A MatMul qualifies when
//! its input is 2-D and its weight a constant [K, N]; it becomes a Gemm. Refuses: transposed A
//! stays fine, but a non-constant B, a C of shape [M, N] with unknown M, a BN in training mode or
//! with extra outputs read. Computed in f64, stored as f32: results change by rounding only.

use super::rewrite::{absorb, attr_f, attr_i, const_f32s, f32_tensor, is_op, rewrite_each};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::graph::builder::{attr_float, attr_int};

pub struct FuseBnIntoGemm;

fn candidate(graph: &Graph, ctx: &PassContext, i: usize) -> Option<usize> {
    let node = &graph.nodes()[i];
    let gemm = is_op(node, "Gemm") && node.input.len() >= 2;
    let matmul = is_op(node, "MatMul") && ctx.rank(&node.input[0]) == Some(2);
    if !gemm && !matmul {
        return None;
    }
    super::fuse_bn_into_conv::bn_follower(graph, ctx, &node.output[0])
}

fn fuse(graph: &mut Graph, ctx: &PassContext, i: usize, bn: usize) -> Option<()> {
    let node = graph.nodes()[i].clone();
    let b = graph.nodes()[bn].clone();
    let (s, t) = super::fuse_bn_into_conv::bn_scale_shift(graph, ctx, &b)?;
    let (w_dims, w) = const_f32s(graph, ctx, &node.input[1])?;
    if w_dims.len() != 2 {
        return None;
    }
    let trans_b = is_op(&node, "Gemm") && attr_i(&node, "transB", 0) == 1;
    let n = if trans_b { w_dims[0] } else { w_dims[1] } as usize;
    if s.len() != n {
        return None;
    }
    let cols = w_dims[1] as usize;
    let new_w = f32_tensor(
        &w_dims,
        w.iter().enumerate().map(|(k, &v)| {
            let channel = if trans_b { k / cols } else { k % cols };
            f64::from(v) * s[channel]
        }),
    );
    let beta = if is_op(&node, "Gemm") {
        f64::from(attr_f(&node, "beta", 1.0))
    } else {
        1.0
    };
    let (c_dims, c) = match node.input.get(2).filter(|c| !c.is_empty()) {
        Some(c) => const_f32s(graph, ctx, c)?,
        None => (vec![n as i64], vec![0.0; n]),
    };
    let c_cols = match c_dims.as_slice() {
        [] => 1,
        [d] | [_, d] => *d as usize,
        _ => return None,
    };
    if c_cols != 1 && c_cols != n {
        return None;
    }
    // C broadcasts along rows; a per-column scale needs one value per column
    let rows = if c_dims.len() == 2 { c_dims[0] } else { 1 };
    let new_c_dims = if rows > 1 {
        vec![rows, n as i64]
    } else {
        vec![n as i64]
    };
    let new_c = f32_tensor(
        &new_c_dims,
        (0..(rows.max(1) as usize * n)).map(|k| {
            let (r, col) = (k / n, k % n);
            let cv = if c_cols == 1 {
                c[r * c_cols.min(c.len())]
            } else {
                c[r * n + col]
            };
            beta * f64::from(cv) * s[col] + t[col]
        }),
    );
    let w_name = graph.add_initializer(&format!("{}_fused", node.input[1]), new_w);
    let c_name = graph.add_initializer(&format!("{}_bias_fused", node.input[1]), new_c);
    let g = &mut graph.proto_mut().node[i];
    g.op_type = Some("Gemm".into());
    g.input = vec![node.input[0].clone(), w_name, c_name];
    g.attribute.retain(|a| a.name() != "beta");
    g.attribute.push(attr_float("beta", 1.0));
    if !g.attribute.iter().any(|a| a.name() == "transB") && trans_b {
        g.attribute.push(attr_int("transB", 1));
    }
    absorb(graph, i, bn);
    Some(())
}

impl Pass for FuseBnIntoGemm {
    fn name(&self) -> &'static str {
        "fuse_bn_into_gemm"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "fold inference BatchNormalization into the preceding Gemm or 2-D MatMul"
    }
    fn details(&self) -> &'static str {
        "inference BatchNormalization folds into the Gemm or 2-D MatMul before it"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        if ctx.opset < 7 {
            // Gemm before opset 7 broadcasts C only with `broadcast=1`: not handled
            return Ok(0);
        }
        Ok(rewrite_each(graph, |g, i| {
            candidate(g, ctx, i).is_some_and(|bn| fuse(g, ctx, i, bn).is_some())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    /// An optional Gemm C: its dims and values.
    type Bias<'a> = Option<(&'a [i64], Vec<f32>)>;

    fn model(op: &str, trans_b: i64, c: Bias) -> crate::onnx::ModelProto {
        let w: Vec<f32> = (0..12).map(|k| (k as f32 * 0.41).sin()).collect();
        let w_dims: &[i64] = if trans_b == 1 { &[3, 4] } else { &[4, 3] };
        let mut inputs = vec!["a", "w"];
        let mut b = ModelBuilder::new(13)
            .input("a", DataType::Float, &["2", "4"])
            .initializer_f32("w", w_dims, &w)
            .initializer_f32("scale", &[3], &[1.5, 0.5, -1.0])
            .initializer_f32("bias", &[3], &[0.0, 1.0, -1.0])
            .initializer_f32("mean", &[3], &[0.2, -0.1, 0.0])
            .initializer_f32("var", &[3], &[1.0, 0.25, 2.0]);
        if let Some((dims, values)) = c {
            b = b.initializer_f32("c", dims, &values);
            inputs.push("c");
        }
        b = b.node(op, &inputs, &["g"]);
        if op == "Gemm" {
            b = b
                .attr(attr_int("transB", trans_b))
                .attr(attr_float("beta", 0.5));
        }
        b.node(
            "BatchNormalization",
            &["g", "scale", "bias", "mean", "var"],
            &["y"],
        )
        .output("y", DataType::Float, &["2", "3"])
        .build()
    }

    #[test]
    fn bn_folds_into_gemm_and_matmul() {
        let cases: Vec<(&str, i64, Bias)> = vec![
            ("Gemm", 0, Some((&[3], vec![0.1, 0.2, 0.3]))),
            ("Gemm", 1, Some((&[1, 3], vec![0.1, 0.2, 0.3]))),
            (
                "Gemm",
                1,
                Some((&[2, 3], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6])),
            ),
            ("Gemm", 0, None),
            ("MatMul", 0, None),
        ];
        for (op, trans_b, c) in cases {
            let m = model(op, trans_b, c.clone());
            let (after, n) = run_pass(&FuseBnIntoGemm, &m);
            assert_eq!(
                (n, ops(&after)),
                (1, vec!["Gemm".to_string()]),
                "{op} transB {trans_b} {c:?}"
            );
            let d = max_difference(&m, &after);
            assert!(d < 1e-5, "{op} transB {trans_b}: {d}");
        }
    }

    #[test]
    fn a_bn_whose_input_is_shared_stays() {
        let mut m = model("Gemm", 0, None);
        m.graph
            .as_mut()
            .unwrap()
            .output
            .push(crate::graph::builder::value_info(
                "g",
                DataType::Float,
                &["2", "3"],
            ));
        assert_eq!(run_pass(&FuseBnIntoGemm, &m).1, 0);
    }

    /// The Gemm lacked the Conv twin's check that the BN reads its output as X: a Gemm whose
    /// output is a BN's mean was "fused" into it.
    #[test]
    fn a_gemm_feeding_the_bn_mean_is_not_fused() {
        let m = ModelBuilder::new(13)
            .input("a", DataType::Float, &["3", "4"])
            .input("x", DataType::Float, &["2", "3"])
            .initializer_f32("w", &[4, 1], &[0.5, 0.25, -0.5, 1.0])
            .initializer_f32("scale", &[3], &[1.5, 0.5, -1.0])
            .initializer_f32("bias", &[3], &[0.0, 1.0, -1.0])
            .initializer_f32("var", &[3], &[1.0, 0.25, 2.0])
            .node("Gemm", &["a", "w"], &["mean"])
            .node(
                "BatchNormalization",
                &["x", "scale", "bias", "mean", "var"],
                &["y"],
            )
            .output("y", DataType::Float, &["2", "3"])
            .build();
        assert_eq!(run_pass(&FuseBnIntoGemm, &m).1, 0);
    }

    /// Opsets before 7: `is_test` 0 is training mode, whose statistics are not constants.
    #[test]
    fn a_training_mode_bn_of_opset_6_is_not_fused() {
        let mut m = model("Gemm", 0, None);
        m.opset_import[0].version = Some(6);
        m.ir_version = Some(3);
        assert_eq!(run_pass(&FuseBnIntoGemm, &m).1, 0);
    }
}
