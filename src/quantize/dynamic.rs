//! Dynamic int8 quantization of MatMul and Gemm: weights become int8 once, per output channel
//! and symmetric (zero point 0); activations are quantized at run time. Embedding tables read by
//! Gather become int8 rows with a scale per row. Standard ONNX only.
//!
//! ```text
//!   MatMul(A, W:f32[K,N])
//! becomes
//!   (A_q, a_scale, a_zero) = DynamicQuantizeLinear(A)          one per A, shared by its readers
//!   Y = Cast<f32>(MatMulInteger(A_q, W_q:i8[K,N], a_zero, 0:i8)) * (a_scale * w_scale[N])
//! ```
//!
//! A weight on the left (`MatMul(W[M,K], X)`) is quantized per row and multiplies `X_q` from the
//! left (`w_scale` of shape `[M,1]`). A Gemm (transA 0) takes its weight transposed to `[K,N]`
//! when `transB` is set, alpha folds into the scale and `beta * C` is added after. A weight may be
//! an initializer, a Constant node, or either behind Identity or a Cast to float, in this graph
//! or an enclosing one; bodies of If/Loop/Scan are quantized too.
//!
//! Conv stays float. Without a calibrated activation range an int8 Conv would be ConvInteger,
//! which onnxruntime's CPU provider runs several times slower than its float Conv (measured by
//! `bench/quantize_compare.py`): static quantization (QDQ) is the way to an int8 Conv.
//!
//! Left alone, and reported: weights of fewer than [`super::weights::MIN_WEIGHT_ELEMENTS`]
//! elements (a tiny head gains nothing and loses the most), weights that are not 2-D,
//! activations of rank below 2 or unknown, Gemm with transA, nodes and op types the user
//! excludes.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::QuantizeError;
use crate::graph::builder::{attr_int, raw_tensor};
use crate::graph::{Graph, bodies_mut, node_label};
use crate::infer::Inference;
use crate::onnx::attributes::{attr_f, attr_i};
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::{DataType, Model};
use crate::passes::PassContext;

#[derive(Debug, Clone, Default)]
pub struct DynamicOptions {
    pub exclude_nodes: HashSet<String>,
    pub exclude_op_types: HashSet<String>,
    /// Nodes kept float, by the value they write, with the reason (the accuracy search's).
    pub revert: std::collections::BTreeMap<String, String>,
    /// How far the products' int8 weights reach (embedding tables take the full range).
    pub weight_range: WeightRange,
    /// Weights quantized before, by the values they were quantized from: the accuracy search's
    /// rounds share it, and quantize each weight once.
    pub memo: std::rc::Rc<super::weights::Memo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DynamicReport {
    pub quantized: Vec<QuantizedNode>,
    pub kept_float: Vec<KeptFloat>,
    /// A model below opset 11 raised to it for DynamicQuantizeLinear, or why it could not be.
    #[serde(flatten)]
    pub opset: super::OpsetChange,
    /// How far the products' int8 weights reach (reports written before it was recorded: full).
    #[serde(default)]
    pub weight_range: WeightRange,
}

/// The opset that brought DynamicQuantizeLinear.
pub const DYNAMIC_QUANTIZE_OPSET: i64 = 11;

/// Quantizes every eligible MatMul and Gemm of `model` (bodies included) in place. A model
/// below opset 11 is raised to it first where that keeps what every node computes, and keeps
/// its opset where nothing is quantized.
pub fn quantize(
    model: &mut Model,
    options: &DynamicOptions,
) -> Result<DynamicReport, QuantizeError> {
    let raise = super::Raise::to(model, DYNAMIC_QUANTIZE_OPSET);
    let facts = Inference::of_model(model);
    let ctx = PassContext::new(model, 0, 0);
    let mut q = Quantizer {
        opset: model.opset("").unwrap_or(1),
        facts: &facts,
        ctx: &ctx,
        options,
        report: DynamicReport {
            weight_range: options.weight_range,
            ..Default::default()
        },
        path: String::new(),
    };
    let mut graph = std::mem::take(model.graph_mut());
    let result = q.graph(&mut graph, &HashMap::new(), &HashSet::new());
    *model.graph_mut() = graph;
    result?;
    // the float weights the rewrites orphaned
    super::remove_orphans(model)?;
    let mut report = q.report;
    let used = !report.quantized.is_empty();
    report.opset = raise.settle(model, used);
    Ok(report)
}

struct Quantizer<'a> {
    opset: i64,
    facts: &'a Inference,
    ctx: &'a PassContext,
    options: &'a DynamicOptions,
    report: DynamicReport,
    /// How the nodes of the graph being quantized are labelled: empty in the main graph, the
    /// body's path in a body ([`bodies_mut`]).
    path: String,
}

use super::weights::{Bias, MIN_WEIGHT_ELEMENTS, Matrix as Weight, Side, WeightRange, WeightUse};
use super::{KeptFloat, QuantizedNode};

impl Quantizer<'_> {
    /// Quantizes one graph; `outer` holds the constants of the enclosing graphs, `outer_names`
    /// every name they define.
    fn graph(
        &mut self,
        g: &mut GraphProto,
        outer: &HashMap<String, TensorProto>,
        outer_names: &HashSet<String>,
    ) -> Result<(), QuantizeError> {
        // the body holders' labels, before nodes are inserted
        let labels = crate::graph::holder_labels(g);
        let mut edit = Graph::in_scope(std::mem::take(g), outer_names.clone());
        let mut quantized_inputs: HashMap<String, [String; 3]> = HashMap::new();
        let count = edit.nodes().len();
        let mut doomed = Vec::new();
        let mut added: Vec<NodeProto> = Vec::new();
        // the weights written here, and each one's zero point: a weight several nodes read the
        // same way (tied layers, a shared table) is written once
        let mut written = super::weights::Written::new(self.options.memo.clone());
        let mut zeros: HashMap<String, String> = HashMap::new();
        for i in 0..count {
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
            let plan = match self.plan(&edit, outer, &node) {
                Ok(plan) => plan,
                Err(reason) => {
                    self.report.kept_float.push(KeptFloat {
                        node: label,
                        op: node.op_type().into(),
                        reason,
                    });
                    continue;
                }
            };
            let (activation, side, weight, bias) = plan;
            let dq = match quantized_inputs.get(&activation) {
                Some(names) => names.clone(),
                None => {
                    let names = [
                        edit.fresh_name(&format!("{activation}_quantized")),
                        edit.fresh_name(&format!("{activation}_scale")),
                        edit.fresh_name(&format!("{activation}_zero_point")),
                    ];
                    added.push(super::new_node(
                        "DynamicQuantizeLinear",
                        &edit.fresh_name(&format!("{activation}/dynamic_quantize")),
                        &[&activation],
                        &names.iter().map(String::as_str).collect::<Vec<_>>(),
                        vec![],
                    ));
                    quantized_inputs.insert(activation.clone(), names.clone());
                    names
                }
            };
            let output = node.output[0].clone();
            let alpha = if node.op_type() == "Gemm" {
                attr_f(&node, "alpha", 1.0)
            } else {
                1.0
            };
            let read = match side {
                Side::Right => &node.input[1],
                Side::Left => &node.input[0],
            };
            let transposed = node.op_type() == "Gemm" && attr_i(&node, "transB", 0) != 0;
            let used = WeightUse::new(read, side, transposed, alpha, self.options.weight_range);
            let q = written.add(&mut edit, used, &weight);
            let w_zero = zeros
                .entry(q.tensor.clone())
                .or_insert_with(|| {
                    edit.add_initializer(
                        &format!("{}_zero_point", weight.name),
                        raw_tensor("", DataType::Int8, &[], vec![0]),
                    )
                })
                .clone();
            let (w_q, w_scale) = (q.tensor, q.scale);
            let base = super::node_base(&node);
            let product = edit.fresh_name(&format!("{output}_int32"));
            let inputs: [&str; 4] = match side {
                Side::Right => [&dq[0], &w_q, &dq[2], &w_zero],
                Side::Left => [&w_q, &dq[0], &w_zero, &dq[2]],
            };
            added.push(super::new_node(
                "MatMulInteger",
                &edit.fresh_name(&format!("{base}/integer")),
                &inputs,
                &[&product],
                vec![],
            ));
            let float = edit.fresh_name(&format!("{output}_float"));
            added.push(super::new_node(
                "Cast",
                &edit.fresh_name(&format!("{base}/to_float")),
                &[&product],
                &[&float],
                vec![attr_int("to", DataType::Float.code().into())],
            ));
            let scale = edit.fresh_name(&format!("{output}_scale"));
            added.push(super::new_node(
                "Mul",
                &edit.fresh_name(&format!("{base}/scale")),
                &[&dq[1], &w_scale],
                &[&scale],
                vec![],
            ));
            match bias {
                None => added.push(super::new_node(
                    "Mul",
                    &edit.fresh_name(&format!("{base}/rescale")),
                    &[&float, &scale],
                    &[&output],
                    vec![],
                )),
                Some(bias) => {
                    let rescaled = edit.fresh_name(&format!("{output}_rescaled"));
                    added.push(super::new_node(
                        "Mul",
                        &edit.fresh_name(&format!("{base}/rescale")),
                        &[&float, &scale],
                        &[&rescaled],
                        vec![],
                    ));
                    bias.add(&mut edit, &mut added, &rescaled, &output, &base);
                }
            }
            doomed.push(i);
            self.report.quantized.push(QuantizedNode {
                node: label,
                op: node.op_type().into(),
                output,
                weight: weight.name.clone(),
                weight_shape: match side {
                    Side::Right => weight.dims,
                    Side::Left => [weight.dims[1], weight.dims[0]],
                },
                weight_sqnr_db: q.sqnr_db,
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

    /// What to quantize in `node`: its activation, the weight's side, the weight, and a bias to
    /// add; or why it stays float.
    fn plan(
        &self,
        graph: &Graph,
        outer: &HashMap<String, TensorProto>,
        node: &NodeProto,
    ) -> Result<(String, Side, Weight, Option<Bias>), String> {
        if self.opset < DYNAMIC_QUANTIZE_OPSET {
            return Err(format!(
                "DynamicQuantizeLinear needs opset {DYNAMIC_QUANTIZE_OPSET}; the model has {} and cannot be raised",
                self.opset
            ));
        }
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
        if node.input.len() < 2 || !float(&node.input[0]) || !float(&node.input[1]) {
            return Err("not a float32 product".into());
        }
        let (a, b) = (&node.input[0], &node.input[1]);
        let (activation, side, weight) = if node.op_type() == "Gemm" {
            if attr_i(node, "transA", 0) != 0 {
                return Err("Gemm with transA".into());
            }
            let w =
                super::weights::matrix(self.ctx, graph, outer, b, attr_i(node, "transB", 0) != 0)?
                    .ok_or_else(|| {
                        super::weights::not_constant(graph, b, "its B is not a constant")
                    })?;
            (a.clone(), Side::Right, w)
        } else {
            match (
                super::weights::matrix(self.ctx, graph, outer, b, false)?,
                super::weights::matrix(self.ctx, graph, outer, a, false)?,
            ) {
                (Some(w), _) => (a.clone(), Side::Right, w),
                (None, Some(w)) => (b.clone(), Side::Left, w),
                (None, None) => {
                    let overridden = [b, a]
                        .into_iter()
                        .find_map(|v| super::weights::overridable_behind(graph, v));
                    return Err(overridden.map_or_else(
                        || "neither side is a constant weight".into(),
                        |n| super::weights::overridable(&n),
                    ));
                }
            }
        };
        if self.facts.rank(&activation).is_none_or(|r| r < 2) {
            return Err("the activation's rank is unknown or below 2".into());
        }
        if weight.values.len() < MIN_WEIGHT_ELEMENTS {
            return Err(format!(
                "weight of {} elements: below {MIN_WEIGHT_ELEMENTS}, int8 gains nothing",
                weight.values.len()
            ));
        }
        let bias = if node.op_type() == "Gemm" {
            super::weights::gemm_bias(self.ctx, graph, outer, node)?
        } else {
            None
        };
        Ok((activation, side, weight, bias))
    }
}

#[cfg(test)]
#[path = "dynamic_tests.rs"]
mod tests;
