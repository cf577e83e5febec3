//! `fuse_bn_into_conv`: folds an inference `BatchNormalization` into the `Conv` before it.
//!
//! ```text
//! x -> Conv(W, B) -> BatchNormalization(scale, bias, mean, var, eps) -> y
//!   =>  x -> Conv(W', B') -> y
//! s = scale / sqrt(var + eps);  W'[m] = W[m] * s[m];  B' = (B - mean) * s + bias
//! ```
//! Applies when the Conv output feeds only the BN, W and the BN parameters are constant FLOAT,
//! and the BN is in inference mode with one output. Grouped and dilated convs are fine (the scale
//! is per output channel). Computed in f64, stored as f32: results change by rounding only.

use super::rewrite::{
    absorb, attr_f, attr_i, const_f32s, f32_tensor, is_op, rewrite_each, sole_consumer,
};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::onnx::proto::NodeProto;

pub struct FuseBnIntoConv;

/// Scales a conv's weights and bias per output channel: W'[m] = W[m]*s[m], B' = B*s + t.
pub fn rescale_conv(
    graph: &mut Graph,
    ctx: &PassContext,
    conv: usize,
    s: &[f64],
    t: &[f64],
) -> Option<()> {
    let node = graph.nodes()[conv].clone();
    let (w_dims, w) = const_f32s(graph, ctx, &node.input[1])?;
    let m = *w_dims.first()? as usize;
    if s.len() != m || t.len() != m || w.is_empty() || w.len() % m != 0 {
        return None;
    }
    let b = match node.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => const_f32s(graph, ctx, b)?.1,
        None => vec![0.0; m],
    };
    if b.len() != m {
        return None;
    }
    let per = w.len() / m;
    let new_w = f32_tensor(
        &w_dims,
        w.iter()
            .enumerate()
            .map(|(k, &v)| f64::from(v) * s[k / per]),
    );
    let new_b = f32_tensor(&[m as i64], (0..m).map(|k| f64::from(b[k]) * s[k] + t[k]));
    let w_name = graph.add_initializer(&format!("{}_fused", node.input[1]), new_w);
    let b_base = node
        .input
        .get(2)
        .filter(|b| !b.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("{}_bias", node.input[1]));
    let b_name = graph.add_initializer(&format!("{b_base}_fused"), new_b);
    let n = &mut graph.proto_mut().node[conv];
    n.input[1] = w_name;
    n.input.truncate(2);
    n.input.push(b_name);
    Some(())
}

impl Pass for FuseBnIntoConv {
    fn name(&self) -> &'static str {
        "fuse_bn_into_conv"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "fold inference BatchNormalization into the preceding Conv's weights and bias"
    }
    fn details(&self) -> &'static str {
        "inference BatchNormalization folds into the Conv before it (grouped and dilated too)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        Ok(rewrite_each(graph, |g, i| {
            candidate(g, ctx, i).is_some_and(|bn| fuse(g, ctx, i, bn).is_some())
        }))
    }
}

fn candidate(graph: &Graph, ctx: &PassContext, conv: usize) -> Option<usize> {
    let node = &graph.nodes()[conv];
    if !is_op(node, "Conv") || node.input.len() < 2 {
        return None;
    }
    bn_follower(graph, ctx, &node.output[0])
}

/// The inference-mode `BatchNormalization` that alone reads `value`, as its data input X (not
/// as its scale or mean), with no other output read: what a producer of `value` may absorb.
/// Inference mode: `training_mode` 0 (opset 14+), `is_test` 1 (opsets before 7), `spatial` 1
/// (opsets before 9, where 0 means per-element statistics).
pub fn bn_follower(graph: &Graph, ctx: &PassContext, value: &str) -> Option<usize> {
    let bn = sole_consumer(graph, value)?;
    let b = &graph.nodes()[bn];
    let single_output = b
        .output
        .iter()
        .skip(1)
        .all(|o| o.is_empty() || graph.consumers(o).is_empty() && !graph.is_output(o));
    let inference = attr_i(b, "training_mode", 0) == 0
        && (ctx.opset >= 7 || attr_i(b, "is_test", 0) == 1)
        && (ctx.opset >= 9 || attr_i(b, "spatial", 1) == 1);
    (is_op(b, "BatchNormalization")
        && b.input.len() == 5
        && b.input[0] == value
        && inference
        && single_output)
        .then_some(bn)
}

/// An inference BatchNormalization as `y = x * s + t` per channel:
/// `s = scale / sqrt(var + eps)`, `t = bias - mean * s`. `None` unless its four parameters are
/// constant FLOAT vectors of one length.
pub fn bn_scale_shift(
    graph: &Graph,
    ctx: &PassContext,
    bn: &NodeProto,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let eps = f64::from(attr_f(bn, "epsilon", 1e-5));
    let [scale, bias, mean, var] =
        [1, 2, 3, 4].map(|k| const_f32s(graph, ctx, &bn.input[k]).map(|(_, v)| v));
    let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
    let n = scale.len();
    if bias.len() != n || mean.len() != n || var.len() != n {
        return None;
    }
    let s: Vec<f64> = (0..n)
        .map(|k| f64::from(scale[k]) / (f64::from(var[k]) + eps).sqrt())
        .collect();
    let t: Vec<f64> = (0..n)
        .map(|k| f64::from(bias[k]) - f64::from(mean[k]) * s[k])
        .collect();
    Some((s, t))
}

fn fuse(graph: &mut Graph, ctx: &PassContext, conv: usize, bn: usize) -> Option<()> {
    let b = graph.nodes()[bn].clone();
    // B' = (B - mean) * s + bias = B*s + (bias - mean*s)
    let (s, t) = bn_scale_shift(graph, ctx, &b)?;
    rescale_conv(graph, ctx, conv, &s, &t)?;
    absorb(graph, conv, bn);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::{attr_float, attr_int, attr_ints};
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(group: i64, dilation: i64, bias: bool) -> crate::onnx::ModelProto {
        let c_in_per_group = 4 / group;
        let w: Vec<f32> = (0..4 * c_in_per_group * 9)
            .map(|k| ((k as f32) * 0.37).sin())
            .collect();
        let mut inputs = vec!["x", "w"];
        if bias {
            inputs.push("b");
        }
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["1", "4", "7", "7"])
            .initializer_f32("w", &[4, c_in_per_group, 3, 3], &w)
            .initializer_f32("b", &[4], &[0.1, -0.2, 0.3, 0.0])
            .initializer_f32("scale", &[4], &[1.5, 0.5, -1.0, 2.0])
            .initializer_f32("bias", &[4], &[0.0, 1.0, -1.0, 0.5])
            .initializer_f32("mean", &[4], &[0.2, -0.1, 0.0, 1.0])
            .initializer_f32("var", &[4], &[1.0, 0.25, 2.0, 0.5])
            .node("Conv", &inputs, &["c"])
            .attr(attr_int("group", group))
            .attr(attr_ints("dilations", &[dilation, dilation]))
            .node(
                "BatchNormalization",
                &["c", "scale", "bias", "mean", "var"],
                &["y"],
            )
            .attr(attr_float("epsilon", 1e-3))
            .output("y", DataType::Float, &["1", "4", "?", "?"])
            .build()
    }

    /// IR 3 requires every initializer to be a graph input too: the fused weights were added
    /// as initializers only, an invalid IR 3 model.
    #[test]
    fn fused_weights_are_graph_inputs_in_ir3_models() {
        // (an initializer listed as an input is overridable and never folded into a conv, so
        // the weights here are not listed yet; what matters is what the pass leaves)
        let mut m = model(1, 1, true);
        m.ir_version = Some(3);
        m.opset_import[0].version = Some(8);
        let (after, n) = run_pass(&FuseBnIntoConv, &m);
        assert_eq!(n, 1);
        let g = after.graph.as_ref().unwrap();
        for t in &g.initializer {
            assert!(
                g.input.iter().any(|i| i.name() == t.name()),
                "{} is no input",
                t.name()
            );
        }
    }

    #[test]
    fn bn_folds_into_plain_grouped_and_dilated_convs() {
        for (group, dilation, bias) in [(1, 1, true), (1, 1, false), (2, 1, true), (4, 2, false)] {
            let m = model(group, dilation, bias);
            let (after, n) = run_pass(&FuseBnIntoConv, &m);
            assert_eq!(
                (n, ops(&after)),
                (1, vec!["Conv".to_string()]),
                "group {group}"
            );
            assert_eq!(after.graph.as_ref().unwrap().node[0].output[0], "y");
            let d = max_difference(&m, &after);
            assert!(d < 1e-5, "group {group} dilation {dilation}: {d}");
        }
    }

    #[test]
    fn a_conv_whose_output_is_also_read_elsewhere_is_left_alone() {
        let mut m = model(1, 1, true);
        m.graph
            .as_mut()
            .unwrap()
            .output
            .push(crate::graph::builder::value_info(
                "c",
                DataType::Float,
                &["1", "4", "5", "5"],
            ));
        assert_eq!(run_pass(&FuseBnIntoConv, &m).1, 0);
    }

    #[test]
    fn a_weight_shared_with_another_conv_is_not_changed_under_it() {
        let mut m = model(1, 1, true);
        let g = m.graph.as_mut().unwrap();
        g.node.push(crate::onnx::NodeProto {
            op_type: Some("Conv".into()),
            input: vec!["x".into(), "w".into(), "b".into()],
            output: vec!["other".into()],
            attribute: vec![attr_int("group", 1), attr_ints("dilations", &[1, 1])],
            ..Default::default()
        });
        g.output.push(crate::graph::builder::value_info(
            "other",
            DataType::Float,
            &["1", "4", "5", "5"],
        ));
        let (after, n) = run_pass(&FuseBnIntoConv, &m);
        assert_eq!(n, 1);
        let g = after.graph.as_ref().unwrap();
        let other = g.node.iter().find(|n| n.output[0] == "other").unwrap();
        assert_eq!(
            other.input[1], "w",
            "the other conv keeps the original weight"
        );
        assert!(g.initializer.iter().any(|t| t.name() == "w"));
        assert!(max_difference(&m, &after) < 1e-5);
    }

    #[test]
    fn non_constant_bn_parameters_are_left_alone() {
        let mut m = model(1, 1, true);
        let g = m.graph.as_mut().unwrap();
        g.initializer.retain(|t| t.name() != "mean");
        g.input.push(crate::graph::builder::value_info(
            "mean",
            DataType::Float,
            &["4"],
        ));
        assert_eq!(run_pass(&FuseBnIntoConv, &m).1, 0);
    }
}
