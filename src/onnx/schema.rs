//! Operator facts from ONNX's own schemas: which ops exist in which domain since which opset,
//! how many inputs and outputs a node may have, which element types each takes, and which
//! attributes of which type. `op_schemas.json` is generated from the `onnx` package by
//! `tools/generate_op_schemas.py` (every domain it knows, every version in history), so lint,
//! validation and type inference follow the specification rather than a hand-kept list.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;

use super::DataType;
use super::proto::{AttributeProto, NodeProto, attribute_proto::AttributeType};

const SCHEMAS: &str = include_str!("op_schemas.json");

/// How a formal input or output may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ParamOption {
    #[serde(rename = "s")]
    Single,
    #[serde(rename = "o")]
    Optional,
    /// Any number, all of one type.
    #[serde(rename = "v")]
    Variadic,
    /// Any number, each of its own type.
    #[serde(rename = "V")]
    VariadicMixed,
}

/// One formal input or output: its name, how it may be given, and its type (a constraint name
/// such as `T`, or a fixed type such as `int64`).
#[derive(Debug, Clone, Deserialize)]
pub struct Formal(pub String, pub ParamOption, pub String);

impl Formal {
    pub fn name(&self) -> &str {
        &self.0
    }
    pub fn option(&self) -> ParamOption {
        self.1
    }
    pub fn type_str(&self) -> &str {
        &self.2
    }
}

/// One version of one operator.
#[derive(Debug, Clone, Deserialize)]
pub struct OpSchema {
    pub domain: String,
    pub op: String,
    pub since: i64,
    pub deprecated: bool,
    pub inputs: Vec<Formal>,
    pub min_inputs: usize,
    pub max_inputs: usize,
    pub outputs: Vec<Formal>,
    pub min_outputs: usize,
    pub max_outputs: usize,
    /// Type constraint name to the types it allows (`float`, `int64`, `seq(tensor(float))`...).
    pub types: BTreeMap<String, Vec<String>>,
    /// Attribute name to (type, required).
    pub attributes: BTreeMap<String, (String, bool)>,
}

impl OpSchema {
    /// The formal input that node input `k` binds to (the last one when it is variadic).
    pub fn input(&self, k: usize) -> Option<&Formal> {
        formal_at(&self.inputs, k)
    }

    /// The formal output that node output `k` binds to.
    pub fn output(&self, k: usize) -> Option<&Formal> {
        formal_at(&self.outputs, k)
    }

    /// The one element type a type string allows: a fixed tensor type, or a constraint with a
    /// single allowed tensor type.
    pub fn fixed_type(&self, type_str: &str) -> Option<DataType> {
        match self.types.get(type_str) {
            Some(allowed) if allowed.len() == 1 => elem_type_named(&allowed[0]),
            Some(_) => None,
            None => elem_type_named(type_str),
        }
    }
}

fn formal_at(formals: &[Formal], k: usize) -> Option<&Formal> {
    match formals.get(k) {
        Some(f) => Some(f),
        None => formals.last().filter(|f| {
            matches!(
                f.option(),
                ParamOption::Variadic | ParamOption::VariadicMixed
            )
        }),
    }
}

/// The element type a schema type name stands for (`float` is FLOAT); `None` for sequences,
/// optionals, maps and anything else that is not a plain tensor.
pub fn elem_type_named(name: &str) -> Option<DataType> {
    Some(match name {
        "float" => DataType::Float,
        "uint8" => DataType::Uint8,
        "int8" => DataType::Int8,
        "uint16" => DataType::Uint16,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "string" => DataType::String,
        "bool" => DataType::Bool,
        "float16" => DataType::Float16,
        "double" => DataType::Double,
        "uint32" => DataType::Uint32,
        "uint64" => DataType::Uint64,
        "complex64" => DataType::Complex64,
        "complex128" => DataType::Complex128,
        "bfloat16" => DataType::Bfloat16,
        "float8e4m3fn" => DataType::Float8E4M3Fn,
        "float8e4m3fnuz" => DataType::Float8E4M3Fnuz,
        "float8e5m2" => DataType::Float8E5M2,
        "float8e5m2fnuz" => DataType::Float8E5M2Fnuz,
        "uint4" => DataType::Uint4,
        "int4" => DataType::Int4,
        "float4e2m1" => DataType::Float4E2M1,
        "float8e8m0" => DataType::Float8E8M0,
        "uint2" => DataType::Uint2,
        "int2" => DataType::Int2,
        _ => return None,
    })
}

struct Registry {
    /// (domain, op) to its versions, oldest first.
    by_op: HashMap<(String, String), Vec<OpSchema>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut by_op: HashMap<(String, String), Vec<OpSchema>> = HashMap::new();
        // the first line is a header naming the onnx version the facts came from
        for line in SCHEMAS.lines().skip(1).filter(|l| !l.is_empty()) {
            let s: OpSchema = serde_json::from_str(line).expect("op_schemas.json is generated");
            by_op
                .entry((s.domain.clone(), s.op.clone()))
                .or_default()
                .push(s);
        }
        for versions in by_op.values_mut() {
            versions.sort_by_key(|s| s.since);
        }
        Registry { by_op }
    })
}

/// `ai.onnx` and the empty string name the same domain.
pub fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" { "" } else { domain }
}

/// The schema of `op` in `domain` that a model importing `opset` of that domain uses: the newest
/// version whose since-version is not above it.
pub fn schema(domain: &str, op: &str, opset: i64) -> Option<&'static OpSchema> {
    let versions = registry()
        .by_op
        .get(&(normalize_domain(domain).to_string(), op.to_string()))?;
    versions.iter().rev().find(|s| s.since <= opset)
}

/// The opset that introduced `op` in `domain`, if ONNX knows the op.
pub fn since_version(domain: &str, op: &str) -> Option<i64> {
    registry()
        .by_op
        .get(&(normalize_domain(domain).to_string(), op.to_string()))
        .and_then(|v| v.first())
        .map(|s| s.since)
}

/// Does ONNX list the ops of this domain (so an op missing from it is an error)?
pub fn is_specified_domain(domain: &str) -> bool {
    matches!(
        normalize_domain(domain),
        "" | "ai.onnx.ml" | "ai.onnx.preview" | "ai.onnx.preview.training"
    )
}

/// A node that does not fit its operator's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaViolation {
    #[error("has {given} inputs, {op} takes {min} to {max}")]
    InputCount {
        op: String,
        given: usize,
        min: usize,
        max: usize,
    },
    #[error("has {given} outputs, {op} gives {min} to {max}")]
    OutputCount {
        op: String,
        given: usize,
        min: usize,
        max: usize,
    },
    #[error("input {index} ('{formal}') of {op} is required but empty")]
    MissingInput {
        op: String,
        index: usize,
        formal: String,
    },
    #[error("output {index} ('{formal}') of {op} is required but empty")]
    MissingOutput {
        op: String,
        index: usize,
        formal: String,
    },
    #[error("attribute '{name}' of {op} is required")]
    MissingAttribute { op: String, name: String },
    #[error("attribute '{name}' of {op} must be {want}, found {found}")]
    AttributeType {
        op: String,
        name: String,
        want: String,
        found: String,
    },
}

/// Checks a node's arity and attribute types against `schema`, so code that works on a checked
/// node may index every required input and output.
pub fn check_node(node: &NodeProto, schema: &OpSchema) -> Result<(), SchemaViolation> {
    let op = || node.op_type().to_string();
    let given = node.input.len();
    if given < schema.min_inputs || given > schema.max_inputs {
        return Err(SchemaViolation::InputCount {
            op: op(),
            given,
            min: schema.min_inputs,
            max: schema.max_inputs,
        });
    }
    for (index, name) in node.input.iter().enumerate() {
        if let Some(f) = schema.input(index)
            && f.option() == ParamOption::Single
            && name.is_empty()
        {
            return Err(SchemaViolation::MissingInput {
                op: op(),
                index,
                formal: f.name().to_string(),
            });
        }
    }
    let given = node.output.len();
    if given < schema.min_outputs || given > schema.max_outputs {
        return Err(SchemaViolation::OutputCount {
            op: op(),
            given,
            min: schema.min_outputs,
            max: schema.max_outputs,
        });
    }
    for (index, name) in node.output.iter().enumerate() {
        if let Some(f) = schema.output(index)
            && f.option() == ParamOption::Single
            && name.is_empty()
        {
            return Err(SchemaViolation::MissingOutput {
                op: op(),
                index,
                formal: f.name().to_string(),
            });
        }
    }
    for (name, (want, required)) in &schema.attributes {
        match node.attribute.iter().find(|a| a.name() == name) {
            None if *required => {
                return Err(SchemaViolation::MissingAttribute {
                    op: op(),
                    name: name.clone(),
                });
            }
            None => {}
            Some(a) => {
                if let Some(found) = attribute_type_name(a)
                    && found != want
                {
                    return Err(SchemaViolation::AttributeType {
                        op: op(),
                        name: name.clone(),
                        want: want.clone(),
                        found: found.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The schema spelling of an attribute's declared type; `None` when it declares none (old
/// writers) or refers to a function's attribute.
fn attribute_type_name(a: &AttributeProto) -> Option<&'static str> {
    if !a.ref_attr_name().is_empty() {
        return None;
    }
    Some(match a.r#type() {
        AttributeType::Undefined => return None,
        AttributeType::Float => "float",
        AttributeType::Int => "int",
        AttributeType::String => "string",
        AttributeType::Tensor => "tensor",
        AttributeType::Graph => "graph",
        AttributeType::SparseTensor => "sparse_tensor",
        AttributeType::TypeProto => "type_proto",
        AttributeType::Floats => "floats",
        AttributeType::Ints => "ints",
        AttributeType::Strings => "strings",
        AttributeType::Tensors => "tensors",
        AttributeType::Graphs => "graphs",
        AttributeType::SparseTensors => "sparse_tensors",
        AttributeType::TypeProtos => "type_protos",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_version_a_model_imports() {
        assert_eq!(schema("", "Squeeze", 11).unwrap().since, 11);
        assert_eq!(schema("", "Squeeze", 13).unwrap().since, 13);
        assert_eq!(schema("ai.onnx", "Squeeze", 17).unwrap().since, 13);
        assert!(schema("", "LayerNormalization", 16).is_none());
        assert_eq!(since_version("", "LayerNormalization"), Some(17));
        assert!(schema("", "NoSuchOp", 20).is_none());
    }

    #[test]
    fn variadic_formals_bind_every_extra_input() {
        let concat = schema("", "Concat", 13).unwrap();
        assert_eq!(concat.input(5).unwrap().name(), "inputs");
        let conv = schema("", "Conv", 11).unwrap();
        assert_eq!(conv.input(2).unwrap().option(), ParamOption::Optional);
        assert!(conv.input(3).is_none());
    }

    #[test]
    fn arity_and_attribute_types_are_checked() {
        let conv = schema("", "Conv", 11).unwrap();
        let mut node = NodeProto {
            op_type: Some("Conv".into()),
            input: vec!["x".into()],
            output: vec!["y".into()],
            ..Default::default()
        };
        assert!(matches!(
            check_node(&node, conv),
            Err(SchemaViolation::InputCount { given: 1, .. })
        ));
        node.input = vec!["x".into(), "".into()];
        assert!(matches!(
            check_node(&node, conv),
            Err(SchemaViolation::MissingInput { index: 1, .. })
        ));
        node.input = vec!["x".into(), "w".into()];
        assert_eq!(check_node(&node, conv), Ok(()));
        node.attribute.push(AttributeProto {
            name: Some("group".into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(1.0),
            ..Default::default()
        });
        assert!(matches!(
            check_node(&node, conv),
            Err(SchemaViolation::AttributeType { .. })
        ));
    }

    #[test]
    fn fixed_types_come_from_the_schema() {
        let shape = schema("", "Shape", 15).unwrap();
        assert_eq!(
            shape.fixed_type(shape.outputs[0].type_str()),
            Some(DataType::Int64)
        );
        let add = schema("", "Add", 14).unwrap();
        assert_eq!(add.fixed_type("T"), None);
    }
}
