//! Small pieces passes share: reading attributes and constant values, and bypassing a node whose
//! output equals one of its inputs without ever renaming a graph output.

use crate::graph::Graph;
pub use crate::onnx::attributes::{attr, attr_f, attr_i, attr_ints};
use crate::onnx::proto::NodeProto;

use super::{PassContext, PassError};

/// Is this a node of the default domain with this op type?
pub fn is_op(node: &NodeProto, op: &str) -> bool {
    node.op_type() == op && matches!(node.domain(), "" | "ai.onnx")
}

/// The values of a constant input as i64 (INT64 or INT32), if it is a constant.
pub fn const_i64s(graph: &Graph, ctx: &PassContext, value: &str) -> Option<Vec<i64>> {
    let t = graph.constant(value)?;
    let data = ctx.tensor_data(&t).ok()?;
    data.i64s().ok().or_else(|| {
        data.i32s()
            .ok()
            .map(|v| v.into_iter().map(i64::from).collect())
    })
}

/// The values of a constant FLOAT input, if it is one.
pub fn const_f32s(graph: &Graph, ctx: &PassContext, value: &str) -> Option<(Vec<i64>, Vec<f32>)> {
    let t = graph.constant(value)?;
    let data = ctx.tensor_data(&t).ok()?;
    Some((t.dims.clone(), data.f32s().ok()?))
}

/// Makes the node at `index`, whose first output equals the value `keep`, go away: its readers
/// read `keep` instead. When its output is a graph output the interface must keep that name, so
/// the producer of `keep` is renamed instead, if that is safe (a node output nothing else names);
/// otherwise the node stays. Returns whether the node was removed.
pub fn bypass(graph: &mut Graph, index: usize, keep: &str) -> Result<bool, PassError> {
    let out = graph.nodes()[index].output[0].clone();
    if !graph.is_output(&out) {
        graph.replace_all_uses(&out, keep);
        graph.remove_nodes(&[index]);
        return Ok(true);
    }
    let Some((producer, slot)) = graph.index().producer(keep) else {
        return Ok(false); // `keep` is a graph input or initializer: the node must stay
    };
    if graph.is_output(keep) || graph.is_input(keep) {
        return Ok(false);
    }
    graph.proto_mut().node[producer].output[slot] = out.clone();
    graph.remove_nodes(&[index]);
    graph.replace_all_uses(keep, &out);
    Ok(true)
}

/// Runs `bypass` on every node `matches` selects (returning the value it passes through).
pub fn bypass_all(
    graph: &mut Graph,
    ctx: &PassContext,
    matches: impl Fn(&Graph, &PassContext, &NodeProto) -> Option<String>,
) -> Result<usize, PassError> {
    let mut count = 0;
    let mut i = 0;
    while i < graph.nodes().len() {
        let keep = matches(graph, ctx, &graph.nodes()[i]);
        match keep {
            Some(keep) if bypass(graph, i, &keep)? => count += 1,
            _ => i += 1,
        }
    }
    Ok(count)
}

/// The only node reading `value`, when exactly one does and it is not a graph output.
pub fn sole_consumer(graph: &Graph, value: &str) -> Option<usize> {
    match graph.consumers(value) {
        [one] if !graph.is_output(value) => Some(*one),
        _ => None,
    }
}

/// A constant operand of shape `dims` broadcast against an output of rank `rank` whose axis 1
/// has `channels` entries, as one value per channel; `None` unless it varies along axis 1 only.
pub fn per_channel(dims: &[i64], values: &[f32], rank: usize, channels: usize) -> Option<Vec<f32>> {
    if dims.len() > rank || rank < 2 {
        return None;
    }
    let padded: Vec<i64> = std::iter::repeat_n(1, rank - dims.len())
        .chain(dims.iter().copied())
        .collect();
    if padded
        .iter()
        .enumerate()
        .any(|(axis, &d)| axis != 1 && d != 1)
    {
        return None;
    }
    match padded[1] as usize {
        1 => Some(vec![*values.first()?; channels]),
        c if c == channels && values.len() == channels => Some(values.to_vec()),
        _ => None,
    }
}

/// A FLOAT tensor from values computed in f64.
pub fn f32_tensor(
    dims: &[i64],
    values: impl IntoIterator<Item = f64>,
) -> crate::onnx::proto::TensorProto {
    let v: Vec<f32> = values.into_iter().map(|x| x as f32).collect();
    crate::graph::builder::tensor_f32("", dims, &v)
}

/// Makes node `producer` write the value node `follower` wrote and removes `follower`: the pair
/// collapses into the (rewritten) producer without renaming any graph output.
pub fn absorb(graph: &mut Graph, producer: usize, follower: usize) {
    let out = graph.nodes()[follower].output[0].clone();
    graph.proto_mut().node[producer].output[0] = out;
    graph.remove_nodes(&[follower]);
}

/// The `axes` of Squeeze/Unsqueeze/Reduce*: a constant input (opset 13+) or the attribute.
pub fn axes_of(graph: &Graph, ctx: &PassContext, node: &NodeProto) -> Option<Vec<i64>> {
    match node.input.get(1).filter(|a| !a.is_empty()) {
        Some(a) => const_i64s(graph, ctx, a),
        None => attr_ints(node, "axes"),
    }
}

/// Sets `axes` the way the node carries them (input or attribute).
pub fn set_axes(graph: &mut Graph, index: usize, axes: &[i64]) {
    let node = graph.nodes()[index].clone();
    if node.input.get(1).is_some_and(|a| !a.is_empty()) {
        let t = crate::graph::builder::tensor_i64("", &[axes.len() as i64], axes);
        let name = graph.add_initializer(&format!("{}_axes", node.output[0]), t);
        graph.proto_mut().node[index].input[1] = name;
    } else {
        let n = &mut graph.proto_mut().node[index];
        n.attribute.retain(|a| a.name() != "axes");
        n.attribute
            .push(crate::graph::builder::attr_ints("axes", axes));
    }
}

/// Whether `value` is a constant holding one number (any shape of one element) close to `want`.
pub fn is_scalar(graph: &Graph, ctx: &PassContext, value: &str, want: f64) -> bool {
    let Some(t) = graph.constant(value) else {
        return false;
    };
    let Some(v) = ctx.tensor_data(&t).ok().and_then(|d| d.to_f64_lossy()) else {
        return false;
    };
    v.len() == 1 && (v[0] - want).abs() <= 1e-4 * want.abs().max(1.0)
}

/// The node at `index`'s other input when one input is `value`.
pub fn other_input<'a>(node: &'a NodeProto, value: &str) -> Option<&'a String> {
    match node.input.as_slice() {
        [a, b] if a == value => Some(b),
        [a, b] if b == value => Some(a),
        _ => None,
    }
}

/// The sole consumer of `value` if it is a default-domain `op`, with its index.
pub fn next_op(graph: &Graph, value: &str, op: &str) -> Option<usize> {
    sole_consumer(graph, value).filter(|&i| is_op(&graph.nodes()[i], op))
}

/// Offers each node index to `rewrite` in turn. A rewrite that applies (returns true) may remove
/// or change nodes, so the same index is offered again; otherwise the next one is. Returns how
/// many rewrites applied.
pub fn rewrite_each(
    graph: &mut Graph,
    mut rewrite: impl FnMut(&mut Graph, usize) -> bool,
) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < graph.nodes().len() {
        if rewrite(graph, i) {
            count += 1;
        } else {
            i += 1;
        }
    }
    count
}
