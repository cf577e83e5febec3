//! `convert`: the import stage. Fixes the dynamic dims the user names, records the shapes tract's
//! analysis infers as `value_info`, sorts the graph topologically, and writes ONNX (inlined unless
//! asked or too large) or tract's NNEF archive. Ops tract cannot analyse (contrib ops of an already
//! quantized model, say) do not stop the conversion: they are named in the report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid, InferenceModelExt};

use crate::graph::{Graph, GraphError, ModelError, check_model};
use crate::onnx::Model;
use crate::onnx::proto::tensor_shape_proto::{Dimension, dimension::Value};
use crate::onnx::proto::type_proto::{self, Tensor as TensorType};
use crate::onnx::proto::{TensorShapeProto, TypeProto, ValueInfoProto};
use crate::run::tensor_io::onnx_dtype;
use crate::run::{Dim, InputShapes, RunError, ValueShape, graph_inputs, guard, tract_model};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Nodes tract could not analyse (unknown or unsupported ops).
    pub not_analysed: Vec<OpRef>,
    /// tract's own message when analysis stopped early.
    pub analysis_error: Option<String>,
    /// Whether the nodes had to be reordered.
    pub reordered: bool,
}

/// Normalises `model` in place: checks it, fixes named dims, infers shapes, sorts nodes.
pub fn normalize(model: &mut Model, shapes: &InputShapes) -> Result<ConvertReport, ConvertError> {
    check_model(model)?;
    let mut report = ConvertReport {
        fixed_inputs: apply_input_shapes(model, shapes)?,
        ..Default::default()
    };

    // tract failing to load or analyse the model does not stop the import: the model is still
    // normalised, with the shapes that could be inferred, and the report says what was not.
    let inferred = match tract_model(model) {
        Ok(mut tract) => {
            report.not_analysed = unimplemented_ops(&tract);
            if let Err(e) = guard("analysing shapes", || tract.analyse(true).map(|_| ())) {
                report.analysis_error = Some(e);
            }
            inferred_types(&tract)
        }
        Err(e) => {
            report.analysis_error = Some(e.to_string());
            HashMap::new()
        }
    };
    let onnx_types = crate::graph::elem_types(model.graph());
    let (recorded, unknown) = record_value_info(model, &inferred, &onnx_types);
    report.shapes_recorded = recorded;
    report.shapes_unknown = unknown;

    let mut graph = Graph::new(std::mem::take(model.graph_mut()));
    report.reordered = graph.sort_topologically()?;
    *model.graph_mut() = graph.into_proto();
    Ok(report)
}

/// Value shapes as tract's analysis infers them (a dim is `None` when it is not a known number);
/// values whose rank is unknown are absent. Empty when tract cannot load the model.
pub fn infer_shapes(model: &Model) -> HashMap<String, Vec<Option<i64>>> {
    let Ok(mut tract) = tract_model(model) else {
        return HashMap::new();
    };
    let _ = guard("analysing shapes", || tract.analyse(true).map(|_| ()));
    inferred_types(&tract)
        .into_iter()
        .filter_map(|(name, (_, dims))| {
            let dims = dims?.into_iter().map(|d| match d {
                Some(Dim::Fixed(v)) => Some(v),
                _ => None,
            });
            Some((name, dims.collect()))
        })
        .collect()
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
    let mut symbols: HashMap<String, usize> = shapes.by_symbol.clone().into_iter().collect();
    for input in graph_inputs(model) {
        if let (Some(dims), ValueShape::Known(decl)) =
            (shapes.by_input.get(&input.name), &input.shape)
        {
            for (d, &n) in decl.iter().zip(dims) {
                if let Dim::Symbol(s) = d {
                    symbols.insert(s.clone(), n);
                }
            }
        }
    }
    let inputs = graph_inputs(model);
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

fn unimplemented_ops(model: &InferenceModel) -> Vec<OpRef> {
    model
        .nodes()
        .iter()
        .filter_map(|n| {
            let name = n.op.name();
            let op = name.strip_prefix("Unimplemented(")?.strip_suffix(')')?;
            Some(OpRef {
                op: op.to_string(),
                node: n.name.clone(),
            })
        })
        .collect()
}

/// An inferred type: ONNX element type code and dims (`None` for an unknown dim).
type Inferred = (Option<i32>, Option<Vec<Option<Dim>>>);

fn inferred_types(model: &InferenceModel) -> HashMap<String, Inferred> {
    let mut out = HashMap::new();
    for node in model.nodes() {
        for (slot, outlet) in node.outputs.iter().enumerate() {
            let outlet_id = OutletId::new(node.id, slot);
            // graph inputs are unlabelled source nodes named after the input
            let label = model.outlet_label(outlet_id).or_else(|| {
                model
                    .inputs
                    .contains(&outlet_id)
                    .then_some(node.name.as_str())
            });
            let Some(label) = label else { continue };
            let dt = outlet.fact.datum_type.concretize().and_then(|dt| match dt {
                DatumType::TDim => Some(crate::onnx::DataType::Int64.code()),
                dt => onnx_dtype(dt).map(|d| d.code()),
            });
            let shape = (!outlet.fact.shape.is_open()).then(|| {
                outlet
                    .fact
                    .shape
                    .dims()
                    .map(|d| {
                        d.concretize().map(|d| match d.to_i64() {
                            Ok(v) => Dim::Fixed(v),
                            Err(_) => Dim::Symbol(d.to_string()),
                        })
                    })
                    .collect()
            });
            out.insert(label.to_string(), (dt, shape));
        }
    }
    out
}

/// Writes inferred types of intermediate values into `value_info`: only where tract's element type
/// agrees with ONNX's typing rules (`onnx_types`). Other values keep what the model had.
/// Returns (recorded, unknown).
fn record_value_info(
    model: &mut Model,
    inferred: &HashMap<String, Inferred>,
    onnx_types: &HashMap<String, i32>,
) -> (usize, usize) {
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
            match inferred.get(name) {
                Some((Some(dt), shape)) if onnx_types.get(name) == Some(dt) => {
                    value_info.push(tensor_value_info(
                        name,
                        *dt,
                        shape.as_deref(),
                        existing.get(name),
                    ));
                    recorded += 1;
                }
                _ => {
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

fn tensor_value_info(
    name: &str,
    dt: i32,
    dims: Option<&[Option<Dim>]>,
    existing: Option<&ValueInfoProto>,
) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Some(Dim::Fixed(v)) => Some(Value::DimValue(*v)),
                    Some(Dim::Symbol(s)) => Some(Value::DimParam(s.clone())),
                    _ => None,
                },
                denotation: None,
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorType {
                elem_type: Some(dt),
                shape,
            })),
            denotation: None,
        }),
        doc_string: existing.and_then(|e| e.doc_string.clone()),
        metadata_props: existing
            .map(|e| e.metadata_props.clone())
            .unwrap_or_default(),
    }
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
