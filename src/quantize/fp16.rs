//! Float16 conversion: float32 weights become float16 and nodes compute in float16, with a Cast
//! wherever a value crosses between a float16 and a float32 region.
//!
//! ```text
//!   x:f32 ─ Conv(W:f32) ─ Relu ─ Resize(scales:f32) ─ y:f32
//! becomes
//!   x:f32 ─ Cast(f16) ─ Conv(W:f16) ─ Relu ─ Resize(scales:f32) ─ Cast(f32) ─ y:f32
//! ```
//!
//! A value stays float32 (it is *pinned*) when float16 cannot hold it:
//! - a weight beyond ±65504, or one whose nonzero values would mostly flush to zero
//!   ([`MAX_FLUSHED_FRACTION`]); fewer flushed elements are converted and reported;
//! - an activation whose largest magnitude, measured in float32 on calibration data, comes within
//!   [`OVERFLOW_MARGIN`] of 65504 (Pow before a ReduceMean, exp before a Softmax...): it, its
//!   producer and its readers stay float32;
//! - a small value computing a shape: one that feeds an input the schema keeps float32 (Resize's
//!   `scales`) or a Cast to an integer type, and the small values it is computed from.
//!
//! A node computes in float16 unless it is pinned, excluded, outside the standard domain, a
//! control-flow node, listed in [`super::fp16_ops`], or its schema at the model's opset allows
//! no float16 for its float values. Its inputs and outputs then take the types the schema allows:
//! an input of fixed float32 type stays float32, an input of a constraint no other slot shares
//! (Shape's, Cast's) takes either as it comes. Casts go in where a reader wants another type
//! than its value has; graph inputs and outputs keep their float32 types and names unless
//! `keep_io_types` is off. `If`/`Loop`/`Scan` keep their float32 interface and each body is
//! converted the same way, seeing the outer values' new types. The result's types are checked
//! against every schema with our own inference before it is returned.

use std::collections::{BTreeMap, HashMap, HashSet};

use half::f16;
use serde::{Deserialize, Serialize};

use super::QuantizeError;
use super::fp16_ops::float32_only;
use crate::graph::{Graph, bodies_mut, constant_tensor, node_label, subgraphs};
use crate::infer::Inference;
use crate::onnx::attributes::attr;
use crate::onnx::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto::AttributeType, type_proto,
};
use crate::onnx::schema::{OpSchema, normalize_domain, schema};
use crate::onnx::{DataType, Model};
use crate::passes::PassContext;

/// The largest finite float16.
pub const FP16_MAX: f32 = 65504.0;
/// An activation observed within this factor of [`FP16_MAX`] stays float32: calibration data is
/// a sample of what the model will see.
pub const OVERFLOW_MARGIN: f32 = 4.0;
/// A weight whose nonzero values would flush to zero in more than this fraction stays float32.
pub const MAX_FLUSHED_FRACTION: f64 = 0.01;

/// The largest magnitude float16 rounds to zero: 2^-25, half its smallest subnormal (2^-24),
/// which rounds to even, zero. Anything larger rounds to 2^-24 at least.
const HALF_FLUSHES_AT_MOST: f32 = f32::from_bits(0x3300_0000);
/// Values of at most this many elements that feed a shape computation stay float32 with it.
const SHAPE_LIKE_ELEMENTS: i64 = 64;

/// What to convert.
#[derive(Debug, Clone)]
pub struct Fp16Options {
    /// Keep graph inputs and outputs float32 (Casts at the boundary).
    pub keep_io_types: bool,
    /// The largest magnitude each value reached on calibration data, computed in float32.
    pub observed: HashMap<String, f32>,
    pub exclude_nodes: HashSet<String>,
    pub exclude_op_types: HashSet<String>,
    /// Nodes the accuracy search returns to float32, by an output value, with why.
    pub revert: BTreeMap<String, String>,
}

impl Default for Fp16Options {
    fn default() -> Self {
        Fp16Options {
            keep_io_types: true,
            observed: HashMap::new(),
            exclude_nodes: HashSet::new(),
            exclude_op_types: HashSet::new(),
            revert: BTreeMap::new(),
        }
    }
}

/// A node with float values that stays float32, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptNode {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// A float32 weight float16 does not hold exactly: beyond its range, or with elements that
/// flush to zero.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeightRange {
    pub name: String,
    #[serde(deserialize_with = "crate::json::f32_inf_if_null")]
    pub max_abs: f32,
    /// Nonzero elements that are zero in float16.
    pub flushed: usize,
    pub nonzero: usize,
    pub kept_float32: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Fp16Report {
    pub nodes_float16: usize,
    pub kept_float32: Vec<KeptNode>,
    pub weights_float16: usize,
    pub weight_ranges: Vec<WeightRange>,
    pub casts_inserted: usize,
    /// Values pinned to float32 because calibration saw them near float16's limit.
    #[serde(deserialize_with = "crate::json::map_f32_inf_if_null")]
    pub overflowing_values: BTreeMap<String, f32>,
    /// float32 initializers of the main graph that are also graph inputs (as IR 3 listed every
    /// weight): a caller may override them, so they stay float32 and are cast where read.
    #[serde(default)]
    pub overridable_weights: Vec<String>,
    /// The float16 values the nodes compute, one a node, by name: what accuracy is measured on
    /// node by node (in the main graph: a body's values cannot be exposed) and what the accuracy
    /// search returns to float32, bodies' nodes included.
    #[serde(skip)]
    pub converted_outputs: Vec<String>,
}

/// How a node slot holding a float32 value is typed after conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// float16 when the node computes in float16.
    Half,
    /// float32 whatever the node does.
    Float,
    /// takes either type as it comes (an input whose constraint no other slot shares).
    Any,
}

/// A node's input and output slots (`None`: not a float32 value).
type NodeSlots = (Vec<Option<Slot>>, Vec<Option<Slot>>);

/// Converts `model` to float16 in place.
pub fn convert(model: &mut Model, options: &Fp16Options) -> Result<Fp16Report, QuantizeError> {
    // the values the model computes before conversion adds any (what can be compared)
    let original = node_outputs(model);
    // Gemm's C is optional from opset 11
    if model.opset("").unwrap_or(1) >= 11 {
        super::fp16_ops::split_gemm_bias(model.graph_mut(), &options.revert);
    }
    let facts = Inference::of_model(model);
    let ctx = PassContext::new(model, 0, 0);
    let opsets: HashMap<String, i64> = model
        .proto
        .opset_import
        .iter()
        .map(|o| (normalize_domain(o.domain()).to_string(), o.version()))
        .collect();
    let mut converter = Converter {
        facts: &facts,
        ctx: &ctx,
        opsets,
        options,
        report: Fp16Report::default(),
        aliases: HashMap::new(),
        path: String::new(),
    };
    let mut graph = std::mem::take(model.graph_mut());
    let result = converter.graph(&mut graph, &HashMap::new(), &HashSet::new(), true);
    *model.graph_mut() = graph;
    result?;
    let after = Inference::of_model(model);
    let errors = after.type_errors(model);
    if !errors.is_empty() {
        return Err(QuantizeError::Inconsistent(errors));
    }
    // a Cast to float32 of a value already float16 became a Cast to float16 of it (a model
    // converted before): it goes, as the boundary Casts added beside it do the work, and so does
    // any other Cast to its input's type, here or in an If/Loop/Scan body (bit-identical)
    let removed = super::run_passes(model, &["eliminate_nop_cast"])?
        .per_pass
        .values()
        .map(|p| p.applied)
        .sum::<usize>();
    let computed = node_outputs(model);
    let mut report = converter.report;
    // the Casts removed were counted as computing in float16
    report.nodes_float16 = report.nodes_float16.saturating_sub(removed);
    report
        .converted_outputs
        .retain(|v| original.contains(v) && computed.contains(v));
    let float32: HashSet<&str> = model
        .graph()
        .initializer
        .iter()
        .filter(|t| t.data_type() == DataType::Float.code())
        .map(|t| t.name())
        .collect();
    report.overridable_weights = crate::lint::overridable_initializers(model.graph())
        .into_iter()
        .filter(|n| float32.contains(n.as_str()))
        .collect();
    Ok(report)
}

/// The values the nodes of `model` compute, in its main graph and every If/Loop/Scan body.
fn node_outputs(model: &Model) -> HashSet<String> {
    crate::graph::all_nodes(model.graph())
        .into_iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect()
}

struct Converter<'a> {
    facts: &'a Inference,
    ctx: &'a PassContext,
    opsets: HashMap<String, i64>,
    options: &'a Fp16Options,
    report: Fp16Report,
    /// New names of renamed values, to the names the facts know them by.
    aliases: HashMap<String, String>,
    /// How the nodes of the graph being converted are labelled: empty in the main graph, the
    /// body's path in a body ([`bodies_mut`]).
    path: String,
}

/// What one graph's conversion decided.
struct Plan {
    /// Per node: its input and output slots (None: not a float32 value).
    slots: Vec<NodeSlots>,
    half: Vec<bool>,
    /// Float32 values that stay float32, and why.
    pinned: HashMap<String, String>,
}

impl Converter<'_> {
    fn type_of(&self, value: &str) -> Option<DataType> {
        let name = self.aliases.get(value).map_or(value, String::as_str);
        self.facts.elem_type(name)
    }

    fn is_float(&self, value: &str) -> bool {
        let name = self.aliases.get(value).map_or(value, String::as_str);
        !value.is_empty() && self.facts.elem_type(name) == Some(DataType::Float)
    }

    fn schema_of(&self, node: &NodeProto) -> Option<&'static OpSchema> {
        let domain = normalize_domain(node.domain());
        schema(domain, node.op_type(), *self.opsets.get(domain)?)
    }

    /// The slots of `node`'s float32 values.
    fn slots(&self, node: &NodeProto) -> NodeSlots {
        let float = |v: &String| self.is_float(v);
        let Some(schema) = self.schema_of(node) else {
            let none = |vs: &[String]| vs.iter().map(|v| float(v).then_some(Slot::Float)).collect();
            return (none(&node.input), none(&node.output));
        };
        if node.op_type() == "Cast" {
            return (
                node.input
                    .iter()
                    .map(|v| float(v).then_some(Slot::Any))
                    .collect(),
                node.output
                    .iter()
                    .map(|v| float(v).then_some(Slot::Half))
                    .collect(),
            );
        }
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for k in 0..node.input.len() {
            if let Some(f) = schema.input(k).filter(|_| !node.input[k].is_empty()) {
                *uses.entry(f.type_str()).or_default() += 1;
            }
        }
        for k in 0..node.output.len() {
            if let Some(f) = schema.output(k).filter(|_| !node.output[k].is_empty()) {
                *uses.entry(f.type_str()).or_default() += 1;
            }
        }
        let kind = |ts: &str, input: bool| match schema.types.get(ts) {
            Some(allowed) if allowed.iter().any(|t| t == "float16") => {
                if input && uses.get(ts) == Some(&1) {
                    Slot::Any
                } else {
                    Slot::Half
                }
            }
            _ => Slot::Float,
        };
        let inputs = (0..node.input.len())
            .map(|k| {
                let f = schema.input(k)?;
                float(&node.input[k]).then(|| kind(f.type_str(), true))
            })
            .collect();
        let outputs = (0..node.output.len())
            .map(|k| {
                let f = schema.output(k)?;
                float(&node.output[k]).then(|| kind(f.type_str(), false))
            })
            .collect();
        (inputs, outputs)
    }

    fn is_small(&self, value: &str) -> bool {
        let name = self.aliases.get(value).map_or(value, String::as_str);
        self.facts.static_shape(name).is_some_and(|s| {
            s.iter()
                .try_fold(1i64, |acc, &d| acc.checked_mul(d))
                .is_some_and(|n| n <= SHAPE_LIKE_ELEMENTS)
        })
    }

    /// Why `node` stays float32 whatever its values, if it does (pins aside).
    fn node_reason(&self, node: &NodeProto, slots: &NodeSlots) -> Option<String> {
        let domain = normalize_domain(node.domain());
        if !matches!(domain, "") {
            return Some(format!(
                "operator of domain '{domain}': its float16 support is not known"
            ));
        }
        if subgraphs(node).next().is_some() {
            return Some(
                "control flow: its bodies are converted, its interface stays float32".into(),
            );
        }
        if let Some(why) = super::excluded(
            node,
            &self.options.exclude_nodes,
            &self.options.exclude_op_types,
        ) {
            return Some(why);
        }
        if let Some(why) = node.output.iter().find_map(|o| self.options.revert.get(o)) {
            return Some(why.clone());
        }
        if let Some(why) = float32_only(node) {
            return Some(why.into());
        }
        let Some(schema) = self.schema_of(node) else {
            return Some("no ONNX schema at the model's opset".into());
        };
        let structured =
            schema.types.values().flatten().any(|t| {
                t.starts_with("seq(") || t.starts_with("optional(") || t.starts_with("map(")
            });
        if structured {
            return Some("takes sequences or optionals".into());
        }
        let typed_by_attribute = ["dtype", "output_dtype", "output_datatype"]
            .iter()
            .any(|a| attr(node, a).is_some());
        if typed_by_attribute && node.op_type() != "Cast" {
            return Some("its output type is set by an attribute".into());
        }
        let unknown = node
            .input
            .iter()
            .chain(&node.output)
            .find(|v| !v.is_empty() && self.type_of(v).is_none());
        if let Some(v) = unknown {
            return Some(format!(
                "the type of '{v}' is unknown: no Cast could be placed for it"
            ));
        }
        // before opset 11 Gemm's C is required: it cannot be split off (split_gemm_bias)
        if node.op_type() == "Gemm"
            && node.input.get(2).is_some_and(|c| !c.is_empty())
            && self.opsets.get("").copied().unwrap_or(0) < 11
        {
            return Some(
                "a Gemm with a bias before opset 11: tract cannot load it in float16".into(),
            );
        }
        let half = slots
            .0
            .iter()
            .chain(&slots.1)
            .any(|s| *s == Some(Slot::Half));
        if !half {
            return Some(format!(
                "float32 only in the ONNX schema of {} at opset {}",
                node.op_type(),
                self.opsets.get("").copied().unwrap_or(0)
            ));
        }
        None
    }

    fn plan(&mut self, g: &GraphProto) -> Result<Plan, QuantizeError> {
        let graph = Graph::new(g.clone());
        let mut pinned: HashMap<String, String> = HashMap::new();
        self.pin_weights(&graph, &mut pinned)?;
        for (value, &max) in &self.options.observed {
            if max.is_finite() && max * OVERFLOW_MARGIN <= FP16_MAX {
                continue;
            }
            let defined = graph.index().producer(value).is_some() || graph.is_input(value);
            if self.is_float(value) && defined {
                self.report.overflowing_values.insert(value.clone(), max);
                pinned.entry(value.clone()).or_insert_with(|| {
                    format!(
                        "'{value}' reaches {max:.3e} on the calibration data, near float16's limit"
                    )
                });
            }
        }
        let slots: Vec<_> = g.node.iter().map(|n| self.slots(n)).collect();
        self.pin_shape_values(&graph, &slots, &mut pinned);
        let mut half = vec![false; g.node.len()];
        for (i, node) in g.node.iter().enumerate() {
            if node.op_type() == "Constant" && constant_tensor(node).is_some() {
                continue; // decided by its readers, below
            }
            let s = &slots[i];
            // a node whose float values it only takes as they come (Shape) has nothing to decide
            let has_float =
                s.0.iter()
                    .chain(&s.1)
                    .any(|s| matches!(s, Some(Slot::Half | Slot::Float)));
            if !has_float {
                continue;
            }
            let reason = self.node_reason(node, s).or_else(|| {
                let values = node
                    .input
                    .iter()
                    .zip(&s.0)
                    .chain(node.output.iter().zip(&s.1));
                values
                    .filter(|(_, s)| **s == Some(Slot::Half))
                    .find_map(|(v, _)| pinned.get(v).cloned())
            });
            match reason {
                Some(reason) => self.report.kept_float32.push(KeptNode {
                    node: format!("{}{}", self.path, node_label(node, i)),
                    op: node.op_type().to_string(),
                    reason,
                }),
                None => half[i] = true,
            }
        }
        self.report.nodes_float16 += half.iter().filter(|h| **h).count();
        Ok(Plan {
            slots,
            half,
            pinned,
        })
    }

    /// Pins the float32 constants float16 cannot hold; notes the ones it holds inexactly.
    fn pin_weights(
        &mut self,
        graph: &Graph,
        pinned: &mut HashMap<String, String>,
    ) -> Result<(), QuantizeError> {
        let g = graph.proto();
        let names = g.initializer.iter().map(|t| t.name().to_string()).chain(
            g.node
                .iter()
                .filter(|n| n.op_type() == "Constant")
                .flat_map(|n| n.output.clone()),
        );
        for name in names {
            if !self.is_float(&name) {
                continue;
            }
            let Some(t) = graph.constant(&name) else {
                continue;
            };
            let values = self.ctx.tensor_data(&t)?.f32s()?;
            let mut max_abs = 0f32;
            let (mut flushed, mut nonzero) = (0usize, 0usize);
            for &v in &values {
                max_abs = max_abs.max(v.abs());
                if v != 0.0 {
                    nonzero += 1;
                    // by magnitude: a float16 conversion per value (one call into F16C code
                    // each) took a minute on a BERT-size model
                    if v.abs() <= HALF_FLUSHES_AT_MOST {
                        flushed += 1;
                    }
                }
            }
            let nan = values.iter().any(|v| v.is_nan());
            let beyond = max_abs > FP16_MAX && !nan;
            let mostly_flushed = flushed as f64 > MAX_FLUSHED_FRACTION * nonzero as f64;
            if beyond {
                pinned.insert(
                    name.clone(),
                    format!("weight '{name}' holds {max_abs:.4e}, beyond float16's ±65504"),
                );
            } else if mostly_flushed {
                pinned.insert(
                    name.clone(),
                    format!("weight '{name}': {flushed} of {nonzero} nonzero values would be zero in float16"),
                );
            }
            if beyond || flushed > 0 {
                self.report.weight_ranges.push(WeightRange {
                    name,
                    max_abs,
                    flushed,
                    nonzero,
                    kept_float32: beyond || mostly_flushed,
                });
            }
        }
        Ok(())
    }

    /// Pins small values that compute shapes: those feeding a float32-only input or a Cast to a
    /// non-float type, and the small float values they are computed from.
    fn pin_shape_values(
        &self,
        graph: &Graph,
        slots: &[NodeSlots],
        pinned: &mut HashMap<String, String>,
    ) {
        let g = graph.proto();
        let mut stack: Vec<(String, String)> = Vec::new();
        for (i, node) in g.node.iter().enumerate() {
            let to_integer = node.op_type() == "Cast"
                && attr(node, "to")
                    .and_then(|a| a.i)
                    .and_then(|c| DataType::from_code(c as i32).ok())
                    .is_some_and(|t| !t.is_float());
            for (k, v) in node.input.iter().enumerate() {
                let sink = slots[i].0.get(k).copied().flatten() == Some(Slot::Float)
                    || (to_integer && k == 0);
                if sink && self.is_float(v) && self.is_small(v) {
                    stack.push((v.clone(), node_label(node, i)));
                }
            }
        }
        while let Some((value, sink)) = stack.pop() {
            if pinned.contains_key(&value) {
                continue;
            }
            pinned.insert(
                value.clone(),
                format!("'{value}' computes shapes (read by {sink})"),
            );
            if let Some((p, _)) = graph.index().producer(&value) {
                for v in &g.node[p].input {
                    if self.is_float(v) && self.is_small(v) {
                        stack.push((v.clone(), sink.clone()));
                    }
                }
            }
        }
    }

    /// Converts one graph; `outer` holds the new types of the enclosing graphs' float values.
    fn graph(
        &mut self,
        g: &mut GraphProto,
        outer: &HashMap<String, DataType>,
        outer_names: &HashSet<String>,
        main: bool,
    ) -> Result<(), QuantizeError> {
        // the body holders' labels, before Casts are inserted
        let mut labels = crate::graph::holder_labels(g);
        let plan = self.plan(g)?;
        let io_type = if main && !self.options.keep_io_types {
            DataType::Float16
        } else {
            DataType::Float
        };
        // the type each float32 value will have, and the type each reader wants
        let mut types: HashMap<String, DataType> = outer.clone();
        for vi in &g.input {
            if self.is_float(vi.name()) {
                types.insert(vi.name().to_string(), io_type);
            }
        }
        let constants = self.constant_values(g);
        for (i, node) in g.node.iter().enumerate() {
            let mut measured = false;
            for (v, s) in node.output.iter().zip(&plan.slots[i].1) {
                if let Some(s) = s {
                    let t = if plan.half[i] && *s == Slot::Half {
                        // one value per node: what it is measured and returned to float32 by
                        if !measured {
                            self.report.converted_outputs.push(v.clone());
                            measured = true;
                        }
                        DataType::Float16
                    } else {
                        DataType::Float
                    };
                    types.insert(v.clone(), t);
                }
            }
        }
        // constants: float16 when every reader in this graph wants float16
        let wants = |types: &HashMap<String, DataType>, i: usize, k: usize| -> Option<DataType> {
            match plan.slots[i].0.get(k).copied().flatten()? {
                Slot::Half if plan.half[i] => Some(DataType::Float16),
                Slot::Half | Slot::Float => Some(DataType::Float),
                Slot::Any => types.get(&g.node[i].input[k]).copied(),
            }
        };
        let index = crate::graph::UseDef::build(g);
        let captured: HashSet<String> = g
            .node
            .iter()
            .flat_map(subgraphs)
            .flat_map(crate::graph::captured_names)
            .collect();
        let mut half_constants = HashSet::new();
        for name in &constants {
            if plan.pinned.contains_key(name)
                || captured.contains(name)
                || g.output.iter().any(|o| o.name() == name) && io_type == DataType::Float
            {
                types.insert(name.clone(), DataType::Float);
                continue;
            }
            let readers: Vec<Option<DataType>> = index
                .consumers(name)
                .iter()
                .flat_map(|&i| {
                    let node = &g.node[i];
                    (0..node.input.len())
                        .filter(|&k| node.input[k] == *name)
                        .map(move |k| (i, k))
                })
                .map(|(i, k)| match plan.slots[i].0.get(k).copied().flatten() {
                    Some(Slot::Any) => None,
                    _ => wants(&types, i, k),
                })
                .collect();
            let all_half = readers
                .iter()
                .all(|w| w.is_none_or(|t| t == DataType::Float16))
                && readers.contains(&Some(DataType::Float16));
            let t = if all_half {
                DataType::Float16
            } else {
                DataType::Float
            };
            types.insert(name.clone(), t);
            if all_half {
                half_constants.insert(name.clone());
            }
        }
        // readers that want another type than their value has
        let mut casts: Vec<(usize, usize, DataType)> = Vec::new();
        for (i, node) in g.node.iter().enumerate() {
            for k in 0..node.input.len() {
                let (Some(want), Some(&have)) = (wants(&types, i, k), types.get(&node.input[k]))
                else {
                    continue;
                };
                if want != have {
                    casts.push((i, k, want));
                }
            }
        }
        // edit: constants, attributes, casts, outputs
        self.convert_constants(g, &half_constants)?;
        for (i, node) in g.node.iter_mut().enumerate() {
            if plan.half[i] {
                retype_attributes(node);
            }
        }
        let mut edit = Graph::in_scope(std::mem::take(g), outer_names.clone());
        let mut made: HashMap<(String, i32), String> = HashMap::new();
        for (i, k, want) in casts {
            let value = edit.proto().node[i].input[k].clone();
            let key = (value.clone(), want.code());
            let cast = match made.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let suffix = if want == DataType::Float16 {
                        "fp16"
                    } else {
                        "fp32"
                    };
                    let name = edit.fresh_name(&format!("{value}_{suffix}"));
                    let cast = cast_node(&edit, &value, &name, want);
                    edit.proto_mut().node.push(cast);
                    types.insert(name.clone(), want);
                    made.insert(key, name.clone());
                    name
                }
            };
            edit.proto_mut().node[i].input[k] = cast;
            self.report.casts_inserted += 1;
        }
        self.fix_outputs(&mut edit, &mut types, io_type, main)?;
        edit.sort_topologically()?;
        *g = edit.into_proto();
        for vi in g.input.iter_mut().chain(g.value_info.iter_mut()) {
            if types.get(vi.name()) == Some(&DataType::Float16) && self.is_float(vi.name()) {
                set_elem_type(vi, DataType::Float16);
            }
        }
        // bodies, seeing this graph's new types and names
        let mut names = outer_names.clone();
        names.extend(crate::graph::defined_names(g));
        // a holder writing a graph output of a float16 interface was renamed (`{out}_fp32`)
        for (new, old) in &self.aliases {
            if let Some(label) = labels.get(old).cloned() {
                labels.insert(new.clone(), label);
            }
        }
        for (path, body) in bodies_mut(g, &self.path.clone(), &labels) {
            let enclosing = std::mem::replace(&mut self.path, path);
            self.graph(body, &types, &names, false)?;
            self.path = enclosing;
        }
        Ok(())
    }

    /// Float32 constants of `g`: initializers no input overrides, and Constant node outputs.
    fn constant_values(&self, g: &GraphProto) -> Vec<String> {
        let inputs: HashSet<&str> = g.input.iter().map(|i| i.name()).collect();
        g.initializer
            .iter()
            .map(|t| t.name())
            .filter(|n| !inputs.contains(n))
            .chain(
                g.node
                    .iter()
                    .filter(|n| n.op_type() == "Constant" && constant_tensor(n).is_some())
                    .filter_map(|n| n.output.first().map(String::as_str)),
            )
            .filter(|n| self.is_float(n))
            .map(str::to_string)
            .collect()
    }

    fn convert_constants(
        &mut self,
        g: &mut GraphProto,
        names: &HashSet<String>,
    ) -> Result<(), QuantizeError> {
        for t in &mut g.initializer {
            if names.contains(t.name()) {
                *t = to_half(t, self.ctx)?;
                self.report.weights_float16 += 1;
            }
        }
        for node in &mut g.node {
            if node.op_type() != "Constant"
                || !node.output.first().is_some_and(|o| names.contains(o))
            {
                continue;
            }
            let Some(t) = constant_tensor(node) else {
                continue;
            };
            let half = to_half(&t, self.ctx)?;
            node.attribute = vec![crate::graph::builder::attr_tensor("value", half)];
            self.report.weights_float16 += 1;
        }
        Ok(())
    }

    /// Graph outputs whose value changed type: a Cast back to the declared type under the
    /// output's name (the main graph keeps its names; a body's outputs are positional).
    fn fix_outputs(
        &mut self,
        edit: &mut Graph,
        types: &mut HashMap<String, DataType>,
        io_type: DataType,
        main: bool,
    ) -> Result<(), QuantizeError> {
        let outputs: Vec<String> = edit
            .proto()
            .output
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        for (k, out) in outputs.iter().enumerate() {
            let Some(&have) = types.get(out) else {
                continue;
            };
            if !self.is_float(out) || have == io_type {
                continue;
            }
            if main {
                // the value is renamed; the Cast writes the output's name
                let renamed = edit.fresh_name(&format!("{out}_{}", short(have)));
                rename_definition(edit, out, &renamed);
                edit.replace_all_uses(out, &renamed);
                let cast = cast_node(edit, &renamed, out, io_type);
                edit.proto_mut().node.push(cast);
                self.aliases.insert(renamed.clone(), out.clone());
                types.insert(renamed, have);
            } else {
                let cast = edit.fresh_name(&format!("{out}_{}", short(io_type)));
                let node = cast_node(edit, out, &cast, io_type);
                edit.proto_mut().node.push(node);
                edit.proto_mut().output[k].name = Some(cast.clone());
            }
            types.insert(out.clone(), io_type);
            self.report.casts_inserted += 1;
        }
        if io_type == DataType::Float16 {
            for o in &mut edit.proto_mut().output {
                if self.is_float(o.name()) {
                    set_elem_type(o, DataType::Float16);
                }
            }
        }
        Ok(())
    }
}

fn short(t: DataType) -> &'static str {
    if t == DataType::Float16 {
        "fp16"
    } else {
        "fp32"
    }
}

/// A Cast of `input` to `to` writing `output`, under a node name no node of `edit` has.
fn cast_node(edit: &Graph, input: &str, output: &str, to: DataType) -> NodeProto {
    super::new_node(
        "Cast",
        &edit.fresh_name(&format!("{output}_cast")),
        &[input],
        &[output],
        vec![crate::graph::builder::attr_int("to", to.code().into())],
    )
}

/// Makes whatever defines `old` in this graph (a node output or an initializer) define `new`.
fn rename_definition(edit: &mut Graph, old: &str, new: &str) {
    let g = edit.proto_mut();
    for n in &mut g.node {
        for o in n.output.iter_mut().filter(|o| o.as_str() == old) {
            *o = new.to_string();
        }
    }
    for t in g.initializer.iter_mut().filter(|t| t.name() == old) {
        t.name = Some(new.to_string());
    }
    for vi in g.value_info.iter_mut().filter(|v| v.name() == old) {
        vi.name = Some(new.to_string());
    }
}

/// A node computing in float16: attributes that name float32 as a type now name float16.
fn retype_attributes(node: &mut NodeProto) {
    let float = i64::from(DataType::Float.code());
    match node.op_type() {
        "Cast" => {
            for a in node.attribute.iter_mut().filter(|a| a.name() == "to") {
                if a.i == Some(float) {
                    a.i = Some(DataType::Float16.code().into());
                }
            }
        }
        "ConstantOfShape" => {
            let value = attr(node, "value").and_then(|a| a.t.clone());
            let half = match value {
                Some(t) if t.data_type() == DataType::Float.code() => {
                    let v = t.float_data.first().copied().or_else(|| {
                        t.raw_data
                            .as_ref()
                            .and_then(|r| r.get(..4))
                            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    });
                    Some(v.unwrap_or(0.0))
                }
                Some(_) => None,
                None => Some(0.0),
            };
            if let Some(v) = half {
                let t = crate::graph::builder::raw_tensor(
                    "",
                    DataType::Float16,
                    &[1],
                    f16::from_f32(v).to_le_bytes().to_vec(),
                );
                node.attribute.retain(|a| a.name() != "value");
                node.attribute.push(AttributeProto {
                    name: Some("value".into()),
                    r#type: Some(AttributeType::Tensor as i32),
                    t: Some(t),
                    ..Default::default()
                });
            }
        }
        _ => {}
    }
}

fn set_elem_type(vi: &mut crate::onnx::proto::ValueInfoProto, t: DataType) {
    if let Some(type_proto::Value::TensorType(tt)) =
        vi.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        tt.elem_type = Some(t.code());
    }
}

/// A float32 tensor as float16, rounded to nearest, stored inline.
fn to_half(t: &TensorProto, ctx: &PassContext) -> Result<TensorProto, QuantizeError> {
    let values = ctx.tensor_data(t)?.f32s()?;
    Ok(crate::graph::builder::raw_tensor(
        t.name(),
        DataType::Float16,
        &t.dims,
        half_bytes(&values),
    ))
}

/// `values` as little-endian float16, rounded to nearest, converted in bulk: the slice
/// conversion runs F16C on whole vectors, where one call per value cost about 50x more.
fn half_bytes(values: &[f32]) -> Vec<u8> {
    use half::slice::HalfFloatSliceExt;
    let mut halves = vec![f16::ZERO; values.len()];
    halves.convert_from_f32_slice(values);
    halves.iter().flat_map(|h| h.to_le_bytes()).collect()
}

#[cfg(test)]
#[path = "fp16_tests.rs"]
mod tests;
