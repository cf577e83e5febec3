//! `fuse_add_bias_into_conv`: moves a per-channel constant `Add` after a `Conv` into its bias.
//!
//! ```text
//! x -> Conv(W, B?) -> Add(c) -> y      =>      x -> Conv(W, B + c) -> y
//! ```
//! `c` must be constant FLOAT and vary along the channel axis only (shape [M,1,1], [1,M,1,1], or
//! one value); a plain [M] would broadcast along the last spatial axis and is refused. The Conv
//! output must feed only the Add. Results change by float rounding only.

use super::fuse_bn_into_conv::rescale_conv;
use super::rewrite::{absorb, const_f32s, is_op, per_channel, rewrite_each, sole_consumer};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct FuseAddBiasIntoConv;

/// The Conv at `conv` followed (only) by a `op` node with a per-channel constant: the follower's
/// index and the per-channel values.
pub fn channel_follower(
    graph: &Graph,
    ctx: &PassContext,
    conv: usize,
    op: &str,
) -> Option<(usize, Vec<f32>)> {
    let node = &graph.nodes()[conv];
    if !is_op(node, "Conv") || node.input.len() < 2 {
        return None;
    }
    let next = sole_consumer(graph, &node.output[0])?;
    let f = &graph.nodes()[next];
    if !is_op(f, op) || f.input.len() != 2 {
        return None;
    }
    let other = if f.input[0] == node.output[0] {
        &f.input[1]
    } else {
        &f.input[0]
    };
    let (w_dims, _) = const_f32s(graph, ctx, &node.input[1])?;
    let (dims, values) = const_f32s(graph, ctx, other)?;
    let channels = *w_dims.first()? as usize;
    Some((next, per_channel(&dims, &values, w_dims.len(), channels)?))
}

impl Pass for FuseAddBiasIntoConv {
    fn name(&self) -> &'static str {
        "fuse_add_bias_into_conv"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "fold a per-channel constant Add after a Conv into its bias"
    }
    fn details(&self) -> &'static str {
        "a per-channel constant Add after a Conv becomes its bias"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        // conv + c = conv * 1 + c
        Ok(fuse_followers(graph, ctx, "Add", |c| {
            (
                vec![1.0; c.len()],
                c.iter().map(|&v| f64::from(v)).collect(),
            )
        }))
    }
}

/// Folds every Conv's per-channel constant `op` follower into the Conv, as the per-channel
/// scale and shift `to_affine` makes of the constant's values.
pub fn fuse_followers(
    graph: &mut Graph,
    ctx: &PassContext,
    op: &str,
    to_affine: impl Fn(&[f32]) -> (Vec<f64>, Vec<f64>),
) -> usize {
    rewrite_each(graph, |g, i| {
        let Some((follower, values)) = channel_follower(g, ctx, i, op) else {
            return false;
        };
        let (scale, shift) = to_affine(&values);
        if rescale_conv(g, ctx, i, &scale, &shift).is_none() {
            return false;
        }
        absorb(g, i, follower);
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(c_dims: &[i64], c: &[f32]) -> crate::onnx::ModelProto {
        let w: Vec<f32> = (0..3 * 2 * 4).map(|k| (k as f32 * 0.3).cos()).collect();
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["1", "2", "5", "5"])
            .initializer_f32("w", &[3, 2, 2, 2], &w)
            .initializer_f32("c", c_dims, c)
            .node("Conv", &["x", "w"], &["conv"])
            .node("Add", &["conv", "c"], &["y"])
            .output("y", DataType::Float, &[])
            .build()
    }

    #[test]
    fn per_channel_adds_become_the_bias() {
        for (dims, c) in [
            (vec![3, 1, 1], vec![0.5, -1.0, 2.0]),
            (vec![1, 3, 1, 1], vec![0.5, -1.0, 2.0]),
            (vec![], vec![0.25]),
        ] {
            let m = model(&dims, &c);
            let (after, n) = run_pass(&FuseAddBiasIntoConv, &m);
            assert_eq!((n, ops(&after)), (1, vec!["Conv".to_string()]), "{dims:?}");
            assert!(max_difference(&m, &after) < 1e-5);
        }
    }

    #[test]
    fn an_add_along_a_spatial_axis_stays() {
        // [4] right-aligns with the width axis (size 4), not the channels
        assert_eq!(
            run_pass(&FuseAddBiasIntoConv, &model(&[4], &[1.0, 2.0, 3.0, 4.0])).1,
            0
        );
    }
}
