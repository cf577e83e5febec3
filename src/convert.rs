//! `convert`: the import stage. Fixes the dynamic dims the user names, records the types and
//! shapes our own inference finds (`crate::infer`, symbolic dims included) as `value_info`, sorts
//! the graph topologically, and writes ONNX (inlined unless asked or too large) or tract's NNEF
//! archive. Ops inference does not know (contrib ops of an already quantized model, say) do not
//! stop the conversion: they are named in the report, and what depends on them stays unknown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;
use tract_onnx::prelude::*;

use crate::graph::{Graph, GraphError, ModelError, check_model};
use crate::infer::{self, Inference};
use crate::onnx::proto::tensor_shape_proto::dimension::Value;
use crate::onnx::proto::type_proto;
use crate::onnx::proto::{TensorShapeProto, ValueInfoProto};
use crate::onnx::{Model, schema};
use crate::run::{InputShapes, RunError, ValueShape, graph_inputs, guard, tract_model};

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    InputShape(String),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("tract cannot convert the model to NNEF: {reason}")]
    Nnef {
        reason: String,
        unsupported: Vec<OpRef>,
    },
    #[error(transparent)]
    Io(#[from] crate::onnx::OnnxError),
}

/// A node named in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OpRef {
    pub op: String,
    pub node: String,
}

/// What normalisation did.
#[derive(Debug, Default, Serialize)]
pub struct ConvertReport {
    /// Inputs whose shapes were fixed, with the shape they now have.
    pub fixed_inputs: BTreeMap<String, String>,
    /// Intermediate values whose type and shape are now recorded in `value_info`.
    pub shapes_recorded: usize,
    /// Intermediate values whose shape could not be inferred.
    pub shapes_unknown: usize,
    /// Nodes whose ops inference does not know (custom domains, contrib ops, ops newer than
    /// the model's opset).
    pub not_analysed: Vec<OpRef>,
    /// Whether the nodes had to be reordered.
    pub reordered: bool,
    /// Outputs declared with a shape the graph does not compute, now declared as computed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs_redeclared: Vec<infer::RedeclaredOutput>,
    /// The opset raised by `--opset`, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opset_raised: Option<OpsetRaised>,
    /// Initializers dropped from the graph inputs by `--freeze-initializers`, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initializers_frozen: Option<usize>,
}

/// An opset raised: from, to, and the nodes rewritten to keep their meaning.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OpsetRaised {
    pub from: i64,
    pub to: i64,
    pub rewritten: Vec<String>,
}

/// Normalises `model` in place: checks it, fixes named dims, infers shapes, sorts nodes.
pub fn normalize(model: &mut Model, shapes: &InputShapes) -> Result<ConvertReport, ConvertError> {
    check_model(model)?;
    let mut report = ConvertReport {
        fixed_inputs: apply_input_shapes(model, shapes)?,
        ..Default::default()
    };

    report.not_analysed = unknown_ops(model);
    let inference = Inference::of_model(model);
    let (recorded, unknown) = record_value_info(model, &inference);
    report.shapes_recorded = recorded;
    report.shapes_unknown = unknown;
    report.outputs_redeclared = infer::redeclare_outputs(model, &inference);

    let mut graph = Graph::new(std::mem::take(model.graph_mut()));
    report.reordered = graph.sort_topologically()?;
    *model.graph_mut() = graph.into_proto();
    Ok(report)
}

/// Checks `--input-shape` settings against the model and fixes those dims on its inputs (and on
/// outputs sharing a fixed symbol). Returns the inputs that changed, with their new shapes.
pub fn apply_input_shapes(
    model: &mut Model,
    shapes: &InputShapes,
) -> Result<BTreeMap<String, String>, ConvertError> {
    let shapes = shapes
        .clone()
        .resolve(&graph_inputs(model))
        .map_err(ConvertError::InputShape)?;
    Ok(fix_input_dims(model, &shapes))
}

/// Sets the user's sizes on graph inputs (and on outputs sharing a fixed symbol).
fn fix_input_dims(model: &mut Model, shapes: &InputShapes) -> BTreeMap<String, String> {
    let inputs = graph_inputs(model);
    let symbols: HashMap<String, usize> = shapes.symbol_sizes(&inputs).into_iter().collect();
    let mut fixed = BTreeMap::new();
    let graph = model.graph_mut();
    for vi in graph.input.iter_mut() {
        let Some(desc) = inputs.iter().find(|i| i.name == vi.name()) else {
            continue;
        };
        let concrete = shapes.by_input.get(&desc.name);
        if set_dims(vi, concrete.map(Vec::as_slice), &symbols) {
            fixed.insert(desc.name.clone(), ValueShape::of(vi).to_string());
        }
    }
    for vi in graph.output.iter_mut() {
        set_dims(vi, None, &symbols);
    }
    fixed
}

fn tensor_shape_mut(vi: &mut ValueInfoProto) -> Option<&mut TensorShapeProto> {
    match vi.r#type.as_mut()?.value.as_mut()? {
        type_proto::Value::TensorType(t) => t.shape.as_mut(),
        _ => None,
    }
}

/// Sets a value's dims from a whole shape or from symbol sizes; returns whether any changed.
fn set_dims(
    vi: &mut ValueInfoProto,
    shape: Option<&[usize]>,
    symbols: &HashMap<String, usize>,
) -> bool {
    let Some(s) = tensor_shape_mut(vi) else {
        return false;
    };
    let mut changed = false;
    for (i, d) in s.dim.iter_mut().enumerate() {
        let want = match (shape, &d.value) {
            (Some(dims), _) => dims.get(i).copied(),
            (None, Some(Value::DimParam(p))) => symbols.get(p).copied(),
            _ => None,
        };
        if let Some(n) = want
            && d.value != Some(Value::DimValue(n as i64))
        {
            d.value = Some(Value::DimValue(n as i64));
            changed = true;
        }
    }
    changed
}

/// Nodes (subgraphs included) whose op has no schema at the model's opset and is no
/// model-local function.
fn unknown_ops(model: &Model) -> Vec<OpRef> {
    fn walk(model: &Model, g: &crate::onnx::proto::GraphProto, out: &mut Vec<OpRef>) {
        for n in &g.node {
            let domain = schema::normalize_domain(n.domain());
            let known = model
                .opset(domain)
                .and_then(|v| schema::schema(domain, n.op_type(), v))
                .is_some()
                || model.proto.functions.iter().any(|f| {
                    f.name() == n.op_type() && schema::normalize_domain(f.domain()) == domain
                });
            if !known {
                out.push(OpRef {
                    op: n.op_type().to_string(),
                    node: n.name().to_string(),
                });
            }
            for sg in crate::graph::subgraphs(n) {
                walk(model, sg, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(model, model.graph(), &mut out);
    out
}

/// Writes inferred types and shapes of the main graph's intermediate values into `value_info`.
/// Values inference knows nothing about keep what the model had. Returns (recorded, unknown).
fn record_value_info(model: &mut Model, inference: &Inference) -> (usize, usize) {
    let graph = model.graph_mut();
    let interface: HashSet<String> = graph
        .input
        .iter()
        .chain(&graph.output)
        .map(|v| v.name().to_string())
        .chain(graph.initializer.iter().map(|t| t.name().to_string()))
        .collect();
    let existing: HashMap<String, ValueInfoProto> = graph
        .value_info
        .drain(..)
        .map(|v| (v.name().to_string(), v))
        .collect();
    let mut recorded = 0;
    let mut unknown = 0;
    let mut value_info = Vec::new();
    let mut seen = HashSet::new();
    for node in &graph.node {
        for name in node.output.iter().filter(|o| !o.is_empty()) {
            if interface.contains(name) || !seen.insert(name.clone()) {
                continue;
            }
            let recorded_here = inference
                .fact(name)
                .and_then(|f| infer::value_info(name, f, existing.get(name)));
            match recorded_here {
                Some(vi) => {
                    value_info.push(vi);
                    recorded += 1;
                }
                None => {
                    unknown += 1;
                    if let Some(v) = existing.get(name) {
                        value_info.push(v.clone());
                    }
                }
            }
        }
    }
    // value_info of values that are not node outputs here (subgraph captures, say) is kept
    let mut rest: Vec<_> = existing
        .into_iter()
        .filter(|(k, _)| !seen.contains(k))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    value_info.extend(rest.into_iter().map(|(_, v)| v));
    graph.value_info = value_info;
    (recorded, unknown)
}

/// What the NNEF writer produced.
#[derive(Debug, Serialize)]
pub struct NnefSummary {
    pub path: String,
    pub bytes: u64,
}

/// Writes tract's NNEF archive (`.nnef.tgz`) of a normalised model. Fails listing every node
/// whose op has no NNEF serializer.
pub fn write_nnef(model: &Model, path: &Path) -> Result<NnefSummary, ConvertError> {
    use tract_nnef::framework::Nnef;
    use tract_onnx::WithOnnx;
    use tract_transformers::WithTractTransformers;
    let tract = tract_model(model)?;
    let typed = guard("typing the model", || {
        tract.into_typed()?.into_decluttered()
    })
    .map_err(|e| ConvertError::Nnef {
        reason: e,
        unsupported: vec![],
    })?;
    let nnef: Nnef = tract_nnef::nnef().with_onnx().with_tract_transformers();
    let mut archive = Vec::new();
    let written = guard("writing NNEF", || {
        let gz = flate2::write::GzEncoder::new(&mut archive, flate2::Compression::default());
        nnef.write_to_tar_with_config(&typed, gz, false, true)?
            .finish()?;
        Ok(())
    });
    if let Err(reason) = written {
        return Err(ConvertError::Nnef {
            reason,
            unsupported: nnef_unsupported(&nnef, &typed),
        });
    }
    let bytes = crate::onnx::save_bytes_atomically(path, &archive)?;
    Ok(NnefSummary {
        path: path.display().to_string(),
        bytes,
    })
}

/// Nodes of `model` that no NNEF registry can serialize.
fn nnef_unsupported(nnef: &tract_nnef::framework::Nnef, model: &TypedModel) -> Vec<OpRef> {
    use tract_core::ops::binary::TypedBinOp;
    use tract_core::ops::element_wise::ElementWiseOp;
    use tract_core::ops::konst::Const;
    use tract_core::ops::source::TypedSource;
    model
        .nodes()
        .iter()
        .filter(|node| {
            let op = node.op();
            if node.op_is::<TypedSource>()
                || node.op_is::<Const>()
                || node.op_is::<tract_core::ops::identity::Identity>()
            {
                return false;
            }
            let id = op.type_id();
            !nnef.registries.iter().any(|r| {
                r.from_tract.contains_key(&id)
                    || node.op_as::<ElementWiseOp>().is_some_and(|e| {
                        r.unit_element_wise_ops
                            .iter()
                            .any(|u| u.1.as_ref().type_id() == e.0.type_id())
                            || r.element_wise_ops.iter().any(|u| u.1 == e.0.type_id())
                    })
                    || node.op_as::<TypedBinOp>().is_some_and(|b| {
                        r.binary_ops
                            .iter()
                            .any(|u| u.1.as_ref().type_id() == b.0.type_id())
                    })
            })
        })
        .map(|n| OpRef {
            op: n.op().name().to_string(),
            node: n.name.clone(),
        })
        .collect()
}
