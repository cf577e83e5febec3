//! Element types of a graph's values by ONNX's own typing rules, independent of tract: convert
//! records a value's type only when this and tract's analysis agree, so a type tract models
//! differently from ONNX never ends up in `value_info` (where the onnx checker would reject it).

use std::collections::HashMap;

use crate::onnx::DataType;
use crate::onnx::proto::{GraphProto, NodeProto};
use crate::run::ValueShape;

use super::constant_tensor;

/// The ONNX element type of every value whose type the rules below determine.
pub fn elem_types(graph: &GraphProto) -> HashMap<String, i32> {
    let mut types: HashMap<String, i32> = HashMap::new();
    for vi in graph.input.iter() {
        if let Some(dt) = ValueShape::elem_type(vi) {
            types.insert(vi.name().to_string(), dt.code());
        }
    }
    for t in &graph.initializer {
        types.insert(t.name().to_string(), t.data_type());
    }
    let order = super::topological_order(graph).unwrap_or_else(|_| (0..graph.node.len()).collect());
    for i in order {
        let node = &graph.node[i];
        let outputs = node_output_types(node, &types);
        for (name, dt) in node.output.iter().zip(outputs) {
            if let (false, Some(dt)) = (name.is_empty(), dt) {
                types.insert(name.clone(), dt);
            }
        }
    }
    types
}

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute
        .iter()
        .find(|a| a.name() == name)
        .and_then(|a| a.i)
}

/// Output element types of one node, from its inputs' types and attributes; `None` where the
/// rule is not known (contrib ops, control flow, sequences).
fn node_output_types(node: &NodeProto, types: &HashMap<String, i32>) -> Vec<Option<i32>> {
    let input = |k: usize| {
        node.input
            .get(k)
            .filter(|n| !n.is_empty())
            .and_then(|n| types.get(n))
            .copied()
    };
    let n = node.output.len();
    let all = |dt: Option<i32>| vec![dt; n];
    let code = |d: DataType| Some(d.code());
    if !matches!(node.domain(), "" | "ai.onnx") {
        return all(None);
    }
    match node.op_type() {
        "Constant" => all(constant_tensor(node).map(|t| t.data_type())),
        "Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" | "NonMaxSuppression" => {
            all(code(DataType::Int64))
        }
        "Cast" | "RandomNormal" | "RandomUniform" | "EyeLike" | "RandomNormalLike"
        | "RandomUniformLike" | "Bernoulli" => {
            match (
                node.op_type(),
                attr_int(node, "to").or_else(|| attr_int(node, "dtype")),
            ) {
                (_, Some(to)) => all(Some(to as i32)),
                ("RandomNormal" | "RandomUniform", None) => all(code(DataType::Float)),
                ("Cast", None) => all(None),
                (_, None) => all(input(0)),
            }
        }
        "Multinomial" => all(Some(
            attr_int(node, "dtype").map_or(DataType::Int32.code(), |d| d as i32),
        )),
        "CastLike" => all(input(1)),
        "ConstantOfShape" => all(
            match node
                .attribute
                .iter()
                .find(|a| a.name() == "value")
                .and_then(|a| a.t.as_ref())
            {
                Some(t) => Some(t.data_type()),
                None => code(DataType::Float),
            },
        ),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor"
        | "Not" | "IsNaN" | "IsInf" | "RegexFullMatch" => all(code(DataType::Bool)),
        "TopK" => vec![input(0), code(DataType::Int64)],
        "Unique" => {
            let mut v = vec![code(DataType::Int64); n];
            if let Some(first) = v.first_mut() {
                *first = input(0);
            }
            v
        }
        "MatMulInteger" | "ConvInteger" => all(code(DataType::Int32)),
        "QuantizeLinear" => all(input(2).or_else(|| {
            attr_int(node, "output_dtype")
                .filter(|d| *d != 0)
                .map(|d| d as i32)
                .or(code(DataType::Uint8))
        })),
        "DequantizeLinear" => all(input(1)),
        "DynamicQuantizeLinear" => vec![
            code(DataType::Uint8),
            code(DataType::Float),
            code(DataType::Uint8),
        ],
        "QLinearConv" | "QLinearMatMul" => all(input(7)),
        "Where" => all(input(1)),
        "OneHot" => all(input(2)),
        "StringNormalizer" | "StringConcat" | "StringSplit" => {
            let mut v = all(code(DataType::String));
            if node.op_type() == "StringSplit" && n > 1 {
                v[1] = code(DataType::Int64);
            }
            v
        }
        "If" | "Loop" | "Scan" | "SequenceConstruct" | "SequenceAt" | "SequenceEmpty"
        | "SequenceInsert" | "SequenceErase" | "SequenceLength" | "SplitToSequence"
        | "ConcatFromSequence" | "SequenceMap" | "Optional" | "OptionalGetElement"
        | "OptionalHasElement" | "ImageDecoder" | "TfIdfVectorizer" | "LabelEncoder" | "DFT"
        | "STFT" | "MelWeightMatrix" | "HannWindow" | "HammingWindow" | "BlackmanWindow"
        | "Col2Im" | "BitCast" => all(None),
        op if super::super::lint::op_since_version(op).is_some() => all(input(0)),
        _ => all(None),
    }
}
