//! Pruning: lossy, never part of a preset, only on request.
//!
//! * [`prune_magnitude`] zeroes the smallest weights by magnitude of every Conv, Gemm and MatMul
//!   weight to a target sparsity (ties broken by position), and reports what each tensor reached.
//! * [`prune_channels`] removes whole Conv output channels with the smallest L1 norm, and
//!   propagates the removal to what consumes them so the model really gets smaller: the bias, a
//!   following BatchNormalization, per-channel activations (PRelu slopes), channel-preserving ops
//!   (Relu, Clip, pooling...) and the input channels of every next Conv. Where the channels flow
//!   into anything else (a residual Add, Concat, Flatten, a graph output, a grouped conv) removing
//!   them is not provably safe: that layer is skipped and the reason reported.

use serde::{Deserialize, Serialize};

use super::PassContext;
use super::rewrite::{attr_i, const_f32s, f32_tensor, is_op};
use crate::graph::Graph;

/// What magnitude pruning did to one weight tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SparsityReport {
    pub tensor: String,
    pub elements: usize,
    pub zeros_before: usize,
    pub zeros_after: usize,
    pub sparsity: f64,
}

/// Zeroes the `sparsity` fraction of smallest-magnitude weights of each Conv/Gemm/MatMul weight.
pub fn prune_magnitude(graph: &mut Graph, ctx: &PassContext, sparsity: f64) -> Vec<SparsityReport> {
    let mut reports = Vec::new();
    let mut done: Vec<(String, String)> = Vec::new();
    for i in 0..graph.nodes().len() {
        let node = graph.nodes()[i].clone();
        if !["Conv", "Gemm", "MatMul"].iter().any(|op| is_op(&node, op)) || node.input.len() < 2 {
            continue;
        }
        let weight = node.input[1].clone();
        if let Some((_, pruned)) = done.iter().find(|(w, _)| *w == weight) {
            graph.proto_mut().node[i].input[1] = pruned.clone();
            continue;
        }
        let Some((dims, w)) = const_f32s(graph, ctx, &weight) else {
            continue;
        };
        let k = ((w.len() as f64) * sparsity).floor() as usize;
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()).then(a.cmp(&b)));
        let mut pruned: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
        for &j in &order[..k.min(w.len())] {
            pruned[j] = 0.0;
        }
        let zeros_after = pruned.iter().filter(|v| **v == 0.0).count();
        let name = graph.add_initializer(&format!("{weight}_pruned"), f32_tensor(&dims, pruned));
        graph.proto_mut().node[i].input[1] = name.clone();
        reports.push(SparsityReport {
            tensor: weight.clone(),
            elements: w.len(),
            zeros_before: w.iter().filter(|v| **v == 0.0).count(),
            zeros_after,
            sparsity: zeros_after as f64 / w.len().max(1) as f64,
        });
        done.push((weight, name));
    }
    reports
}

/// What channel pruning did to one Conv.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelReport {
    pub node: String,
    pub channels: usize,
    pub removed: usize,
    /// Why nothing was removed, when nothing was.
    pub skipped: Option<String>,
}

/// Ops that keep the channel axis and act per element (or per spatial window).
const CHANNEL_PRESERVING: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Softplus",
    "MaxPool",
    "AveragePool",
    "Identity",
    "Dropout",
];

/// Where the channels of a conv's output flow, up to the next convs.
struct Plan {
    /// BatchNormalization / PRelu nodes whose per-channel parameters must be sliced.
    per_channel: Vec<usize>,
    /// Convs whose input channels must be sliced.
    next_convs: Vec<usize>,
}

/// Follows a conv's output through channel-preserving nodes to the next convs, or says why the
/// channels cannot be removed.
fn plan(graph: &Graph, conv: usize) -> Result<Plan, String> {
    let mut plan = Plan {
        per_channel: vec![],
        next_convs: vec![],
    };
    let mut frontier = vec![graph.nodes()[conv].output[0].clone()];
    while let Some(v) = frontier.pop() {
        if graph.is_output(&v) {
            return Err(format!("its channels reach the graph output '{v}'"));
        }
        let consumers = graph.consumers(&v);
        if consumers.is_empty() {
            return Err(format!("'{v}' is not read"));
        }
        for &c in consumers {
            let n = &graph.nodes()[c];
            let label = crate::graph::node_label(n, c);
            if n.input.first() != Some(&v) {
                return Err(format!(
                    "{label} reads the channels as other than its first input"
                ));
            }
            if is_op(n, "Conv") {
                if attr_i(n, "group", 1) != 1 {
                    return Err(format!("{label} is a grouped convolution"));
                }
                plan.next_convs.push(c);
                continue;
            }
            let per_channel = is_op(n, "BatchNormalization") || is_op(n, "PRelu");
            if per_channel {
                plan.per_channel.push(c);
            } else if !CHANNEL_PRESERVING.iter().any(|op| is_op(n, op)) {
                return Err(format!("its channels flow into {label}"));
            }
            if n.output
                .iter()
                .skip(1)
                .any(|o| !o.is_empty() && !graph.consumers(o).is_empty())
            {
                return Err(format!("{label} has a second output in use"));
            }
            frontier.push(n.output[0].clone());
        }
    }
    if plan.next_convs.is_empty() {
        return Err("no following convolution takes its channels".into());
    }
    Ok(plan)
}

/// Keeps `keep` entries (of `per`-sized blocks) along the first axis of a tensor.
fn take_rows(values: &[f32], per: usize, keep: &[usize]) -> Vec<f64> {
    keep.iter()
        .flat_map(|&k| values[k * per..(k + 1) * per].iter().map(|&v| f64::from(v)))
        .collect()
}

/// Replaces constant input `slot` of node `i` with `values` of shape `dims`.
fn replace_input(graph: &mut Graph, i: usize, slot: usize, dims: &[i64], values: Vec<f64>) {
    let base = format!("{}_pruned", graph.nodes()[i].input[slot]);
    let name = graph.add_initializer(&base, f32_tensor(dims, values));
    graph.proto_mut().node[i].input[slot] = name;
}

/// Removes the `fraction` of each prunable Conv's output channels with the smallest L1 norms.
pub fn prune_channels(graph: &mut Graph, ctx: &PassContext, fraction: f64) -> Vec<ChannelReport> {
    let mut reports = Vec::new();
    let convs: Vec<usize> = (0..graph.nodes().len())
        .filter(|&i| is_op(&graph.nodes()[i], "Conv"))
        .collect();
    for i in convs {
        let node = graph.nodes()[i].clone();
        let label = crate::graph::node_label(&node, i);
        let Some((dims, w)) = const_f32s(graph, ctx, &node.input[1]) else {
            reports.push(ChannelReport {
                node: label,
                channels: 0,
                removed: 0,
                skipped: Some("its weights are not constant".into()),
            });
            continue;
        };
        let m = dims[0] as usize;
        let remove = ((m as f64) * fraction).floor() as usize;
        let skip = |reason: String| ChannelReport {
            node: label.clone(),
            channels: m,
            removed: 0,
            skipped: Some(reason),
        };
        if attr_i(&node, "group", 1) != 1 {
            reports.push(skip("it is a grouped convolution".into()));
            continue;
        }
        if remove == 0 || remove >= m {
            reports.push(skip(format!(
                "{fraction} of {m} channels rounds to {remove}"
            )));
            continue;
        }
        let plan = match plan(graph, i) {
            Ok(p) => p,
            Err(reason) => {
                reports.push(skip(format!("not provably safe: {reason}")));
                continue;
            }
        };
        let per = w.len() / m;
        let mut norms: Vec<(f64, usize)> = (0..m)
            .map(|c| {
                (
                    w[c * per..(c + 1) * per]
                        .iter()
                        .map(|v| f64::from(v.abs()))
                        .sum(),
                    c,
                )
            })
            .collect();
        norms.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut keep: Vec<usize> = norms[remove..].iter().map(|&(_, c)| c).collect();
        keep.sort();
        if apply(graph, ctx, i, &plan, &keep).is_none() {
            reports.push(skip(
                "a parameter along the way is not a constant of one value per channel".into(),
            ));
            continue;
        }
        reports.push(ChannelReport {
            node: label,
            channels: m,
            removed: remove,
            skipped: None,
        });
    }
    reports
}

fn apply(
    graph: &mut Graph,
    ctx: &PassContext,
    conv: usize,
    plan: &Plan,
    keep: &[usize],
) -> Option<()> {
    let node = graph.nodes()[conv].clone();
    let (dims, w) = const_f32s(graph, ctx, &node.input[1])?;
    let m = dims[0] as usize;
    let per = w.len() / m;
    // check everything first: nothing is changed unless all of it can be
    let mut per_channel_params = Vec::new();
    for &p in &plan.per_channel {
        let n = graph.nodes()[p].clone();
        let slots: Vec<usize> = if is_op(&n, "BatchNormalization") {
            vec![1, 2, 3, 4]
        } else {
            vec![1]
        };
        for s in slots {
            let (pd, pv) = const_f32s(graph, ctx, &n.input[s])?;
            if pv.len() != m || pd.iter().filter(|&&d| d != 1).count() > 1 {
                return None;
            }
            per_channel_params.push((p, s, pd, pv));
        }
    }
    let mut next = Vec::new();
    for &c in &plan.next_convs {
        let (nd, nw) = const_f32s(graph, ctx, &graph.nodes()[c].input[1])?;
        if nd.get(1).copied() != Some(m as i64) {
            return None;
        }
        next.push((c, nd, nw));
    }
    let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => Some(const_f32s(graph, ctx, b)?.1),
        None => None,
    };
    let kept = keep.len() as i64;
    let mut new_dims = dims.clone();
    new_dims[0] = kept;
    replace_input(graph, conv, 1, &new_dims, take_rows(&w, per, keep));
    if let Some(b) = bias {
        replace_input(graph, conv, 2, &[kept], take_rows(&b, 1, keep));
    }
    for (p, s, pd, pv) in per_channel_params {
        let shape: Vec<i64> = pd
            .iter()
            .map(|&d| if d == m as i64 { kept } else { d })
            .collect();
        replace_input(graph, p, s, &shape, take_rows(&pv, 1, keep));
    }
    for (c, nd, nw) in next {
        let (outer, inner) = (nd[0] as usize, nw.len() / (nd[0] as usize * m));
        let values: Vec<f64> = (0..outer)
            .flat_map(|o| {
                keep.iter()
                    .flat_map(move |&k| (0..inner).map(move |j| (o, k, j)))
            })
            .map(|(o, k, j)| f64::from(nw[(o * m + k) * inner + j]))
            .collect();
        let mut d = nd.clone();
        d[1] = kept;
        replace_input(graph, c, 1, &d, values);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::attr_ints;
    use crate::onnx::{DataType, Model};
    use crate::passes::testing::max_difference;

    fn ctx_for(m: &Model) -> PassContext {
        let mut ctx = PassContext::new(m, 1 << 20, 1 << 20);
        ctx.facts = crate::infer::Inference::of_model(m);
        ctx
    }

    fn two_convs() -> crate::onnx::ModelProto {
        // output channel 0 is dead: zero weights, zero bias, zero BN shift
        let w1: Vec<f32> = (0..4 * 2 * 9)
            .map(|k| {
                if k < 18 {
                    0.0
                } else {
                    ((k as f32) * 0.37).sin()
                }
            })
            .collect();
        let w2: Vec<f32> = (0..4 * 4 * 9).map(|k| ((k as f32) * 0.11).cos()).collect();
        ModelBuilder::new(13)
            .input("x", DataType::Float, &["1", "2", "8", "8"])
            .initializer_f32("w1", &[4, 2, 3, 3], &w1)
            .initializer_f32("b1", &[4], &[0.0, 0.2, 0.3, 0.4])
            .initializer_f32("scale", &[4], &[1.0, 2.0, 0.5, 1.5])
            .initializer_f32("bias", &[4], &[0.0, 0.1, 0.2, 0.3])
            .initializer_f32("mean", &[4], &[0.0; 4])
            .initializer_f32("var", &[4], &[1.0; 4])
            .initializer_f32("slope", &[4, 1, 1], &[0.1, 0.2, 0.3, 0.4])
            .initializer_f32("w2", &[4, 4, 3, 3], &w2)
            .node("Conv", &["x", "w1", "b1"], &["c1"])
            .attr(attr_ints("pads", &[1, 1, 1, 1]))
            .node(
                "BatchNormalization",
                &["c1", "scale", "bias", "mean", "var"],
                &["n1"],
            )
            .node("PRelu", &["n1", "slope"], &["a1"])
            .node("MaxPool", &["a1"], &["p1"])
            .attr(attr_ints("kernel_shape", &[2, 2]))
            .attr(attr_ints("strides", &[2, 2]))
            .node("Conv", &["p1", "w2"], &["y"])
            .output("y", DataType::Float, &["1", "4", "2", "2"])
            .build()
    }

    #[test]
    fn magnitude_pruning_reaches_the_target_sparsity() {
        let m = Model::from_proto(two_convs(), std::env::temp_dir());
        let ctx = ctx_for(&m);
        let mut g = Graph::new(m.proto.graph.clone().unwrap());
        let reports = prune_magnitude(&mut g, &ctx, 0.5);
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].elements, 72);
        assert_eq!(reports[0].zeros_after, 36);
        assert!((reports[1].sparsity - 0.5).abs() < 1e-9);
    }

    #[test]
    fn channel_pruning_shrinks_the_model_and_keeps_it_valid() {
        let proto = two_convs();
        let m = Model::from_proto(proto.clone(), std::env::temp_dir());
        let ctx = ctx_for(&m);
        let mut g = Graph::new(proto.graph.clone().unwrap());
        let reports = prune_channels(&mut g, &ctx, 0.25);
        assert_eq!(reports[0].removed, 1, "{reports:?}");
        assert!(
            reports[1]
                .skipped
                .as_ref()
                .unwrap()
                .contains("graph output"),
            "{reports:?}"
        );
        let mut after = proto.clone();
        after.graph = Some(g.into_proto());
        let w1 = after.graph.as_ref().unwrap().node[0].input[1].clone();
        let dims = after
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == w1)
            .unwrap()
            .dims
            .clone();
        assert_eq!(dims, [3, 2, 3, 3]);
        // the channel removed is the dead one: every slice along the way (bias, BN, PRelu slope,
        // the next conv's input channels) must line up for the outputs to stay the same
        let d = max_difference(&proto, &after);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn channels_flowing_into_a_residual_add_are_not_pruned() {
        let mut proto = two_convs();
        let g = proto.graph.as_mut().unwrap();
        g.node.insert(
            3,
            crate::onnx::NodeProto {
                op_type: Some("Add".into()),
                input: vec!["a1".into(), "a1".into()],
                output: vec!["r1".into()],
                ..Default::default()
            },
        );
        g.node[4].input[0] = "r1".into();
        let m = Model::from_proto(proto.clone(), std::env::temp_dir());
        let ctx = ctx_for(&m);
        let mut graph = Graph::new(proto.graph.clone().unwrap());
        let reports = prune_channels(&mut graph, &ctx, 0.25);
        assert!(
            reports[0].skipped.as_ref().unwrap().contains("Add"),
            "{reports:?}"
        );
    }
}
