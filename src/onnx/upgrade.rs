//! Raising a model's default-domain opset, only where that provably keeps what every node
//! computes. Each node's schema at the new opset is checked against the one it has now, from
//! ONNX's own schemas: the inputs and outputs it uses must still exist and take at least the
//! types they took, every attribute it sets must still exist with its type, and no new
//! attribute may be required. On top of that check, the version changes known to alter meaning
//! or move an attribute are handled by name (those ONNX's own version converter adapts, and
//! those found in the operators' changelogs that it does not):
//! - the legacy broadcasts before 7: Add, Sub, Mul, Div, Pow, And, Or, Xor, Equal, Greater and
//!   Less broadcast B into A only where `broadcast` is set, aligned at `axis` (or at A's last
//!   axes); from 7 they broadcast as numpy does, from the last axes. The attributes are dropped,
//!   and where `axis` aligned B elsewhere, B gains the trailing axes of 1 that put it there (an
//!   Unsqueeze). PRelu-6's one-dimensional slope is per channel (axis 1) where PRelu-7's would
//!   align with the last axis: it gains the same trailing axes (a slope of higher rank is kept
//!   where numpy puts it on axis 1 alone, and refused otherwise). Gemm's `broadcast` goes (C
//!   broadcasts as numpy since 7);
//! - attributes that meant nothing in inference are dropped: Dropout's `is_test` (7; in inference
//!   a Dropout passes its input through whatever it says, as the engines run every version),
//!   BatchNormalization's `is_test` (7; one that is not `is_test` normalizes with its batch's
//!   statistics, and is refused; one that is keeps only its output where its statistics outputs
//!   are not read, since from 7 those outputs mean training mode, and is refused where they are),
//!   the recurrent ops' `output_sequence` (7), BatchNormalization's `spatial` where it is 1 (9;
//!   0, statistics per element, is refused);
//! - attributes that became inputs are moved to constant inputs: Upsample's scales (9), Slice's
//!   starts, ends and axes and TopK's k (10), Clip's min and max and Pad's pads and value (11), Dropout's ratio (12),
//!   Split's sizes and the axes of Squeeze, Unsqueeze and ReduceSum (13), the other reductions'
//!   axes (18), DFT's axis, whose default moved from 1 to -2 (20, written even where absent);
//! - Softmax, LogSoftmax and Hardmax before 13 work on the input flattened to 2-D at `axis`
//!   (default 1), and from 13 along that one axis (default -1): where the axis is the last
//!   one, it is stated; elsewhere the node becomes Flatten, the op on the last axis, and a
//!   Reshape back to the input's shape;
//! - ops deprecated for one that computes the same are renamed: Scatter to ScatterElements
//!   (11), Upsample to Resize (10);
//! - Resize-10 (and Upsample) sampled at `x_out / scale`: across 11 its coordinate mode is
//!   stated as asymmetric, and nearest sampling, which took the whole part, as the floor (kept
//!   only where the scales are known and at least 1: onnxruntime rounds up below 1);
//! - a Split without sizes states its number of outputs (18), RoiAlign keeps its old default
//!   coordinate mode explicitly (16), GridSample's renamed modes are renamed (20);
//! - a Dropout's mask across 12 (undefined in inference before): dropped where nothing reads it,
//!   refused where something does;
//! - refused: Scan-8 across 9 (it had a batch axis and sequence lengths), OneHot across 11 (negative indices count from the end since), a ConvTranspose
//!   that computes its own padding (`output_shape`, `auto_pad` SAME) across 11 (an odd total's
//!   extra pixel changed sides), Resize's `tf_half_pixel_for_nn` (gone at 13),
//!   GroupNormalization-21 (scale and bias per channel), a BatchNormalization with training
//!   outputs across 14, and any op deprecated at the new opset without a replacement.
//!
//! Anything else that fails the check is refused, naming the node and the op.

use std::collections::HashSet;

use bytes::Bytes;

use super::proto::{AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto};
use super::schema::{OpSchema, normalize_domain, schema};
use super::{DataType, Model};
use crate::graph::builder::{attr_int, attr_ints, raw_tensor, tensor_i64};
use crate::infer::{Inference, LEGACY_BROADCAST};
use crate::onnx::attributes::{attr, attr_i, attr_s};

/// The lowest opset a model is upgraded from: below it, the ops' `consumed_inputs` (6) and
/// Reshape's shape as attribute (5) need rewrites not written here.
pub const MIN_UPGRADE_FROM: i64 = 6;

/// The lowest opset a model is run, written or optimized at: before 7 binary ops broadcast by
/// attribute and PRelu reads a one-dimensional slope per channel, which neither engine implements
/// (onnxruntime has no kernels for those versions, tract reads them as numpy broadcasts). A model
/// at 6 is raised to 7 wherever it is run or written ([`raise_legacy`]).
pub const LOWEST_KEPT: i64 = 7;

/// Raises `model` to [`LOWEST_KEPT`] where it is below it (and at [`MIN_UPGRADE_FROM`] or
/// above): what the raise did, or why it could not (and the model is unchanged); `None` for a
/// model at 7 or above, or below 6.
pub fn raise_legacy(model: &mut Model) -> Option<Result<Upgrade, Vec<String>>> {
    let from = model.opset("").unwrap_or(1);
    (MIN_UPGRADE_FROM..LOWEST_KEPT)
        .contains(&from)
        .then(|| upgrade(model, LOWEST_KEPT))
}

/// Whether `model` (its bodies included) has a node whose meaning changed at opset 7: a binary
/// op with a legacy `broadcast`, a PRelu (its slope), a BatchNormalization (`is_test`, whose
/// default is training mode), a Dropout with `is_test`.
pub fn has_legacy_forms(model: &Model) -> bool {
    fn graph(g: &GraphProto) -> bool {
        g.node.iter().any(|n| {
            let legacy = match n.op_type() {
                op if LEGACY_BROADCAST.contains(&op) => attr(n, "broadcast").is_some(),
                "PRelu" | "BatchNormalization" => true,
                "Dropout" => attr(n, "is_test").is_some(),
                _ => false,
            };
            (legacy && matches!(normalize_domain(n.domain()), ""))
                || crate::graph::subgraphs(n).any(graph)
        })
    }
    graph(model.graph())
}

/// The highest opset a model is raised to: the meaning changes up to it are the ones handled
/// above; later versions' are not reviewed.
pub const MAX_UPGRADE_TO: i64 = 21;

/// What an upgrade did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upgrade {
    pub from: i64,
    pub to: i64,
    /// Nodes rewritten to keep their meaning at the new opset (their labels).
    pub rewritten: Vec<String>,
}

/// How a moved attribute's value becomes a tensor.
#[derive(Clone, Copy)]
enum Moved {
    /// A list of ints: a 1-D int64 tensor.
    Ints,
    /// One int: a 1-D int64 tensor of one element (TopK's K).
    IntInOne,
    /// A float: a scalar of the type of the node's first input (Clip's bounds, Pad's value).
    FloatAsInput,
    /// A float: a float32 scalar (Dropout's ratio).
    Float,
    /// A list of floats: a 1-D float32 tensor (Upsample's scales).
    Floats,
    /// One int as a scalar int64, written with this default where the attribute is absent: the
    /// input's own default differs (DFT's axis, 1 as attribute, -2 as input).
    IntOr(i64),
}

/// An attribute that became an input: its name, the input slot, and how its value is written.
type MovedAttribute = (&'static str, usize, Moved);

/// Attributes that became inputs with the same meaning and the same default when absent: the
/// op, the opset that moved them, and each attribute with its slot.
const ATTRIBUTES_TO_INPUTS: &[(&str, i64, &[MovedAttribute])] = &[
    ("Upsample", 9, &[("scales", 1, Moved::Floats)]),
    (
        "Slice",
        10,
        &[
            ("starts", 1, Moved::Ints),
            ("ends", 2, Moved::Ints),
            ("axes", 3, Moved::Ints),
        ],
    ),
    ("TopK", 10, &[("k", 1, Moved::IntInOne)]),
    (
        "Clip",
        11,
        &[
            ("min", 1, Moved::FloatAsInput),
            ("max", 2, Moved::FloatAsInput),
        ],
    ),
    (
        "Pad",
        11,
        &[("pads", 1, Moved::Ints), ("value", 2, Moved::FloatAsInput)],
    ),
    ("Dropout", 12, &[("ratio", 1, Moved::Float)]),
    ("Split", 13, &[("split", 1, Moved::Ints)]),
    ("Squeeze", 13, &[("axes", 1, Moved::Ints)]),
    ("Unsqueeze", 13, &[("axes", 1, Moved::Ints)]),
    ("ReduceSum", 13, &[("axes", 1, Moved::Ints)]),
    ("ReduceL1", 18, &[("axes", 1, Moved::Ints)]),
    ("ReduceL2", 18, &[("axes", 1, Moved::Ints)]),
    ("ReduceLogSum", 18, &[("axes", 1, Moved::Ints)]),
    ("ReduceLogSumExp", 18, &[("axes", 1, Moved::Ints)]),
    ("ReduceMax", 18, &[("axes", 1, Moved::Ints)]),
    ("ReduceMean", 18, &[("axes", 1, Moved::Ints)]),
    ("ReduceMin", 18, &[("axes", 1, Moved::Ints)]),
    ("ReduceProd", 18, &[("axes", 1, Moved::Ints)]),
    ("ReduceSumSquare", 18, &[("axes", 1, Moved::Ints)]),
    ("DFT", 20, &[("axis", 2, Moved::IntOr(1))]),
];

/// Raises `model`'s default-domain opset to `to` (nothing when it is there already), or says
/// why not: each node that would change meaning, by label and op. Nothing changes on refusal.
pub fn upgrade(model: &mut Model, to: i64) -> Result<Upgrade, Vec<String>> {
    let Some(from) = model.opset("") else {
        return Err(vec!["the model imports no ai.onnx opset".into()]);
    };
    if from >= to {
        return Ok(Upgrade {
            from,
            to: from,
            rewritten: Vec::new(),
        });
    }
    if to > MAX_UPGRADE_TO {
        return Err(vec![format!(
            "opset {to} is above {MAX_UPGRADE_TO}, the highest mdeploy raises to"
        )]);
    }
    if from < MIN_UPGRADE_FROM {
        return Err(vec![format!(
            "the model's opset {from} is below {MIN_UPGRADE_FROM}, the lowest mdeploy raises from"
        )]);
    }
    if !model.proto.functions.is_empty() {
        return Err(vec![
            "the model has local functions: their bodies keep their own opset".into(),
        ]);
    }
    let facts = Inference::of_model(model);
    let mut raise = Raise {
        from,
        to,
        facts: &facts,
        names: HashSet::new(),
        read: HashSet::new(),
        rewritten: Vec::new(),
        refused: Vec::new(),
    };
    collect_names(model.graph(), &mut raise.names, &mut raise.read);
    let mut graph = model.graph().clone();
    raise.graph(&mut graph);
    if !raise.refused.is_empty() {
        return Err(raise.refused);
    }
    let rewritten = raise.rewritten;
    *model.graph_mut() = graph;
    for o in &mut model.proto.opset_import {
        if matches!(normalize_domain(o.domain()), "") {
            o.version = Some(to);
        }
    }
    let ir = model
        .proto
        .ir_version
        .unwrap_or(0)
        .max(crate::graph::builder::ir_version_for_opset(to));
    model.proto.ir_version = Some(ir);
    Ok(Upgrade {
        from,
        to,
        rewritten,
    })
}

/// The values `g` and its bodies define and the names of their nodes (a node the raise adds
/// takes a name no other has), and the values they read.
fn collect_names(g: &GraphProto, names: &mut HashSet<String>, read: &mut HashSet<String>) {
    names.extend(crate::graph::defined_names(g));
    names.extend(
        g.node
            .iter()
            .map(|n| n.name().to_string())
            .filter(|n| !n.is_empty()),
    );
    read.extend(g.output.iter().map(|o| o.name().to_string()));
    for n in &g.node {
        read.extend(n.input.iter().cloned());
        for body in crate::graph::subgraphs(n) {
            collect_names(body, names, read);
        }
    }
}

/// One raise in progress: what inference knew of the model before it, and what it did.
struct Raise<'a> {
    from: i64,
    to: i64,
    facts: &'a Inference,
    names: HashSet<String>,
    /// Every value a node or a graph's outputs read.
    read: HashSet<String>,
    rewritten: Vec<String>,
    refused: Vec<String>,
}

impl Raise<'_> {
    fn graph(&mut self, g: &mut GraphProto) {
        let mut added: Vec<TensorProto> = Vec::new();
        let mut nodes = Vec::with_capacity(g.node.len());
        for (i, mut node) in std::mem::take(&mut g.node).into_iter().enumerate() {
            for body in crate::graph::subgraphs_mut(&mut node) {
                self.graph(body);
            }
            if !matches!(normalize_domain(node.domain()), "") {
                nodes.push(node);
                continue;
            }
            let label = crate::graph::node_label(&node, i);
            match self.node(node.clone(), &mut added) {
                Ok((replacement, changed)) => {
                    if changed {
                        self.rewritten.push(label);
                    }
                    nodes.extend(replacement);
                }
                Err(why) => {
                    self.refused.push(format!("node '{label}': {why}"));
                    nodes.push(node);
                }
            }
        }
        g.node = nodes;
        g.initializer.extend(added);
    }

    /// `node` as it is written at the new opset (with the nodes that now come with it), and
    /// whether it changed; or why it cannot be.
    fn node(
        &mut self,
        mut node: NodeProto,
        added: &mut Vec<TensorProto>,
    ) -> Result<(Vec<NodeProto>, bool), String> {
        let (from, to) = (self.from, self.to);
        let op = node.op_type().to_string();
        // trailing empty outputs are no outputs (and the new version may allow fewer slots)
        while node.output.len() > 1 && node.output.last().is_some_and(String::is_empty) {
            node.output.pop();
        }
        let (Some(old), Some(mut new)) = (schema("", &op, from), schema("", &op, to)) else {
            return Err(format!("no schema for {op} at opset {from} or {to}"));
        };
        // ops deprecated for another that computes the same: ScatterElements-11 is Scatter-9
        // (with negative indices defined), Resize-10 is Upsample-9
        let renamed = match op.as_str() {
            "Scatter" if new.deprecated => Some("ScatterElements"),
            "Upsample" if new.deprecated => Some("Resize"),
            _ => None,
        };
        if renamed.is_none() && old.since == new.since {
            return Ok((vec![node], false));
        }
        let original_op = op.clone();
        let op = match renamed {
            Some(r) => {
                node.op_type = Some(r.into());
                new =
                    schema("", r, to).ok_or_else(|| format!("no schema for {r} at opset {to}"))?;
                r.to_string()
            }
            None => op,
        };
        let crosses = |v: i64| old.since < v && new.since >= v;
        if new.deprecated {
            return Err(format!("{op} is deprecated at opset {to}"));
        }
        if crosses(11) && op == "OneHot" {
            return Err("OneHot-11 counts negative indices from the end, where before 11 they gave rows of off values".into());
        }
        if crosses(11)
            && op == "ConvTranspose"
            && (attr(&node, "output_shape").is_some()
                || attr_s(&node, "auto_pad").is_some_and(|p| p.starts_with("SAME")))
        {
            // the padding a ConvTranspose computes itself: ConvTranspose-11 puts an odd total's
            // extra pixel on the other side
            return Err("ConvTranspose-11 splits the padding it computes (output_shape or auto_pad SAME) the other way".into());
        }
        if crosses(21) && op == "GroupNormalization" {
            return Err(
                "GroupNormalization-21 takes scale and bias per channel, not per group".into(),
            );
        }
        if crosses(14)
            && op == "BatchNormalization"
            && node.output.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err("a BatchNormalization with statistics outputs computes in training mode, which opset 14 asks for by attribute".into());
        }
        let mut changed = renamed.is_some();
        // the inputs compared with the old signature: not those moved from attributes
        let mut original_inputs = node.input.len();
        // nodes the rewritten one reads from, written before it
        let mut before = Vec::new();
        if crosses(9) && op == "Scan" {
            return Err(
                "Scan-8 has a batch axis and sequence lengths, which Scan-9 does not".into(),
            );
        }
        if crosses(7) && LEGACY_BROADCAST.contains(&op.as_str()) {
            changed |= self.legacy_broadcast(&mut node, added, &mut before)?;
        }
        if crosses(7) && op == "PRelu" {
            changed |= self.per_channel_slope(&mut node, added, &mut before)?;
        }
        if crosses(7) && op == "BatchNormalization" {
            let statistics = node.output.iter().skip(1).any(|o| !o.is_empty());
            let is_test = attr_i(&node, "is_test", 0) != 0;
            if !is_test && !statistics {
                return Err("a BatchNormalization-6 without is_test normalizes with its batch's own statistics (training mode)".into());
            }
            if is_test && statistics {
                // from 7 named statistics outputs ask for training mode: in test mode they are
                // dropped where nothing reads them
                if node.output.iter().skip(1).any(|o| self.read.contains(o)) {
                    return Err("a BatchNormalization-6 in test mode whose statistics outputs are read: from 7 those outputs mean training mode".into());
                }
                node.output.truncate(1);
                changed = true;
            }
        }
        if crosses(9) && op == "BatchNormalization" && attr_i(&node, "spatial", 1) == 0 {
            return Err(
                "BatchNormalization's spatial = 0 (statistics per element) is gone at opset 9"
                    .into(),
            );
        }
        // attributes that meant nothing in inference, gone at the new opset
        let meaningless: &[&str] = match op.as_str() {
            "Gemm" if crosses(7) => &["broadcast"],
            "Dropout" if crosses(7) => &["is_test"],
            "BatchNormalization" if crosses(9) => &["is_test", "spatial"],
            "BatchNormalization" if crosses(7) => &["is_test"],
            "GRU" | "LSTM" | "RNN" if crosses(7) => &["output_sequence"],
            _ => &[],
        };
        let had = node.attribute.len();
        node.attribute.retain(|a| !meaningless.contains(&a.name()));
        changed |= node.attribute.len() != had;
        for (_, _, moves) in ATTRIBUTES_TO_INPUTS
            .iter()
            .filter(|(o, v, _)| *o == original_op && crosses(*v))
        {
            changed |= self.move_attributes(&mut node, moves, added)?;
        }
        if crosses(12) && op == "Dropout" && node.output.get(1).is_some_and(|m| !m.is_empty()) {
            // before 12 the mask in inference is not defined (onnxruntime gives false, ONNX's
            // reference true; before 10 it was not even bool); from 12 it is true
            if self.read.contains(&node.output[1]) {
                return Err(
                    "the mask of a Dropout before opset 12 is undefined in inference, and it is read"
                        .into(),
                );
            }
            node.output.truncate(1);
            changed = true;
        }
        if crosses(11) && op == "Resize" {
            // Resize-10 (and Upsample) sampled at x_out / scale; 11 added the roi input before
            // the scales. Nearest took the whole part of that (onnxruntime's "simple" mode, which
            // rounds up when a scale is below 1): the floor, where every scale is known and at
            // least 1.
            let mode = attr_s(&node, "mode").unwrap_or_else(|| "nearest".into());
            if mode == "nearest" {
                let scales = node
                    .input
                    .get(1)
                    .and_then(|s| known_floats(self.facts, s, added));
                if !scales.is_some_and(|s| s.iter().all(|&v| v >= 1.0)) {
                    return Err(format!(
                        "{original_op}-{}'s nearest rounding is kept at opset 11 only for known scales of at least 1",
                        old.since
                    ));
                }
                node.attribute.push(string_attr("nearest_mode", "floor"));
            }
            let roi = self.fresh(&format!("{}_roi", node.output[0]));
            added.push(raw_tensor(&roi, DataType::Float, &[0], Vec::new()));
            node.input.insert(1, roi);
            // the scales moved a slot: only X is compared with the old signature
            original_inputs = 1;
            node.attribute
                .push(string_attr("coordinate_transformation_mode", "asymmetric"));
            changed = true;
        }
        if crosses(13)
            && op == "Resize"
            && attr_s(&node, "coordinate_transformation_mode").as_deref()
                == Some("tf_half_pixel_for_nn")
        {
            return Err("Resize's coordinate mode tf_half_pixel_for_nn is gone at opset 13".into());
        }
        let no_split = node.input.get(1).is_none_or(|v| v.is_empty());
        if crosses(18) && op == "Split" && no_split && attr(&node, "num_outputs").is_none() {
            // before 18 a Split without sizes cut equal parts, one per output; 18 asks for
            // their number
            node.attribute
                .push(attr_int("num_outputs", node.output.len() as i64));
            changed = true;
        }
        if crosses(16)
            && op == "RoiAlign"
            && attr(&node, "coordinate_transformation_mode").is_none()
        {
            // before 16 RoiAlign computed without the half-pixel offset; 16 made it the default
            node.attribute.push(string_attr(
                "coordinate_transformation_mode",
                "output_half_pixel",
            ));
            changed = true;
        }
        if crosses(20) && op == "GridSample" {
            for a in node.attribute.iter_mut().filter(|a| a.name() == "mode") {
                let renamed = match a.s.as_deref() {
                    Some(b"bilinear") => Some("linear"),
                    Some(b"bicubic") => Some("cubic"),
                    _ => None,
                };
                if let Some(r) = renamed {
                    a.s = Some(Bytes::from(r.as_bytes().to_vec()));
                    changed = true;
                }
            }
        }
        compatible(&node, old, new, original_inputs).map_err(|why| {
            format!(
                "{original_op} from opset {} to {op} {}: {why}",
                old.since, new.since
            )
        })?;
        if crosses(13) && matches!(op.as_str(), "Softmax" | "LogSoftmax" | "Hardmax") {
            before.extend(self.along_one_axis(node));
            return Ok((before, true));
        }
        before.push(node);
        Ok((before, changed))
    }

    /// Drops a binary op's legacy `broadcast` and `axis` (before opset 7); where `axis` aligned
    /// B elsewhere than at A's last axes, B gains the trailing axes of 1 that align it there under
    /// numpy's broadcasting. Whether anything changed.
    fn legacy_broadcast(
        &mut self,
        node: &mut NodeProto,
        added: &mut Vec<TensorProto>,
        before: &mut Vec<NodeProto>,
    ) -> Result<bool, String> {
        let broadcast = attr_i(node, "broadcast", 0) != 0;
        let axis = attr(node, "axis").map(|a| a.i());
        let had = node.attribute.len();
        node.attribute
            .retain(|a| !matches!(a.name(), "broadcast" | "axis"));
        let changed = node.attribute.len() != had;
        // without `broadcast` the shapes are the same; without `axis` B is aligned at A's last
        // axes, as numpy aligns it
        let (true, Some(axis)) = (broadcast, axis) else {
            return Ok(changed);
        };
        let [a, b] = &node.input[..] else {
            return Err(format!(
                "it has {} inputs where its legacy broadcast needs two",
                node.input.len()
            ));
        };
        let (a, b) = (a.clone(), b.clone());
        let (Some(ra), Some(rb)) = (self.facts.rank(&a), self.facts.rank(&b)) else {
            return Err(format!(
                "its legacy broadcast aligns '{b}' at axis {axis} of '{a}', and inference does not know both ranks"
            ));
        };
        let at = if axis < 0 { axis + ra as i64 } else { axis };
        if at < 0 || at as usize + rb > ra {
            return Err(format!(
                "its legacy broadcast aligns '{b}' (rank {rb}) at axis {axis} of '{a}' (rank {ra})"
            ));
        }
        let trailing = ra - at as usize - rb;
        if trailing > 0 {
            node.input[1] = self.trailing_axes(node, &b, rb, trailing, added, before);
        }
        Ok(true)
    }

    /// PRelu-6's one-dimensional slope (of more than one value) is per channel, axis 1 of X;
    /// from 7 it broadcasts as numpy does, from the last axis. It gains the trailing axes that
    /// keep it on axis 1. Whether anything changed.
    fn per_channel_slope(
        &mut self,
        node: &mut NodeProto,
        added: &mut Vec<TensorProto>,
        before: &mut Vec<NodeProto>,
    ) -> Result<bool, String> {
        let [x, slope] = &node.input[..] else {
            return Err(format!("a PRelu with {} inputs", node.input.len()));
        };
        let (x, slope) = (x.clone(), slope.clone());
        let one = |d: &crate::infer::Dim| d.as_const() == Some(1);
        let unknown = |v: &str| {
            format!(
                "PRelu-6 reads its slope per channel, and inference does not know the rank of '{v}'"
            )
        };
        let shape = self.facts.shape(&slope).ok_or_else(|| unknown(&slope))?;
        if shape.iter().all(one) {
            // one value for every element
            return Ok(false);
        }
        let rx = self.facts.rank(&x).ok_or_else(|| unknown(&x))?;
        if shape.len() >= 2 {
            // numpy aligns it at X's last axes: only a slope that varies along X's axis 1
            // alone, there, means what PRelu-6's per-channel slope did
            let at = rx as i64 - shape.len() as i64;
            let per_channel = at >= 0
                && shape
                    .iter()
                    .enumerate()
                    .all(|(k, d)| at + k as i64 == 1 || one(d));
            return match per_channel {
                true => Ok(false),
                false => Err(format!(
                    "PRelu-6's slope '{slope}' of rank {} is neither one value nor one per channel of '{x}'",
                    shape.len()
                )),
            };
        }
        if rx <= 2 {
            // axis 1 is the last one
            return Ok(false);
        }
        node.input[1] = self.trailing_axes(node, &slope, 1, rx - 2, added, before);
        Ok(true)
    }

    /// `value` (of rank `rank`) with `count` trailing axes of 1, by an Unsqueeze written before
    /// `node` (at the new opset: its axes an input from 13, an attribute before).
    fn trailing_axes(
        &mut self,
        node: &NodeProto,
        value: &str,
        rank: usize,
        count: usize,
        added: &mut Vec<TensorProto>,
        before: &mut Vec<NodeProto>,
    ) -> String {
        let axes: Vec<i64> = (rank..rank + count).map(|a| a as i64).collect();
        let out = self.fresh(&format!("{value}_aligned"));
        let name = node
            .name
            .as_ref()
            .filter(|n| !n.is_empty())
            .map(|n| self.fresh(&format!("{n}_align")));
        let mut unsqueeze = NodeProto {
            op_type: Some("Unsqueeze".into()),
            input: vec![value.to_string()],
            output: vec![out.clone()],
            name,
            ..Default::default()
        };
        if self.to >= 13 {
            let name = self.fresh(&format!("{out}_axes"));
            added.push(tensor_i64(&name, &[axes.len() as i64], &axes));
            unsqueeze.input.push(name);
        } else {
            unsqueeze.attribute.push(attr_ints("axes", &axes));
        }
        before.push(unsqueeze);
        out
    }

    /// Moves `moves`' attributes of `node` to constant inputs at their slots; whether any was
    /// there.
    fn move_attributes(
        &mut self,
        node: &mut NodeProto,
        moves: &[MovedAttribute],
        added: &mut Vec<TensorProto>,
    ) -> Result<bool, String> {
        let mut moved = false;
        for &(name, slot, kind) in moves {
            let a = match node.attribute.iter().position(|a| a.name() == name) {
                Some(k) => node.attribute.remove(k),
                None if matches!(kind, Moved::IntOr(_)) => AttributeProto::default(),
                None => continue,
            };
            if node.input.get(slot).is_some_and(|v| !v.is_empty()) {
                return Err(format!("'{name}' is given as attribute and as input"));
            }
            let tensor = match kind {
                Moved::IntOr(default) => raw_tensor(
                    "",
                    DataType::Int64,
                    &[],
                    a.i.unwrap_or(default).to_le_bytes().to_vec(),
                ),
                Moved::Ints => tensor_i64("", &[a.ints.len() as i64], &a.ints),
                Moved::IntInOne => tensor_i64("", &[1], &[a.i.unwrap_or_default()]),
                Moved::Float => float_scalar(DataType::Float, a.f.unwrap_or_default())
                    .expect("float32 is a float type"),
                Moved::Floats => raw_tensor(
                    "",
                    DataType::Float,
                    &[a.floats.len() as i64],
                    a.floats.iter().flat_map(|f| f.to_le_bytes()).collect(),
                ),
                Moved::FloatAsInput => {
                    let input = node.input.first().cloned().unwrap_or_default();
                    let dtype = self.facts.elem_type(&input);
                    dtype
                        .and_then(|t| float_scalar(t, a.f.unwrap_or_default()))
                        .ok_or_else(|| {
                            format!(
                                "'{name}' becomes an input of the type of '{input}', which is {}",
                                dtype.map_or("unknown".into(), |t| format!("{t:?}"))
                            )
                        })?
                }
            };
            let value = self.fresh(&format!("{}_{name}", node.output[0]));
            added.push(TensorProto {
                name: Some(value.clone()),
                ..tensor
            });
            if node.input.len() <= slot {
                node.input.resize(slot + 1, String::new());
            }
            node.input[slot] = value;
            moved = true;
        }
        Ok(moved)
    }

    /// Softmax, LogSoftmax or Hardmax (valid at the new opset but for the meaning of `axis`)
    /// written to compute what it did before 13: over the input flattened to 2-D at `axis`.
    fn along_one_axis(&mut self, mut node: NodeProto) -> Vec<NodeProto> {
        let axis = attr_i(&node, "axis", 1);
        let x = node.input[0].clone();
        let last = match self.facts.rank(&x) {
            Some(rank) => (if axis < 0 { axis + rank as i64 } else { axis }) == rank as i64 - 1,
            None => axis == -1,
        };
        node.attribute.retain(|a| a.name() != "axis");
        if last {
            // flattening at the last axis leaves every row where it was
            node.attribute.push(attr_int("axis", axis));
            return vec![node];
        }
        let y = node.output[0].clone();
        let shape = self.fresh(&format!("{y}_shape"));
        let flat = self.fresh(&format!("{y}_2d_in"));
        let out = self.fresh(&format!("{y}_2d"));
        let base = node.name.clone().filter(|n| !n.is_empty());
        let mut named = |suffix: &str| base.as_ref().map(|n| self.fresh(&format!("{n}_{suffix}")));
        let plain =
            |op: &str, inputs: Vec<String>, output: String, name: Option<String>| NodeProto {
                op_type: Some(op.into()),
                input: inputs,
                output: vec![output],
                name,
                ..Default::default()
            };
        let shape_node = plain("Shape", vec![x.clone()], shape.clone(), named("shape"));
        let mut flatten = plain("Flatten", vec![x], flat.clone(), named("flatten"));
        flatten.attribute.push(attr_int("axis", axis));
        let mut reshape = plain("Reshape", vec![out.clone(), shape], y, named("reshape"));
        if self.to >= 14 {
            // a zero in the shape is a zero-sized axis, not "copy this axis"
            reshape.attribute.push(attr_int("allowzero", 1));
        }
        node.input[0] = flat;
        node.output[0] = out;
        node.attribute.push(attr_int("axis", 1));
        vec![shape_node, flatten, node, reshape]
    }

    /// A name no value or node of the model has yet, and now taken.
    fn fresh(&mut self, base: &str) -> String {
        crate::graph::fresh_among(&mut self.names, base)
    }
}

/// The values of float tensor `name`: known to inference, or one of the constants the raise
/// added.
fn known_floats(facts: &Inference, name: &str, added: &[TensorProto]) -> Option<Vec<f32>> {
    if let Some(v) = facts.fact(name).and_then(|f| f.float_value.clone()) {
        return Some(v);
    }
    let t = added.iter().find(|t| t.name() == name)?;
    (t.data_type() == DataType::Float as i32).then(|| {
        t.raw_data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// A scalar of a float type holding `v`.
fn float_scalar(dtype: DataType, v: f32) -> Option<TensorProto> {
    let raw = match dtype {
        DataType::Float => v.to_le_bytes().to_vec(),
        DataType::Double => f64::from(v).to_le_bytes().to_vec(),
        DataType::Float16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
        _ => return None,
    };
    Some(raw_tensor("", dtype, &[], raw))
}

/// Whether `node`, valid under `old` and written for `new`, means the same under `new`: the
/// first `original_inputs` inputs and the outputs it uses still exist with at least the types
/// they had, and nothing new is required. (Inputs past those are the moved attributes.)
fn compatible(
    node: &NodeProto,
    old: &OpSchema,
    new: &OpSchema,
    original_inputs: usize,
) -> Result<(), String> {
    let used_inputs = node.input.len();
    if used_inputs < new.min_inputs || used_inputs > new.max_inputs {
        return Err(format!(
            "{used_inputs} inputs, the new version takes {} to {}",
            new.min_inputs, new.max_inputs
        ));
    }
    if node.output.len() > new.max_outputs || node.output.len() < new.min_outputs {
        return Err(format!(
            "{} outputs, the new version gives {} to {}",
            node.output.len(),
            new.min_outputs,
            new.max_outputs
        ));
    }
    let types = |s: &OpSchema, type_str: &str| -> HashSet<String> {
        match s.types.get(type_str) {
            Some(allowed) => allowed.iter().cloned().collect(),
            None => [type_str.to_string()].into(),
        }
    };
    let slots = |inputs: bool| {
        let n = if inputs {
            node.input.len()
        } else {
            node.output.len()
        };
        let n = if inputs { n.min(original_inputs) } else { n };
        (0..n).filter(move |k| {
            let v = if inputs {
                &node.input[*k]
            } else {
                &node.output[*k]
            };
            !v.is_empty()
        })
    };
    for (inputs, what) in [(true, "input"), (false, "output")] {
        for k in slots(inputs) {
            let (o, n) = if inputs {
                (old.input(k), new.input(k))
            } else {
                (old.output(k), new.output(k))
            };
            let (Some(o), Some(n)) = (o, n) else {
                return Err(format!("{what} {k} has no formal in one of the versions"));
            };
            let (before, after) = (types(old, o.type_str()), types(new, n.type_str()));
            if !before.is_subset(&after) {
                return Err(format!("{what} {k} takes fewer types"));
            }
        }
    }
    for a in &node.attribute {
        match (old.attributes.get(a.name()), new.attributes.get(a.name())) {
            (_, None) => return Err(format!("attribute '{}' is gone", a.name())),
            (Some((t0, _)), Some((t1, _))) if t0 != t1 => {
                return Err(format!("attribute '{}' changed type", a.name()));
            }
            _ => {}
        }
    }
    for (name, (_, required)) in &new.attributes {
        if *required && attr(node, name).is_none() {
            return Err(format!("attribute '{name}' is now required"));
        }
    }
    Ok(())
}

fn string_attr(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::String as i32),
        s: Some(Bytes::from(value.as_bytes().to_vec())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::builder::{ModelBuilder, attr_int, attr_ints};
    use crate::onnx::DataType;

    fn model(opset: i64, build: impl FnOnce(ModelBuilder) -> ModelBuilder) -> Model {
        let b = ModelBuilder::new(opset).input("x", DataType::Float, &["2", "3"]);
        Model::from_proto(build(b).build(), ".".into())
    }

    #[test]
    fn reduction_axes_become_an_input_and_type_only_changes_pass() {
        let mut m = model(17, |b| {
            b.node("ReduceMean", &["x"], &["m"])
                .attr(attr_ints("axes", &[-1]))
                .node("Identity", &["m"], &["y"])
                .output("y", DataType::Float, &["2", "1"])
        });
        let u = upgrade(&mut m, 21).unwrap();
        assert_eq!((u.from, u.to), (17, 21));
        assert_eq!(u.rewritten.len(), 1);
        assert_eq!(m.opset(""), Some(21));
        assert!(m.proto.ir_version() >= 10);
        let reduce = &m.graph().node[0];
        assert!(reduce.attribute.is_empty());
        assert_eq!(reduce.input, ["x", "m_axes"]);
        let axes = m.graph().initializer.iter().find(|t| t.name() == "m_axes");
        assert_eq!(
            axes.unwrap().raw_data.as_deref(),
            Some(&(-1i64).to_le_bytes()[..])
        );
        crate::graph::check_model(&m).unwrap();
    }

    #[test]
    fn a_meaning_change_is_refused_and_nothing_moves() {
        let mut m = model(18, |b| {
            b.node("GroupNormalization", &["x", "s", "b"], &["y"])
                .output("y", DataType::Float, &["2", "3"])
        });
        let before = m.proto.clone();
        let why = upgrade(&mut m, 21).unwrap_err();
        assert!(why[0].contains("GroupNormalization"), "{why:?}");
        assert_eq!(m.proto, before);
        // below the lowest opset upgraded from
        let mut old = model(5, |b| {
            b.node("Relu", &["x"], &["y"])
                .output("y", DataType::Float, &["2", "3"])
        });
        assert!(upgrade(&mut old, 21).unwrap_err()[0].contains("below 6"));
        // a model of other domains alone has no version to raise from
        old.proto.opset_import.clear();
        let why = upgrade(&mut old, 21).unwrap_err();
        assert!(why[0].contains("imports no ai.onnx opset"), "{why:?}");
    }

    /// Before 7 a binary op broadcast B into A at `axis` where `broadcast` was set: the attributes
    /// go, and B gains the trailing axes that align it there under numpy's rules (an Unsqueeze,
    /// its axes an input from 13); PRelu-6's 1-D slope is per channel and gains them too.
    /// Numbers: tests/interop (the ONNX suite's PyTorch exports at opset 6, and the mtcnn models
    /// written in the legacy forms).
    #[test]
    fn legacy_broadcasts_align_as_numpy_does() {
        let legacy = |op: &str, b_dims: &[i64], attrs: Vec<AttributeProto>| {
            let n = b_dims.iter().product::<i64>() as usize;
            let b = ModelBuilder::new(6)
                .input("x", DataType::Float, &["2", "3", "4", "5"])
                .initializer_f32("b", b_dims, &vec![0.5; n])
                .node(op, &["x", "b"], &["y"]);
            let b = attrs.into_iter().fold(b, |b, a| b.attr(a));
            let b = b.output("y", DataType::Float, &["2", "3", "4", "5"]);
            Model::from_proto(b.build(), ".".into())
        };
        let aligned = |m: &Model| {
            let g = m.graph();
            let op = g.node.last().unwrap();
            assert!(op.attribute.is_empty(), "{:?}", op.attribute);
            (g.node.len() == 2).then(|| g.node[0].clone())
        };
        // at axis 1 of a rank-4 A, B [3] needs two trailing axes
        for to in [11, 13] {
            let mut m = legacy(
                "Add",
                &[3],
                vec![attr_int("broadcast", 1), attr_int("axis", 1)],
            );
            let u = upgrade(&mut m, to).unwrap();
            assert_eq!(u.rewritten.len(), 1);
            let unsqueeze = aligned(&m).expect("an Unsqueeze before the Add");
            assert_eq!(unsqueeze.op_type(), "Unsqueeze");
            assert_eq!(unsqueeze.input[0], "b");
            assert_eq!(m.graph().node[1].input[1], unsqueeze.output[0]);
            let axes = if to >= 13 {
                let t = m
                    .graph()
                    .initializer
                    .iter()
                    .find(|t| t.name() == unsqueeze.input[1]);
                let raw = t.unwrap().raw_data.clone().unwrap();
                let values = raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()));
                Some(values.collect())
            } else {
                crate::onnx::attributes::attr_ints(&unsqueeze, "axes")
            };
            assert_eq!(axes, Some(vec![1, 2]), "opset {to}");
            crate::graph::check_model(&m).unwrap();
        }
        // aligned at A's last axes (by axis or by default), or no broadcast: the attributes go
        for attrs in [
            vec![attr_int("broadcast", 1), attr_int("axis", 2)],
            vec![attr_int("broadcast", 1)],
        ] {
            let mut m = legacy("Mul", &[4, 5], attrs);
            upgrade(&mut m, 13).unwrap();
            assert_eq!(aligned(&m), None);
        }
        let mut m = legacy("Sub", &[2, 3, 4, 5], vec![]);
        assert!(upgrade(&mut m, 13).unwrap().rewritten.is_empty());
        // an axis that cannot hold B is refused, naming it
        let mut m = legacy(
            "Div",
            &[4, 5],
            vec![attr_int("broadcast", 1), attr_int("axis", 3)],
        );
        assert!(upgrade(&mut m, 13).unwrap_err()[0].contains("axis 3"));
        // PRelu-6's slope [3] is per channel: [3, 1, 1] from 7; [1] or rank 2 are left alone
        let mut m = legacy("PRelu", &[3], vec![]);
        upgrade(&mut m, 9).unwrap();
        let unsqueeze = aligned(&m).expect("an Unsqueeze before the PRelu");
        assert_eq!(
            crate::onnx::attributes::attr_ints(&unsqueeze, "axes"),
            Some(vec![1, 2])
        );
        for dims in [&[1][..], &[3, 1, 1], &[1, 3, 1, 1]] {
            let mut m = legacy("PRelu", dims, vec![]);
            upgrade(&mut m, 9).unwrap();
            assert_eq!(aligned(&m), None);
        }
        // a slope numpy would put on other axes than 1 meant something else at 6
        let mut m = legacy("PRelu", &[4, 5], vec![]);
        assert!(upgrade(&mut m, 9).unwrap_err()[0].contains("per channel"));
    }

    /// What opsets 7 to 9 changed besides the broadcasts: attributes with no meaning in inference
    /// go, Upsample's scales become an input (and a Resize's from 10), and what changed meaning is
    /// refused by name.
    #[test]
    fn opsets_6_to_9_keep_their_meaning() {
        use crate::graph::builder::attr_floats;
        let raise = |opset: i64,
                     op: &str,
                     inputs: &[&str],
                     outputs: &[&str],
                     attrs: Vec<AttributeProto>,
                     to: i64| {
            let mut m = model(opset, |b| b);
            m.graph_mut().node.push(NodeProto {
                op_type: Some(op.into()),
                input: inputs.iter().map(|s| s.to_string()).collect(),
                output: outputs.iter().map(|s| s.to_string()).collect(),
                attribute: attrs,
                ..Default::default()
            });
            upgrade(&mut m, to).map(|_| m)
        };
        let names = |m: &Model| -> Vec<String> {
            let n = m.graph().node.last().unwrap();
            n.attribute.iter().map(|a| a.name().to_string()).collect()
        };
        let bn = ["x", "s", "b", "m", "v"];
        let m = raise(
            6,
            "BatchNormalization",
            &bn,
            &["y"],
            vec![attr_int("is_test", 1), attr_int("spatial", 1)],
            9,
        )
        .unwrap();
        assert!(names(&m).is_empty());
        let m = raise(
            6,
            "BatchNormalization",
            &bn,
            &["y"],
            vec![attr_int("is_test", 1), attr_int("spatial", 1)],
            8,
        )
        .unwrap();
        assert_eq!(names(&m), ["spatial"]);
        let why = raise(6, "BatchNormalization", &bn, &["y"], vec![], 13).unwrap_err();
        assert!(why[0].contains("training"), "{why:?}");
        // in test mode, statistics outputs nothing reads are dropped (from 7 they would mean
        // training mode); read, they are refused
        let test = || vec![attr_int("is_test", 1)];
        let m = raise(6, "BatchNormalization", &bn, &["y", "rm", "rv"], test(), 7).unwrap();
        assert_eq!(m.graph().node[0].output, ["y"]);
        let mut read = model(6, |b| b.output("rm", DataType::Float, &["3"]));
        read.graph_mut().node.push(NodeProto {
            op_type: Some("BatchNormalization".into()),
            input: bn.iter().map(|s| s.to_string()).collect(),
            output: vec!["y".into(), "rm".into()],
            attribute: test(),
            ..Default::default()
        });
        assert!(upgrade(&mut read, 7).unwrap_err()[0].contains("read"));
        let spatial = vec![attr_int("spatial", 0)];
        let why = raise(7, "BatchNormalization", &bn, &["y"], spatial, 13).unwrap_err();
        assert!(why[0].contains("spatial"), "{why:?}");
        let m = raise(
            6,
            "Dropout",
            &["x"],
            &["y"],
            vec![attr_int("is_test", 1)],
            13,
        )
        .unwrap();
        assert!(names(&m).is_empty());
        let gemm = vec![attr_int("broadcast", 1), attr_int("transB", 1)];
        let m = raise(6, "Gemm", &["x", "w", "c"], &["y"], gemm, 13).unwrap();
        assert_eq!(names(&m), ["transB"]);
        let lstm = vec![attr_int("output_sequence", 1), attr_int("hidden_size", 4)];
        let m = raise(6, "LSTM", &["x", "w", "r"], &["y"], lstm, 14).unwrap();
        assert_eq!(names(&m), ["hidden_size"]);
        // Upsample-7's scales: an input at 9, the scales of a Resize (after its roi) from 10
        let up = || vec![attr_floats("scales", &[1.0, 1.0, 2.0, 2.0])];
        let m = raise(7, "Upsample", &["x"], &["y"], up(), 9).unwrap();
        let n = &m.graph().node[0];
        assert_eq!((n.op_type(), n.input.len()), ("Upsample", 2));
        let scales = m
            .graph()
            .initializer
            .iter()
            .find(|t| t.name() == n.input[1]);
        assert_eq!(
            known_floats(&Inference::of_model(&m), scales.unwrap().name(), &[]),
            Some(vec![1.0, 1.0, 2.0, 2.0])
        );
        let m = raise(8, "Upsample", &["x"], &["y"], up(), 13).unwrap();
        let n = &m.graph().node[0];
        assert_eq!((n.op_type(), n.input.len()), ("Resize", 3));
        assert!(names(&m).contains(&"nearest_mode".to_string()));
        // nearest at a scale below 1 rounds up in onnxruntime: no opset-11 mode says that
        let down = vec![attr_floats("scales", &[1.0, 1.0, 0.5, 2.0])];
        let why = raise(8, "Upsample", &["x"], &["y"], down, 13).unwrap_err();
        assert!(why[0].contains("at least 1"), "{why:?}");
        let why = raise(8, "Scan", &["", "x"], &["y"], vec![], 9).unwrap_err();
        assert!(why[0].contains("batch axis"), "{why:?}");
    }

    /// The rewrites that keep a meaning a version changed: Split's count of equal parts (18),
    /// RoiAlign's old default mode (16), GridSample's renamed mode (20), DFT's axis (20); and a
    /// BatchNormalization with training outputs refused across 14 (empty slots are none).
    #[test]
    fn changed_meanings_are_spelled_out() {
        use crate::graph::builder::{attr_int, attr_string};
        let node =
            |op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>| NodeProto {
                op_type: Some(op.into()),
                input: inputs.iter().map(|s| s.to_string()).collect(),
                output: outputs.iter().map(|s| s.to_string()).collect(),
                attribute: attrs,
                ..Default::default()
            };
        let raise = |opset: i64, n: NodeProto| {
            let mut m = model(opset, |b| b);
            m.graph_mut().node.push(n);
            upgrade(&mut m, 21).map(|_| m)
        };
        let attr = |m: &Model, name: &str| {
            m.graph().node[0]
                .attribute
                .iter()
                .find(|a| a.name() == name)
                .cloned()
        };
        let m = raise(13, node("Split", &["x"], &["a", "b", "c"], vec![])).unwrap();
        assert_eq!(attr(&m, "num_outputs").unwrap().i, Some(3));
        let m = raise(13, node("RoiAlign", &["x", "r", "i"], &["y"], vec![])).unwrap();
        let mode = attr(&m, "coordinate_transformation_mode").unwrap();
        assert_eq!(mode.s.as_deref(), Some(&b"output_half_pixel"[..]));
        let m = raise(
            16,
            node(
                "GridSample",
                &["x", "g"],
                &["y"],
                vec![attr_string("mode", "bicubic")],
            ),
        )
        .unwrap();
        assert_eq!(attr(&m, "mode").unwrap().s.as_deref(), Some(&b"cubic"[..]));
        for (attrs, axis) in [(vec![], 1i64), (vec![attr_int("axis", 2)], 2)] {
            let m = raise(17, node("DFT", &["x"], &["y"], attrs)).unwrap();
            let n = &m.graph().node[0];
            assert!(n.attribute.iter().all(|a| a.name() != "axis"));
            assert_eq!(n.input[1], "", "no dft_length");
            let t = m
                .graph()
                .initializer
                .iter()
                .find(|t| t.name() == n.input[2]);
            assert_eq!(
                t.unwrap().raw_data.as_deref(),
                Some(&axis.to_le_bytes()[..])
            );
        }
        let training = node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y", "rm", "rv"],
            vec![],
        );
        let why = raise(13, training).unwrap_err();
        assert!(why[0].contains("training"), "{why:?}");
        // empty output slots are no statistics outputs: trimmed, and the node raised (onnxruntime
        // crashes running such a node at 9, so tests/interop cannot check it)
        let inference = node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y", "", "", "", ""],
            vec![],
        );
        let m = raise(9, inference).unwrap();
        assert_eq!(m.graph().node[0].output, ["y"]);
    }

    #[test]
    fn an_attribute_gone_at_the_new_version_is_refused() {
        // Split's `split` attribute became an input at 13; from 11 it cannot be kept
        let s = schema("", "Split", 11).unwrap();
        let n = schema("", "Split", 18).unwrap();
        let node = NodeProto {
            op_type: Some("Split".into()),
            input: vec!["x".into()],
            output: vec!["a".into(), "b".into()],
            attribute: vec![attr_ints("split", &[1, 1])],
            ..Default::default()
        };
        assert!(
            compatible(&node, s, n, 1)
                .unwrap_err()
                .contains("'split' is gone")
        );
    }

    /// Before 13 Softmax works on its input flattened to 2-D at `axis` (default 1): on the last
    /// axis the axis is stated, elsewhere the node becomes Shape, Flatten, Softmax and Reshape
    /// writing the original output (numbers: tests/interop/check_opset_raise.py).
    #[test]
    fn softmax_before_13_keeps_its_flattening() {
        let raise = |axis: Option<i64>| {
            let mut m = model(11, |b| {
                let b = b.node("Softmax", &["x"], &["y"]);
                let b = match axis {
                    Some(a) => b.attr(attr_int("axis", a)),
                    None => b,
                };
                b.output("y", DataType::Float, &["2", "3"])
            });
            upgrade(&mut m, 13).unwrap();
            crate::graph::check_model(&m).unwrap();
            m
        };
        // rank 2: the default axis 1 is the last one
        let m = raise(None);
        let ops: Vec<_> = m.graph().node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Softmax"]);
        assert_eq!(
            crate::onnx::attributes::attr_i(&m.graph().node[0], "axis", -1),
            1
        );
        let m = raise(Some(0));
        let ops: Vec<_> = m.graph().node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Shape", "Flatten", "Softmax", "Reshape"]);
        let g = m.graph();
        assert_eq!(crate::onnx::attributes::attr_i(&g.node[1], "axis", -9), 0);
        assert_eq!(g.node[1].input, ["x"]);
        assert_eq!(g.node[2].input, g.node[1].output);
        assert_eq!(
            g.node[3].input,
            [g.node[2].output[0].clone(), g.node[0].output[0].clone()]
        );
        assert_eq!(g.node[3].output, ["y"]);
        // the nodes it adds take names no node has
        let mut m = model(11, |b| {
            b.node("Softmax", &["x"], &["s"])
                .attr(attr_int("axis", 0))
                .name_last("sm")
                .node("Relu", &["s"], &["y"])
                .name_last("sm_shape")
                .output("y", DataType::Float, &["2", "3"])
        });
        upgrade(&mut m, 13).unwrap();
        let names: Vec<_> = m.graph().node.iter().map(|n| n.name()).collect();
        assert_eq!(
            names,
            ["sm_shape_1", "sm_flatten", "sm", "sm_reshape", "sm_shape"]
        );
    }

    /// An op the model's own opset deprecated already (Upsample-10, Scatter-11, which
    /// onnxruntime refuses to load) is renamed all the same: Resize with its roi and stated
    /// modes, ScatterElements.
    #[test]
    fn ops_deprecated_in_the_models_own_opset_are_renamed() {
        let mut m = model(10, |b| {
            b.initializer_f32("s", &[2], &[2.0, 2.0])
                .node("Upsample", &["x", "s"], &["y"])
                .output("y", DataType::Float, &["4", "6"])
        });
        upgrade(&mut m, 13).unwrap();
        let n = &m.graph().node[0];
        assert_eq!(n.op_type(), "Resize");
        assert_eq!(n.input.len(), 3);
        assert_eq!(n.input[2], "s");
        let mode = |name: &str| crate::onnx::attributes::attr_s(n, name);
        assert_eq!(mode("nearest_mode").as_deref(), Some("floor"));
        assert_eq!(
            mode("coordinate_transformation_mode").as_deref(),
            Some("asymmetric")
        );
        crate::graph::check_model(&m).unwrap();
        let mut m = model(11, |b| {
            b.initializer_i64("i", &[1, 3], &[0, 1, 0])
                .initializer_f32("u", &[1, 3], &[1.0; 3])
                .node("Scatter", &["x", "i", "u"], &["y"])
                .output("y", DataType::Float, &["2", "3"])
        });
        upgrade(&mut m, 13).unwrap();
        assert_eq!(m.graph().node[0].op_type(), "ScatterElements");
        crate::graph::check_model(&m).unwrap();
    }

    /// Attributes that became inputs: each lands at its slot as a constant of the right type,
    /// skipped optional slots are left empty, and an absent attribute adds nothing.
    #[test]
    fn attributes_that_became_inputs_are_moved_to_their_slots() {
        use crate::graph::builder::attr_float;
        let raise = |opset: i64, dtype: DataType, op: &str, attrs: Vec<AttributeProto>| {
            let mut m = Model::from_proto(
                ModelBuilder::new(opset)
                    .input("x", dtype, &["2", "3"])
                    .node(op, &["x"], &["y"])
                    .output("y", dtype, &["2", "3"])
                    .build(),
                ".".into(),
            );
            m.graph_mut().node[0].attribute = attrs;
            upgrade(&mut m, 21).unwrap();
            crate::graph::check_model(&m).unwrap();
            m
        };
        let init = |m: &Model, name: &str| {
            m.graph()
                .initializer
                .iter()
                .find(|t| t.name() == name)
                .cloned()
                .unwrap()
        };
        // Clip's max alone: min's slot stays empty, max is a float16 scalar like x
        let m = raise(9, DataType::Float16, "Clip", vec![attr_float("max", 0.5)]);
        let clip = &m.graph().node[0];
        assert!(clip.attribute.is_empty());
        assert_eq!(clip.input[..2], ["x", ""]);
        let max = init(&m, &clip.input[2]);
        assert_eq!(max.data_type(), DataType::Float16.code());
        assert!(max.dims.is_empty());
        assert_eq!(
            max.raw_data.as_deref(),
            Some(&half::f16::from_f32(0.5).to_le_bytes()[..])
        );
        // Slice's starts and ends at 1 and 2, no axes
        let m = raise(
            9,
            DataType::Float,
            "Slice",
            vec![attr_ints("starts", &[0, 1]), attr_ints("ends", &[2, 3])],
        );
        let slice = &m.graph().node[0];
        assert_eq!(slice.input.len(), 3);
        let ends = init(&m, &slice.input[2]);
        assert_eq!(ends.dims, [2]);
        assert_eq!(
            ends.raw_data.as_deref(),
            Some(&[2i64.to_le_bytes(), 3i64.to_le_bytes()].concat()[..])
        );
        // Dropout without a ratio keeps the default (0.5 both before and after)
        let m = raise(10, DataType::Float, "Dropout", vec![]);
        assert_eq!(m.graph().node[0].input, ["x"]);
        assert!(m.graph().initializer.is_empty());
        // Squeeze's axes across 13
        let m = raise(
            11,
            DataType::Float,
            "Squeeze",
            vec![attr_ints("axes", &[0])],
        );
        assert_eq!(init(&m, &m.graph().node[0].input[1]).dims, [1]);
    }
}
