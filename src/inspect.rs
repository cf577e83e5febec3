//! `inspect`: what a deployment engineer wants to know about a model at a glance, as one
//! serialisable document (its JSON form is documented in `docs/inspect-json.md`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::graph::{constant_tensor, subgraphs};
use crate::lint::{Finding, lint};
use crate::onnx::external::ExternalRef;
use crate::onnx::proto::{GraphProto, TensorProto};
use crate::onnx::{DataType, Model, OnnxError};
use crate::run::{ValueShape, graph_inputs};

/// Identifies the document's format; bumped on any incompatible change.
pub const INSPECT_FORMAT: &str = "mdeploy.inspect/1";
/// How many of the largest tensors are listed.
const LARGEST: usize = 10;

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub format: &'static str,
    pub file: Option<FileInfo>,
    pub ir_version: i64,
    pub producer: Producer,
    pub opset_import: Vec<Opset>,
    pub inputs: Vec<ValueDesc>,
    pub outputs: Vec<ValueDesc>,
    pub nodes: NodeCounts,
    pub op_types: BTreeMap<String, usize>,
    pub parameters: Parameters,
    pub largest_tensors: Vec<TensorDesc>,
    pub external_data: Vec<ExternalFile>,
    pub metadata_props: BTreeMap<String, String>,
    pub lint: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Producer {
    pub name: String,
    pub version: String,
    pub domain: String,
    pub model_version: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Opset {
    pub domain: String,
    pub version: i64,
}

#[derive(Debug, Serialize)]
pub struct ValueDesc {
    pub name: String,
    /// ONNX element type name (`FLOAT`, `INT64`...), or null for non-tensor types.
    pub dtype: Option<String>,
    /// One entry per axis: a number, a symbolic name, or null; null for unknown rank.
    pub shape: ValueShape,
}

#[derive(Debug, Serialize)]
pub struct NodeCounts {
    /// All nodes, subgraphs included.
    pub total: usize,
    pub top_level: usize,
    pub subgraphs: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Parameters {
    /// Elements in initializers and `Constant` node tensors.
    pub count: u64,
    pub bytes: u64,
    pub initializers: usize,
    pub constant_nodes: usize,
    pub by_dtype: BTreeMap<String, DtypeTotal>,
}

#[derive(Debug, Default, Serialize)]
pub struct DtypeTotal {
    pub tensors: usize,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorDesc {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub bytes: u64,
    /// `initializer`, `constant_node` or `external`.
    pub stored: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ExternalFile {
    pub location: String,
    pub tensors: usize,
    pub bytes: u64,
}

/// Inspects a loaded model.
pub fn inspect(model: &Model) -> Result<Inspection, OnnxError> {
    let proto = &model.proto;
    let graph = model.graph();
    let mut nodes = NodeCounts {
        total: 0,
        top_level: graph.node.len(),
        subgraphs: 0,
    };
    let mut op_types = BTreeMap::new();
    let mut tensors = Vec::new();
    walk(graph, &mut nodes, &mut op_types, &mut tensors);

    let mut parameters = Parameters::default();
    let mut largest = Vec::new();
    let mut external: BTreeMap<String, ExternalFile> = BTreeMap::new();
    for (tensor, from_constant) in &tensors {
        let desc = describe(tensor, *from_constant, &mut external)?;
        let count: u64 = tensor.dims.iter().map(|&d| d.max(0) as u64).product();
        parameters.count += count;
        parameters.bytes += desc.bytes;
        if *from_constant {
            parameters.constant_nodes += 1;
        } else {
            parameters.initializers += 1;
        }
        let total = parameters.by_dtype.entry(desc.dtype.clone()).or_default();
        total.tensors += 1;
        total.count += count;
        total.bytes += desc.bytes;
        largest.push(desc);
    }
    largest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    largest.truncate(LARGEST);

    let describe_value = |v: &crate::onnx::ValueInfoProto| ValueDesc {
        name: v.name().to_string(),
        dtype: ValueShape::elem_type(v).map(|d| d.name().to_string()),
        shape: ValueShape::of(v),
    };
    let inputs = graph_inputs(model)
        .into_iter()
        .map(|i| ValueDesc {
            name: i.name,
            dtype: i.dtype.map(|d| d.name().to_string()),
            shape: i.shape,
        })
        .collect();
    Ok(Inspection {
        format: INSPECT_FORMAT,
        file: model.path().map(|p| FileInfo {
            path: p.display().to_string(),
            bytes: model.file_len().unwrap_or_default(),
        }),
        ir_version: proto.ir_version(),
        producer: Producer {
            name: proto.producer_name().to_string(),
            version: proto.producer_version().to_string(),
            domain: proto.domain().to_string(),
            model_version: proto.model_version,
        },
        opset_import: proto
            .opset_import
            .iter()
            .map(|o| Opset {
                domain: o.domain().to_string(),
                version: o.version(),
            })
            .collect(),
        inputs,
        outputs: graph.output.iter().map(describe_value).collect(),
        nodes,
        op_types,
        parameters,
        largest_tensors: largest,
        external_data: external.into_values().collect(),
        metadata_props: proto
            .metadata_props
            .iter()
            .map(|p| (p.key().to_string(), p.value().to_string()))
            .collect(),
        lint: lint(model),
    })
}

/// Counts nodes and op types, and gathers weight tensors, through all subgraphs.
fn walk<'g>(
    g: &'g GraphProto,
    nodes: &mut NodeCounts,
    ops: &mut BTreeMap<String, usize>,
    tensors: &mut Vec<(std::borrow::Cow<'g, TensorProto>, bool)>,
) {
    tensors.extend(
        g.initializer
            .iter()
            .map(|t| (std::borrow::Cow::Borrowed(t), false)),
    );
    for n in &g.node {
        nodes.total += 1;
        let op = match n.domain() {
            "" | "ai.onnx" => n.op_type().to_string(),
            d => format!("{d}::{}", n.op_type()),
        };
        *ops.entry(op).or_default() += 1;
        if let Some(mut t) = constant_tensor(n) {
            if t.name().is_empty() {
                t.name = n.output.first().cloned();
            }
            tensors.push((std::borrow::Cow::Owned(t), true));
        }
        for sg in subgraphs(n) {
            nodes.subgraphs += 1;
            walk(sg, nodes, ops, tensors);
        }
    }
}

fn describe(
    t: &TensorProto,
    from_constant: bool,
    external: &mut BTreeMap<String, ExternalFile>,
) -> Result<TensorDesc, OnnxError> {
    let dtype = DataType::for_tensor(t.data_type(), t.name())?;
    let count: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product();
    let bytes = match dtype.raw_len(count as usize) {
        Some(b) => b as u64,
        None => t.string_data.iter().map(|s| s.len() as u64).sum(),
    };
    let stored = match ExternalRef::of(t)? {
        Some(r) => {
            let file = external
                .entry(r.location.clone())
                .or_insert_with(|| ExternalFile {
                    location: r.location.clone(),
                    tensors: 0,
                    bytes: 0,
                });
            file.tensors += 1;
            file.bytes += r.length.unwrap_or(bytes);
            "external"
        }
        None if from_constant => "constant_node",
        None => "initializer",
    };
    Ok(TensorDesc {
        name: t.name().to_string(),
        dtype: dtype.name().to_string(),
        shape: t.dims.clone(),
        bytes,
        stored,
    })
}
