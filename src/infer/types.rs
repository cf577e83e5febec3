//! Element types of a node's outputs: op rules where an attribute or a value decides the type
//! (Cast's `to`, ConstantOfShape's `value`, QuantizeLinear's zero point...), else the operator's
//! schema: a fixed output type, or a type constraint bound by an input of known type. Anything
//! neither determines is unknown, never a guess.

use crate::graph::constant_tensor;
use crate::onnx::DataType;
use crate::onnx::attributes::{attr, attr_i};
use crate::onnx::proto::NodeProto;
use crate::onnx::schema::OpSchema;

fn from_code(code: i64) -> Option<DataType> {
    i32::try_from(code)
        .ok()
        .and_then(|c| DataType::from_code(c).ok())
}

/// The element type of each output of `node`, given its inputs' types (`None` when unknown).
pub fn output_types(
    node: &NodeProto,
    schema: Option<&OpSchema>,
    inputs: &[Option<DataType>],
) -> Vec<Option<DataType>> {
    let n = node.output.len();
    let input = |k: usize| inputs.get(k).copied().flatten();
    let attr_type = |name: &str| attr(node, name).and_then(|a| a.i).and_then(from_code);
    let all = |t: Option<DataType>| vec![t; n];
    let Some(schema) = schema else {
        return all(None);
    };
    let special = match schema.op.as_str() {
        "Constant" => Some(all(
            constant_tensor(node).and_then(|t| from_code(t.data_type().into()))
        )),
        "Cast" | "BitCast" => Some(all(attr_type("to"))),
        "CastLike" => Some(all(input(1))),
        "ConstantOfShape" => Some(all(match attr(node, "value").and_then(|a| a.t.as_ref()) {
            Some(t) => from_code(t.data_type().into()),
            None => Some(DataType::Float),
        })),
        "EyeLike" | "RandomNormalLike" | "RandomUniformLike" | "Bernoulli" => {
            Some(all(attr_type("dtype").or(input(0))))
        }
        "RandomNormal" | "RandomUniform" => Some(all(attr_type("dtype").or(Some(DataType::Float)))),
        "Multinomial" => Some(all(attr_type("dtype").or(Some(DataType::Int32)))),
        "QuantizeLinear" => Some(all(input(2).or_else(|| {
            match attr_i(node, "output_dtype", 0) {
                0 => Some(DataType::Uint8),
                d => from_code(d),
            }
        }))),
        "DequantizeLinear" => Some(all(match attr_i(node, "output_dtype", 0) {
            0 => input(1),
            d => from_code(d),
        })),
        "LayerNormalization" => {
            let stash = from_code(attr_i(node, "stash_type", 1));
            let mut v = vec![input(0)];
            v.extend(std::iter::repeat_n(stash, n.saturating_sub(1)));
            v.truncate(n);
            Some(v)
        }
        "HannWindow" | "HammingWindow" | "BlackmanWindow" | "MelWeightMatrix" => {
            Some(all(from_code(attr_i(node, "output_datatype", 1))))
        }
        // control flow takes its types from the bodies (see the engine)
        "If" | "Loop" | "Scan" => Some(all(None)),
        _ => None,
    };
    if let Some(t) = special {
        return t;
    }
    (0..n)
        .map(|k| {
            let formal = schema.output(k)?;
            let ty = formal.type_str();
            if let Some(t) = schema.fixed_type(ty) {
                return Some(t);
            }
            // a constraint: the first input bound to the same constraint with a known type
            node.input.iter().enumerate().find_map(|(j, _)| {
                let f = schema.input(j)?;
                (f.type_str() == ty).then(|| input(j)).flatten()
            })
        })
        .collect()
}
