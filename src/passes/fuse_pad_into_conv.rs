//! `fuse_pad_into_conv`: a zero `Pad` of the spatial axes before a `Conv` (or `AveragePool` that
//! counts padding) becomes the Conv's own padding.
//!
//! ```text
//! x -> Pad(pads, mode=constant, value=0) -> Conv(pads=p) -> y      =>      x -> Conv(pads=p+pads) -> y
//! ```
//! Pads on the batch and channel axes must be 0, the mode `constant` with value 0 (or none),
//! `auto_pad` NOTSET, all pads non-negative. For AveragePool the padding must count
//! (`count_include_pad=1`, or no pool padding yet, in which case it is set). MaxPool is left alone:
//! its padding is not zeros. The Pad stays if something else reads it. Results are bit-identical.

use super::rewrite::{attr, attr_i, attr_ints, const_f32s, const_i64s, is_op};
use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;
use crate::graph::builder::{attr_int, attr_ints as ints};
use crate::onnx::proto::NodeProto;

pub struct FusePadIntoConv;

fn pad_amounts(graph: &Graph, ctx: &PassContext, pad: &NodeProto) -> Option<Vec<i64>> {
    let mode = attr(pad, "mode").and_then(|a| a.s.clone());
    if mode.is_some_and(|m| m.as_ref() != b"constant") {
        return None;
    }
    let pads = match pad.input.get(1).filter(|p| !p.is_empty()) {
        Some(p) => const_i64s(graph, ctx, p)?,
        None => attr_ints(pad, "pads")?,
    };
    let value = match pad.input.get(2).filter(|v| !v.is_empty()) {
        Some(v) => const_f32s(graph, ctx, v)?.1.first().copied().unwrap_or(0.0),
        None => attr(pad, "value").and_then(|a| a.f).unwrap_or(0.0),
    };
    if pad.input.get(3).is_some_and(|a| !a.is_empty())
        || value != 0.0
        || pads.iter().any(|&p| p < 0)
        || pads.len() % 2 != 0
    {
        return None;
    }
    let rank = pads.len() / 2;
    let (begin, end) = pads.split_at(rank);
    if rank < 3 || begin[..2] != [0, 0] || end[..2] != [0, 0] {
        return None;
    }
    Some([&begin[2..], &end[2..]].concat())
}

impl Pass for FusePadIntoConv {
    fn name(&self) -> &'static str {
        "fuse_pad_into_conv"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "merge a zero Pad of the spatial axes into the following Conv or AveragePool"
    }
    fn details(&self) -> &'static str {
        "a zero Pad of the spatial axes becomes the padding of the next Conv or AveragePool \
         (not MaxPool)"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        let mut count = 0;
        for i in 0..graph.nodes().len() {
            let node = graph.nodes()[i].clone();
            let conv = is_op(&node, "Conv");
            let pool = is_op(&node, "AveragePool");
            if !(conv || pool)
                || attr(&node, "auto_pad")
                    .and_then(|a| a.s.clone())
                    .is_some_and(|s| s.as_ref() != b"NOTSET")
            {
                continue;
            }
            let Some(pad) = graph
                .producer(&node.input[0])
                .filter(|p| is_op(p, "Pad"))
                .cloned()
            else {
                continue;
            };
            let Some(extra) = pad_amounts(graph, ctx, &pad) else {
                continue;
            };
            let own = attr_ints(&node, "pads").unwrap_or_else(|| vec![0; extra.len()]);
            if own.len() != extra.len() {
                continue;
            }
            if pool && attr_i(&node, "count_include_pad", 0) == 0 && own.iter().any(|&p| p != 0) {
                continue; // its own padding is excluded from the average: cannot mix the two
            }
            let merged: Vec<i64> = own.iter().zip(&extra).map(|(a, b)| a + b).collect();
            let n = &mut graph.proto_mut().node[i];
            n.input[0] = pad.input[0].clone();
            n.attribute
                .retain(|a| a.name() != "pads" && !(pool && a.name() == "count_include_pad"));
            n.attribute.push(ints("pads", &merged));
            if pool {
                n.attribute.push(attr_int("count_include_pad", 1));
            }
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, ops, run_pass};

    fn model(op: &str, pads: &[i64]) -> crate::onnx::ModelProto {
        let w: Vec<f32> = (0..2 * 2 * 9).map(|k| (k as f32 * 0.2).cos()).collect();
        let mut b = ModelBuilder::new(13)
            .input("x", DataType::Float, &["1", "2", "5", "5"])
            .initializer_i64("pads", &[8], pads)
            .initializer_f32("w", &[2, 2, 3, 3], &w)
            .node("Pad", &["x", "pads"], &["p"]);
        b = if op == "Conv" {
            b.node("Conv", &["p", "w"], &["y"])
                .attr(ints("pads", &[1, 0, 0, 1]))
        } else {
            b.node("AveragePool", &["p"], &["y"])
                .attr(ints("kernel_shape", &[3, 3]))
        };
        b.output("y", DataType::Float, &[]).build()
    }

    #[test]
    fn spatial_zero_pads_merge() {
        for op in ["Conv", "AveragePool"] {
            let m = model(op, &[0, 0, 1, 2, 0, 0, 2, 1]);
            let (after, n) = run_pass(&FusePadIntoConv, &m);
            assert_eq!(n, 1, "{op}");
            let after = crate::passes::testing::run_pass(
                &crate::passes::eliminate_dead_nodes::EliminateDeadNodes,
                &after,
            )
            .0;
            assert_eq!(ops(&after), [op]);
            assert_eq!(max_difference(&m, &after), 0.0, "{op}");
        }
    }

    #[test]
    fn channel_pads_stay() {
        assert_eq!(
            run_pass(&FusePadIntoConv, &model("Conv", &[0, 1, 1, 1, 0, 0, 1, 1])).1,
            0
        );
    }
}
