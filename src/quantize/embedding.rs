//! Embedding tables: a Gather along axis 0 of a large 2-D float constant becomes int8 rows with
//! a scale per row, looked up by the same ids. Dynamic and static int8 both rewrite them this
//! way (standard ONNX, no activation range needed: the rows are weights).
//!
//! ```text
//!   Gather(W:f32[V,D], ids)
//! becomes
//!   Cast<f32>(Gather(W_q:i8[V,D], ids)) * Gather(w_scale:f32[V,1], ids)
//! ```
//!
//! A table read through DequantizeLinear instead would be dequantized whole on every run (the
//! runtime does not fold a DequantizeLinear of a constant in a QDQ model); this form reads only
//! the rows looked up.
//!
//! The rewrite needs opset 7 ([`TABLE_OPSET`]), not the opset of the mode's other operators: a
//! model that cannot be raised for those still gets int8 tables. A table several Gathers read
//! is written once per graph ([`Written`]).

use std::collections::{HashMap, HashSet};

use super::weights::{
    MIN_WEIGHT_ELEMENTS, Matrix, QuantizedWeight, Side, WeightRange, WeightUse, Written,
};
use super::{KeptFloat, QuantizedNode};
use crate::graph::Graph;
use crate::graph::builder::attr_int;
use crate::infer::Inference;
use crate::onnx::DataType;
use crate::onnx::attributes::attr_i;
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::passes::PassContext;

/// The opset the rewrite needs: Cast's integer `to` (6) and Mul's broadcasting (7).
pub const TABLE_OPSET: i64 = 7;

/// Why a Gather that reads a table stays float whatever the table holds: the model's opset, or
/// the user's exclusions.
pub fn refused(
    opset: i64,
    node: &NodeProto,
    exclude_nodes: &HashSet<String>,
    exclude_op_types: &HashSet<String>,
) -> Option<String> {
    if opset < TABLE_OPSET {
        Some(format!(
            "int8 rows need opset {TABLE_OPSET}; the model has {opset}"
        ))
    } else {
        super::excluded(node, exclude_nodes, exclude_op_types)
    }
}

/// The table `node` looks rows up in, if it is a Gather along axis 0 of a float constant of
/// at least [`MIN_WEIGHT_ELEMENTS`] (initializer or Constant node, behind Identity or a Cast to
/// float, here or in an enclosing graph). Other Gathers (most index shapes) are no tables.
pub fn table(
    ctx: &PassContext,
    facts: &Inference,
    graph: &Graph,
    outer: &HashMap<String, TensorProto>,
    node: &NodeProto,
) -> Option<Matrix> {
    if !looks_up_rows(facts, node) {
        return None;
    }
    table_behind(ctx, graph, outer, &node.input[0])
}

/// Whether `node` is a Gather along axis 0 of a float value (the lookup [`table`] needs; the
/// value may still be no table).
pub fn looks_up_rows(facts: &Inference, node: &NodeProto) -> bool {
    node.op_type() == "Gather"
        && matches!(node.domain(), "" | "ai.onnx")
        && node.input.len() == 2
        && matches!(attr_i(node, "axis", 0), 0 | -2)
        && facts.elem_type(&node.input[0]) == Some(DataType::Float)
}

/// `value` as a table, if it is a 2-D float constant of at least [`MIN_WEIGHT_ELEMENTS`].
pub fn table_behind(
    ctx: &PassContext,
    graph: &Graph,
    outer: &HashMap<String, TensorProto>,
    value: &str,
) -> Option<Matrix> {
    let w = super::weights::matrix(ctx, graph, outer, value, false).ok()??;
    (w.values.len() >= MIN_WEIGHT_ELEMENTS).then_some(w)
}

/// What keeps a table lookup float in a mode that rewrites as it goes (dynamic int8, int4): the
/// model's opset, the user's exclusions, and the accuracy search's returns.
pub struct Keep<'a> {
    pub opset: i64,
    pub exclude_nodes: &'a HashSet<String>,
    pub exclude_op_types: &'a HashSet<String>,
    pub revert: &'a std::collections::BTreeMap<String, String>,
}

/// Where a mode that rewrites as it goes records what it did: the nodes quantized and kept
/// float, and the indices of the nodes its rewrites replace (removed after the pass).
pub struct Done<'a> {
    pub quantized: &'a mut Vec<QuantizedNode>,
    pub kept_float: &'a mut Vec<KeptFloat>,
    pub doomed: &'a mut Vec<usize>,
}

/// `node` (at index `i`, named `label` in reports) rewritten as int8 rows where it is a Gather that looks rows up in an
/// embedding table ([`table`]) and nothing in `keep` keeps it float (the new nodes go to
/// `added`), or kept float with the reason, recorded in `done`. Other Gathers (most index
/// shapes) are left alone and not reported.
#[allow(clippy::too_many_arguments)]
pub fn quantize_lookup(
    ctx: &PassContext,
    facts: &Inference,
    keep: &Keep,
    edit: &mut Graph,
    outer: &HashMap<String, TensorProto>,
    (i, label, node): (usize, String, &NodeProto),
    added: &mut Vec<NodeProto>,
    written: &mut Written,
    done: Done,
) {
    let Some(table) = table(ctx, facts, edit, outer, node) else {
        return;
    };
    let returned = node.output.first().and_then(|o| keep.revert.get(o));
    let kept = refused(keep.opset, node, keep.exclude_nodes, keep.exclude_op_types);
    match kept.or(returned.cloned()) {
        Some(reason) => done.kept_float.push(KeptFloat {
            node: label,
            op: node.op_type().into(),
            reason,
        }),
        None => {
            let quantized = rewrite(edit, node, &label, &table, added, written);
            done.quantized.push(quantized);
            done.doomed.push(i);
        }
    }
}

/// Rewrites `node` (a Gather of `table`, which [`table`] found) as int8 rows: the new nodes go to
/// `added`, and the caller removes `node`. A table already in `written` is not written again.
/// Returns what was quantized.
pub fn rewrite(
    edit: &mut Graph,
    node: &NodeProto,
    label: &str,
    table: &Matrix,
    added: &mut Vec<NodeProto>,
    written: &mut Written,
) -> QuantizedNode {
    let output = node.output[0].clone();
    let ids = node.input[1].clone();
    let base = super::node_base(node);
    let QuantizedWeight {
        tensor: w_q,
        scale: w_scale,
        sqnr_db,
    } = written.add(
        edit,
        // rows are looked up, not multiplied: the full range whatever the products use
        WeightUse::new(&node.input[0], Side::Left, false, 1.0, WeightRange::Full),
        table,
    );
    let rows = edit.fresh_name(&format!("{output}_int8"));
    let float = edit.fresh_name(&format!("{output}_float"));
    let scale = edit.fresh_name(&format!("{output}_scale"));
    let new = super::new_node;
    added.push(new(
        "Gather",
        &edit.fresh_name(&format!("{base}/rows")),
        &[&w_q, &ids],
        &[&rows],
        vec![],
    ));
    added.push(new(
        "Cast",
        &edit.fresh_name(&format!("{base}/to_float")),
        &[&rows],
        &[&float],
        vec![attr_int("to", DataType::Float.code().into())],
    ));
    added.push(new(
        "Gather",
        &edit.fresh_name(&format!("{base}/scales")),
        &[&w_scale, &ids],
        &[&scale],
        vec![],
    ));
    added.push(new(
        "Mul",
        &edit.fresh_name(&format!("{base}/rescale")),
        &[&float, &scale],
        &[&output],
        vec![],
    ));
    QuantizedNode {
        node: label.to_string(),
        op: "Gather".into(),
        output,
        weight: table.name.clone(),
        weight_shape: table.dims,
        weight_sqnr_db: sqnr_db,
    }
}
