//! Static int8 quantization in the QDQ format: QuantizeLinear/DequantizeLinear pairs around the
//! values a Conv, ConvTranspose, Gemm or MatMul reads, with ranges calibrated beforehand; and
//! embedding tables a Gather reads, as int8 rows.
//!
//! ```text
//!   x ─ Conv(W, B) ─            becomes
//!   x ─ Q(s_x, z_x) ─ DQ ─ Conv(DQ(W_q:i8, s_w[C], 0, axis), DQ(B_q:i32, s_x*s_w[C], 0)) ─
//! ```
//!
//! - Weights: int8 per output channel, symmetric (zero point exactly 0), axis Conv 0,
//!   ConvTranspose 1, Gemm 0 with transB else 1, MatMul 1 (a weight on the right). Opset 13
//!   brought the per-axis DequantizeLinear: an older model is raised to it first where that
//!   keeps what it computes ([`crate::quantize::to_int8_static`]); where it cannot be, weights
//!   are per tensor, and a weight whose per-tensor SQNR falls below [`MIN_PER_TENSOR_SQNR_DB`]
//!   stays float.
//! - Activations: 8-bit asymmetric (uint8 by default, see [`ActivationType`]; int8 on request),
//!   over the calibrated range (which always includes 0, so zero is exact). A value read through pass-through ops (Reshape, Transpose, MaxPool, Resize,
//!   Squeeze, ...) shares one scale and zero point with the values those ops read, so
//!   onnxruntime fuses the int8 chain; the range is the union of the chain's.
//! - Bias: int32 with scale = input scale x weight scale and zero point 0, as DequantizeLinear.
//! - Outputs: a Conv's or ConvTranspose's output is quantized too, so that onnxruntime fuses
//!   `DQ → Conv → Q` into one int8 kernel (without a Q after it, the Conv runs in float with its
//!   weights dequantized on every run, slower than the float model). Its readers read the DQ.
//!   Where the only reader is a Relu whose output is quantized, no pair is added: the Relu's
//!   range (from 0) is the one calibrated, its Q's zero point is the type's minimum (0 or
//!   -128), and onnxruntime folds the Relu into that Q.
//! - What is not quantized by default keeps transformers accurate: LayerNormalization and its
//!   decomposition, Softmax, GELU/Erf and residual Adds are not among the quantized ops, and a
//!   MatMul of two activations (attention scores, attention times values) stays float.
//! - Embedding tables (a Gather along axis 0 of a large float constant) become int8 rows with
//!   a scale per row, as in dynamic int8 ([`super::embedding`]): no Q/DQ pair, since a
//!   DequantizeLinear of the whole table would run on every run.
//! - The main graph only: bodies of If/Loop/Scan stay float.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::QuantizeError;
use super::placement::{Candidate, Placement, size, slower_in_int8};
use super::weights::{
    WeightRange, constant_behind, overridable, overridable_behind, quantize_symmetric,
};
use super::{KeptFloat, QuantizedNode};
use crate::graph::builder::{attr_int, raw_tensor, tensor_f32};
use crate::graph::{Graph, node_label};
use crate::infer::Inference;
use crate::onnx::attributes::{attr_f, attr_i};
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};
use crate::onnx::{DataType, Model};
use crate::passes::PassContext;

/// The ops quantized by default.
/// Gather is quantized where it looks rows up in an embedding table ([`super::embedding`]).
pub const QUANTIZED_OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"];
/// Ops whose int8 output is their int8 input rearranged or selected: they share its parameters.
pub const PASS_THROUGH: &[&str] = &[
    "Reshape",
    "Transpose",
    "MaxPool",
    "GlobalMaxPool",
    "Resize",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Slice",
    "Identity",
];
/// Quantized ops whose output gets a Q/DQ pair of its own (where no quantized op reads it
/// already), so onnxruntime runs `DQ → Conv → Q` as one int8 kernel instead of a float Conv
/// with weights dequantized on every run.
pub const OUTPUT_QUANTIZED_OPS: &[&str] = &["Conv", "ConvTranspose"];
/// The opset whose DequantizeLinear takes an `axis`: weights per channel.
pub const PER_CHANNEL_OPSET: i64 = 13;

/// Below this SQNR a per-tensor int8 weight (opset < 13) is too coarse: the node stays float.
pub const MIN_PER_TENSOR_SQNR_DB: f64 = 25.0;

/// The element type of quantized activations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationType {
    /// uint8, zero point in [0, 255]: what onnxruntime's x86 int8 kernels take (u8 activations
    /// times s8 weights); its QDQ fusion turns int8 activations into uint8 only where a Q has a
    /// single DQ, so an int8 value read by two Convs leaves both running in float.
    #[default]
    Uint8,
    /// int8, zero point in [-128, 127].
    Int8,
}

impl ActivationType {
    pub fn parse(s: &str) -> Result<ActivationType, String> {
        match s {
            "uint8" | "u8" => Ok(ActivationType::Uint8),
            "int8" | "s8" => Ok(ActivationType::Int8),
            other => Err(format!("activation type '{other}': uint8 or int8 expected")),
        }
    }

    /// What reports that do not record the type used.
    fn recorded_before() -> ActivationType {
        ActivationType::Int8
    }

    fn data_type(self) -> DataType {
        match self {
            ActivationType::Uint8 => DataType::Uint8,
            ActivationType::Int8 => DataType::Int8,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StaticOptions {
    /// uint8 (default) or int8 activations.
    pub activation_type: ActivationType,
    /// Quantize the outputs of [`OUTPUT_QUANTIZED_OPS`] too (default).
    pub quantize_outputs: bool,
    /// Op types to quantize (default [`QUANTIZED_OPS`]).
    pub ops: Option<HashSet<String>>,
    pub exclude_nodes: HashSet<String>,
    pub exclude_op_types: HashSet<String>,
    /// Which of the nodes that can be quantized are (default: those faster in int8).
    pub placement: Placement,
    /// How far the products' int8 weights reach (embedding tables take the full range).
    pub weight_range: WeightRange,
    /// Weights quantized before, by the values they were quantized from: the accuracy search's
    /// rounds share it, and quantize each weight once.
    pub memo: std::rc::Rc<super::weights::Memo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StaticReport {
    pub quantized: Vec<QuantizedNode>,
    pub kept_float: Vec<KeptFloat>,
    /// Activations with a Q/DQ pair.
    pub activations: usize,
    /// Whether weights have a scale per channel (opset 13+) or one per tensor.
    pub per_channel: bool,
    /// A model below opset 13 raised to it for weights per channel, or why it could not be
    /// (its weights are then per tensor).
    #[serde(flatten)]
    pub opset: super::OpsetChange,
    /// The activations' element type (reports written before it was recorded used int8).
    #[serde(default = "ActivationType::recorded_before")]
    pub activation_type: ActivationType,
    /// How the nodes to quantize were chosen (reports written before it was recorded: all).
    #[serde(default = "Placement::recorded_before")]
    pub placement: Placement,
    /// Conv outputs quantized too (false where the accuracy target kept more nodes int8
    /// without them).
    #[serde(default)]
    pub outputs_quantized: bool,
    /// How far the products' int8 weights reach (reports written before it was recorded: full).
    #[serde(default)]
    pub weight_range: WeightRange,
    /// Each quantized output with a pair of its own -> its dequantized value (what its readers
    /// read, and where its loss is measured).
    #[serde(skip)]
    pub dequantized_outputs: BTreeMap<String, String>,
}

impl Default for StaticOptions {
    fn default() -> Self {
        StaticOptions {
            activation_type: ActivationType::default(),
            quantize_outputs: true,
            ops: None,
            exclude_nodes: HashSet::new(),
            exclude_op_types: HashSet::new(),
            placement: Placement::default(),
            weight_range: WeightRange::default(),
            memo: Default::default(),
        }
    }
}

/// A node to quantize.
#[derive(Debug, Clone)]
struct Planned {
    index: usize,
    label: String,
    op: String,
    output: String,
    activation: String,
    /// The activation, then the values the pass-through ops above it read, upstream last.
    chain: Vec<String>,
    /// The outputs of the nearest planned nodes upstream of the activation.
    upstream: Vec<String>,
    weight: TensorProto,
    axis: usize,
    bias: Option<TensorProto>,
    /// Its output is quantized too (an [`OUTPUT_QUANTIZED_OPS`] op whose output is not a graph
    /// output).
    quantize_output: bool,
    /// The output of the Relu that is the only reader of this node's output: where that value is
    /// quantized, the Relu folds into its Q (zero point at the type's minimum: Q clamps at 0 as
    /// Relu does) and this output needs no pair of its own.
    relu_after: Option<String>,
}

/// A weight written into the graph: its int8 tensor, scales and zero points, the scales'
/// values (a bias's scale derives from them) and its SQNR.
struct WrittenWeight {
    tensor: String,
    scale: String,
    zero: String,
    scales: Vec<f32>,
    sqnr_db: f64,
}

/// A Gather whose embedding table becomes int8 rows.
#[derive(Clone)]
struct PlannedTable {
    index: usize,
    label: String,
    output: String,
    ids: String,
    /// The table, read once for every round's rewrite.
    table: std::rc::Rc<super::weights::Matrix>,
}

/// What static quantization will do: the nodes, and the activations whose ranges it needs.
pub struct StaticPlan {
    nodes: Vec<Planned>,
    /// Embedding tables to quantize (weights only: no activation range).
    tables: Vec<PlannedTable>,
    /// Activation -> the value whose parameters it shares (itself, or the upstream end of its
    /// pass-through chain).
    groups: BTreeMap<String, String>,
    /// The quantized nodes' outputs with a pair of their own (every reader reads the DQ).
    outputs: BTreeSet<String>,
    kept_float: Vec<KeptFloat>,
    per_channel: bool,
    activation_type: ActivationType,
    placement: Placement,
    weight_range: WeightRange,
    /// The options' [`StaticOptions::memo`].
    memo: std::rc::Rc<super::weights::Memo>,
}

impl StaticPlan {
    /// The nodes planned.
    pub fn len(&self) -> usize {
        self.nodes.len() + self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The products planned (embedding tables aside).
    pub fn products(&self) -> usize {
        self.nodes.len()
    }

    /// Every activation to calibrate: those with a pair, and every output that may get one
    /// (a Conv output whose Relu folds into a Q gets its own pair when the node reading the Relu
    /// returns to float).
    pub fn activations(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.groups.keys().cloned().collect();
        all.extend(
            self.nodes
                .iter()
                .filter(|p| p.quantize_output)
                .map(|p| p.output.clone()),
        );
        all.into_iter().collect()
    }
}

/// Chooses what to quantize in `model`'s main graph (the `fast` placement estimating at the
/// shapes the model declares; [`plan_with`] for others).
pub fn plan(model: &Model, options: &StaticOptions) -> Result<StaticPlan, QuantizeError> {
    plan_with(model, options, &Inference::of_model(model))
}

/// [`plan`] with what inference knows of `model` (at the shapes it runs at, for the placement's
/// estimates).
pub fn plan_with(
    model: &Model,
    options: &StaticOptions,
    facts: &Inference,
) -> Result<StaticPlan, QuantizeError> {
    let ctx = PassContext::new(model, 0, 0);
    let graph = Graph::new(model.graph().clone());
    let opset = model.opset("").unwrap_or(1);
    let per_channel = opset >= PER_CHANNEL_OPSET;
    let ops: HashSet<String> = options
        .ops
        .clone()
        .unwrap_or_else(|| QUANTIZED_OPS.iter().map(|s| s.to_string()).collect());
    let mut nodes = Vec::new();
    let mut tables = Vec::new();
    let mut kept_float = Vec::new();
    let no_outer = HashMap::new();
    // each value Gathers read, as a table or not: read once however many Gathers read it
    let mut read_tables: HashMap<String, Option<std::rc::Rc<super::weights::Matrix>>> =
        HashMap::new();
    for (i, node) in graph.nodes().iter().enumerate() {
        if !ops.contains(node.op_type()) || !matches!(node.domain(), "" | "ai.onnx") {
            continue;
        }
        if node.op_type() == "Gather" {
            // an embedding table; other Gathers (most index shapes) are not reported
            let table = if super::embedding::looks_up_rows(facts, node) {
                read_tables
                    .entry(node.input[0].clone())
                    .or_insert_with(|| {
                        super::embedding::table_behind(&ctx, &graph, &no_outer, &node.input[0])
                            .map(std::rc::Rc::new)
                    })
                    .clone()
            } else {
                None
            };
            if let Some(table) = table {
                let refused = super::embedding::refused(
                    opset,
                    node,
                    &options.exclude_nodes,
                    &options.exclude_op_types,
                );
                match refused {
                    Some(reason) => kept_float.push(KeptFloat {
                        node: node_label(node, i),
                        op: node.op_type().into(),
                        reason,
                    }),
                    None => tables.push(PlannedTable {
                        index: i,
                        label: node_label(node, i),
                        output: node.output[0].clone(),
                        ids: node.input[1].clone(),
                        table,
                    }),
                }
            }
            continue;
        }
        let refused = if opset < 10 {
            Some(format!(
                "QuantizeLinear needs opset 10; the model has {opset}"
            ))
        } else {
            super::excluded(node, &options.exclude_nodes, &options.exclude_op_types)
        };
        let reason = match refused {
            Some(reason) => Err(reason),
            None => plan_node(
                &graph,
                facts,
                &ctx,
                node,
                i,
                per_channel,
                options.weight_range,
            ),
        };
        match reason {
            Ok(p) => nodes.push(p),
            Err(reason) => kept_float.push(KeptFloat {
                node: node_label(node, i),
                op: node.op_type().into(),
                reason,
            }),
        }
    }
    // no pair goes inside an If/Loop/Scan body: calibration measures the main graph's values
    // (a body's cannot be exposed as graph outputs), so a body's nodes are reported kept float
    for (i, node) in graph.nodes().iter().enumerate() {
        kept_in_bodies(node, &node_label(node, i), &ops, &mut kept_float);
    }
    // each activation, and the pass-through chain above it
    for p in &mut nodes {
        let mut value = p.activation.clone();
        while let Some(producer) = graph.producer(&value) {
            let data = producer.input.first().cloned().unwrap_or_default();
            let float = facts.elem_type(&data) == Some(DataType::Float);
            if !PASS_THROUGH.contains(&producer.op_type())
                || !float
                || graph.constant(&data).is_some()
                || p.chain.contains(&data)
            {
                break;
            }
            p.chain.push(data.clone());
            value = data;
        }
    }
    // the outputs of quantized convolutions, and a Relu that may fold into their Q
    for p in &mut nodes {
        p.quantize_output = options.quantize_outputs
            && OUTPUT_QUANTIZED_OPS.contains(&p.op.as_str())
            && !graph.is_output(&p.output);
        let readers = graph.consumers(&p.output);
        if let [only] = readers
            && graph.nodes()[*only].op_type() == "Relu"
        {
            p.relu_after = graph.nodes()[*only].output.first().cloned();
        }
    }
    if options.placement == Placement::Fast {
        let candidates: Vec<Candidate> = nodes
            .iter()
            .map(|p| {
                let node = &graph.nodes()[p.index];
                let dims = &p.weight.dims;
                let macs_per_output = size(dims).map(|n| n / dims[p.axis] as f64);
                Candidate {
                    index: p.index,
                    op: node.op_type(),
                    chain: &p.chain,
                    output: &p.output,
                    output_pair: p.quantize_output,
                    macs_per_output,
                    depthwise: node.op_type() == "Conv"
                        && attr_i(node, "group", 1) > 1
                        && dims.get(1) == Some(&1),
                }
            })
            .collect();
        let mut slower = slower_in_int8(&graph, facts, &candidates);
        let planned = std::mem::take(&mut nodes);
        for (k, p) in planned.into_iter().enumerate() {
            match slower.remove(&k) {
                Some(reason) => kept_float.push(KeptFloat {
                    node: p.label,
                    op: p.op,
                    reason,
                }),
                None => nodes.push(p),
            }
        }
    }
    // the nearest quantized nodes upstream of each one's input
    let outputs: HashSet<String> = nodes
        .iter()
        .map(|p| p.output.clone())
        .chain(tables.iter().map(|t| t.output.clone()))
        .collect();
    for p in &mut nodes {
        let mut stack = vec![p.activation.clone()];
        let mut seen = HashSet::new();
        while let Some(v) = stack.pop() {
            if !seen.insert(v.clone()) || seen.len() > 10_000 {
                continue;
            }
            if outputs.contains(&v) {
                p.upstream.push(v);
                continue;
            }
            if let Some(producer) = graph.producer(&v) {
                stack.extend(producer.input.iter().filter(|i| !i.is_empty()).cloned());
            }
        }
    }
    let (groups, outputs) = groups_of(&nodes);
    Ok(StaticPlan {
        nodes,
        tables,
        groups,
        outputs,
        kept_float,
        per_channel,
        activation_type: options.activation_type,
        placement: options.placement,
        weight_range: options.weight_range,
        memo: options.memo.clone(),
    })
}

/// The nodes in the bodies of `node` (labelled `path`; nested bodies included) that `ops`
/// names, kept float with why, each labelled by its path from the main graph
/// (`'If_0' (If)/then_branch/#0 (Conv)`). Gathers are left out: which of them read an
/// embedding table is not looked into there.
fn kept_in_bodies(node: &NodeProto, path: &str, ops: &HashSet<String>, kept: &mut Vec<KeptFloat>) {
    for a in &node.attribute {
        for body in a.g.iter().chain(a.graphs.iter()) {
            for (i, inner) in body.node.iter().enumerate() {
                let label = format!("{path}/{}/{}", a.name(), node_label(inner, i));
                let quantizable = ops.contains(inner.op_type()) && inner.op_type() != "Gather";
                if quantizable && matches!(inner.domain(), "" | "ai.onnx") {
                    kept.push(KeptFloat {
                        node: label.clone(),
                        op: inner.op_type().into(),
                        reason: "inside an If/Loop/Scan body: int8 static quantizes the main graph only (calibration measures its values; a body's cannot be exposed as graph outputs); --int8 dynamic quantizes MatMul and Gemm weights in bodies too".into(),
                    });
                }
                kept_in_bodies(inner, &label, ops, kept);
            }
        }
    }
}

/// Activation -> the value whose parameters it shares, for these nodes: the upstream end of
/// its chain, or of the first chain it joins; and the outputs that get a pair of their own (in
/// a group of their own), those no quantized op reads already and no Relu folds into.
fn groups_of(nodes: &[Planned]) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    for p in nodes {
        let joined = p.chain.iter().position(|v| groups.contains_key(v));
        let root = match joined {
            Some(j) => groups[&p.chain[j]].clone(),
            None => p.chain.last().expect("the activation at least").clone(),
        };
        for v in &p.chain[..joined.unwrap_or(p.chain.len())] {
            groups.insert(v.clone(), root.clone());
        }
    }
    let mut outputs = BTreeSet::new();
    for p in nodes.iter().filter(|p| p.quantize_output) {
        let folded = p
            .relu_after
            .as_ref()
            .is_some_and(|r| groups.contains_key(r));
        if !groups.contains_key(&p.output) && !folded {
            outputs.insert(p.output.clone());
        }
    }
    for o in &outputs {
        groups.insert(o.clone(), o.clone());
    }
    (groups, outputs)
}

impl StaticPlan {
    /// The plan without the nodes at these positions of [`StaticPlan::nodes`] (returned to
    /// float with `reason`).
    pub fn without(&self, reverted: &BTreeMap<String, String>) -> StaticPlan {
        let nodes: Vec<Planned> = self
            .nodes
            .iter()
            .filter(|p| !reverted.contains_key(&p.output))
            .cloned()
            .collect();
        let tables: Vec<PlannedTable> = self
            .tables
            .iter()
            .filter(|t| !reverted.contains_key(&t.output))
            .cloned()
            .collect();
        let mut kept_float = self.kept_float.clone();
        let planned = self
            .nodes
            .iter()
            .map(|p| (p.label.as_str(), p.op.as_str(), p.output.as_str()));
        let gathers = self
            .tables
            .iter()
            .map(|t| (t.label.as_str(), "Gather", t.output.as_str()));
        for (label, op, output) in planned.chain(gathers) {
            if let Some(reason) = reverted.get(output) {
                kept_float.push(KeptFloat {
                    node: label.to_string(),
                    op: op.to_string(),
                    reason: reason.clone(),
                });
            }
        }
        let (groups, outputs) = groups_of(&nodes);
        StaticPlan {
            groups,
            outputs,
            nodes,
            tables,
            kept_float,
            per_channel: self.per_channel,
            memo: self.memo.clone(),
            activation_type: self.activation_type,
            placement: self.placement,
            weight_range: self.weight_range,
        }
    }

    /// The outputs of the nearest planned nodes upstream of the one writing `output`.
    pub fn upstream_outputs(&self, output: &str) -> &[String] {
        self.nodes
            .iter()
            .find(|p| p.output == output)
            .map_or(&[], |p| p.upstream.as_slice())
    }

    /// Each planned node's output and the value it reads (an embedding table's: its ids).
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &str)> {
        let tables = self
            .tables
            .iter()
            .map(|t| (t.output.as_str(), t.ids.as_str()));
        self.nodes
            .iter()
            .map(|p| (p.output.as_str(), p.activation.as_str()))
            .chain(tables)
    }
}

fn plan_node(
    graph: &Graph,
    facts: &Inference,
    ctx: &PassContext,
    node: &NodeProto,
    index: usize,
    per_channel: bool,
    weight_range: WeightRange,
) -> Result<Planned, String> {
    let float = |v: &str| facts.elem_type(v) == Some(DataType::Float);
    let input = |k: usize| node.input.get(k).filter(|v| !v.is_empty());
    let (Some(x), Some(w)) = (input(0), input(1)) else {
        return Err("not a product of two inputs".into());
    };
    if !float(x) || !float(w) {
        return Err("not float32".into());
    }
    if graph.constant(x).is_some() {
        return Err("its input is a constant".into());
    }
    let no_outer = HashMap::new();
    let weight = constant_behind(graph, &no_outer, w).ok_or_else(|| {
        if let Some(n) = overridable_behind(graph, w) {
            return overridable(&n);
        }
        match node.op_type() {
            "MatMul" if constant_behind(graph, &no_outer, x).is_some() => {
                "its weight is on the left".to_string()
            }
            "MatMul" => "a product of two activations (attention) stays float".to_string(),
            _ => "its weight is not a constant".to_string(),
        }
    })?;
    let rank = weight.dims.len();
    let axis = match node.op_type() {
        "Conv" if rank >= 3 => 0,
        "ConvTranspose" if rank >= 3 && attr_i(node, "group", 1) == 1 => 1,
        "ConvTranspose" => return Err("grouped ConvTranspose".into()),
        "Gemm" if rank == 2 => {
            if attr_i(node, "transA", 0) != 0 {
                return Err("Gemm with transA".into());
            }
            if attr_f(node, "alpha", 1.0) != 1.0 || attr_f(node, "beta", 1.0) != 1.0 {
                return Err("Gemm with alpha or beta other than 1".into());
            }
            if attr_i(node, "transB", 0) != 0 { 0 } else { 1 }
        }
        "MatMul" if rank == 2 => 1,
        _ => return Err(format!("a weight of rank {rank}")),
    };
    let channels = weight.dims[axis] as usize;
    let bias = match input(2).map(|b| constant_behind(graph, &no_outer, b)) {
        None => None,
        Some(Some(b)) if b.dims == [channels as i64] => Some(b),
        Some(_) => return Err("its bias is not a constant of one value per channel".into()),
    };
    if !per_channel {
        let values = float_values(ctx, &weight).map_err(|e| e.to_string())?;
        let dims: Vec<usize> = weight.dims.iter().map(|&d| d as usize).collect();
        let sqnr = quantize_symmetric(&values, &dims, None, weight_range).sqnr_db;
        if sqnr < MIN_PER_TENSOR_SQNR_DB {
            return Err(format!(
                "opset < 13 allows one weight scale per tensor, and that gives {sqnr:.1} dB \
                 (< {MIN_PER_TENSOR_SQNR_DB})"
            ));
        }
    }
    Ok(Planned {
        index,
        label: node_label(node, index),
        op: node.op_type().into(),
        output: node.output.first().cloned().unwrap_or_default(),
        activation: x.clone(),
        chain: vec![x.clone()],
        upstream: Vec::new(),
        weight,
        axis,
        bias,
        quantize_output: false,
        relu_after: None,
    })
}

/// A weight's values as f32, whatever float type it is stored in (a float16 weight behind a Cast
/// to float is one).
fn float_values(ctx: &PassContext, t: &TensorProto) -> Result<Vec<f32>, crate::onnx::OnnxError> {
    let data = ctx.tensor_data(t)?;
    match data.to_f32_lossy() {
        Some(v) => Ok(v),
        None => data.f32s(),
    }
}

/// Asymmetric 8-bit parameters of a range (stretched to include 0): the scale, and the zero
/// point as the type's byte (int8 as two's complement).
fn activation_params(lo: f32, hi: f32, ty: ActivationType) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = (hi - lo) / 255.0;
    let (qmin, qmax) = match ty {
        ActivationType::Uint8 => (0.0, 255.0),
        ActivationType::Int8 => (-128.0, 127.0),
    };
    if scale.is_nan() || scale <= 0.0 || !scale.is_finite() {
        return (1.0, 0);
    }
    let zero = (qmin - lo / scale).round().clamp(qmin, qmax);
    (scale, zero as i32 as u8)
}

/// Rewrites `model` by `plan`, with each activation quantized over `ranges`.
pub fn apply(
    model: &mut Model,
    plan: &StaticPlan,
    ranges: &BTreeMap<String, (f32, f32)>,
) -> Result<StaticReport, QuantizeError> {
    let ctx = PassContext::new(model, 0, 0);
    let mut report = StaticReport {
        kept_float: plan.kept_float.clone(),
        per_channel: plan.per_channel,
        activation_type: plan.activation_type,
        placement: plan.placement,
        weight_range: plan.weight_range,
        ..Default::default()
    };
    // each group's range: the union of its members'
    let mut group_range: HashMap<&str, (f32, f32)> = HashMap::new();
    for (value, root) in &plan.groups {
        let Some(&(lo, hi)) = ranges.get(value) else {
            continue;
        };
        let e = group_range.entry(root).or_insert((lo, hi));
        *e = (e.0.min(lo), e.1.max(hi));
    }
    let mut edit = Graph::new(std::mem::take(model.graph_mut()));
    let mut added: Vec<NodeProto> = Vec::new();
    // one scale and zero point per group; a Q/DQ pair per activation
    let mut params: HashMap<String, (String, String, f32)> = HashMap::new();
    let mut dequantized: HashMap<String, String> = HashMap::new();
    for (value, root) in &plan.groups {
        let Some(&(lo, hi)) = group_range.get(root.as_str()) else {
            continue;
        };
        let (scale, zero) = activation_params(lo, hi, plan.activation_type);
        let (s, z, _) = params
            .entry(root.clone())
            .or_insert_with(|| {
                let s =
                    edit.add_initializer(&format!("{root}_scale"), tensor_f32("", &[], &[scale]));
                let z = edit.add_initializer(
                    &format!("{root}_zero_point"),
                    raw_tensor("", plan.activation_type.data_type(), &[], vec![zero]),
                );
                (s, z, scale)
            })
            .clone();
        let q = edit.fresh_name(&format!("{value}_quantized"));
        let dq = edit.fresh_name(&format!("{value}_dequantized"));
        added.push(node("QuantizeLinear", &[value, &s, &z], &q, vec![]));
        added.push(node("DequantizeLinear", &[&q, &s, &z], &dq, vec![]));
        dequantized.insert(value.clone(), dq);
        report.activations += 1;
    }
    // readers in the chains read the dequantized values
    let chain_readers: Vec<(usize, String)> = edit
        .nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| PASS_THROUGH.contains(&n.op_type()))
        .filter(|(_, n)| {
            n.output
                .first()
                .is_some_and(|o| plan.groups.contains_key(o))
        })
        .filter_map(|(i, n)| n.input.first().map(|x| (i, x.clone())))
        .collect();
    for (i, x) in chain_readers {
        if let Some(dq) = dequantized.get(&x) {
            edit.proto_mut().node[i].input[0] = dq.clone();
        }
    }
    // every reader of a quantized output reads its DQ (the Q, added below, reads the output)
    for o in &plan.outputs {
        if let Some(dq) = dequantized.get(o) {
            edit.replace_all_uses(o, dq);
            report.outputs_quantized = true;
            report.dequantized_outputs.insert(o.clone(), dq.clone());
        }
    }
    // each weight written once, by the value its nodes read and the axis of its scales (layers
    // that share their weights share the int8 tensor; each node reads it through a
    // DequantizeLinear of its own, as onnxruntime's QDQ fusion wants)
    let mut weights: HashMap<(String, usize), WrittenWeight> = HashMap::new();
    for p in &plan.nodes {
        let Some(dq) = dequantized.get(&p.activation).cloned() else {
            report.kept_float.push(KeptFloat {
                node: node_label(&edit.nodes()[p.index], p.index),
                op: edit.nodes()[p.index].op_type().into(),
                reason: "its input has no calibrated range".into(),
            });
            continue;
        };
        let root = &plan.groups[&p.activation];
        let x_scale = params[root].2;
        let dims: Vec<usize> = p.weight.dims.iter().map(|&d| d as usize).collect();
        let wname = if p.weight.name().is_empty() {
            "weight"
        } else {
            p.weight.name()
        };
        let read = edit.nodes()[p.index].input[1].clone();
        let q = match weights.entry((read, p.axis)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let axis = plan.per_channel.then_some(p.axis);
                let q = plan.memo.symmetric_int8(
                    super::weights::Source::of(&ctx, &p.weight, false).as_ref(),
                    &dims,
                    axis,
                    plan.weight_range,
                    || float_values(&ctx, &p.weight),
                )?;
                let channel_dims: Vec<i64> = if plan.per_channel {
                    vec![q.scales.len() as i64]
                } else {
                    vec![]
                };
                let tensor = edit.add_initializer(
                    &format!("{wname}_quantized"),
                    raw_tensor(
                        "",
                        DataType::Int8,
                        &p.weight.dims,
                        q.values.iter().map(|&v| v as u8).collect(),
                    ),
                );
                let scale = edit.add_initializer(
                    &format!("{wname}_scale"),
                    tensor_f32("", &channel_dims, &q.scales),
                );
                let zero = edit.add_initializer(
                    &format!("{wname}_zero_point"),
                    raw_tensor("", DataType::Int8, &channel_dims, vec![0; q.scales.len()]),
                );
                e.insert(WrittenWeight {
                    tensor,
                    scale,
                    zero,
                    scales: q.scales.clone(),
                    sqnr_db: q.sqnr_db,
                })
            }
        };
        let (w_q, w_s, w_z) = (q.tensor.clone(), q.scale.clone(), q.zero.clone());
        let w_dq = edit.fresh_name(&format!("{wname}_dequantized"));
        let axis_attr = if plan.per_channel {
            vec![attr_int("axis", p.axis as i64)]
        } else {
            vec![]
        };
        added.push(node(
            "DequantizeLinear",
            &[&w_q, &w_s, &w_z],
            &w_dq,
            axis_attr,
        ));
        let mut bias_dq = None;
        if let Some(b) = &p.bias {
            let bias = float_values(&ctx, b)?;
            let scales: Vec<f32> = (0..bias.len())
                .map(|c| x_scale * q.scales[if plan.per_channel { c } else { 0 }])
                .collect();
            let ints: Option<Vec<i32>> = bias
                .iter()
                .zip(&scales)
                .map(|(b, s)| {
                    let v = (b / s).round();
                    (v.abs() < i32::MAX as f32).then_some(v as i32)
                })
                .collect();
            // a bias too large for int32 at this scale stays float
            if let Some(ints) = ints {
                let bname = if b.name().is_empty() {
                    "bias"
                } else {
                    b.name()
                };
                let n = ints.len() as i64;
                let raw: Vec<u8> = ints.iter().flat_map(|v| v.to_le_bytes()).collect();
                let b_q = edit.add_initializer(
                    &format!("{bname}_quantized"),
                    raw_tensor("", DataType::Int32, &[n], raw),
                );
                let (scale, zero, axis) = if plan.per_channel {
                    (
                        tensor_f32("", &[n], &scales),
                        raw_tensor("", DataType::Int32, &[n], vec![0; 4 * ints.len()]),
                        vec![attr_int("axis", 0)],
                    )
                } else {
                    (
                        tensor_f32("", &[], &scales[..1]),
                        raw_tensor("", DataType::Int32, &[], vec![0; 4]),
                        vec![],
                    )
                };
                let b_s = edit.add_initializer(&format!("{bname}_scale"), scale);
                let b_z = edit.add_initializer(&format!("{bname}_zero_point"), zero);
                let b_dq = edit.fresh_name(&format!("{bname}_dequantized"));
                added.push(node("DequantizeLinear", &[&b_q, &b_s, &b_z], &b_dq, axis));
                bias_dq = Some(b_dq);
            }
        }
        let target = &mut edit.proto_mut().node[p.index];
        target.input[0] = dq;
        target.input[1] = w_dq;
        if let Some(b) = bias_dq {
            target.input[2] = b;
        }
        let target = &edit.nodes()[p.index];
        report.quantized.push(QuantizedNode {
            node: node_label(target, p.index),
            op: target.op_type().into(),
            output: target.output[0].clone(),
            weight: wname.to_string(),
            weight_shape: [dims[0], dims[1..].iter().product()],
            weight_sqnr_db: q.sqnr_db,
        });
    }
    // embedding tables become int8 rows (after the nodes above, which are found by index)
    let mut doomed = Vec::new();
    let mut written = super::weights::Written::new(plan.memo.clone());
    for t in &plan.tables {
        let node = edit.nodes()[t.index].clone();
        let quantized = super::embedding::rewrite(
            &mut edit,
            &node,
            &t.label,
            &t.table,
            &mut added,
            &mut written,
        );
        report.quantized.push(quantized);
        doomed.push(t.index);
    }
    edit.remove_nodes(&doomed);
    edit.proto_mut().node.extend(added);
    edit.sort_topologically()?;
    *model.graph_mut() = edit.into_proto();
    super::remove_orphans(model)?;
    Ok(report)
}

/// A node named after its output (a fresh value name, so node names stay unique even where one
/// weight or bias is shared by several nodes).
fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    super::new_node(op, output, inputs, &[output], attribute)
}

#[cfg(test)]
#[path = "qdq_tests.rs"]
mod tests;
