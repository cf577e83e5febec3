//! Weight-only 4-bit quantization of MatMul and Gemm: each constant weight `W[K, N]` on the
//! right of a MatMul becomes uint4 in blocks of `block_size` rows per column, each block with
//! its own scale and zero point, read through a standard opset-21 `DequantizeLinear(axis 0,
//! block_size)`. Activations stay float. A Gemm (transA 0) becomes that MatMul, its weight
//! taken as `[K, N]` (transposed back where transB) times alpha, plus `beta * C`.
//!
//! ```text
//!   MatMul(A, W:f32[K,N])
//! becomes
//!   MatMul(A, DequantizeLinear(W_q:u4[K,N], scale:f32[ceil(K/B),N], zero:u4[ceil(K/B),N]))
//! ```
//!
//! onnxruntime's CPU provider fuses exactly this form into its 4-bit kernel (MatMulNBits): the
//! DequantizeLinear must feed the MatMul's B, along axis 0, with a block size that is a power of
//! two of at least 16, 2-D constant weight, scale and zero point, and no other reader. tract does
//! not run 4-bit types: results are measured and verified with onnxruntime.
//!
//! The model is raised to opset 21 first ([`crate::onnx::upgrade`]), only where that keeps every
//! node's meaning; otherwise no MatMul is quantized and the reason is the error (where only
//! tables would be, they are written as int8 rows at the model's own opset).
//!
//! Embedding tables (a Gather along axis 0 of a large 2-D constant) become int8 rows with a
//! scale per row, as dynamic and static int8 write them (`super::embedding`): ONNX's Gather takes
//! no 4-bit type, and a table read through DequantizeLinear would be dequantized whole on every
//! run.
//!
//! Left alone, and reported: weights on the left (`MatMul(W, X)`: the kernel takes B), weights of
//! fewer than [`MIN_WEIGHT_ELEMENTS`] elements or fewer rows than a block, Gemm with transA,
//! nodes the user excludes, and nodes the accuracy search returns to float.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::QuantizeError;
use super::weights::MIN_WEIGHT_ELEMENTS;
use super::{KeptFloat, QuantizedNode};
use crate::graph::builder::{attr_int, raw_tensor, tensor_f32};
use crate::graph::{Graph, bodies_mut, node_label};
use crate::infer::Inference;
use crate::onnx::attributes::{attr_f, attr_i};
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::{DataType, Model};
use crate::passes::PassContext;

/// The opset that has 4-bit types and blocked DequantizeLinear.
pub const OPSET: i64 = 21;
/// Rows per block unless asked otherwise (onnxruntime's own default).
pub const DEFAULT_BLOCK_SIZE: usize = 32;

#[derive(Debug, Clone)]
pub struct Int4Options {
    pub block_size: usize,
    pub exclude_nodes: HashSet<String>,
    pub exclude_op_types: HashSet<String>,
    /// Nodes kept float, by the value they write, with the reason (the accuracy search's).
    pub revert: BTreeMap<String, String>,
    /// Weights quantized before, by the values they were quantized from: the accuracy search's
    /// rounds share it, and quantize each weight once.
    pub memo: std::rc::Rc<super::weights::Memo>,
}

impl Default for Int4Options {
    fn default() -> Self {
        Int4Options {
            block_size: DEFAULT_BLOCK_SIZE,
            exclude_nodes: HashSet::new(),
            exclude_op_types: HashSet::new(),
            revert: BTreeMap::new(),
            memo: Default::default(),
        }
    }
}

/// The quantized nodes (by the value each writes, as in `quantized`) whose weight onnxruntime
/// leaves dequantized on its own in `optimized`, its graph of `candidate`, instead of fusing the
/// pair into its 4-bit MatMul kernel: that weight would be dequantized to float at every run
/// (openwakeword's mel filterbank, a MatMul followed by Clip and Log, is left so).
pub fn unfused(
    candidate: &GraphProto,
    optimized: &GraphProto,
    quantized: &[QuantizedNode],
) -> Vec<String> {
    use crate::graph::all_nodes;
    let blocked = |n: &NodeProto| {
        n.op_type() == "DequantizeLinear" && n.attribute.iter().any(|a| a.name() == "block_size")
    };
    // one DequantizeLinear a MatMul, its output named for it (sibling bodies may repeat a
    // name: every reader of a name left is taken, keeping float more rather than less)
    let left: HashSet<&str> = all_nodes(optimized)
        .into_iter()
        .filter(|n| blocked(n))
        .filter_map(|n| n.output.first().map(String::as_str))
        .collect();
    let ours: HashSet<&str> = quantized.iter().map(|q| q.output.as_str()).collect();
    let candidate = all_nodes(candidate);
    let readers = |value: &str| -> Vec<&String> {
        candidate
            .iter()
            .filter(|n| n.input.iter().any(|i| i == value))
            .filter_map(|n| n.output.first())
            .collect()
    };
    let mut found = std::collections::BTreeSet::new();
    for dequantized in left {
        // the MatMul's product, or a Gemm's before its bias is added
        for product in readers(dequantized) {
            if ours.contains(product.as_str()) {
                found.insert(product.clone());
            } else {
                let biased = readers(product);
                found.extend(
                    biased
                        .into_iter()
                        .filter(|w| ours.contains(w.as_str()))
                        .cloned(),
                );
            }
        }
    }
    found.into_iter().collect()
}

/// Whether `block_size` is one onnxruntime's 4-bit kernel takes: a power of two from 16 to 256
/// (its CPU kernel gives zeros at 512).
pub fn valid_block_size(block_size: usize) -> bool {
    block_size.is_power_of_two() && (16..=256).contains(&block_size)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Int4Report {
    pub block_size: usize,
    /// The model raised to opset 21.
    #[serde(flatten)]
    pub opset: super::OpsetChange,
    pub quantized: Vec<QuantizedNode>,
    pub kept_float: Vec<KeptFloat>,
}

/// Quantizes every eligible MatMul weight of `model` (bodies included) to blocked uint4.
pub fn quantize(model: &mut Model, options: &Int4Options) -> Result<Int4Report, QuantizeError> {
    if !valid_block_size(options.block_size) {
        return Err(QuantizeError::Unsupported(format!(
            "int4 block size {}: a power of two from 16 to 256",
            options.block_size
        )));
    }
    // refused: the model is left as it was, and quantized below only to learn whether anything
    // would be (a model with nothing to quantize is put back as it was either way)
    let raise = super::Raise::keeping(model, OPSET);
    let facts = Inference::of_model(model);
    let ctx = PassContext::new(model, 0, 0);
    let mut q = Quantizer {
        opset: model.opset("").unwrap_or(1),
        facts: &facts,
        ctx: &ctx,
        options,
        report: Int4Report {
            block_size: options.block_size,
            ..Default::default()
        },
        path: String::new(),
    };
    let mut graph = std::mem::take(model.graph_mut());
    let result = q.graph(&mut graph, &HashMap::new(), &HashSet::new());
    *model.graph_mut() = graph;
    result?;
    let mut report = q.report;
    if report.quantized.is_empty() {
        raise.restore(model);
        return Ok(report);
    }
    let blocked = report.quantized.iter().any(|n| n.op != "Gather");
    if let Some(why) = raise.refused().filter(|_| blocked) {
        raise.restore(model);
        return Err(QuantizeError::Unsupported(format!(
            "int4 needs opset {OPSET} and the model cannot be raised to it: {why}"
        )));
    }
    report.opset = raise.settle(model, true);
    super::remove_orphans(model)?;
    Ok(report)
}

struct Quantizer<'a> {
    /// The model's opset, raised where it could be.
    opset: i64,
    facts: &'a Inference,
    ctx: &'a PassContext,
    options: &'a Int4Options,
    report: Int4Report,
    /// How the nodes of the graph being quantized are labelled: empty in the main graph, the
    /// body's path in a body ([`bodies_mut`]).
    path: String,
}

impl Quantizer<'_> {
    fn graph(
        &mut self,
        g: &mut GraphProto,
        outer: &HashMap<String, TensorProto>,
        outer_names: &HashSet<String>,
    ) -> Result<(), QuantizeError> {
        // the body holders' labels, before nodes are inserted
        let labels = crate::graph::holder_labels(g);
        let mut edit = Graph::in_scope(std::mem::take(g), outer_names.clone());
        let mut added: Vec<NodeProto> = Vec::new();
        // the tables written as int8 rows, each once
        let mut written = super::weights::Written::new(self.options.memo.clone());
        let mut doomed = Vec::new();
        for i in 0..edit.nodes().len() {
            let node = edit.nodes()[i].clone();
            if !matches!(node.op_type(), "MatMul" | "Gemm" | "Gather")
                || !matches!(node.domain(), "" | "ai.onnx")
            {
                continue;
            }
            let label = format!("{}{}", self.path, node_label(&node, i));
            if node.op_type() == "Gather" {
                // an embedding table: int8 rows
                let keep = super::embedding::Keep {
                    opset: self.opset,
                    exclude_nodes: &self.options.exclude_nodes,
                    exclude_op_types: &self.options.exclude_op_types,
                    revert: &self.options.revert,
                };
                let done = super::embedding::Done {
                    quantized: &mut self.report.quantized,
                    kept_float: &mut self.report.kept_float,
                    doomed: &mut doomed,
                };
                let (ctx, facts) = (self.ctx, self.facts);
                super::embedding::quantize_lookup(
                    ctx,
                    facts,
                    &keep,
                    &mut edit,
                    outer,
                    (i, label, &node),
                    &mut added,
                    &mut written,
                    done,
                );
                continue;
            }
            let Planned { weight, bias } = match self.plan(&edit, outer, &node) {
                Ok(w) => w,
                Err(reason) => {
                    self.report.kept_float.push(KeptFloat {
                        node: label,
                        op: node.op_type().into(),
                        reason,
                    });
                    continue;
                }
            };
            // each reader its own copy of the weight, scale and zero point: onnxruntime 1.31.1
            // fuses a DequantizeLinear into its 4-bit kernel only where all three are its own
            // (a copy costs an eighth of the float weight; quantized once, in the memo)
            let block = self.options.block_size;
            let blocked = self.options.memo.get(
                weight.source.as_ref(),
                format!("uint4 in blocks of {block} of {:?}", weight.dims),
                || quantize_blocked(&weight.values, weight.dims, block),
            );
            let sqnr = blocked.sqnr_db;
            let [k, n] = weight.dims.map(|d| d as i64);
            let blocks = blocked.scales.len() as i64 / n;
            let [w_q, w_scale, w_zero] = [
                edit.add_initializer(
                    &format!("{}_uint4", weight.name),
                    raw_tensor("", DataType::Uint4, &[k, n], pack_u4(&blocked.values)),
                ),
                edit.add_initializer(
                    &format!("{}_scale", weight.name),
                    tensor_f32("", &[blocks, n], &blocked.scales),
                ),
                edit.add_initializer(
                    &format!("{}_zero_point", weight.name),
                    raw_tensor("", DataType::Uint4, &[blocks, n], pack_u4(&blocked.zeros)),
                ),
            ];
            // one DequantizeLinear per MatMul: onnxruntime fuses only a pair with one reader
            let dequantized = edit.fresh_name(&format!("{}_dequantized", weight.name));
            let output = node.output[0].clone();
            let base = super::node_base(&node);
            added.push(super::new_node(
                "DequantizeLinear",
                &edit.fresh_name(&format!("{base}/dequantize_weight")),
                &[&w_q, &w_scale, &w_zero],
                &[&dequantized],
                vec![
                    attr_int("axis", 0),
                    attr_int("block_size", self.options.block_size as i64),
                ],
            ));
            if node.op_type() == "Gemm" {
                // Gemm(A, B, C) = MatMul(A, B as [K, N] times alpha) + beta * C
                let product = match bias {
                    Some(_) => edit.fresh_name(&format!("{output}_product")),
                    None => output.clone(),
                };
                edit.proto_mut().node[i] = super::new_node(
                    "MatMul",
                    &base,
                    &[&node.input[0], &dequantized],
                    &[&product],
                    vec![],
                );
                if let Some(bias) = bias {
                    bias.add(&mut edit, &mut added, &product, &output, &base);
                }
            } else {
                edit.proto_mut().node[i].input[1] = dequantized;
            }
            self.report.quantized.push(QuantizedNode {
                node: label,
                op: node.op_type().into(),
                output,
                weight: weight.name.clone(),
                weight_shape: weight.dims,
                weight_sqnr_db: sqnr,
            });
        }
        edit.remove_nodes(&doomed);
        edit.proto_mut().node.extend(added);
        edit.sort_topologically()?;
        *g = edit.into_proto();
        let (scope, names) = super::weights::body_scope(g, outer, outer_names);
        for (path, body) in bodies_mut(g, &self.path.clone(), &labels) {
            let enclosing = std::mem::replace(&mut self.path, path);
            self.graph(body, &scope, &names)?;
            self.path = enclosing;
        }
        Ok(())
    }

    /// The weight of `node` to quantize, or why it stays float.
    fn plan(
        &self,
        graph: &Graph,
        outer: &HashMap<String, TensorProto>,
        node: &NodeProto,
    ) -> Result<Planned, String> {
        if let Some(why) = super::excluded(
            node,
            &self.options.exclude_nodes,
            &self.options.exclude_op_types,
        ) {
            return Err(why);
        }
        if let Some(reason) = node.output.first().and_then(|o| self.options.revert.get(o)) {
            return Err(reason.clone());
        }
        let float = |v: &str| self.facts.elem_type(v) == Some(DataType::Float);
        let gemm = node.op_type() == "Gemm";
        let arity = if gemm { 2..=3 } else { 2..=2 };
        if !arity.contains(&node.input.len()) || !float(&node.input[0]) || !float(&node.input[1]) {
            return Err("not a float32 product".into());
        }
        if gemm && attr_i(node, "transA", 0) != 0 {
            return Err("Gemm with transA".into());
        }
        let trans_b = gemm && attr_i(node, "transB", 0) != 0;
        let Some(mut w) = super::weights::matrix(self.ctx, graph, outer, &node.input[1], trans_b)?
        else {
            return Err(
                match super::weights::constant_behind(graph, outer, &node.input[0]) {
                    Some(_) => {
                        "its weight is on the left: the 4-bit kernel takes it on the right".into()
                    }
                    None => super::weights::not_constant(
                        graph,
                        &node.input[1],
                        "its B is not a constant",
                    ),
                },
            );
        };
        if w.values.len() < MIN_WEIGHT_ELEMENTS {
            return Err(format!(
                "weight of {} elements: below {MIN_WEIGHT_ELEMENTS}, 4 bits gain nothing",
                w.values.len()
            ));
        }
        if w.dims[0] < self.options.block_size {
            return Err(format!(
                "{} rows, fewer than a block of {}",
                w.dims[0], self.options.block_size
            ));
        }
        if !gemm {
            return Ok(Planned {
                weight: w,
                bias: None,
            });
        }
        let alpha = attr_f(node, "alpha", 1.0);
        if alpha != 1.0 {
            w.scale(alpha);
        }
        let bias = super::weights::gemm_bias(self.ctx, graph, outer, node)?;
        Ok(Planned { weight: w, bias })
    }
}

/// What to quantize in a MatMul or Gemm: the weight as `[K, N]` (a Gemm's transposed back and
/// times its alpha), and the Gemm's bias.
struct Planned {
    weight: super::weights::Matrix,
    bias: Option<super::weights::Bias>,
}

/// A weight in blocked uint4: values row-major as the float ones, one scale and zero point per
/// block and column (`[ceil(K/B), N]` row-major), and the SQNR of the dequantized weight.
pub struct Blocked {
    pub values: Vec<u8>,
    pub scales: Vec<f32>,
    pub zeros: Vec<u8>,
    pub sqnr_db: f64,
}

/// Quantizes `values` (`[K, N]` row-major) to uint4 in blocks of `block` rows per column:
/// asymmetric, each block's range widened to hold 0 and mapped onto 0..=15, so that a block's
/// minimum and maximum are kept within half a step. An all-zero block gets scale 1.
pub fn quantize_blocked(values: &[f32], dims: [usize; 2], block: usize) -> Blocked {
    let [k, n] = dims;
    let blocks = k.div_ceil(block);
    let mut out = Blocked {
        values: vec![0; k * n],
        scales: vec![1.0; blocks * n],
        zeros: vec![0; blocks * n],
        sqnr_db: f64::INFINITY,
    };
    let mut sums = crate::verify::SampleSums::default();
    // a block's float values and their dequantized twins, summed together in `add_all`'s
    // interleaved lanes (pair by pair, the sums are one chain of dependent additions)
    let (mut read, mut back) = (Vec::with_capacity(block), Vec::with_capacity(block));
    for b in 0..blocks {
        let rows = b * block..((b + 1) * block).min(k);
        for c in 0..n {
            let (lo, hi) = rows.clone().fold((0f32, 0f32), |(lo, hi), r| {
                let v = values[r * n + c];
                (lo.min(v), hi.max(v))
            });
            let scale = if hi > lo { (hi - lo) / 15.0 } else { 1.0 };
            let zero = (-lo / scale).round().clamp(0.0, 15.0);
            out.scales[b * n + c] = scale;
            out.zeros[b * n + c] = zero as u8;
            read.clear();
            back.clear();
            for r in rows.clone() {
                let v = values[r * n + c];
                let q = (v / scale + zero).round().clamp(0.0, 15.0);
                out.values[r * n + c] = q as u8;
                read.push(v);
                back.push((q - zero) * scale);
            }
            sums.add_all(&read, &back);
        }
    }
    out.sqnr_db = sums.sqnr_db();
    out
}

/// 4-bit values two to a byte, the first in the low nibble (ONNX's packing).
pub fn pack_u4(values: &[u8]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|p| (p[0] & 0x0f) | (p.get(1).copied().unwrap_or(0) << 4))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Of two blocked weights, onnxruntime fused one into MatMulNBits and left the other's
    /// DequantizeLinear (a Gemm's, whose product gets its bias added after): the Gemm is named
    /// by the value it wrote, not by its product.
    #[test]
    fn a_weight_onnxruntime_leaves_dequantized_names_its_node() {
        let dq = |w: &str, out: &str| {
            super::super::new_node(
                "DequantizeLinear",
                "",
                &[w, "s", "z"],
                &[out],
                vec![attr_int("block_size", 32)],
            )
        };
        let candidate = GraphProto {
            node: vec![
                dq("w_uint4", "w_dequantized"),
                super::super::new_node("MatMul", "", &["x", "w_dequantized"], &["y1"], vec![]),
                dq("w_uint4", "w_dequantized_1"),
                super::super::new_node(
                    "MatMul",
                    "",
                    &["x", "w_dequantized_1"],
                    &["y2_product"],
                    vec![],
                ),
                super::super::new_node("Add", "", &["y2_product", "b"], &["y2"], vec![]),
            ],
            ..Default::default()
        };
        let optimized = GraphProto {
            node: vec![
                super::super::new_node("MatMulNBits", "", &["x", "w_uint4"], &["y1"], vec![]),
                dq("w_uint4", "w_dequantized_1"),
                super::super::new_node("Gemm", "", &["x", "w_dequantized_1", "b"], &["y2"], vec![]),
            ],
            ..Default::default()
        };
        let node = |output: &str| QuantizedNode {
            node: output.into(),
            op: "MatMul".into(),
            output: output.into(),
            weight: "w".into(),
            weight_shape: [64, 8],
            weight_sqnr_db: 20.0,
        };
        let quantized = [node("y1"), node("y2")];
        assert_eq!(unfused(&candidate, &optimized, &quantized), ["y2"]);
        let all_fused = GraphProto {
            node: optimized.node[..1].to_vec(),
            ..Default::default()
        };
        assert!(unfused(&candidate, &all_fused, &quantized).is_empty());
    }

    /// The first `count` 4-bit values of a packed tensor.
    fn unpack(t: &TensorProto, count: usize) -> Vec<u8> {
        let raw = t.raw_data.as_deref().unwrap();
        (0..count)
            .map(|i| (raw[i / 2] >> (4 * (i % 2))) & 0x0f)
            .collect()
    }

    /// A float32 tensor's values.
    fn floats(t: &TensorProto) -> Vec<f32> {
        t.raw_data
            .as_deref()
            .unwrap()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn packing_puts_the_first_value_in_the_low_nibble() {
        assert_eq!(pack_u4(&[1, 2, 15]), [0x21, 0x0f]);
    }

    #[test]
    fn blocks_keep_their_own_range_and_dequantize_close() {
        // two blocks of 16 rows, 2 columns; the second block ten times wider
        let (k, n, b) = (32, 2, 16);
        let values: Vec<f32> = (0..k * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                let x = (r as f32 * 0.37 + c as f32).sin();
                if r >= b { x * 10.0 } else { x }
            })
            .collect();
        let q = quantize_blocked(&values, [k, n], b);
        assert_eq!(q.scales.len(), 4);
        assert!(q.scales[2] > 5.0 * q.scales[0], "{:?}", q.scales);
        for (i, &v) in values.iter().enumerate() {
            let (r, c) = (i / n, i % n);
            let s = q.scales[(r / b) * n + c];
            let z = f32::from(q.zeros[(r / b) * n + c]);
            let back = (f32::from(q.values[i]) - z) * s;
            assert!((back - v).abs() <= s / 2.0 + 1e-6, "{v} -> {back}");
            assert!(q.values[i] <= 15);
        }
        assert!(q.sqnr_db > 20.0 && q.sqnr_db.is_finite(), "{}", q.sqnr_db);
        // a zero block is exact
        let z = quantize_blocked(&[0.0; 32], [16, 2], 16);
        assert_eq!(z.sqnr_db, f64::INFINITY);
        assert!(z.values.iter().all(|&v| v == z.zeros[0]));
    }

    /// `MatMul(x, W[64, 8])` at opset 17 with a ReduceMean: raised to 21 (the reduction's axes
    /// become its input), W becomes uint4 blocks of 32 rows read through DequantizeLinear, the
    /// float weight is gone, and the dequantized values are within half a step of W.
    #[test]
    fn a_matmul_weight_becomes_blocked_uint4_at_opset_21() {
        use crate::graph::builder::{ModelBuilder, attr_ints};
        let (k, n) = (64usize, 8usize);
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7919) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["2", "64"])
            .initializer_f32("W", &[k as i64, n as i64], &w)
            .node("MatMul", &["x", "W"], &["y"])
            .node("ReduceMean", &["y"], &["m"])
            .attr(attr_ints("axes", &[1]))
            .output("m", DataType::Float, &["2", "1"])
            .build();
        let mut model = Model::from_proto(proto, ".".into());
        let report = quantize(&mut model, &Int4Options::default()).unwrap();
        assert_eq!(report.quantized.len(), 1);
        assert_eq!(report.opset.opset_raised_from, Some(17));
        assert_eq!(report.opset.rewritten_for_opset.len(), 1);
        assert_eq!(model.opset(""), Some(21));
        crate::graph::check_model(&model).unwrap();
        let g = model.graph();
        assert!(g.initializer.iter().all(|t| t.name() != "W"));
        let dq = g
            .node
            .iter()
            .find(|n| n.op_type() == "DequantizeLinear")
            .unwrap();
        let matmul = g.node.iter().find(|n| n.op_type() == "MatMul").unwrap();
        assert_eq!(matmul.input[1], dq.output[0]);
        assert_eq!(crate::onnx::attributes::attr_i(dq, "axis", -1), 0);
        assert_eq!(crate::onnx::attributes::attr_i(dq, "block_size", 0), 32);
        let init = |name: &str| g.initializer.iter().find(|t| t.name() == name).unwrap();
        let (wq, scale, zero) = (init(&dq.input[0]), init(&dq.input[1]), init(&dq.input[2]));
        assert_eq!(wq.data_type(), DataType::Uint4.code());
        assert_eq!(wq.dims, [64, 8]);
        assert_eq!(zero.data_type(), DataType::Uint4.code());
        assert_eq!(
            (scale.dims.clone(), zero.dims.clone()),
            (vec![2, 8], vec![2, 8])
        );
        let (q, z) = (unpack(wq, k * n), unpack(zero, 2 * n));
        let s = floats(scale);
        for (i, &v) in w.iter().enumerate() {
            let b = (i / n / 32) * n + i % n;
            let back = (f32::from(q[i]) - f32::from(z[b])) * s[b];
            assert!((back - v).abs() <= s[b] / 2.0 + 1e-6, "{i}: {v} -> {back}");
        }
    }

    /// `Gemm(x, W[8, 64], C, transB, alpha 2, beta 0.5)` becomes `MatMul(x, DQ(W as [64, 8]
    /// times 2)) + 0.5 * C`, the MatMul writing to the Add that writes the Gemm's output.
    #[test]
    fn a_gemm_becomes_a_blocked_matmul_plus_its_bias() {
        use crate::graph::builder::{ModelBuilder, attr_float};
        let (k, n) = (64usize, 8usize);
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7919) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let c: Vec<f32> = (0..n).map(|j| j as f32).collect();
        let proto = ModelBuilder::new(13)
            .input("x", DataType::Float, &["2", "64"])
            .initializer_f32("W", &[n as i64, k as i64], &w)
            .initializer_f32("C", &[n as i64], &c)
            .node("Gemm", &["x", "W", "C"], &["y"])
            .attr(attr_int("transB", 1))
            .attr(attr_float("alpha", 2.0))
            .attr(attr_float("beta", 0.5))
            .output("y", DataType::Float, &["2", "8"])
            .build();
        let mut model = Model::from_proto(proto, ".".into());
        let report = quantize(&mut model, &Int4Options::default()).unwrap();
        assert_eq!(report.quantized.len(), 1);
        assert_eq!(report.quantized[0].weight_shape, [64, 8]);
        crate::graph::check_model(&model).unwrap();
        let g = model.graph();
        let ops: Vec<_> = g.node.iter().map(|n| n.op_type()).collect();
        assert!(!ops.contains(&"Gemm"), "{ops:?}");
        let find = |op: &str| g.node.iter().find(|n| n.op_type() == op).unwrap();
        let (dq, matmul, add) = (find("DequantizeLinear"), find("MatMul"), find("Add"));
        assert_eq!(matmul.input, ["x".to_string(), dq.output[0].clone()]);
        assert_eq!(add.input[0], matmul.output[0]);
        assert_eq!(add.output, ["y"]);
        let init = |name: &str| g.initializer.iter().find(|t| t.name() == name).unwrap();
        let half: Vec<f32> = c.iter().map(|v| v * 0.5).collect();
        assert_eq!(floats(init(&add.input[1])), half);
        let (wq, scale, zero) = (init(&dq.input[0]), init(&dq.input[1]), init(&dq.input[2]));
        assert_eq!(wq.dims, [64, 8]);
        let (q, z, s) = (unpack(wq, k * n), unpack(zero, 2 * n), floats(scale));
        // row r, column j of the [64, 8] weight is 2 * W[j][r]
        for r in 0..k {
            for j in 0..n {
                let want = 2.0 * w[j * k + r];
                let b = (r / 32) * n + j;
                let back = (f32::from(q[r * n + j]) - f32::from(z[b])) * s[b];
                assert!(
                    (back - want).abs() <= s[b] / 2.0 + 1e-6,
                    "{r},{j}: {want} -> {back}"
                );
            }
        }
    }

    /// One weight read by a MatMul and by a plain Gemm (no transB, alpha 1) is the same numbers,
    /// stored for each (onnxruntime fuses only a DequantizeLinear whose weight is its own); read
    /// by a scaled Gemm it is other numbers. A Gemm adding a computed C times beta gets a Mul by
    /// beta before its Add.
    #[test]
    fn a_weight_read_by_several_nodes_is_stored_for_each() {
        use crate::graph::builder::{ModelBuilder, attr_float};
        let w: Vec<f32> = (0..64 * 8).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
        let proto = ModelBuilder::new(21)
            .input("x", DataType::Float, &["2", "64"])
            .input("c", DataType::Float, &["2", "8"])
            .initializer_f32("W", &[64, 8], &w)
            .node("MatMul", &["x", "W"], &["a"])
            .node("Gemm", &["x", "W"], &["b"])
            .node("Gemm", &["x", "W", "c"], &["d"])
            .attr(attr_float("alpha", 0.5))
            .attr(attr_float("beta", 3.0))
            .node("Sum", &["a", "b", "d"], &["y"])
            .output("y", DataType::Float, &["2", "8"])
            .build();
        let mut model = Model::from_proto(proto, ".".into());
        let report = quantize(&mut model, &Int4Options::default()).unwrap();
        assert_eq!(report.quantized.len(), 3);
        crate::graph::check_model(&model).unwrap();
        let g = model.graph();
        let dqs: Vec<_> = g
            .node
            .iter()
            .filter(|n| n.op_type() == "DequantizeLinear")
            .collect();
        assert_eq!(dqs.len(), 3, "a DequantizeLinear per reader");
        let stored: std::collections::BTreeSet<_> =
            dqs.iter().map(|n| n.input[0].clone()).collect();
        assert_eq!(stored.len(), 3, "each reader its own weight");
        let weight_of = |output: &str| {
            let matmul = g.node.iter().find(|n| n.output[0] == output).unwrap();
            assert_eq!(matmul.op_type(), "MatMul");
            let dq = dqs.iter().find(|d| d.output[0] == matmul.input[1]).unwrap();
            dq.input[0].clone()
        };
        // the weight times alpha is quantized from its own values, not found as the plain
        // one's (every value halved: scales half, zero points alike)
        let scales = |stored: &str| {
            let dq = dqs.iter().find(|d| d.input[0] == stored).unwrap();
            let t = g
                .initializer
                .iter()
                .find(|t| t.name() == dq.input[1])
                .unwrap();
            crate::onnx::TensorData::new(t, None)
                .unwrap()
                .f32s()
                .unwrap()
        };
        let values = |name: &str| {
            g.initializer
                .iter()
                .find(|t| t.name() == name)
                .unwrap()
                .raw_data
                .clone()
        };
        let (a, b) = (weight_of("a"), weight_of("b"));
        assert_eq!(values(&a), values(&b));
        assert_eq!(scales(&a), scales(&b));
        let scaled = stored.iter().find(|s| **s != a && **s != b).unwrap();
        let (plain, scaled) = (scales(&a), scales(scaled));
        assert!(
            plain.iter().zip(&scaled).all(|(p, s)| *s == p * 0.5),
            "{plain:?} {scaled:?}"
        );
        let beta = g
            .node
            .iter()
            .find(|n| n.op_type() == "Mul")
            .expect("beta times the computed C");
        assert_eq!(beta.input[0], "c");
        let add = g.node.iter().find(|n| n.op_type() == "Add").unwrap();
        assert_eq!(add.input[1], beta.output[0]);
        assert_eq!(add.output, ["d"]);
    }

    /// An embedding table becomes int8 rows (ONNX's Gather takes no 4-bit type), the MatMul
    /// after it blocked uint4; excluded, the table stays float; alone, its rows compute what the
    /// float table does (tract runs int8 rows).
    #[test]
    fn tables_become_int8_rows_beside_blocked_weights() {
        use crate::graph::builder::ModelBuilder;
        use crate::quantize::test_models::{one_table, weights};
        let proto = ModelBuilder::new(17)
            .input("ids", DataType::Int64, &["2", "5"])
            .initializer_f32("E", &[40, 64], &weights(2560, 0.05))
            .initializer_f32("W", &[64, 32], &weights(2048, 0.04))
            .node("Gather", &["E", "ids"], &["e"])
            .node("MatMul", &["e", "W"], &["y"])
            .output("y", DataType::Float, &["2", "5", "32"])
            .build();
        let mut m = Model::from_proto(proto.clone(), ".".into());
        let report = quantize(&mut m, &Int4Options::default()).unwrap();
        let ops: Vec<&str> = report.quantized.iter().map(|q| q.op.as_str()).collect();
        assert_eq!(ops, ["Gather", "MatMul"]);
        let types = |m: &Model| -> Vec<(String, i32)> {
            m.graph()
                .initializer
                .iter()
                .filter(|t| t.dims.len() == 2)
                .map(|t| (t.name().to_string(), t.data_type()))
                .collect()
        };
        let int8 = DataType::Int8.code();
        let uint4 = DataType::Uint4.code();
        assert!(
            types(&m)
                .iter()
                .any(|(n, t)| n.starts_with('E') && *t == int8)
        );
        assert!(
            types(&m)
                .iter()
                .any(|(n, t)| n.starts_with('W') && *t == uint4)
        );
        crate::graph::check_model(&m).unwrap();
        let mut m = Model::from_proto(proto, ".".into());
        let options = Int4Options {
            exclude_op_types: ["Gather".to_string()].into(),
            ..Default::default()
        };
        let report = quantize(&mut m, &options).unwrap();
        assert_eq!(report.quantized.len(), 1);
        assert_eq!(
            report.kept_float[0].reason,
            "excluded by --exclude-op-types"
        );
        let before = one_table();
        let mut m = Model::from_proto(before.clone(), ".".into());
        let report = quantize(&mut m, &Int4Options::default()).unwrap();
        assert_eq!(report.quantized[0].op, "Gather");
        let d = crate::passes::testing::max_difference(&before, &m.proto);
        assert!(d < 0.01, "int8 rows drifted by {d}");
    }

    #[test]
    fn nothing_to_quantize_leaves_the_model_as_it_was() {
        use crate::graph::builder::ModelBuilder;
        // a weight on the left, and an old opset the model could not be raised from
        let proto = ModelBuilder::new(8)
            .input("x", DataType::Float, &["64", "2"])
            .initializer_f32("W", &[8, 64], &[0.5; 512])
            .node("MatMul", &["W", "x"], &["y"])
            .output("y", DataType::Float, &["8", "2"])
            .build();
        let mut model = Model::from_proto(proto.clone(), ".".into());
        let report = quantize(&mut model, &Int4Options::default()).unwrap();
        assert!(report.quantized.is_empty());
        assert!(report.kept_float[0].reason.contains("on the left"));
        assert_eq!(model.proto, proto);
        // with one to quantize the opset is needed, and refused by name
        let proto = ModelBuilder::new(5)
            .input("x", DataType::Float, &["2", "64"])
            .initializer_f32("W", &[64, 8], &[0.5; 512])
            .node("MatMul", &["x", "W"], &["y"])
            .output("y", DataType::Float, &["2", "8"])
            .build();
        let mut model = Model::from_proto(proto.clone(), ".".into());
        let e = quantize(&mut model, &Int4Options::default()).unwrap_err();
        assert!(e.to_string().contains("opset 5 is below 6"), "{e}");
        assert_eq!(model.proto, proto);
    }

    #[test]
    fn a_last_block_shorter_than_the_others_keeps_its_own_range() {
        // K = 40 in blocks of 16: rows 32..40 form the third block
        let (k, n, b) = (40, 3, 16);
        let values: Vec<f32> = (0..k * n)
            .map(|i| {
                if i / n >= 32 {
                    100.0 + i as f32
                } else {
                    (i as f32).cos()
                }
            })
            .collect();
        let q = quantize_blocked(&values, [k, n], b);
        assert_eq!(q.scales.len(), 3 * n);
        for (i, &v) in values.iter().enumerate() {
            let at = (i / n / b) * n + i % n;
            let back = (f32::from(q.values[i]) - f32::from(q.zeros[at])) * q.scales[at];
            assert!(
                (back - v).abs() <= q.scales[at] / 2.0 + 1e-4,
                "{i}: {v} -> {back}"
            );
        }
        // the short block's large values did not widen the first blocks' steps
        assert!(q.scales[0] < 0.2 && q.scales[2 * n] > 5.0, "{:?}", q.scales);
    }

    #[test]
    fn block_sizes_are_the_kernels() {
        assert!(valid_block_size(16) && valid_block_size(32) && valid_block_size(256));
        assert!(!valid_block_size(8) && !valid_block_size(48) && !valid_block_size(512));
    }
}
