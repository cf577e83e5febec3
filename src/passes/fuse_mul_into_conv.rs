//! `fuse_mul_into_conv`: folds a per-channel constant `Mul` after a `Conv` into its weights.
//!
//! ```text
//! x -> Conv(W, B?) -> Mul(s) -> y      =>      x -> Conv(W * s, B * s) -> y
//! ```
//! `s` must be constant FLOAT and vary along the channel axis only (see `fuse_add_bias_into_conv`).
//! The Conv output must feed only the Mul. Results change by float rounding only.

use super::fuse_add_bias_into_conv::fuse_followers;
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct FuseMulIntoConv;

impl Pass for FuseMulIntoConv {
    fn name(&self) -> &'static str {
        "fuse_mul_into_conv"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "fold a per-channel constant Mul after a Conv into its weights and bias"
    }
    fn details(&self) -> &'static str {
        "a per-channel constant Mul after a Conv scales its weights and bias"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        // conv * s = conv * s + 0
        Ok(fuse_followers(graph, ctx, "Mul", |s| {
            (
                s.iter().map(|&v| f64::from(v)).collect(),
                vec![0.0; s.len()],
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(s_dims: &[i64], s: &[f32]) -> crate::onnx::ModelProto {
        let w: Vec<f32> = (0..3 * 2 * 4).map(|k| (k as f32 * 0.3).cos()).collect();
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["1", "2", "5", "5"])
            .initializer_f32("w", &[3, 2, 2, 2], &w)
            .initializer_f32("b", &[3], &[0.1, 0.2, 0.3])
            .initializer_f32("s", s_dims, s)
            .node("Conv", &["x", "w", "b"], &["conv"])
            .node("Mul", &["s", "conv"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn per_channel_scales_fold_into_weights() {
        let m = model(&[1, 3, 1, 1], &[2.0, -0.5, 0.0]);
        let (after, n) = run_pass(&FuseMulIntoConv, &m);
        assert_eq!((n, ops(&after)), (1, vec!["Conv".to_string()]));
        assert!(max_difference(&m, &after) < 1e-5);
    }

    #[test]
    fn a_full_tensor_scale_stays() {
        let s: Vec<f32> = (0..3 * 16).map(|k| k as f32).collect();
        assert_eq!(run_pass(&FuseMulIntoConv, &model(&[3, 4, 4], &s)).1, 0);
    }
}
