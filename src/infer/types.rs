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

/// What is wrong with the element types a node's known inputs and outputs carry, by its schema:
/// values bound to one type constraint must share a type the constraint allows, and a fixed
/// type must be met. Unknown types pass; so do formals of mixed variadic type.
pub fn binding_errors(
    node: &NodeProto,
    schema: &OpSchema,
    inputs: &[Option<DataType>],
    outputs: &[Option<DataType>],
) -> Vec<String> {
    use crate::onnx::schema::{ParamOption, elem_type_named};
    let mut bound: std::collections::BTreeMap<&str, (DataType, String)> = Default::default();
    let mut errors = Vec::new();
    let slots = node
        .input
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                schema.input(k),
                name,
                inputs.get(k).copied().flatten(),
                "input",
            )
        })
        .chain(node.output.iter().enumerate().map(|(k, name)| {
            (
                schema.output(k),
                name,
                outputs.get(k).copied().flatten(),
                "output",
            )
        }));
    for (formal, name, ty, side) in slots {
        let (Some(formal), Some(ty)) = (formal, ty) else {
            continue;
        };
        if name.is_empty() || formal.option() == ParamOption::VariadicMixed {
            continue;
        }
        let ts = formal.type_str();
        let allowed: Vec<Option<DataType>> = match schema.types.get(ts) {
            Some(list) => list.iter().map(|s| elem_type_named(s)).collect(),
            None => vec![elem_type_named(ts)],
        };
        // a constraint over sequences or optionals: not a plain tensor type to check here
        if allowed.iter().all(Option::is_none) {
            continue;
        }
        if !allowed.contains(&Some(ty)) {
            errors.push(format!(
                "{side} '{name}' is {ty}, which '{ts}' does not allow"
            ));
            continue;
        }
        if schema.types.contains_key(ts) {
            match bound.get(ts) {
                Some((first, other)) if *first != ty => errors.push(format!(
                    "{side} '{name}' is {ty} but '{other}' is {first}, both bound to '{ts}'"
                )),
                Some(_) => {}
                None => {
                    bound.insert(ts, (ty, name.clone()));
                }
            }
        }
    }
    errors
}
