//! Raising a model's default-domain opset, only where that provably keeps what every node
//! computes. Each node's schema at the new opset is checked against the one it has now, from
//! ONNX's own schemas: the inputs and outputs it uses must still exist and take at least the
//! types they took, every attribute it sets must still exist with its type, and no new
//! attribute may be required. On top of that check, the version changes known to alter meaning
//! under the same signature are handled by name: a reduction's `axes` attribute becomes its
//! input (opset 18), a Split without sizes states its number of outputs (18), RoiAlign keeps its
//! old default coordinate mode explicitly (16), GridSample's renamed modes are renamed (20),
//! DFT's axis attribute (default 1) becomes its input (whose default is -2 from 20);
//! GroupNormalization-21 (scale and bias per channel) and a BatchNormalization with training
//! outputs across 14 are refused.
//! Anything else that fails the check is refused, naming the node and the op.

use std::collections::HashSet;

use bytes::Bytes;

use super::Model;
use super::proto::{AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto};
use super::schema::{OpSchema, normalize_domain, schema};

/// The lowest opset a model is upgraded from: below it, inputs that were attributes (Split,
/// Squeeze, Unsqueeze, ReduceSum, Clip, Pad) and renamed semantics (Softmax) need a converter.
pub const MIN_UPGRADE_FROM: i64 = 13;

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

/// The reductions whose `axes` moved from an attribute to an input at opset 18.
const AXES_TO_INPUT_18: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
];

/// Raises `model`'s default-domain opset to `to` (nothing when it is there already), or says
/// why not: each node that would change meaning, by label and op. Nothing changes on refusal.
pub fn upgrade(model: &mut Model, to: i64) -> Result<Upgrade, Vec<String>> {
    let from = model.opset("").unwrap_or(1);
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
    let mut names: HashSet<String> = HashSet::new();
    collect_names(model.graph(), &mut names);
    let mut graph = model.graph().clone();
    let mut upgrade = Upgrade {
        from,
        to,
        rewritten: Vec::new(),
    };
    let mut refused = Vec::new();
    visit(
        &mut graph,
        from,
        to,
        &mut names,
        &mut upgrade.rewritten,
        &mut refused,
    );
    if !refused.is_empty() {
        return Err(refused);
    }
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
    Ok(upgrade)
}

fn collect_names(g: &GraphProto, names: &mut HashSet<String>) {
    names.extend(crate::graph::defined_names(g));
    for n in &g.node {
        for body in crate::graph::subgraphs(n) {
            collect_names(body, names);
        }
    }
}

fn visit(
    g: &mut GraphProto,
    from: i64,
    to: i64,
    names: &mut HashSet<String>,
    rewritten: &mut Vec<String>,
    refused: &mut Vec<String>,
) {
    let mut added: Vec<TensorProto> = Vec::new();
    for (i, node) in g.node.iter_mut().enumerate() {
        for body in crate::graph::subgraphs_mut(node) {
            visit(body, from, to, names, rewritten, refused);
        }
        if !matches!(normalize_domain(node.domain()), "") {
            continue;
        }
        let label = crate::graph::node_label(node, i);
        let op = node.op_type().to_string();
        let (Some(old), Some(new)) = (schema("", &op, from), schema("", &op, to)) else {
            refused.push(format!(
                "node '{label}': no schema for {op} at opset {from} or {to}"
            ));
            continue;
        };
        if old.since == new.since {
            continue;
        }
        if new.deprecated {
            refused.push(format!("node '{label}': {op} is deprecated at opset {to}"));
            continue;
        }
        let crosses = |v: i64| old.since < v && new.since >= v;
        if crosses(21) && op == "GroupNormalization" {
            refused.push(format!(
                "node '{label}': GroupNormalization-21 takes scale and bias per channel, not per group"
            ));
            continue;
        }
        if crosses(14) && op == "BatchNormalization" && node.output.len() > 1 {
            refused.push(format!(
                "node '{label}': a BatchNormalization with statistics outputs computes in training mode, which opset 14 asks for by attribute"
            ));
            continue;
        }
        let axes_to_input = crosses(18) && AXES_TO_INPUT_18.contains(&op.as_str());
        let dft_axis = crosses(20) && op == "DFT";
        // what the node is checked as: without the attribute the rewrite below moves
        let mut checked = node.clone();
        if axes_to_input {
            checked.attribute.retain(|a| a.name() != "axes");
        }
        if dft_axis {
            checked.attribute.retain(|a| a.name() != "axis");
        }
        if let Err(why) = compatible(&checked, old, new) {
            refused.push(format!(
                "node '{label}': {op} from opset {} to {}: {why}",
                old.since, new.since
            ));
            continue;
        }
        let mut changed = false;
        if axes_to_input && let Some(k) = node.attribute.iter().position(|a| a.name() == "axes") {
            let axes = node.attribute.remove(k).ints;
            let name = fresh(names, &format!("{}_axes", node.output[0]));
            added.push(TensorProto {
                name: Some(name.clone()),
                data_type: Some(super::DataType::Int64.code()),
                dims: vec![axes.len() as i64],
                raw_data: Some(Bytes::from(
                    axes.iter()
                        .flat_map(|a| a.to_le_bytes())
                        .collect::<Vec<u8>>(),
                )),
                ..Default::default()
            });
            node.input.truncate(1);
            node.input.push(name);
            changed = true;
        }
        if dft_axis {
            // DFT's axis became an input at 20, and its default moved from 1 to -2: the old
            // axis (given or default) becomes the input
            let axis = match node.attribute.iter().position(|a| a.name() == "axis") {
                Some(k) => node.attribute.remove(k).i.unwrap_or(1),
                None => 1,
            };
            let name = fresh(names, &format!("{}_axis", node.output[0]));
            added.push(TensorProto {
                name: Some(name.clone()),
                data_type: Some(super::DataType::Int64.code()),
                dims: vec![],
                raw_data: Some(Bytes::from(axis.to_le_bytes().to_vec())),
                ..Default::default()
            });
            node.input.resize(2, String::new());
            node.input.push(name);
            changed = true;
        }
        let no_split = node.input.get(1).is_none_or(|v| v.is_empty());
        if crosses(18) && op == "Split" && no_split && !has_attr(node, "num_outputs") {
            // before 18 a Split without sizes cut equal parts, one per output; 18 asks for
            // their number
            node.attribute.push(AttributeProto {
                name: Some("num_outputs".into()),
                r#type: Some(attribute_proto::AttributeType::Int as i32),
                i: Some(node.output.len() as i64),
                ..Default::default()
            });
            changed = true;
        }
        if crosses(16) && op == "RoiAlign" && !has_attr(node, "coordinate_transformation_mode") {
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
        if changed {
            rewritten.push(label);
        }
    }
    g.initializer.extend(added);
}

/// Whether `node`, valid under `old`, means the same under `new`: what it uses still exists with
/// at least the types it had, and nothing new is required.
fn compatible(node: &NodeProto, old: &OpSchema, new: &OpSchema) -> Result<(), String> {
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
        if *required && !has_attr(node, name) {
            return Err(format!("attribute '{name}' is now required"));
        }
    }
    Ok(())
}

fn has_attr(node: &NodeProto, name: &str) -> bool {
    node.attribute.iter().any(|a| a.name() == name)
}

fn string_attr(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::String as i32),
        s: Some(Bytes::from(value.as_bytes().to_vec())),
        ..Default::default()
    }
}

/// A name no value of the model has yet, and now taken.
fn fresh(names: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 1;
    while names.contains(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    names.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::builder::{ModelBuilder, attr_ints};
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
        let mut old = model(12, |b| {
            b.node("Relu", &["x"], &["y"])
                .output("y", DataType::Float, &["2", "3"])
        });
        assert!(upgrade(&mut old, 21).unwrap_err()[0].contains("below 13"));
    }

    /// The rewrites that keep a meaning a version changed: Split's count of equal parts (18),
    /// RoiAlign's old default mode (16), GridSample's renamed mode (20), DFT's axis (20); and a
    /// BatchNormalization with training outputs refused across 14.
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
            compatible(&node, s, n)
                .unwrap_err()
                .contains("'split' is gone")
        );
    }
}
